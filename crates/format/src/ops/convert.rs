//! Convert (and merge-to): the source's virtual content — any disk, a whole chain
//! flattened, a host drive or a raw image — into a new fixed, dynamic or raw file. With
//! [`OpsOptions::align`] the content is the source padded with zeros to the next
//! multiple of the alignment. Where each block goes and how long the file ends up is
//! `Placement`'s, which [`super::measure()`] runs without writing.
//!
//! With [`OpsOptions::unused_ranges`] (file-system-aware conversion) the blocks of a
//! dynamic result and the 4 KiB pages of a raw result that no file system uses at all
//! are composed as zeros — not allocated, holes — and so are never read; a block or page
//! of which any byte is used is copied as it is.
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
use crate::image::NewFile;
use crate::image::{Disk, OpenOptions};
use crate::spec::{Bat, DiskType, Footer, BAT_ENTRY_UNUSED, SECTOR_SIZE};

use super::is_zero;
use super::source::{compose_chunk, compose_copied, BlockData, BufferPool, Composed, Mask};
use super::unused::{self, UnusedRanges};
use super::{OpsOptions, PhaseClock, Report, Target};
use crate::spec::layout::NewSparse;

/// A footer's length, as a file offset.
const FOOTER_SIZE: u64 = crate::spec::FOOTER_SIZE as u64;

/// Pages of fixed and raw outputs that are all zero stay holes, at this granularity.
const ZERO_PAGE: usize = 4096;

/// Unit of work of fixed and raw outputs (their "blocks"): 2 MiB.
const FLAT_UNIT: u64 = 2 << 20;

