//! Compact: release the blocks that carry nothing — all-zero blocks of a dynamic disk,
//! blocks with an empty sector bitmap in a differencing disk, (dedupe, on by default)
//! blocks of a differencing disk whose every stored sector holds what the parent chain
//! shows there, and (with [`OpsOptions::unused_ranges`]) blocks each byte of which no
//! file system uses or reads as it would without the block (zero; the parent's) — free
//! or zero — move the blocks stored highest into the holes, and shorten the file. In
//! place, no temporary file.
//!
//! Crash safety: **at every instant the image is valid and reads exactly as before.**
//! 1. Scan the allocated blocks in parallel (read-only). With dedupe, a differencing
//!    disk's blocks are compared, sector run by sector run, with the parent chain's view
//!    of the same range (the parents are opened read-only, under shared locks, so no
//!    vhdkit writer changes them meanwhile; the child is locked exclusively).
//! 2. Release: mark those BAT entries unused, write the changed BAT sectors, fsync.
//!    Content is unchanged: an unused entry reads as zeros (dynamic) or as the parent
//!    (differencing), which is what the released blocks held — for a deduplicated block
//!    the scan compared every sector it held with the parent's. The one exception is
//!    asked for: a block released because no file system uses any of its bytes then
//!    reads as zeros, or as the parent, instead of whatever free space held.
//! 3. Move, one block at a time: copy bitmap and data from the highest live block into
//!    the lowest free slot, fsync; point its BAT entry at the copy (one sector write),
//!    fsync. Until the BAT sector lands the old copy is the one in use, and it is never
//!    overwritten before then, so either location is valid.
//! 4. Write the footer just past the last live block, fsync (the old footer at the end
//!    of the file is still valid and identical), truncate after the new footer, fsync.
//!
//! Step 4 also runs right after the release and after each batch of moves whenever the
//! last live block is now lower, so the file does not keep an unreferenced tail (which
//! `check` reports as a leak) while the moves go on; a crash leaves one only between a
//! BAT update and the truncation that follows it.
//!
//! Unused ranges add nothing to this order: those blocks join step 2's list (found
//! without reading them), and [`OpsOptions::unused_ranges`]'s [`Unused::Scan`] runs
//! before step 1, on the disk opened for writing, so nothing changes the disk between
//! the scan of its file systems and the release. [`OpsOptions::dry_run`] stops after
//! step 1 and reports the plan.
//!
//! A cancel between steps or moves leaves a valid, partly compacted image, shortened to
//! its last live block. Running compact again continues: besides released blocks, its
//! plan fills the free slots between the metadata and the last live block
//! (`plan::free_slots`), which is where a run cut short — cancelled, or killed between a
//! copy and its BAT update — left its holes.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use vhdkit_task::{Phase, Progress};

use crate::error::{Error, Result};
use crate::image::file::{LayerExtent, VhdFile};
use crate::image::{Disk, FsResolver};
use crate::spec::DiskType;

use super::plan::{free_slots, plan_compact_with_holes};
use super::unused::{self, Unused, UnusedRanges};
use super::{is_zero, OpsOptions, PhaseClock, Report};

/// Refuses what cannot be compacted: fixed, host-drive and raw disks, and disks in a
/// saved state.
pub fn check_compactable(disk: &Disk) -> Result<()> {
    check_compactable_file(disk.top())
}

fn check_compactable_file(top: &VhdFile) -> Result<()> {
    if top.is_vhdx() {
        return Ok(());
    }
    if !top.footer().disk_type.is_sparse() || top.header().is_none() {
        return Err(Error::WrongDiskType {
            path: top.path().to_owned(),
            found: top.kind().to_string(),
            expected: "compact needs a dynamic or differencing disk".into(),
        });
    }
    if top.footer().saved_state != 0 {
        return Err(Error::WrongDiskType {
            path: top.path().to_owned(),
            found: "disk in a saved state".into(),
            expected: "compaction is not allowed while the saved-state flag is set".into(),
        });
    }
    Ok(())
}

