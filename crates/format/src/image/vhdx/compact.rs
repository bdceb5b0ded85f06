//! Releasing payload blocks of a VHDX file in place, moving the blocks stored last into
//! the holes, and shortening it (`compact`). The order (`docs/crash-safety.md`, "VHDX
//! compact"):
//!
//! 1. **New file write GUID** (the first change since opening); `fsync`. The data write
//!    GUID is kept: a released block reads as it did (zeros in a file without a parent,
//!    the parent's bytes in a differencing file), and a moved one reads the same bytes,
//!    so children stay linked.
//! 2. **Log entry**: the BAT pages setting the released blocks not present, and the
//!    sector-bitmap pages clearing a released partially present block's bits (a block
//!    allocated there later starts from an empty bitmap); `fsync`. **Apply** in place;
//!    `fsync`.
//! 3. **Move**, a batch at a time ([`plan_moves`], [`move_blocks`]): the payload and
//!    sector-bitmap blocks stored last copied into the lowest holes below them (space
//!    no BAT entry names), `fsync`; then one log entry with the BAT pages pointing
//!    them at their copies, `fsync`; applied in place, `fsync`. Until the entry is
//!    durable the old copies are the ones named; after it, the new ones, whose bytes
//!    were durable first. A vacated place is never a destination in the same run (every
//!    destination lies below the block it receives, every vacated place above), so no
//!    entry of the session — which a replay may apply again — writes where a copy went.
//! 4. **Close the log**: a header with the log GUID cleared; `fsync`. Only then:
//! 5. **Shorten**: the file cut after the last thing it holds (header section, log,
//!    regions, live payload and sector-bitmap blocks), rounded up to 1 MiB; `fsync`. No
//!    log entry names the longer file any more, so a replay never needs its tail.

use crate::error::{Error, Result};
use crate::vhdx::bat::{
    bitmap_bits, BatEntry, PAYLOAD_BLOCK_NOT_PRESENT, SECTOR_BITMAP_BLOCK_SIZE,
};
use crate::vhdx::{PayloadState, SectorBitmapState, HEADER_SECTION_SIZE, MIB};

use super::super::container::Container;
use super::super::core::{FileCore, CHUNK};
use super::write::{
    apply_bat, close_log, log_and_apply, metadata_pages, new_file_write_guid, new_write_guids,
    set_bits, Changes,
};
use super::Vhdx;

/// Steps 1 and 2: `blocks` (fully or partially present) set not present. `content`:
/// the blocks' bytes change (a discard: they read as zeros now, whatever they held),
/// so the data write GUID changes too; compact keeps it (what it releases reads as
/// before).
pub(super) fn release(v: &Vhdx, f: &FileCore, blocks: &[u64], content: bool) -> Result<()> {
    let mut changes = Changes::default();
    {
        let bat = v.bat();
        let g = bat.geometry;
        let per_block = v.block_size() / u64::from(v.metadata.logical_sector_size);
        for &b in blocks {
            let index = g.payload_index(b).ok_or_else(|| {
                Error::InvalidArgument(format!("{}: no block {b}", f.path.display()))
            })?;
            let state = PayloadState::from_bits(bat.entries[index as usize].state());
            if state == Some(PayloadState::PartiallyPresent) {
                let (chunk, first, _) = bitmap_bits(&g, b);
                if let Some((Some(SectorBitmapState::Present), at)) = bat.sector_bitmap(chunk) {
                    set_bits(v, f, &mut changes, at, first, per_block, false)?;
                }
            }
            changes
                .bat
                .insert(index, BatEntry::new(PAYLOAD_BLOCK_NOT_PRESENT, 0));
        }
    }
    if changes.bat.is_empty() {
        return Ok(());
    }
    let mut st = v.write_state();
    if content {
        new_write_guids(f, &mut st)?;
    } else {
        new_file_write_guid(f, &mut st)?;
    }
    log_and_apply(f, &mut st, &metadata_pages(v, &changes))?;
    drop(st);
    apply_bat(v, changes);
    Ok(())
}

/// One block to move: its BAT entry, where it is, where it goes, and its bytes (a
/// payload block's block size, a sector-bitmap block's 1 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Move {
    /// Index of its BAT entry.
    pub index: u64,
    /// Its file offset now.
    pub from: u64,
    /// Its file offset after the move (1 MiB aligned, below `from`).
    pub to: u64,
    /// Bytes it occupies.
    pub len: u64,
}

/// What compact's moves do: the moves, in order, and where the file ends after them
/// (1 MiB rounded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MovePlan {
    /// The moves, the block stored highest first.
    pub moves: Vec<Move>,
    /// The file's length once they are done and the file shortened.
    pub end: u64,
}

