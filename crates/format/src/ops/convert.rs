//! Convert (and merge-to): the source's virtual content — any disk, a whole chain
//! flattened, a host drive or a raw image — into a new fixed, dynamic or raw file; a
//! fixed or dynamic one is a VHD or a VHDX ([`OpsOptions::format`], else the
//! destination's extension), placed by the same `Placement` and written by the same
//! writer, the VHDX's metadata from `vhdx::layout` written last. With
//! [`OpsOptions::align`] the content is the source padded with zeros to the next
//! multiple of the alignment. Where each block goes and how long the file ends up is
//! `Placement`'s, which [`super::measure()`] runs without writing.
//!
//! Only the blocks that the source's metadata says may hold data are read and composed
//! (`source::data_units`: every level's allocated blocks, a flat file's stored extents);
//! the rest are holes of the result at no cost, so the work follows the data, not the
//! virtual size.
//!
//! With [`OpsOptions::unused_ranges`] (file-system-aware conversion) the blocks of a
//! dynamic result and the 4 KiB pages of a raw result that no file system uses at all
//! are composed as zeros — not allocated, holes — and so are never read; so are those
//! each byte of which is unused or zero (free or zero). A block or page holding a used
//! non-zero byte is copied as it is.
//!
//! Crash safety: the destination name appears only when the file is complete and
//! durable. Everything is written into an unnamed file (`O_TMPFILE`) in the
//! destination's directory — a temporary dot-name where the file system cannot — and
//! after the last write (and the verification, when asked) the file is fsynced, linked
//! in under its name without replacing anything, and the directory fsynced
//! (`image::NewFile`). A cancel, an error or a kill leaves no destination behind.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use vhdkit_task::{Phase, Progress};

use crate::error::{Error, Result};
use crate::image::backend::{Backend, FileBackend};
use crate::image::output::{self, Existing};
use crate::image::{ContainerFormat, NewFile};
use crate::image::{Disk, OpenOptions};
use crate::spec::SECTOR_SIZE;

use super::placement::{Placement, FOOTER_SIZE};
use super::source::{compose_chunk, compose_copied, BufferPool, Composed, Mask, Offload};
use super::units::{chunks_ahead, data_units, masked_totals, units_and_bytes};
use super::unused::{self, UnusedRanges};
use super::writer::{offload_device, Writer, ZERO_PAGE};
use super::{OpsOptions, PhaseClock, Report, Target};

/// Checks, before any work, that `disk` can become a `target`: it is not empty, it is a
/// whole number of sectors, the alignment asked for is valid, and a dynamic result's
/// block size and size are valid. Returns the virtual size of the result: the source's,
/// rounded up to [`OpsOptions::align`] when asked (the padding reads as zeros).
pub(crate) fn check_target(disk: &Disk, target: Target, opts: &OpsOptions) -> Result<u64> {
    check_target_as(disk, target, ContainerFormat::Vhd, opts)
}

/// [`check_target`] for a result in the container `format`: a VHDX takes sizes to
/// 64 TiB that are a multiple of its logical sector, blocks of 1 to 256 MiB, and no
/// verification yet (reading a VHDX back needs the VHDX container).
pub(crate) fn check_target_as(
    disk: &Disk,
    target: Target,
    format: ContainerFormat,
    opts: &OpsOptions,
) -> Result<u64> {
    if format == ContainerFormat::Vhdx && target != Target::Raw {
        return check_vhdx_target(disk, target, opts);
    }
    let source = disk.virtual_size();
    let path = disk.top().path().display();
    if source == 0 {
        return Err(Error::InvalidArgument(format!(
            "{path}: the source is empty (0 bytes): there is no disk to convert"
        )));
    }
    if !source.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::InvalidArgument(format!(
            "{path}: size {source} is not a whole number of sectors"
        )));
    }
    let size = aligned_size(source, opts.align)?;
    if target == Target::Fixed && opts.unused_ranges.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{path}: leaving out unused ranges applies to dynamic and raw results; a fixed \
             disk stores every byte"
        )));
    }
    if target == Target::Dynamic {
        crate::spec::header::check_create_block_size(opts.block_size)
            .map_err(Error::InvalidArgument)?;
        crate::image::create::check_bat_entries(size, opts.block_size)?;
        if size > crate::spec::MAX_CREATE_SIZE {
            return Err(Error::SizeTooLarge {
                size,
                detail: "a dynamic disk holds at most 2040 GiB; convert to fixed or raw".into(),
            });
        }
    }
    Ok(size)
}