/// Opens the disk at `path` for compaction (for writing; read-only for a
/// [`OpsOptions::dry_run`]) and checks it can be compacted: another process holding it
/// is refused here, before any work. A differencing disk is opened with its parent
/// chain (read-only) when [`OpsOptions::dedupe`] asks to compare its blocks with the
/// parents', or an [`Unused::Scan`] reads its virtual view; else alone. With
/// [`OpsOptions::unused_ranges`] (and not a dry run), a disk that other disks name as
/// their parent is refused unless [`OpsOptions::force`]: the blocks it releases then
/// read zeros (or its parent) through them instead of what they held.
pub fn open(path: impl AsRef<Path>, opts: &OpsOptions) -> Result<Disk> {
    let path = path.as_ref();
    let open = opts.open.clone().writable(!opts.dry_run);
    let top = VhdFile::open(path, &open)?;
    check_compactable_file(&top)?;
    if top.is_vhdx() {
        super::compact_vhdx::check(&top)?;
    }
    if opts.unused_ranges.is_some() && !opts.dry_run {
        let mut dependents = super::dependents::Dependents::new(opts);
        let effect = super::dependents::Effect::FreeSpace;
        dependents.look(path, top.footer().unique_id, effect, &[])?;
        dependents.refuse(path)?;
    }
    let with_parents = top.is_differencing() && (opts.dedupe || scans(opts));
    Disk::resolve(top, &open.no_parents(!with_parents), &FsResolver)
}

/// Whether the operation computes its unused ranges on the disk (which then needs its
/// whole chain to show its virtual view).
fn scans(opts: &OpsOptions) -> bool {
    matches!(opts.unused_ranges, Some(Unused::Scan(_)))
}

/// Compacts the dynamic or differencing disk at `path` in place: [`open`], then [`run`].
pub fn compact(path: impl AsRef<Path>, opts: &OpsOptions, progress: &Progress) -> Result<Report> {
    let path = path.as_ref();
    run(open(path, opts)?, opts, progress)
}

