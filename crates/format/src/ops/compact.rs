//! Compact: release the blocks that carry nothing — all-zero blocks of a dynamic disk,
//! blocks with an empty sector bitmap in a differencing disk — move the blocks stored
//! highest into the holes, and shorten the file. In place, no temporary file.
//!
//! Crash safety: **at every instant the image is valid and reads exactly as before.**
//! 1. Scan the allocated blocks in parallel (read-only).
//! 2. Release: mark those BAT entries unused, write the changed BAT sectors, fsync.
//!    Content is unchanged: an unused entry reads as zeros (dynamic) or as the parent
//!    (differencing), which is what the released blocks held.
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
use crate::image::Disk;
use crate::spec::DiskType;

use super::plan::{free_slots, plan_compact_with_holes};
use super::{is_zero, OpsOptions, PhaseClock, Report};

/// Refuses what cannot be compacted: fixed, host-drive and raw disks, and disks in a
/// saved state.
pub fn check_compactable(disk: &Disk) -> Result<()> {
    let top = disk.top();
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

/// Opens the disk at `path` for compaction (for writing, alone) and checks it can be
/// compacted: another process holding it is refused here, before any work.
pub fn open(path: &Path, opts: &OpsOptions) -> Result<Disk> {
    let open = opts.open.clone().writable(true).no_parents(true);
    let disk = Disk::open_with(path, &open)?;
    check_compactable(&disk)?;
    Ok(disk)
}

/// Compacts the dynamic or differencing disk at `path` in place: [`open`], then [`run`].
pub fn compact(path: &Path, opts: &OpsOptions, progress: &Progress) -> Result<Report> {
    run(open(path, opts)?, opts, progress)
}

/// Compacts a disk [`open`] opened.
pub fn run(disk: Disk, opts: &OpsOptions, progress: &Progress) -> Result<Report> {
    let start = Instant::now();
    let path = disk.top().path().to_owned();
    let path = path.as_path();
    let f = disk.top();
    let crate::image::sparse::SparseGeometry {
        bitmap_size,
        block_size,
        metadata,
    } = f.sparse_geometry().expect("checked by check_compactable");
    let bat = f.bat().expect("sparse disks have a BAT");
    let stride = bitmap_size + block_size;
    let differencing = f.footer().disk_type == DiskType::Differencing;
    let file_size_before = f.file_len();
    let allocated: Vec<(u64, u64)> = bat.allocated().collect();
    let mut report = Report {
        operation: super::Operation::Compact,
        path: path.to_owned(),
        blocks_total: allocated.len() as u64,
        file_size_before,
        ..Report::default()
    };

    // 1. Scan. Phases are weighted by the bytes each reads and writes: the scan reads
    // every block; each move reads and writes one, at most every block moves; the
    // verification reads every live block twice. Planned here with those upper bounds,
    // and again with the real numbers once the scan knows them (the percentage then
    // jumps ahead; it never stalls while most of the work remains).
    let mut clock = PhaseClock::start();
    let scan_bytes = allocated.len() as u64 * block_size;
    let upper = allocated.len() as u64 * stride;
    progress.plan_phases(&[
        (
            Phase::Scan,
            scan_bytes + if opts.verify { upper } else { 0 },
        ),
        (Phase::Move, upper * 2),
        (Phase::Verify, if opts.verify { upper } else { 0 }),
    ]);
    progress.set_phase(
        Phase::Scan,
        allocated.len() as u64,
        allocated.len() as u64 * block_size,
    );
    let per_chunk = (opts.chunk_bytes / block_size).max(1) as usize;
    let mut releasable = Vec::new();
    for chunk in allocated.chunks(per_chunk) {
        progress.check_cancelled()?;
        let found: Vec<Option<u64>> = chunk
            .par_iter()
            .map(|&(block, _)| -> Result<Option<u64>> {
                let empty = block_is_empty(f, block, block_size, differencing)?;
                Ok(empty.then_some(block))
            })
            .collect::<Result<_>>()?;
        releasable.extend(found.into_iter().flatten());
        for &(block, _) in chunk {
            progress.block_done(block, block_size);
        }
    }
    report.blocks_zero = releasable.len() as u64;

    let metadata_end = metadata.iter().map(|&(_, e)| e).max().unwrap_or(0);
    let holes = free_slots(&bat, stride, bitmap_size, &metadata, metadata_end);
    let plan = plan_compact_with_holes(&bat, &releasable, &holes, stride, metadata_end);

    // With --verify: CRC32 of every live block's bitmap and data before anything moves.
    let live: Vec<(u64, u64)> = plan
        .new_bat
        .allocated()
        .map(|(b, _)| (b, bat.block_offset(b).unwrap_or(0)))
        .collect();
    let before = if opts.verify {
        Some(block_crcs(f, &live, stride, per_chunk, None)?)
    } else {
        None
    };

    clock.lap(&mut report, "scan");
    let verify_bytes = if opts.verify {
        live.len() as u64 * stride
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
    let per_batch = (opts.chunk_bytes / stride).max(1) as usize;
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
    if let Some(before) = before {
        progress.set_phase(Phase::Verify, live.len() as u64, live.len() as u64 * stride);
        let now: Vec<(u64, u64)> = live
            .iter()
            .map(|&(b, _)| (b, f.bat().and_then(|t| t.block_offset(b)).unwrap_or(0)))
            .collect();
        let after = block_crcs(f, &now, stride, per_chunk, Some(progress))?;
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
        report.verified = true;
        clock.lap(&mut report, "verify");
    }
    report.file_size_after = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| Error::file(path, "reading the size", e))?;
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Whether a block carries nothing: an empty bitmap, or (dynamic disks) only zeros in
/// its marked sectors.
fn block_is_empty(f: &VhdFile, block: u64, block_size: u64, differencing: bool) -> Result<bool> {
    let start = block * block_size;
    let len = block_size.min(f.virtual_size().saturating_sub(start));
    let extents = f.extents(start, len)?;
    let mut buf = Vec::new();
    for e in extents {
        if let LayerExtent::Data { file_offset, len } = e {
            if differencing {
                return Ok(false);
            }
            buf.resize(len as usize, 0);
            f.read_data_mapped(&mut buf, file_offset)?;
            if !is_zero(&buf) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// CRC32 of each (block, offset)'s bitmap and data, computed in parallel.
/// CRC32 of each (block, offset)'s bitmap and data, computed in parallel a chunk at a
/// time; each chunk is a cancellation point and, with `progress`, counts as done.
fn block_crcs(
    f: &VhdFile,
    blocks: &[(u64, u64)],
    stride: u64,
    per_chunk: usize,
    progress: Option<&Progress>,
) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(blocks.len());
    for chunk in blocks.chunks(per_chunk.max(1)) {
        if let Some(p) = progress {
            p.check_cancelled()?;
        }
        let crcs: Vec<u32> = chunk
            .par_iter()
            .map(|&(_, off)| {
                let mut buf = vec![0u8; stride as usize];
                f.read_data_mapped(&mut buf, off)?;
                Ok(crc32fast::hash(&buf))
            })
            .collect::<Result<_>>()?;
        out.extend(crcs);
        if let Some(p) = progress {
            p.add_blocks_done(chunk.len() as u64, chunk.len() as u64 * stride);
        }
    }
    Ok(out)
}