/// The checks of [`check_target_as`] for a VHDX result.
fn check_vhdx_target(disk: &Disk, target: Target, opts: &OpsOptions) -> Result<u64> {
    let path = disk.top().path().display();
    let source = disk.virtual_size();
    if source == 0 {
        return Err(Error::InvalidArgument(format!(
            "{path}: the source is empty (0 bytes): there is no disk to convert"
        )));
    }
    let size = aligned_size(source, opts.align)?;
    let logical = opts.logical_sector_size;
    crate::image::check_logical_sector(logical)?;
    if !size.is_multiple_of(u64::from(logical)) {
        return Err(Error::InvalidArgument(format!(
            "{path}: size {size} is not a whole number of {logical}-byte logical sectors \
             (--align {logical} rounds it up)"
        )));
    }
    if size > crate::vhdx::MAX_VIRTUAL_SIZE {
        return Err(Error::SizeTooLarge {
            size,
            detail: "a VHDX holds at most 64 TiB".into(),
        });
    }
    crate::image::check_vhdx_block_size(opts.vhdx_block_size)?;
    if target == Target::Fixed && opts.unused_ranges.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{path}: leaving out unused ranges applies to dynamic and raw results; a fixed \
             disk stores every byte"
        )));
    }
    Ok(size)
}

/// The placement of a `target` result of `size` bytes in the container `format`.
pub(crate) fn placement_for(
    target: Target,
    format: Option<ContainerFormat>,
    size: u64,
    opts: &OpsOptions,
) -> Result<Placement> {
    match format {
        Some(ContainerFormat::Vhdx) => {
            Placement::vhdx(target, size, opts.vhdx_block_size, opts.logical_sector_size)
        }
        _ => Placement::new(target, size, opts.block_size),
    }
}

/// Checks, before any work, what stands at the destination `dst` of a conversion of
/// `disk` into `target`: nothing; a regular file [`OpsOptions::output`] lets it replace;
/// a device it lets it write in place — which takes only a raw result, and no
/// verification if it is a character device (which does not give back what was
/// written), and that a block device holds the `size` bytes of the result. Never one of
/// `disk`'s own files.
pub(crate) fn check_output(
    disk: &Disk,
    dst: &Path,
    target: Target,
    opts: &OpsOptions,
    size: u64,
) -> Result<()> {
    let existing = output::inspect(dst, &opts.output, Some(disk))?;
    check_device_target(existing, dst, target, opts)?;
    if existing == (Existing::Device { block: true }) {
        output::check_device_room(dst, size)?;
    }
    Ok(())
}

/// The refusals of [`check_output`] that depend on the target once a device stands at
/// `dst`.
fn check_device_target(
    existing: Existing,
    dst: &Path,
    target: Target,
    opts: &OpsOptions,
) -> Result<()> {
    let Existing::Device { block } = existing else {
        return Ok(());
    };
    if target != Target::Raw {
        return Err(Error::InvalidArgument(format!(
            "{}: is a device, which takes only a raw image (--type raw); a {} VHD is \
             written as a new file",
            dst.display(),
            target.name()
        )));
    }
    if opts.verify && !block {
        return Err(Error::InvalidArgument(format!(
            "{}: is a character device, which does not give back what is written: it \
             cannot be verified",
            dst.display()
        )));
    }
    Ok(())
}