/// Compacts a disk [`open`] opened.
pub fn run(disk: Disk, opts: &OpsOptions, progress: &Progress) -> Result<Report> {
    let start = Instant::now();
    if disk.top().is_vhdx() {
        return super::compact_vhdx::run(disk, opts, progress);
    }
    let path = disk.top().path().to_owned();
    let path = path.as_path();
    check_compactable(&disk)?;
    let f = disk.top();
    let layout = f.sparse_layout().ok_or_else(|| not_sparse(f))?;
    let bat = f.bat().ok_or_else(|| not_sparse(f))?;
    let (block_size, stride) = (layout.block_size, layout.stride());
    let differencing = f.footer().disk_type == DiskType::Differencing;
    let dedupe = opts.dedupe && differencing;
    if dedupe && disk.layers().len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "{}: comparing its blocks with the parent's needs the parent chain: open it \
             with its parents (compact::open does), or turn dedupe off",
            path.display()
        )));
    }
    if differencing && scans(opts) && disk.layers().len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "{}: reading its file systems needs the parent chain (the disk's virtual \
             view): open it with its parents (compact::open does)",
            path.display()
        )));
    }
    if !opts.dry_run && !f.is_writable() {
        return Err(Error::InvalidArgument(format!(
            "{}: opened read-only: compaction writes into it (open it with \
             compact::open, or ask for a dry run)",
            path.display()
        )));
    }
    let file_size_before = f.file_len();
    let allocated: Vec<(u64, u64)> = bat.allocated().collect();
    let mut report = Report {
        operation: super::Operation::Compact,
        path: path.to_owned(),
        blocks_total: allocated.len() as u64,
        file_size_before,
        dry_run: opts.dry_run,
        ..Report::default()
    };

    // 0. The unused ranges, when asked: scanned on the disk as opened (locked).
    let mut clock = PhaseClock::start();
    let unused = unused::resolve(opts.unused_ranges.as_ref(), &disk, progress)?;
    if unused.is_some() {
        clock.lap(&mut report, "volumes");
    }

    // 1. Scan. Phases are weighted by the bytes each reads and writes: the scan reads
    // every block (and, to deduplicate, the parent chain's view of it: twice the
    // bytes); each move reads and writes one, at most every block moves; the
    // verification reads every live block twice, and the view of every deduplicated
    // block twice. Planned here with those upper bounds, and again with the real
    // numbers once the scan knows them (the percentage then jumps ahead; it never
    // stalls while most of the work remains).
    let scan_per_block = if dedupe { 2 * block_size } else { block_size };
    let scan_bytes = allocated.len() as u64 * scan_per_block;
    let upper = allocated.len() as u64 * stride;
    progress.plan_phases(&[
        (
            Phase::Scan,
            scan_bytes + if opts.verify { upper } else { 0 },
        ),
        (Phase::Move, upper * 2),
        (Phase::Verify, if opts.verify { upper } else { 0 }),
    ]);
    progress.set_phase(Phase::Scan, allocated.len() as u64, scan_bytes);
    let per_chunk = (opts.chunk_bytes / block_size).max(1) as usize;
    let mut empty = Vec::new();
    let mut same = Vec::new();
    let mut unused_blocks = Vec::new();
    let size = f.virtual_size();
    for chunk in allocated.chunks(per_chunk) {
        progress.check_cancelled()?;
        let found: Vec<Found> = chunk
            .par_iter()
            .map(|&(block, _)| classify(&disk, block, block_size, dedupe, unused.as_deref()))
            .collect::<Result<_>>()?;
        for (&(block, _), found) in chunk.iter().zip(found) {
            match found {
                Found::Keep => {}
                Found::Empty => empty.push(block),
                Found::SameAsParent => same.push(block),
                Found::Unused | Found::FreeOrZero => unused_blocks.push(block),
            }
            progress.block_done(block, scan_per_block);
        }
    }
    record_found(
        &mut report,
        (&empty, &same, &unused_blocks),
        unused.as_deref(),
        block_size,
        size,
    );
    let mut releasable = empty;
    releasable.extend_from_slice(&same);
    releasable.extend_from_slice(&unused_blocks);

    let holes = free_slots(&bat, &layout, layout.metadata_end());
    let plan = plan_compact_with_holes(&bat, &releasable, &holes, &layout);

    // With --verify: CRC32 of every live block's bitmap and data before anything moves,
    // and of the view (through the chain) of every block released as a copy of its
    // parent's data: after the release it reads from the parent, and must read the same.
    let live: Vec<(u64, u64)> = plan
        .new_bat
        .allocated()
        .map(|(b, _)| (b, bat.block_offset(b).unwrap_or(0)))
        .collect();
    if opts.dry_run {
        // What the run would do, from the same plan; nothing written.
        clock.lap(&mut report, "scan");
        report.blocks_released = plan.release.len() as u64;
        report.blocks_moved = plan.moves.len() as u64;
        report.bytes_written = plan.moves.len() as u64 * stride;
        let footer = crate::spec::FOOTER_SIZE as u64;
        report.file_size_after = if plan.new_footer_at + footer < file_size_before {
            plan.new_footer_at + footer
        } else {
            file_size_before
        };
        progress.check_cancelled()?;
        report.elapsed = start.elapsed();
        return Ok(report);
    }
    // Released blocks (unused ones included) are not in `live`: only the blocks still
    // in use are compared after the moves; a block released as unused may read
    // differently afterwards, which is what was asked.
    let before = if opts.verify {
        Some((
            block_crcs(f, &live, stride, per_chunk, progress, false)?,
            view_crcs(&disk, &same, block_size, per_chunk, progress, false)?,
        ))
    } else {
        None
    };

    clock.lap(&mut report, "scan");
    let verify_bytes = if opts.verify {
        live.len() as u64 * stride + same.len() as u64 * block_size
    } else {
        0
    };
    progress.plan_phases(&[
        (Phase::Scan, scan_bytes + verify_bytes),
        (Phase::Move, plan.moves.len() as u64 * stride * 2),
        (Phase::Verify, verify_bytes),
    ]);

    // 2. Release (the image layer's order: Xen's batmap bits, then the BAT entries).
    progress.check_cancelled()?;
    f.release_blocks(&plan.release)?;
    report.blocks_released = plan.release.len() as u64;
    // Released blocks at the end of the file: shorten it now rather than leave an
    // unreferenced tail (which `check` reports) for the whole of the moves.
    f.shorten()?;

    clock.lap(&mut report, "release");

    // 3. Move, in batches: copy a batch of blocks into free slots, fsync, then point
    //    their BAT entries at the copies, fsync (`VhdFile::move_blocks`). A batch never
    //    writes into a slot that one of its own blocks vacates: that slot is still
    //    referenced until the batch's BAT sectors are durable.
    progress.set_phase(
        Phase::Move,
        plan.moves.len() as u64,
        plan.moves.len() as u64 * stride,
    );
    // Each batch costs two syncs, so it moves a round of chunks (its only buffer).
    let per_batch = (opts
        .chunk_bytes
        .saturating_mul(super::IN_PLACE_ROUND_CHUNKS)
        / stride)
        .max(1) as usize;
    let mut buf = Vec::new();
    let mut batch: Vec<(u64, u64, u64)> = Vec::new();
    let mut vacated = std::collections::HashSet::new();
    let mut commit = |batch: &mut Vec<(u64, u64, u64)>| -> Result<()> {
        f.move_blocks(batch, &mut buf)?;
        // The vacated slots were the highest: shorten the file past them at once.
        f.shorten()?;
        for &(block, _, _) in batch.iter() {
            progress.block_done(block, stride);
        }
        batch.clear();
        Ok(())
    };
    // The BAT has changed: from here on a cancel still shortens the file (step 4).
    let mut cancelled = false;
    for m in &plan.moves {
        if vacated.contains(&m.to) || batch.len() >= per_batch {
            commit(&mut batch)?;
            vacated.clear();
            if progress.is_cancelled() {
                cancelled = true;
                break;
            }
        }
        vacated.insert(m.from);
        batch.push((m.block, m.from, m.to));
        report.blocks_moved += 1;
        report.bytes_written += stride;
    }
    if !cancelled {
        commit(&mut batch)?;
    }
    clock.lap(&mut report, "move");

    // 4. Footer past the last live block, then truncate.
    cancelled |= progress.is_cancelled();
    progress.set_phase(Phase::Flush, 0, 0);
    f.shorten()?;
    clock.lap(&mut report, "truncate");
    if cancelled {
        return Err(vhdkit_task::Cancelled.into());
    }
    if let Some((before, views_before)) = before {
        progress.set_phase(
            Phase::Verify,
            (live.len() + same.len()) as u64,
            verify_bytes,
        );
        let now: Vec<(u64, u64)> = live
            .iter()
            .map(|&(b, _)| (b, f.bat().and_then(|t| t.block_offset(b)).unwrap_or(0)))
            .collect();
        let after = block_crcs(f, &now, stride, per_chunk, progress, true)?;
        if let Some(i) = (0..before.len()).find(|&i| before[i] != after[i]) {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                structure: "block",
                offset: now[i].1,
                detail: format!(
                    "verification failed: block {} reads back with a different CRC32 after compaction",
                    now[i].0
                ),
            });
        }
        let views_after = view_crcs(&disk, &same, block_size, per_chunk, progress, true)?;
        if let Some(i) = (0..same.len()).find(|&i| views_before[i] != views_after[i]) {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                structure: "block",
                offset: same[i] * block_size,
                detail: format!(
                    "verification failed: block {}, released as a copy of the parent's data, \
                     reads with a different CRC32 through the parent",
                    same[i]
                ),
            });
        }
        report.verified = true;
        clock.lap(&mut report, "verify");
    }
    report.file_size_after = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::file(path, "reading the size", e))?;
    report.elapsed = start.elapsed();
    Ok(report)
}

