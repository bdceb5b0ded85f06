//! Compact of a VHDX file in place: the stored blocks that carry nothing — all zeros in
//! a file without a parent, an empty sector bitmap in a differencing file, and (dedupe,
//! on by default) a differencing file's blocks whose every stored sector holds what the
//! parent chain shows there — and (`--fs-aware`: [`OpsOptions::unused_ranges`]) the
//! blocks whose every byte no file system uses or holds zeros, are set not present
//! through the file's log; then the blocks stored last (payload and sector-bitmap
//! blocks) are moved into the holes below them, a batch at a time (copies synced
//! first, then their BAT entries through the log), the log closed, and the file cut
//! after the last thing it holds (`image/vhdx/compact.rs` has the write order). The
//! scan is the VHD compact's (`compact::classify`), the unused ranges its too
//! (`unused::resolve`).
//!
//! A cancel between two batches stops the moves: the log is closed and the file cut
//! after what it holds, valid and partly compacted; a rerun continues (its plan fills
//! the holes left).

use std::time::Instant;

use rayon::prelude::*;
use vhdkit_task::{Phase, Progress};

use crate::error::{Error, Result};
use crate::image::vhdx::Move;
use crate::image::{Disk, DiskKind, VhdFile};

use super::compact::{classify, record_found, view_crcs, Found};
use super::unused;
use super::{OpsOptions, PhaseClock, Report};

/// Refuses what cannot be compacted among VHDX files: fixed files (leave blocks
/// allocated).
pub(crate) fn check(top: &VhdFile) -> Result<()> {
    if top.kind() == DiskKind::Fixed {
        return Err(Error::WrongDiskType {
            path: top.path().to_owned(),
            found: top.kind().to_string(),
            expected: "compact needs a dynamic or differencing disk".into(),
        });
    }
    Ok(())
}