/// `size` rounded up to a multiple of `align` (`None`: as it is). The alignment must be a
/// non-zero multiple of the sector size.
pub fn aligned_size(size: u64, align: Option<u64>) -> Result<u64> {
    let Some(align) = align else {
        return Ok(size);
    };
    if align == 0 || !align.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::InvalidArgument(format!(
            "alignment {align} is not a non-zero multiple of {SECTOR_SIZE} bytes"
        )));
    }
    size.div_ceil(align)
        .checked_mul(align)
        .ok_or_else(|| Error::SizeTooLarge {
            size,
            detail: format!("rounding it up to a multiple of {align} bytes overflows"),
        })
}

/// Writes `disk`'s virtual content to a new file `dst` of kind `target`.
pub fn convert_disk(
    disk: &Disk,
    dst: impl AsRef<Path>,
    target: Target,
    opts: &OpsOptions,
    progress: &Progress,
    operation: super::Operation,
) -> Result<Report> {
    let dst = dst.as_ref();
    let start = Instant::now();
    let format = opts.format_for(dst, target);
    let size = check_target_as(disk, target, format.unwrap_or_default(), opts)?;
    // Where each block goes and how long the file ends up: the same arithmetic
    // `measure` runs without writing.
    let placement = placement_for(target, format, size, opts)?;
    // The unused ranges, when asked (a scan of the source, which is only read).
    let mut clock = PhaseClock::start();
    let unused = unused::resolve(opts.unused_ranges.as_ref(), disk, progress)?;
    // The destination is checked again as it is opened (the task may start long after
    // it was created); a block device must hold the whole raw result.
    check_output(disk, dst, target, opts, size)?;
    let mut new = NewFile::create(dst, &opts.output, Some(disk), size)?;
    // A fixed disk is allocated, as Virtual Server and Hyper-V make it: a volume too
    // small fails here, before any work, and leaves nothing. Where the data may be cloned
    // from the source (an extent-sharing file system), only the holes that remain are
    // allocated, after the copy: allocating first would reserve space for data that then
    // costs none.
    //
    // And if any data was cloned, not even those: the output then shares extents with its
    // source, so a later write into the disk may need new space whatever was reserved
    // (copy on write) — preallocating cannot keep the fixed disk's promise there and
    // would only cost the space of every zero region.
    let allocate = target == Target::Fixed && !opts.sparse;
    // A device is written in place: no extents to share, and its old bytes stay where
    // nothing is written, so the writer zeroes what a new file would leave as holes.
    let device = new.device();
    let offload = offload_device(new.file()).filter(|_| device.is_none());
    // The source's bytes as they are (fixed or raw into raw): the whole file cloned.
    if super::clone_whole::try_clone(disk, &mut new, target, size, opts)? {
        let blocks = placement.blocks();
        let mut report = Report {
            operation,
            path: dst.to_owned(),
            blocks_total: blocks,
            blocks_copied: blocks,
            bytes_cloned: size,
            ..Report::default()
        };
        progress.plan_phases(&[(Phase::Copy, 0), (Phase::Verify, size)]);
        clock.lap(&mut report, "copy");
        return finish(
            new,
            (dst, size),
            report,
            clock,
            opts,
            progress,
            start,
            |new| {
                super::clone_whole::verify_clone(disk, new, size, placement.unit(), opts, progress)
            },
        );
    }
    let tmp_path = new.shown_path().to_owned();
    let out = &new.backend;
    let allocate_late = allocate && offload.is_some();
    let fixed_len = match placement.vhdx_state() {
        Some(_) => placement.file_len(),
        None => size + FOOTER_SIZE,
    };
    let allocate_fixed = || {
        crate::image::newfile::allocate(out.file(), fixed_len)
            .map_err(|e| Error::file(dst, "allocating the fixed disk", e))
    };
    if allocate && !allocate_late {
        allocate_fixed()?;
    }
    let unit = placement.unit();
    let blocks = placement.blocks();
    let mut report = Report {
        operation,
        path: dst.to_owned(),
        blocks_total: blocks,
        ..Report::default()
    };
    if unused.is_some() {
        clock.lap(&mut report, "volumes");
    }
    let mask = unused.as_deref().map(|u| mask_for(&placement, u));
    // Only the units that may hold data go through the pipeline (from metadata: the
    // allocated blocks of every level, a flat source's stored extents, less the wholly
    // unused ones); every other unit is a hole of the result, at no cost (a device
    // written in place has each run of them zeroed in one step). What the mask leaves
    // out is counted from the unused ranges alone.
    let runs = data_units(disk, size, unit, mask);
    let (to_compose, bytes_to_compose) = units_and_bytes(&runs, unit, size);
    report.blocks_composed = to_compose;
    if let Some(m) = &mask {
        let (ranges, bytes, units) = masked_totals(m, size, unit);
        report.unused_released = ranges;
        report.bytes_unused = bytes;
        report.blocks_unused = units;
    }
    // Copy offload: the levels on the output's file system may have runs cloned; a raw
    // or fixed result then needs no zero test, and (unless verifying, which needs the
    // bytes) blocks whose runs are all cloned are not read at all.
    let offload = offload.map(|device| Offload {
        device,
        layer_devices: disk.layers().iter().map(|l| l.data_device()).collect(),
        unread_flat: target != Target::Dynamic && !opts.verify,
    });
    let writer = Writer::new(placement, out, disk, offload.as_ref(), device, &tmp_path);
    // A character device has nothing to make durable (and refuses `fdatasync`): no
    // background syncs.
    let sync_bytes = if device == Some(false) {
        0
    } else {
        opts.sync_bytes
    };
    let per_chunk = (opts.chunk_bytes / unit).max(1);
    let pool = BufferPool::default();
    // The copy reads and writes the data once; a verification reads both again.
    progress.plan_phases(&[
        (Phase::Copy, bytes_to_compose),
        (
            Phase::Verify,
            if opts.verify { bytes_to_compose } else { 0 },
        ),
    ]);
    progress.set_phase(Phase::Copy, to_compose, bytes_to_compose);
    // Three stages overlap: rayon workers compose chunk k+1 (maps, zero tests, CRCs)
    // while the ordered writer thread writes chunk k and a flusher thread syncs what is
    // already written, so the device works during the copy instead of all at the final
    // sync (measured: dynamic→raw of 1 GiB on ext4, 0.25 s against 0.35 s with one sync at
    // the end). The chunk channel holds one chunk, so at most three chunks are alive at
    // once (composing, queued, writing): memory stays bounded. A failed sync is an error
    // of the operation (a later fsync may not report it again).
    let (tx, rx) = crossbeam_channel::bounded::<Vec<Composed>>(1);
    let (flush_tx, flush_rx) = crossbeam_channel::bounded::<()>(1);
    let (produced, written, flushed) = std::thread::scope(|s| {
        let pool = &pool;
        let tmp_path = &tmp_path;
        let flushing = s.spawn(move || -> Result<()> {
            for () in flush_rx {
                if progress.is_cancelled() {
                    continue; // the output is discarded: nothing to make durable
                }
                out.sync()
                    .map_err(|e| Error::file(tmp_path, "syncing the new file", e))?;
            }
            Ok(())
        });
        let writing = s.spawn(move || -> Result<(Writer<'_>, WriteStats)> {
            let mut writer = writer;
            let mut stats = WriteStats::default();
            let mut unsynced = 0u64;
            'chunks: for composed in rx {
                for c in composed {
                    // Cancelled: the output is discarded, so stop writing at once rather
                    // than finish the chunks already composed.
                    if progress.is_cancelled() {
                        break 'chunks;
                    }
                    // Every block composed goes to the writer: one with data is
                    // written; one of zeros is a hole (a device has it zeroed, with the
                    // blocks the metadata knew empty before it).
                    let cloned = writer.cloned();
                    writer.write_block(&c)?;
                    if c.data.is_some() {
                        stats.blocks_copied += 1;
                        stats.bytes_written += c.len;
                        // Cloned data leaves nothing in the page cache to sync. (The
                        // count falls when the file system refuses a clone asked for
                        // earlier, whose bytes are then copied: XFS without reflink.)
                        unsynced += c.len.saturating_sub(writer.cloned().saturating_sub(cloned));
                    }
                    progress.block_done(c.index, c.len);
                    pool.give(c.data);
                }
                // Ask for a sync of what is written so far once `sync_bytes` are
                // written (not per chunk: each sync of a growing file commits the
                // journal, which a sparse disk's empty chunks need not pay). The count of
                // syncs depends on the data only, not on timing, which fault injection
                // relies on. The writer waits only when the flusher is two requests
                // behind, which also bounds the dirty data in the page cache.
                if sync_bytes > 0 && unsynced >= sync_bytes {
                    unsynced = 0;
                    if flush_tx.send(()).is_err() {
                        break; // The flusher failed; its error is reported below.
                    }
                }
            }
            Ok((writer, stats))
        });
        let produced = (|| -> Result<Vec<(u64, Option<u32>)>> {
            let mut crcs = Vec::new();
            if opts.verify {
                crcs.reserve(to_compose as usize);
            }
            for chunk in chunks_ahead(disk, &runs, per_chunk, unit) {
                progress.check_cancelled()?;
                let composed =
                    compose_chunk(disk, size, &chunk, unit, pool, mask, offload.as_ref())?;
                if opts.verify {
                    crcs.extend(composed.par_iter().map(crc_of).collect::<Vec<_>>());
                }
                if tx.send(composed).is_err() {
                    // The writer stopped on an error; it reports it below.
                    break;
                }
            }
            Ok(crcs)
        })();
        drop(tx);
        let written = writing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let flushed = flushing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (produced, written, flushed)
    });
    flushed?;
    // The writer's error comes first: it is why the producer stopped early.
    let (mut writer, stats) = written?;
    let crcs = produced?;
    progress.check_cancelled()?;
    report.blocks_copied = stats.blocks_copied;
    // Every block not written reads as zeros: those composed as zeros, and those the
    // metadata knew to be empty (never composed).
    report.blocks_zero = blocks - stats.blocks_copied;
    report.bytes_written = stats.bytes_written;
    // The last clone asked for is issued first: if refused, its bytes were copied.
    writer.flush_clone()?;
    report.bytes_cloned = writer.cloned();
    writer.finish()?;
    if allocate_late && report.bytes_cloned == 0 {
        allocate_fixed()?;
    }
    clock.lap(&mut report, "copy");
    finish(
        new,
        (dst, size),
        report,
        clock,
        opts,
        progress,
        start,
        |new| verify(new, target, size, unit, &crcs, opts, progress),
    )
}