/// The moves that fill the holes of the file from its tail once the payload blocks
/// `released` are not stored any more: the stored blocks (payload and sector bitmap),
/// the highest first, each into the lowest 1 MiB-aligned hole below it that holds it,
/// until one finds none (the file then ends there). A hole is space inside the file
/// that neither the header section, the log, a region nor a stored block occupies.
pub(super) fn plan_moves(v: &Vhdx, released: &[u64]) -> MovePlan {
    let bs = v.block_size();
    let mut taken: Vec<(u64, u64)> = vec![(0, HEADER_SECTION_SIZE)];
    if v.areas.log.1 > v.areas.log.0 {
        taken.push(v.areas.log);
    }
    taken.extend(v.areas.regions.iter().map(|&(s, e, _)| (s, e)));
    // The end of what stays: the areas, then each block that does not move.
    let mut end = taken
        .iter()
        .map(|t| t.1)
        .max()
        .unwrap_or(HEADER_SECTION_SIZE);
    let mut pieces: Vec<(u64, u64, u64)> = Vec::new(); // (from, len, index)
    {
        let bat = v.bat();
        let g = bat.geometry;
        for b in 0..g.data_blocks {
            if released.binary_search(&b).is_ok() {
                continue;
            }
            if let (Some(p), Some(i)) = (bat.payload(b), g.payload_index(b)) {
                if let Some(at) = p.file_offset {
                    pieces.push((at, bs, i));
                }
            }
        }
        for chunk in 0..g.bitmap_blocks {
            if let (Some((Some(SectorBitmapState::Present), at)), Some(i)) =
                (bat.sector_bitmap(chunk), g.bitmap_index(chunk))
            {
                pieces.push((at, SECTOR_BITMAP_BLOCK_SIZE, i));
            }
        }
    }
    taken.extend(pieces.iter().map(|&(at, len, _)| (at, at + len)));
    taken.sort_unstable();
    let mut holes: Vec<(u64, u64)> = Vec::new();
    let mut cursor = 0u64;
    for &(s, e) in &taken {
        let (hs, he) = (cursor.div_ceil(MIB) * MIB, s / MIB * MIB);
        if he > hs {
            holes.push((hs, he));
        }
        cursor = cursor.max(e);
    }
    pieces.sort_unstable();
    let mut moves = Vec::new();
    let mut stays = pieces.len();
    // The lowest hole that may still hold a sector-bitmap block (1 MiB), and a payload
    // block: holes only shrink, so one skipped as too small never fits again, and the
    // plan costs a step per block and per hole.
    let mut lowest = [0usize; 2];
    for &(from, len, index) in pieces.iter().rev() {
        let k = usize::from(len != SECTOR_BITMAP_BLOCK_SIZE);
        while holes.get(lowest[k]).is_some_and(|h| h.1 - h.0 < len) {
            lowest[k] += 1;
        }
        let Some(h) = holes.get_mut(lowest[k]).filter(|h| h.0 + len <= from) else {
            break;
        };
        moves.push(Move {
            index,
            from,
            to: h.0,
            len,
        });
        end = end.max(h.0 + len);
        h.0 += len;
        stays -= 1;
    }
    for &(from, len, _) in &pieces[..stays] {
        end = end.max(from + len);
    }
    MovePlan {
        moves,
        end: end.div_ceil(MIB) * MIB,
    }
}

/// Step 3 for one batch: the blocks copied (`buf` the copy's buffer), `fsync`, then
/// their BAT entries pointed at the copies through the log. No destination may overlap
/// a block of the batch.
pub(super) fn move_blocks(v: &Vhdx, f: &FileCore, batch: &[Move], buf: &mut Vec<u8>) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut st = v.write_state();
    new_file_write_guid(f, &mut st)?;
    let mut changes = Changes::default();
    {
        let bat = v.bat();
        for m in batch {
            let e = bat.entries[m.index as usize];
            if e.file_offset() != m.from {
                return Err(Error::InvalidArgument(format!(
                    "{}: BAT entry {} is not at {:#x} any more",
                    f.path.display(),
                    m.index,
                    m.from
                )));
            }
            changes.bat.insert(m.index, BatEntry::new(e.state(), m.to));
        }
    }
    for m in batch {
        // The part stored (a file may end inside its last block: the rest reads zeros).
        let stored = m.len.min(st.file_end.saturating_sub(m.from));
        let mut done = 0;
        while done < m.len {
            let n = CHUNK.min(m.len - done);
            buf.resize(n as usize, 0);
            let have = stored.saturating_sub(done).min(n) as usize;
            v.read_file(
                f,
                &mut buf[..have],
                m.from + done,
                "reading a VHDX block to move",
            )?;
            buf[have..].fill(0);
            f.write(buf, m.to + done, "copying a VHDX block")?;
            done += n;
        }
    }
    f.sync("syncing the moved VHDX blocks")?;
    log_and_apply(f, &mut st, &metadata_pages(v, &changes))?;
    drop(st);
    apply_bat(v, changes);
    Ok(())
}

/// Steps 4 and 5: the log closed, then the file cut after what it holds. Returns the
/// file's length.
pub(super) fn shorten(v: &Vhdx, f: &FileCore) -> Result<u64> {
    close_log(v, f)?;
    let bs = v.block_size();
    let mut end = HEADER_SECTION_SIZE;
    for (at, len) in v.metadata_ranges() {
        end = end.max(at + len);
    }
    {
        let bat = v.bat();
        for b in v.allocated() {
            if let Some(at) = bat.payload(b).and_then(|p| p.file_offset) {
                end = end.max(at + bs);
            }
        }
    }
    let end = end.div_ceil(MIB) * MIB;
    let mut st = v.write_state();
    if end < st.file_end {
        f.backend
            .set_len(end)
            .map_err(|e| Error::file(&f.path, "shortening the VHDX file", e))?;
        f.sync("syncing the shortened VHDX file")?;
        st.file_end = end;
    }
    Ok(st.file_end)
}