/// Compacts the VHDX file at the top of `disk` (opened by `compact::open`).
pub(crate) fn run(disk: Disk, opts: &OpsOptions, progress: &Progress) -> Result<Report> {
    let start = Instant::now();
    let f = disk.top();
    check(f)?;
    let v = f.vhdx().expect("the caller checked it is a VHDX file");
    let block_size = v.block_size();
    let differencing = f.is_differencing();
    let dedupe = opts.dedupe && differencing;
    if dedupe && disk.layers().len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "{}: comparing its blocks with the parent's needs the parent chain",
            f.path().display()
        )));
    }
    let allocated = v.allocated();
    let mut report = Report {
        operation: super::Operation::Compact,
        path: f.path().to_owned(),
        blocks_total: allocated.len() as u64,
        file_size_before: f.file_len(),
        dry_run: opts.dry_run,
        ..Report::default()
    };
    let mut clock = PhaseClock::start();
    // The unused ranges, when asked: scanned on the disk as opened (locked).
    let unused = unused::resolve(opts.unused_ranges.as_ref(), &disk, progress)?;
    if unused.is_some() {
        clock.lap(&mut report, "volumes");
    }
    let scan_per_block = if dedupe { 2 * block_size } else { block_size };
    let scan_bytes = allocated.len() as u64 * scan_per_block;
    let upper = allocated.len() as u64 * block_size;
    progress.plan_phases(&[(Phase::Scan, scan_bytes), (Phase::Move, 2 * upper)]);
    progress.set_phase(Phase::Scan, allocated.len() as u64, scan_bytes);
    let per_chunk = (opts.chunk_bytes / block_size).max(1) as usize;
    let (mut empty, mut same, mut unused_blocks) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in allocated.chunks(per_chunk) {
        progress.check_cancelled()?;
        let found: Vec<Found> = chunk
            .par_iter()
            .map(|&b| classify(&disk, b, block_size, dedupe, unused.as_deref()))
            .collect::<Result<_>>()?;
        for (&b, found) in chunk.iter().zip(found) {
            match found {
                Found::Empty => empty.push(b),
                Found::SameAsParent => same.push(b),
                Found::Unused | Found::FreeOrZero => unused_blocks.push(b),
                Found::Keep => {}
            }
            progress.block_done(b, scan_per_block);
        }
    }
    clock.lap(&mut report, "scan");
    record_found(
        &mut report,
        (&empty, &same, &unused_blocks),
        unused.as_deref(),
        block_size,
        f.virtual_size(),
    );
    report.blocks_released = (empty.len() + same.len() + unused_blocks.len()) as u64;
    // Blocks released as unused are not verified: they may read differently
    // afterwards (zeros, or the parent's), which is what was asked.
    let mut release = empty;
    release.extend_from_slice(&same);
    release.extend_from_slice(&unused_blocks);
    release.sort_unstable();
    // The moves, planned as if the release had landed (a dry run reports them).
    let plan = f.vhdx_plan_moves(&release);
    let move_bytes: u64 = plan.moves.iter().map(|m| m.len).sum();
    if opts.dry_run {
        report.blocks_moved = plan.moves.len() as u64;
        report.bytes_written = move_bytes;
        report.file_size_after = plan.end.min(report.file_size_before);
        report.elapsed = start.elapsed();
        return Ok(report);
    }
    // With --verify: the view of every block but those released as unused (through
    // the chain when it is open; a differencing file opened alone reads nothing of its
    // parent, so only what dedupe compared is checked), before and after.
    let mut checked: Vec<u64> = match differencing && disk.layers().len() < 2 {
        true => same.clone(),
        false => allocated
            .iter()
            .copied()
            .filter(|b| unused_blocks.binary_search(b).is_err())
            .collect(),
    };
    checked.sort_unstable();
    let before = match opts.verify {
        true => Some(view_crcs(
            &disk, &checked, block_size, per_chunk, progress, false,
        )?),
        false => None,
    };
    progress.check_cancelled()?;
    progress.plan_phases(&[(Phase::Scan, scan_bytes), (Phase::Move, 2 * move_bytes)]);
    progress.set_phase(Phase::Move, plan.moves.len() as u64, 2 * move_bytes);
    f.vhdx_release_blocks(&release)?;
    clock.lap(&mut report, "release");
    let cancelled = move_batches(f, &plan.moves, opts, progress, &mut report)?;
    clock.lap(&mut report, "move");
    progress.set_phase(Phase::Flush, 0, 0);
    report.file_size_after = f.vhdx_shorten()?;
    clock.lap(&mut report, "truncate");
    if cancelled {
        return Err(vhdkit_task::Cancelled.into());
    }
    if let Some(before) = before {
        let after = view_crcs(&disk, &checked, block_size, per_chunk, progress, false)?;
        if let Some(i) = (0..checked.len()).find(|&i| before[i] != after[i]) {
            return Err(Error::Corrupt {
                path: f.path().to_owned(),
                structure: "block",
                offset: checked[i] * block_size,
                detail: format!(
                    "verification failed: block {} reads with a different CRC32 after compaction",
                    checked[i]
                ),
            });
        }
        report.verified = true;
        clock.lap(&mut report, "verify");
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Moves the blocks of `moves` in batches of about a round of chunks (each batch costs
/// two syncs and one log entry); a batch never copies into a place one of its own blocks
/// leaves. Returns whether a cancel stopped it (after a whole batch).
fn move_batches(
    f: &VhdFile,
    moves: &[Move],
    opts: &OpsOptions,
    progress: &Progress,
    report: &mut Report,
) -> Result<bool> {
    let per_batch = opts
        .chunk_bytes
        .saturating_mul(super::IN_PLACE_ROUND_CHUNKS);
    let mut buf = Vec::new();
    let mut batch: Vec<Move> = Vec::new();
    let mut bytes = 0;
    let mut commit = |batch: &mut Vec<Move>, report: &mut Report| -> Result<()> {
        f.vhdx_move_blocks(batch, &mut buf)?;
        for m in batch.iter() {
            progress.add_blocks_done(1, 2 * m.len);
            report.blocks_moved += 1;
            report.bytes_written += m.len;
        }
        batch.clear();
        Ok(())
    };
    for m in moves {
        let overlaps = batch
            .iter()
            .any(|b| m.to < b.from + b.len && b.from < m.to + m.len);
        if !batch.is_empty() && (overlaps || bytes >= per_batch) {
            commit(&mut batch, report)?;
            bytes = 0;
            if progress.is_cancelled() {
                return Ok(true);
            }
        }
        batch.push(*m);
        bytes += m.len;
    }
    commit(&mut batch, report)?;
    Ok(progress.is_cancelled())
}