fn not_sparse(f: &VhdFile) -> Error {
    Error::WrongDiskType {
        path: f.path().to_owned(),
        found: f.kind().to_string(),
        expected: "compact needs a dynamic or differencing disk".into(),
    }
}

/// What the scan found of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// It holds data: it stays.
    Keep,
    /// It carries nothing: an empty bitmap, or (dynamic disks) only zeros in its marked
    /// sectors.
    Empty,
    /// (Differencing disks, with dedupe.) Every sector it holds has the bytes the parent
    /// chain shows there.
    SameAsParent,
    /// Every byte of it lies in the unused ranges (not read).
    Unused,
    /// Every byte it stores is either in the unused ranges or what it would read as
    /// without the block (zero; a differencing disk's parent data), some of them only
    /// because they are unused.
    FreeOrZero,
}

/// Records what the scan found in `report`: the blocks all zero (or with an empty
/// bitmap), those equal to the parent chain's, those released as unused, and the unused
/// bytes of the last (all of a wholly unused one).
pub(super) fn record_found(
    report: &mut Report,
    (empty, same, unused_blocks): (&[u64], &[u64], &[u64]),
    unused: Option<&UnusedRanges>,
    block_size: u64,
    size: u64,
) {
    report.blocks_zero = empty.len() as u64;
    report.blocks_deduplicated = same.len() as u64;
    report.blocks_unused = unused_blocks.len() as u64;
    let released_unused = UnusedRanges::new(unused_blocks.iter().flat_map(|&b| {
        let span = block_span(b, block_size, size);
        unused.map(|u| u.within(&span)).unwrap_or_default()
    }));
    report.bytes_unused = released_unused.total_bytes();
    report.unused_released = released_unused.ranges().to_vec();
}

