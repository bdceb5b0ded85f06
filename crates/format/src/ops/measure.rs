//! Measure: the exact length of the file a convert (or a merge-to, which converts the
//! same flattened view of a chain) would write, without writing anything — what
//! `qemu-img measure` does for other formats.
//!
//! It is the conversion minus the writes: the same view of the source (padded with
//! zeros to [`OpsOptions::align`]), the same blocks composed by the same code with the
//! same zero detection, placed by the same `Placement` that the writer of
//! [`super::convert`] places them by (whose dynamic layout comes from
//! `spec::layout::NewSparse`, the one builder of the dynamic files
//! vhdkit writes). So the length measured is the length written, byte for byte.
//!
//! A fixed (or raw) result's length depends on the virtual size only: nothing is read.
//! A dynamic result holds the blocks that are not all zero: every block some level of
//! the source stores is read once and tested, the others are known to be zero from the
//! metadata alone.

use std::path::Path;
use std::time::{Duration, Instant};

use vhdkit_task::{CancelToken, Phase, Progress};

use crate::error::Result;
use crate::image::Disk;

use super::convert::{check_target_as, mask_for, placement_for};
use super::source::{compose_chunk, BufferPool};
use super::units::{chunks_ahead, data_units, units_and_bytes};
use super::unused;
use super::{OpsOptions, Target};
use crate::image::ContainerFormat;

/// What a conversion of a source would produce.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Measure {
    /// The kind of file measured.
    pub target: Target,
    /// The container of a fixed or dynamic result (`None` for a raw one):
    /// [`OpsOptions::format`], VHD when it says nothing.
    #[serde(serialize_with = "format_name")]
    pub format: Option<ContainerFormat>,
    /// The source's virtual size.
    pub source_size: u64,
    /// The result's virtual size: the source's, rounded up to [`OpsOptions::align`]
    /// when asked.
    pub virtual_size: u64,
    /// The length of the file the conversion writes, footer and metadata included.
    pub required_bytes: u64,
    /// A dynamic result's block size; `None` for fixed and raw results.
    pub block_size: Option<u32>,
    /// A dynamic result's blocks (its BAT entries that cover the virtual size).
    pub blocks_total: Option<u64>,
    /// The blocks a dynamic result holds: those not all zero (a VHDX: those with any
    /// piece not all zero).
    pub allocated_blocks: Option<u64>,
    /// Of a dynamic result's blocks, those read and tested (the source's metadata says
    /// some level of it may store data there, as for [`Report::blocks_composed`]); the
    /// others are known to be zero without a read.
    ///
    /// [`Report::blocks_composed`]: super::Report::blocks_composed
    pub blocks_scanned: Option<u64>,
    /// Wall time.
    #[serde(skip)]
    pub elapsed: Duration,
}

fn format_name<S: serde::Serializer>(
    f: &Option<ContainerFormat>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match f {
        Some(f) => s.serialize_str(f.name()),
        None => s.serialize_none(),
    }
}

/// The container a measure of a `target` result assumes: [`OpsOptions::format`], VHD
/// when it says nothing (there is no destination name to go by); none for a raw result.
fn format_of(target: Target, opts: &OpsOptions) -> Option<ContainerFormat> {
    (target != Target::Raw).then(|| opts.format.unwrap_or_default())
}

/// A running measure: an [`OpTask`](super::OpTask) whose value is a [`Measure`].
pub type MeasureTask = super::OpTask<Measure>;

/// Measures the file a conversion of `src` (any VHD or VHDX, a chain flattened, or a
/// raw image, opened as [`super::convert_task`] opens it) into a `target` would write,
/// with the options a conversion would get (`block_size`, `align`, `open`; a VHDX
/// result — [`OpsOptions::format`] — `vhdx_block_size` and `logical_sector_size`).
///
/// ```no_run
/// use vhdkit_format::image::ContainerFormat;
/// use vhdkit_format::ops::{measure, OpsOptions, Target};
/// let opts = OpsOptions {
///     format: Some(ContainerFormat::Vhdx),
///     ..OpsOptions::default()
/// };
/// let m = measure("disk.vhd", Target::Dynamic, &opts)?;
/// println!("a dynamic VHDX of it takes {} bytes", m.required_bytes);
/// # Ok::<(), vhdkit_format::Error>(())
/// ```
pub fn measure(src: impl AsRef<Path>, target: Target, opts: &OpsOptions) -> Result<Measure> {
    let src = src.as_ref();
    let disk = Disk::open_any(src, &opts.open)?;
    measure_disk(&disk, target, opts, &Progress::detached(CancelToken::new()))
}

/// Starts measuring, as a task with progress (a `scan` phase over the virtual size) and
/// cancel. The source is opened and the target checked before the task starts.
pub fn measure_task(
    src: impl AsRef<Path>,
    target: Target,
    opts: &OpsOptions,
) -> Result<MeasureTask> {
    let src = src.as_ref();
    let disk = Disk::open_any(src, &opts.open)?;
    check_target_as(
        &disk,
        target,
        format_of(target, opts).unwrap_or_default(),
        opts,
    )?;
    let o = opts.clone();
    Ok(super::spawn(
        format!("Measuring {} as {}", src.display(), target.name()),
        opts,
        move |pr| measure_disk(&disk, target, &o, pr),
    ))
}