/// Checks, before any work, that `disk` can become a `target`: it is not empty, it is a
/// whole number of sectors, the alignment asked for is valid, and a dynamic result's
/// block size and size are valid. Returns the virtual size of the result: the source's,
/// rounded up to [`OpsOptions::align`] when asked (the padding reads as zeros).
pub(crate) fn check_target(disk: &Disk, target: Target, opts: &OpsOptions) -> Result<u64> {
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
    let size = check_target(disk, target, opts)?;
    // The unused ranges, when asked (a scan of the source, which is only read).
    let mut clock = PhaseClock::start();
    let unused = unused::resolve(opts.unused_ranges.as_ref(), disk, progress)?;
    // The destination is checked again as it is opened (the task may start long after
    // it was created); a block device must hold the whole raw result.
    check_output(disk, dst, target, opts, size)?;
    let new = NewFile::create(dst, &opts.output, Some(disk), size)?;
    let tmp_path = new.shown_path().to_owned();
    let out = &new.backend;
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
    let offload = offload_device(out.file()).filter(|_| device.is_none());
    let allocate_late = allocate && offload.is_some();
    let allocate_fixed = || {
        crate::image::newfile::allocate(out.file(), size + FOOTER_SIZE)
            .map_err(|e| Error::file(dst, "allocating the fixed disk", e))
    };
    if allocate && !allocate_late {
        allocate_fixed()?;
    }
    // Where each block goes and how long the file ends up: the same arithmetic
    // `measure` runs without writing.
    let placement = Placement::new(target, size, opts.block_size)?;
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
    let writer = Writer::new(placement, out, offload, device, &tmp_path);
    // A character device has nothing to make durable (and refuses `fdatasync`): no
    // background syncs.
    let sync_bytes = if device == Some(false) {
        0
    } else {
        opts.sync_bytes
    };
    let per_chunk = (opts.chunk_bytes / unit).max(1);
    let pool = BufferPool::default();
    // The copy reads and writes the disk once; a verification reads both again.
    progress.plan_phases(&[
        (Phase::Copy, size),
        (Phase::Verify, if opts.verify { size } else { 0 }),
    ]);
    progress.set_phase(Phase::Copy, blocks, size);
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
                    match &c.data {
                        Some(d) => {
                            let cloned = writer.cloned.get();
                            writer.write_block(c.index, d)?;
                            stats.blocks_copied += 1;
                            stats.bytes_written += c.len;
                            // Cloned data leaves nothing in the page cache to sync.
                            unsynced += c.len.saturating_sub(writer.cloned.get() - cloned);
                        }
                        None => {
                            writer.write_zero_block(c.index, c.len)?;
                            stats.blocks_zero += 1;
                        }
                    }
                    if c.wholly_unused() {
                        stats.blocks_unused += 1;
                    }
                    for r in &c.masked {
                        stats.bytes_unused += r.end - r.start;
                        match stats.unused.last_mut() {
                            Some(last) if last.end == r.start => last.end = r.end,
                            _ => stats.unused.push(r.clone()),
                        }
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
        let produced = (|| -> Result<Vec<u32>> {
            let mut crcs = Vec::new();
            if opts.verify {
                crcs.reserve(blocks as usize);
            }
            let mut first = 0;
            while first < blocks {
                progress.check_cancelled()?;
                let last = (first + per_chunk).min(blocks);
                let composed = compose_chunk(disk, size, first..last, unit, pool, mask)?;
                if opts.verify {
                    crcs.extend(composed.par_iter().map(crc_of).collect::<Vec<_>>());
                }
                if tx.send(composed).is_err() {
                    // The writer stopped on an error; it reports it below.
                    break;
                }
                first = last;
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
    let (writer, stats) = written?;
    let crcs = produced?;
    progress.check_cancelled()?;
    report.blocks_copied = stats.blocks_copied;
    report.blocks_zero = stats.blocks_zero;
    report.bytes_written = stats.bytes_written;
    report.bytes_cloned = writer.cloned.get();
    report.blocks_unused = stats.blocks_unused;
    report.bytes_unused = stats.bytes_unused;
    report.unused_released = stats.unused;
    writer.finish()?;
    if allocate_late && report.bytes_cloned == 0 {
        allocate_fixed()?;
    }
    clock.lap(&mut report, "copy");
    progress.set_phase(Phase::Flush, 0, 0);
    new.sync()
        .map_err(|e| Error::file(&tmp_path, "syncing the new file", e))?;
    clock.lap(&mut report, "flush");
    if opts.verify {
        progress.check_cancelled()?;
        verify(&new, target, unit, &crcs, opts, progress)?;
        report.verified = true;
        clock.lap(&mut report, "verify");
    }
    progress.check_cancelled()?;
    new.persist(dst)?;
    report.file_size_after = match device {
        Some(_) => size,
        None => std::fs::metadata(dst).map(|m| m.len()).unwrap_or(0),
    };
    report.elapsed = start.elapsed();
    Ok(report)
}

/// What the writer thread did.
#[derive(Default)]
struct WriteStats {
    blocks_copied: u64,
    blocks_zero: u64,
    bytes_written: u64,
    /// Blocks left out whole as unused.
    blocks_unused: u64,
    /// Bytes composed as zeros as unused, and their ranges (merged, in order).
    bytes_unused: u64,
    unused: Vec<std::ops::Range<u64>>,
}

/// How the unused ranges apply to the blocks of a result placed by `placement`: whole
/// blocks of a dynamic result, whole pages of a fixed or raw one (which [`Writer`]
/// leaves as holes).
pub(crate) fn mask_for<'a>(placement: &Placement, unused: &'a UnusedRanges) -> Mask<'a> {
    Mask {
        unused,
        grain: match placement.target {
            Target::Dynamic => placement.unit(),
            Target::Fixed | Target::Raw => ZERO_PAGE as u64,
        },
    }
}

fn crc_of(c: &Composed) -> u32 {
    let mut h = crc32fast::Hasher::new();
    match &c.data {
        Some(d) => h.update(d),
        None => {
            let zeros = [0u8; 64 * 1024];
            let mut left = c.len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                h.update(&zeros[..n]);
                left -= n as u64;
            }
        }
    }
    h.finalize()
}

/// Reads the written file back block by block and compares each CRC32 with the
/// source's, in parallel.
fn verify(
    new: &NewFile,
    target: Target,
    unit: u64,
    expected: &[u32],
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
    let blocks = expected.len() as u64;
    progress.set_phase(Phase::Verify, blocks, disk.virtual_size());
    let per_chunk = (opts.chunk_bytes / unit).max(1);
    let pool = BufferPool::default();
    let mut first = 0;
    while first < blocks {
        progress.check_cancelled()?;
        let last = (first + per_chunk).min(blocks);
        let bad = (first..last)
            .into_par_iter()
            .map(|b| -> Result<Option<u64>> {
                let c = compose_copied(&disk, b, unit, &pool)?;
                let ok = crc_of(&c) == expected[b as usize];
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
        for b in first..last {
            progress.block_done(b, unit);
        }
        first = last;
    }
    Ok(())
}

/// Where the blocks of a new file of kind `target` go and how long the file ends up:
/// the one piece of arithmetic that convert writes by and [`super::measure()`] counts by,
/// so that a measure is the length the conversion then writes. Blocks are the units
/// [`compose_chunk`] composes; only those holding data are placed, in index order.
pub(crate) struct Placement {
    target: Target,
    size: u64,
    /// A dynamic result: its layout (from [`NewSparse`], the one builder of the dynamic
    /// files vhdkit writes), the BAT being filled, where the next block goes.
    dynamic: Option<(NewSparse, Bat, u64)>,
}

/// Where [`Placement::place`] put a block.
pub(crate) struct Placed {
    /// The block's sector bitmap (dynamic results only).
    pub bitmap: Option<u64>,
    /// The block's data.
    pub data: u64,
}

impl Placement {
    /// The placement of a new file of `size` virtual bytes; `block_size` is a dynamic
    /// result's (validated by [`check_target`]).
    pub(crate) fn new(target: Target, size: u64, block_size: u32) -> Result<Placement> {
        let dynamic = match target {
            Target::Dynamic => {
                let new = NewSparse::new(size, block_size, None).map_err(Error::InvalidArgument)?;
                let bat = Bat::new_unused(new.header.max_table_entries);
                let next = new.first_block();
                Some((new, bat, next))
            }
            Target::Fixed | Target::Raw => None,
        };
        Ok(Placement {
            target,
            size,
            dynamic,
        })
    }

    /// Bytes of the virtual disk per block: a dynamic result's block size; fixed and raw
    /// results are composed in pieces of [`FLAT_UNIT`].
    pub(crate) fn unit(&self) -> u64 {
        match &self.dynamic {
            Some((new, _, _)) => new.layout.block_size,
            None => FLAT_UNIT,
        }
    }

    /// Blocks covering the virtual size (the last may be short).
    pub(crate) fn blocks(&self) -> u64 {
        self.size.div_ceil(self.unit())
    }

    /// Places block `index`, which holds data. Blocks arrive in index order. `path`
    /// names the file in an error.
    pub(crate) fn place(&mut self, index: u64, path: &Path) -> Result<Placed> {
        let Some((new, bat, next)) = self.dynamic.as_mut() else {
            return Ok(Placed {
                bitmap: None,
                data: index * FLAT_UNIT,
            });
        };
        let layout = &new.layout;
        let at = layout.place_block(*next);
        if at / SECTOR_SIZE >= u64::from(BAT_ENTRY_UNUSED) {
            return Err(Error::Unsupported {
                path: path.to_owned(),
                detail: "the file would grow past what a BAT entry addresses".into(),
            });
        }
        *next = at + layout.stride();
        bat.set(index, (at / SECTOR_SIZE) as u32);
        Ok(Placed {
            bitmap: Some(at),
            data: at + layout.bitmap_size,
        })
    }

    /// The length of the file holding the blocks placed so far, footer included.
    pub(crate) fn file_len(&self) -> u64 {
        match self.target {
            Target::Raw => self.size,
            Target::Fixed | Target::Dynamic => self.footer_at() + FOOTER_SIZE,
        }
    }

    /// Where the footer of a fixed or dynamic result goes: past the data of a fixed
    /// disk; past the last block and the metadata, on a sector, of a dynamic one.
    fn footer_at(&self) -> u64 {
        match &self.dynamic {
            Some((new, _, next)) => new.layout.data_end(*next),
            None => self.size,
        }
    }
}

/// Source and output offsets of cloned ranges are multiples of this (the block size of
/// the file systems that share extents; elsewhere the kernel copies instead).
const OFFLOAD_ALIGN: u64 = 4096;

/// The file system (`st_dev`) of `out` if it shares extents between files (XFS, btrfs):
/// the output of a conversion there may clone its source's data.
fn offload_device(out: &std::fs::File) -> Option<u64> {
    const XFS: u64 = 0x5846_5342;
    const BTRFS: u64 = 0x9123_683E;
    let fs = rustix::fs::fstatfs(out).ok()?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let kind = fs.f_type as u64;
    if kind != XFS && kind != BTRFS {
        return None;
    }
    out.metadata()
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
}

/// Errors with which the kernel refuses to clone a pair of files or ranges (nothing was
/// cloned): the writer copies the bytes itself from then on.
fn clone_refused(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    [
        Errno::XDEV,
        Errno::OPNOTSUPP,
        Errno::INVAL,
        Errno::NOTTY,
        Errno::NOSYS,
        Errno::BADF,
        Errno::PERM,
    ]
    .iter()
    .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

/// The ordered writer of a new file.
///
/// On a file system that shares extents between files (XFS with reflink, btrfs), data
/// that lies in a source file on the same file system at 4 KiB-aligned offsets in both
/// files is cloned, not copied (`FICLONERANGE`): no data moves and no space is used. Everything else is written through the
/// page cache, synced in the background as the copy goes.
struct Writer<'a> {
    placement: Placement,
    out: &'a FileBackend,
    /// Copy offload: the file system (`st_dev`) of an output that shares extents.
    /// `None` elsewhere, and from the first refusal of the kernel on.
    offload: std::cell::Cell<Option<u64>>,
    /// Bytes cloned so far.
    cloned: std::cell::Cell<u64>,
    /// The output is a device written in place (`Some(block)`): what a new file leaves
    /// as holes is zeroed.
    device: Option<bool>,
    path: &'a Path,
}

impl<'a> Writer<'a> {
    /// `offload`: the output's file system if it shares extents ([`offload_device`]).
    /// `device`: the output is a device written in place (`Some(block)`).
    fn new(
        placement: Placement,
        out: &'a FileBackend,
        offload: Option<u64>,
        device: Option<bool>,
        path: &'a Path,
    ) -> Writer<'a> {
        Writer {
            placement,
            out,
            offload: std::cell::Cell::new(offload),
            cloned: std::cell::Cell::new(0),
            device,
            path,
        }
    }

    /// Makes `len` bytes at `at` of a fixed or raw result read as zeros: a hole of a new
    /// file already does; a device is zeroed there.
    fn zero(&self, at: u64, len: u64) -> Result<()> {
        match self.device {
            None => Ok(()),
            Some(block) => {
                output::zero_range(self.out, at, len, block).map_err(self.io("writing zeros", at))
            }
        }
    }

    /// Block `index` (of `len` bytes) holds only zeros: nothing is written into a new
    /// file (a dynamic result leaves it unallocated, a fixed or raw one a hole); a device
    /// is zeroed there.
    fn write_zero_block(&self, index: u64, len: u64) -> Result<()> {
        if self.placement.dynamic.is_some() {
            return Ok(());
        }
        self.zero(index * FLAT_UNIT, len)
    }

    fn io(&self, doing: &'static str, at: u64) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |e| Error::io(self.path, doing, at, e)
    }

    /// Writes `range` of `data` at `at`: cloned from the source file where copy offload
    /// applies (mapped data on the output's extent-sharing file system, source and
    /// output offsets on 4 KiB), else as [`Writer::put`] does.
    fn put_data(
        &self,
        data: &BlockData,
        range: std::ops::Range<usize>,
        at: u64,
        doing: &'static str,
    ) -> Result<()> {
        if let (Some(dev), BlockData::Mapped { window, range: r }) = (self.offload.get(), data) {
            let from = r.start + range.start;
            if window.device() == dev
                && window.file_offset(from).is_multiple_of(OFFLOAD_ALIGN)
                && at.is_multiple_of(OFFLOAD_ALIGN)
            {
                let len = range.len() as u64;
                match self.out.clone_from(window, from, len, at) {
                    Ok(()) => {
                        self.cloned.set(self.cloned.get() + len);
                        return Ok(());
                    }
                    // Refused, nothing cloned: write it ourselves from now on.
                    Err(e) if clone_refused(&e) => self.offload.set(None),
                    Err(e) => return Err(Error::io(self.path, doing, at, e)),
                }
            }
        }
        self.put(&data[range], at, doing)
    }

    /// Writes `buf` at `at` through the page cache.
    fn put(&self, buf: &[u8], at: u64, doing: &'static str) -> Result<()> {
        self.out.write_all_at(buf, at).map_err(self.io(doing, at))
    }

    /// Writes a non-zero block. Blocks arrive in index order.
    fn write_block(&mut self, index: u64, data: &BlockData) -> Result<()> {
        let placed = self.placement.place(index, self.path)?;
        let Some(bitmap_at) = placed.bitmap else {
            // Fixed or raw: the output is a fresh sparse file: write only the pages that
            // hold data, leaving all-zero 4 KiB pages as holes (less to copy, flush and
            // store); a device is zeroed there instead, one run of pages at a time.
            let base = placed.data;
            let mut pages = data.chunks(ZERO_PAGE).enumerate().peekable();
            while let Some((i, page)) = pages.next() {
                let zero = is_zero(page);
                let start = i * ZERO_PAGE;
                let mut end = start + page.len();
                while let Some((_, next)) = pages.next_if(|(_, p)| is_zero(p) == zero) {
                    end += next.len();
                }
                let at = base + start as u64;
                if zero {
                    self.zero(at, (end - start) as u64)?;
                } else {
                    self.put_data(data, start..end, at, "writing disk data")?;
                }
            }
            return Ok(());
        };
        // Bitmap: fully set, as every real writer of dynamic disks does.
        let bitmap = vec![0xFFu8; (placed.data - bitmap_at) as usize];
        self.put(&bitmap, bitmap_at, "writing a block bitmap")?;
        self.put_data(data, 0..data.len(), placed.data, "writing a block")
    }

    /// Writes the metadata and footers: the file ends where the placement says.
    fn finish(self) -> Result<()> {
        let p = &self.placement;
        let end = p.footer_at();
        match (&p.dynamic, p.target) {
            // A device keeps its size; bytes past the result are left as they are.
            (_, Target::Raw) if self.device.is_some() => Ok(()),
            (_, Target::Raw) => self
                .out
                .set_len(p.file_len())
                .map_err(|e| Error::file(self.path, "setting the length", e)),
            (None, _) => {
                self.out
                    .set_len(end)
                    .map_err(|e| Error::file(self.path, "setting the length", e))?;
                let footer = Footer::new(DiskType::Fixed, p.size);
                self.out
                    .write_all_at(&footer.encode(), end)
                    .map_err(self.io("writing the footer", end))
            }
            (Some((new, bat, _)), _) => self
                .out
                .write_all_at(&new.metadata(Some(bat)), 0)
                .and_then(|_| self.out.write_all_at(&new.footer.encode(), end))
                .map_err(self.io("writing the metadata", 0)),
        }
    }
}