/// The end of a conversion once the data (`size` bytes of disk) is in `new`: sync,
/// `--verify` (`check`), the name `dst` given; the report completed.
#[allow(clippy::too_many_arguments)]
fn finish(
    new: NewFile,
    (dst, size): (&Path, u64),
    mut report: Report,
    mut clock: PhaseClock,
    opts: &OpsOptions,
    progress: &Progress,
    start: Instant,
    check: impl FnOnce(&NewFile) -> Result<()>,
) -> Result<Report> {
    progress.set_phase(Phase::Flush, 0, 0);
    new.sync()
        .map_err(|e| Error::file(new.shown_path(), "syncing the new file", e))?;
    clock.lap(&mut report, "flush");
    if opts.verify {
        progress.check_cancelled()?;
        check(&new)?;
        report.verified = true;
        clock.lap(&mut report, "verify");
    }
    progress.check_cancelled()?;
    let device = new.is_device();
    new.persist(dst)?;
    report.file_size_after = if device {
        size
    } else {
        std::fs::metadata(dst).map(|m| m.len()).unwrap_or(0)
    };
    report.elapsed = start.elapsed();
    Ok(report)
}

/// What the writer thread did.
#[derive(Default)]
struct WriteStats {
    blocks_copied: u64,
    bytes_written: u64,
}