/// The virtual bytes of block `block`: `block_size` of them, the last block clipped to
/// the disk's `size`.
fn block_span(block: u64, block_size: u64, size: u64) -> std::ops::Range<u64> {
    let start = block.saturating_mul(block_size);
    start..start.saturating_add(block_size).min(size)
}

/// Bytes read and compared at a time within a block.
const COMPARE_STEP: u64 = 1 << 20;

/// Classifies a block of the top file of `disk`: a block whose every byte lies in
/// `unused` is [`Found::Unused`] without being read; with `dedupe` (a differencing disk
/// opened with its parents), its stored sectors are compared with the parent chain's
/// view of them. A block that only `unused` makes releasable — each stored byte is
/// either unused or what the block would read as without it (zero, or the parent's) —
/// is [`Found::FreeOrZero`].
pub(super) fn classify(
    disk: &Disk,
    block: u64,
    block_size: u64,
    dedupe: bool,
    unused: Option<&UnusedRanges>,
) -> Result<Found> {
    let f = disk.top();
    let differencing = f.is_differencing();
    let span = block_span(block, block_size, f.virtual_size());
    if unused.is_some_and(|u| u.covers(&span)) {
        return Ok(Found::Unused);
    }
    let free = unused.map(|u| u.within(&span)).unwrap_or_default();
    let start = span.start;
    let len = span.end.saturating_sub(span.start);
    let mut buf = Vec::new();
    let mut theirs = Vec::new();
    let mut any = false;
    // Whether every stored byte compared equal as it is (else only once the unused
    // bytes are left out of the comparison).
    let mut plain = true;
    let mut pos = start;
    for e in f.extents(start, len)? {
        if let LayerExtent::Data { file_offset, len } = e {
            any = true;
            let mut done = 0;
            while done < len {
                let n = COMPARE_STEP.min(len - done);
                let at = pos + done;
                let piece_free: Vec<std::ops::Range<u64>> = free
                    .iter()
                    .filter(|r| r.start < at + n && r.end > at)
                    .map(|r| r.start.max(at) - at..r.end.min(at + n) - at)
                    .collect();
                if differencing && !dedupe {
                    // Not compared with the parent: releasable only where unused.
                    let covered: u64 = piece_free.iter().map(|r| r.end - r.start).sum();
                    if covered < n {
                        return Ok(Found::Keep);
                    }
                    plain = false;
                    done += n;
                    continue;
                }
                buf.resize(n as usize, 0);
                f.read_data_mapped(&mut buf, file_offset + done)?;
                if differencing {
                    theirs.resize(n as usize, 0);
                    let parent = disk.parent_extents(at, n)?;
                    disk.read_extents_mapped(&parent, &mut theirs)?;
                }
                let same = |buf: &[u8], theirs: &[u8]| {
                    if differencing {
                        buf == theirs
                    } else {
                        is_zero(buf)
                    }
                };
                if !same(&buf, &theirs) {
                    if piece_free.is_empty() {
                        return Ok(Found::Keep);
                    }
                    // Free or zero (or, differencing, free or the parent's): the unused
                    // bytes do not count.
                    plain = false;
                    for r in &piece_free {
                        let (a, b) = (r.start as usize, r.end as usize);
                        buf[a..b].fill(0);
                        if differencing {
                            theirs[a..b].fill(0);
                        }
                    }
                    if !same(&buf, &theirs) {
                        return Ok(Found::Keep);
                    }
                }
                done += n;
            }
        }
        pos += e.len();
    }
    Ok(match (plain, any && differencing) {
        (false, _) => Found::FreeOrZero,
        (true, true) => Found::SameAsParent,
        (true, false) => Found::Empty,
    })
}