/// Measures the file a conversion of `disk` into a `target` would write.
pub fn measure_disk(
    disk: &Disk,
    target: Target,
    opts: &OpsOptions,
    progress: &Progress,
) -> Result<Measure> {
    let start = Instant::now();
    let format = format_of(target, opts);
    let size = check_target_as(disk, target, format.unwrap_or_default(), opts)?;
    let mut placement = placement_for(target, format, size, opts)?;
    let mut m = Measure {
        target,
        format,
        source_size: disk.virtual_size(),
        virtual_size: size,
        required_bytes: placement.file_len(),
        block_size: None,
        blocks_total: None,
        allocated_blocks: None,
        blocks_scanned: None,
        elapsed: Duration::ZERO,
    };
    if target != Target::Dynamic {
        // Every byte of a fixed or raw result has its place: the length is the size's
        // (unused ranges make holes in a raw file, not a shorter one); a fixed VHDX's
        // depends on its block size too (its data area is whole blocks).
        m.block_size = placement.vhdx_state().map(|v| v.layout.new.block_size);
        progress.check_cancelled()?;
        m.elapsed = start.elapsed();
        return Ok(m);
    }
    let unused = unused::resolve(opts.unused_ranges.as_ref(), disk, progress)?;
    let mask = unused.as_deref().map(|u| mask_for(&placement, u));
    let unit = placement.unit();
    let blocks = placement.blocks();
    let per_chunk = (opts.chunk_bytes / unit).max(1);
    let pool = BufferPool::default();
    let path = disk.top().path();
    // The blocks the converter composes (those the metadata says may hold data), and
    // only those: the others are holes of the result.
    let runs = data_units(disk, size, unit, mask);
    let (to_scan, bytes_to_scan) = units_and_bytes(&runs, unit, size);
    progress.plan_phases(&[(Phase::Scan, bytes_to_scan)]);
    progress.set_phase(Phase::Scan, to_scan, bytes_to_scan);
    let mut allocated = 0u64;
    for chunk in chunks_ahead(disk, &runs, per_chunk, unit) {
        progress.check_cancelled()?;
        for c in compose_chunk(disk, size, &chunk, unit, &pool, mask, None)? {
            // Exactly the blocks the converter writes: those composed with data.
            if c.data.is_some() {
                placement.place(c.index, path)?;
                allocated += 1;
            }
            progress.block_done(c.index, c.len);
            pool.give(c.data);
        }
    }
    progress.check_cancelled()?;
    m.required_bytes = placement.file_len();
    match placement.vhdx_state() {
        // A VHDX result's pieces are not its blocks: count the blocks placed.
        Some(v) => {
            let bat = &v.bat;
            m.block_size = Some(v.layout.new.block_size);
            m.blocks_total = Some(bat.geometry.data_blocks);
            m.allocated_blocks = Some(
                (0..bat.geometry.data_blocks)
                    .filter(|&b| bat.payload(b).is_some_and(|p| p.file_offset.is_some()))
                    .count() as u64,
            );
        }
        None => {
            m.block_size = Some(opts.block_size);
            m.blocks_total = Some(blocks);
            m.allocated_blocks = Some(allocated);
        }
    }
    m.blocks_scanned = Some(to_scan);
    m.elapsed = start.elapsed();
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{CreateOptions, DiskKind};

    fn convert(src: &Path, dst: &Path, target: Target, opts: &OpsOptions) -> u64 {
        super::super::convert::convert_disk(
            &Disk::open_any(src, &opts.open).expect("open"),
            dst,
            target,
            opts,
            &Progress::detached(CancelToken::new()),
            super::super::Operation::Convert,
        )
        .expect("convert");
        std::fs::metadata(dst).expect("stat").len()
    }

    /// Empty, partly and fully written dynamic sources, several block sizes, a size that
    /// is not a whole number of blocks, aligned or not: the measure is the length the
    /// conversion writes.
    #[test]
    fn measure_is_the_length_convert_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let size = 5_000_704u64; // 9767 sectors: not a whole number of any block size
        let src = dir.path().join("src.vhd");
        Disk::create(&src, &CreateOptions::new(DiskKind::Dynamic, size)).expect("create");
        let mut n = 0;
        for writes in [&[][..], &[0u64, 1_100_000, 4_999_000][..]] {
            {
                let d = Disk::open_rw(&src).expect("open");
                for &at in writes {
                    d.write_at(&[0x5a; 700], at).expect("write");
                }
                d.flush().expect("flush");
            }
            for block_size in [4096u32, 512 * 1024, 2 << 20] {
                for align in [None, Some(1 << 20)] {
                    for target in [Target::Fixed, Target::Dynamic, Target::Raw] {
                        let opts = OpsOptions {
                            block_size,
                            align,
                            chunk_bytes: 1 << 20,
                            ..OpsOptions::default()
                        };
                        let m = measure(&src, target, &opts).expect("measure");
                        n += 1;
                        let dst = dir.path().join(format!("out{n}"));
                        let len = convert(&src, &dst, target, &opts);
                        let what = format!("{writes:?} {block_size} {align:?} {target:?}");
                        assert_eq!(m.required_bytes, len, "{what}");
                        assert_eq!(
                            m.virtual_size,
                            Disk::open_any(&dst, &opts.open).expect("o").virtual_size(),
                            "{what}"
                        );
                        if target == Target::Dynamic {
                            let f = crate::image::VhdFile::open(&dst, &opts.open).expect("open");
                            assert_eq!(m.allocated_blocks, Some(f.allocated_blocks()), "{what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_cancelled_measure_stops() {
        let dir = tempfile::tempdir().expect("tmp");
        let src = dir.path().join("src.vhd");
        Disk::create(&src, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).expect("create");
        let token = CancelToken::new();
        token.cancel();
        let disk = Disk::open(&src).expect("open");
        let r = measure_disk(
            &disk,
            Target::Dynamic,
            &OpsOptions::default(),
            &Progress::detached(token),
        );
        assert!(
            matches!(r, Err(crate::Error::Cancelled)),
            "a cancel is reported"
        );
    }
}