/// How the unused ranges apply to the blocks of a result placed by `placement`: whole
/// blocks of a dynamic result, whole pages of a fixed or raw one (which [`Writer`]
/// leaves as holes).
pub(crate) fn mask_for<'a>(placement: &Placement, unused: &'a UnusedRanges) -> Mask<'a> {
    Mask {
        unused,
        grain: match placement.target() {
            Target::Dynamic => placement.unit(),
            Target::Fixed | Target::Raw => ZERO_PAGE as u64,
        },
    }
}

/// A composed block's index and the CRC32 of its bytes; `None`: it reads as zeros.
pub(super) fn crc_of(c: &Composed) -> (u64, Option<u32>) {
    let bytes = |d: &super::source::BlockData| {
        d.bytes()
            .expect("blocks are read when verifying")
            .to_owned()
    };
    (c.index, c.data.as_ref().map(|d| crc32fast::hash(&bytes(d))))
}

/// The CRC32 of `len` zero bytes.
fn zero_crc(len: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let zeros = [0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        h.update(&zeros[..n]);
        left -= n as u64;
    }
    h.finalize()
}

/// Reads the written file back block by block and compares each CRC32 with the
/// source's, in parallel: the blocks composed (`expected`, in index order; `None`
/// for those that read as zeros) and the blocks the new file stores (which must then
/// read as the source does). Every other block is empty in both — the source's
/// metadata and the new file's say so — and reads as zeros in both: the work follows
/// what was written, not the virtual size.
pub(super) fn verify(
    new: &NewFile,
    target: Target,
    size: u64,
    unit: u64,
    expected: &[(u64, Option<u32>)],
    opts: &OpsOptions,
    progress: &Progress,
) -> Result<()> {
    let open = OpenOptions {
        writable: false,
        ..OpenOptions::default()
    };
    // Through a second handle on the new file (it may have no name yet).
    let path = new.shown_path();
    let backend = std::sync::Arc::new(FileBackend::with_path(new.reopen()?, path));
    let file = match target {
        Target::Raw => crate::image::VhdFile::raw(path, backend, false)?,
        _ => crate::image::VhdFile::from_backend(path, backend, &open)?,
    };
    let disk = Disk::resolve(file, &open, &crate::image::FsResolver)?;
    // A device written in place keeps its size: the result is its first `size` bytes.
    let fits = match target {
        Target::Raw => disk.virtual_size() >= size,
        Target::Fixed | Target::Dynamic => disk.virtual_size() == size,
    };
    if !fits {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            structure: "footer",
            offset: 0,
            detail: format!(
                "verification failed: the new file's virtual size is {}, not {size}",
                disk.virtual_size()
            ),
        });
    }
    // The blocks composed and the blocks the new file stores, in order.
    let mut indexes: Vec<u64> = expected.iter().map(|&(i, _)| i).collect();
    indexes.extend(
        data_units(&disk, size, unit, None)
            .into_iter()
            .flatten()
            .filter(|i| expected.binary_search_by_key(i, |&(j, _)| j).is_err()),
    );
    indexes.sort_unstable();
    let runs: Vec<std::ops::Range<u64>> = indexes.iter().map(|&i| i..i + 1).collect();
    let (blocks, bytes) = units_and_bytes(&runs, unit, size);
    progress.set_phase(Phase::Verify, blocks, bytes);
    let per_chunk = (opts.chunk_bytes / unit).max(1) as usize;
    let pool = BufferPool::default();
    for chunk in indexes.chunks(per_chunk) {
        progress.check_cancelled()?;
        let bad = chunk
            .par_iter()
            .map(|&b| -> Result<Option<u64>> {
                let want = expected
                    .binary_search_by_key(&b, |&(j, _)| j)
                    .ok()
                    .and_then(|k| expected[k].1);
                let c = compose_copied(&disk, size, b, unit, &pool)?;
                let (_, got) = crc_of(&c);
                let ok = match (got, want) {
                    (None, None) => true,
                    (got, want) => {
                        got.unwrap_or_else(|| zero_crc(c.len))
                            == want.unwrap_or_else(|| zero_crc(c.len))
                    }
                };
                pool.give(c.data);
                Ok((!ok).then_some(b))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(b) = bad.into_iter().flatten().next() {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                structure: "written data",
                offset: b * unit,
                detail: format!("verification failed: block {b} reads back with a different CRC32 than the source"),
            });
        }
        for &b in chunk {
            progress.block_done(b, unit.min(size - b * unit));
        }
    }
    Ok(())
}