/// CRC32 of each (block, offset)'s bitmap and data, computed in parallel a chunk at a
/// time; each chunk is a cancellation point and, when `count`, counts as done.
fn block_crcs(
    f: &VhdFile,
    blocks: &[(u64, u64)],
    stride: u64,
    per_chunk: usize,
    progress: &Progress,
    count: bool,
) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(blocks.len());
    for chunk in blocks.chunks(per_chunk.max(1)) {
        progress.check_cancelled()?;
        let crcs: Vec<u32> = chunk
            .par_iter()
            .map(|&(_, off)| {
                let mut buf = vec![0u8; stride as usize];
                f.read_data_mapped(&mut buf, off)?;
                Ok(crc32fast::hash(&buf))
            })
            .collect::<Result<_>>()?;
        out.extend(crcs);
        if count {
            progress.add_blocks_done(chunk.len() as u64, chunk.len() as u64 * stride);
        }
    }
    Ok(out)
}

/// CRC32 of the virtual range of each block as the whole chain reads it (the disk's
/// view), in parallel a chunk at a time, like [`block_crcs`].
pub(super) fn view_crcs(
    disk: &Disk,
    blocks: &[u64],
    block_size: u64,
    per_chunk: usize,
    progress: &Progress,
    count: bool,
) -> Result<Vec<u32>> {
    let size = disk.virtual_size();
    let mut out = Vec::with_capacity(blocks.len());
    for chunk in blocks.chunks(per_chunk.max(1)) {
        progress.check_cancelled()?;
        let crcs: Vec<u32> = chunk
            .par_iter()
            .map(|&b| {
                let start = b * block_size;
                let len = block_size.min(size.saturating_sub(start));
                let mut hasher = crc32fast::Hasher::new();
                let mut buf = Vec::new();
                let mut done = 0;
                while done < len {
                    let n = COMPARE_STEP.min(len - done);
                    buf.resize(n as usize, 0);
                    disk.read_mapped(&mut buf, start + done)?;
                    hasher.update(&buf);
                    done += n;
                }
                Ok(hasher.finalize())
            })
            .collect::<Result<_>>()?;
        out.extend(crcs);
        if count {
            progress.add_blocks_done(chunk.len() as u64, chunk.len() as u64 * block_size);
        }
    }
    Ok(out)
}
