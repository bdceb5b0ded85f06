//! Writing into a VHDX file in place, with its metadata going through the log as the
//! format intends. The order (`docs/crash-safety.md`, "VHDX writes"):
//!
//! 1. **New write GUIDs** (the first write since opening): a header in the other slot
//!    with the next sequence number and new file write and data write GUIDs; `fsync`.
//! 2. **Data**: new payload blocks (and sector-bitmap blocks) are placed at the end of
//!    the file, 1 MiB aligned, the file grown to hold them (the new space reads as
//!    zeros); the runs' bytes written into their blocks; `fsync`. Nothing names the new
//!    blocks yet: a crash here leaves the old state.
//! 3. **Log session** (when metadata changes and no session is open): a header, next
//!    slot and sequence number, naming a new log GUID; `fsync`. Then the **log
//!    entry**: the 4 KiB pages of the BAT and of sector bitmaps that change, as
//!    one entry (a sequence of its own) at the log cursor; `fsync`. From here a replay
//!    gives the new state.
//! 4. **Apply**: the same pages written in place; `fsync`.
//! 5. **Flush** (`Disk::flush`, the end of every command): a header with the log GUID
//!    cleared, in the other slot, sequence + 1; `fsync`. A file closed this way opens
//!    read-only in qemu-img; a crash before it leaves a log vhdkit replays (and
//!    qemu-img `check -r all`).
//!
//! Overwrites of data already in the file (fully present blocks, a partially present
//! block's sectors) go straight to their place, as any disk's do.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::vhdx::bat::{
    bitmap_bits, set_bitmap_bits, BatEntry, PAYLOAD_BLOCK_FULLY_PRESENT,
    PAYLOAD_BLOCK_PARTIALLY_PRESENT, SB_BLOCK_PRESENT, SECTOR_BITMAP_BLOCK_SIZE,
};
use crate::vhdx::log::{LogCursor, LogWrite, LOG_SECTOR_SIZE};
use crate::vhdx::{CurrentHeader, PayloadState, SectorBitmapState, MIB};

use super::super::core::FileCore;
use super::open::corrupt;
use super::Vhdx;

/// Pages of metadata one log entry carries at most (a 1 MiB log holds 256 sectors).
const PAGES_PER_ENTRY: usize = 128;

/// What the write path keeps between calls.
#[derive(Debug)]
pub(crate) struct WriteState {
    /// The current header.
    header: CurrentHeader,
    /// The end of the file: where the next block goes (rounded up to 1 MiB there).
    pub file_end: u64,
    /// Where the next log entry goes.
    cursor: LogCursor,
    /// The log GUID of the open session (`None`: the header names no log).
    session: Option<Uuid>,
    /// Whether the data write GUID was changed since opening.
    guids_changed: bool,
    /// Whether the file write GUID was changed since opening (a metadata-only update).
    file_guid_changed: bool,
    /// The data write GUID the first data write gives the file, when planned (a merge
    /// names it in the child first: `parent_linkage2`); a random one otherwise.
    pub next_data_guid: Option<Uuid>,
}

impl WriteState {
    /// Whether the data write GUID was changed since opening.
    pub(crate) fn guids_changed(&self) -> bool {
        self.guids_changed
    }

    /// The state of a file just opened.
    pub(crate) fn new(header: &CurrentHeader, file_end: u64, log_length: u64) -> WriteState {
        WriteState {
            header: *header,
            file_end,
            cursor: LogCursor::new(log_length),
            session: None,
            guids_changed: false,
            file_guid_changed: false,
            next_data_guid: None,
        }
    }
}

/// Writes `header` into the slot after the current one, durably.
fn write_header(
    f: &FileCore,
    st: &mut WriteState,
    change: impl FnOnce(&mut crate::vhdx::Header),
) -> Result<()> {
    let mut h = st.header.header;
    change(&mut h);
    let (h, slot) = st.header.next(h).ok_or_else(|| {
        Error::corrupt(
            &f.path,
            "VHDX header",
            st.header.slot.offset() + 8,
            "the sequence number cannot grow",
        )
    })?;
    f.write(&h.encode(), slot.offset(), "writing the VHDX header")?;
    f.sync("syncing the VHDX header")?;
    st.header = CurrentHeader {
        header: h,
        slot,
        other_valid: true,
    };
    Ok(())
}

/// Opens a log session (step 1) unless one is open.
fn begin(f: &FileCore, st: &mut WriteState) -> Result<Uuid> {
    if let Some(g) = st.session {
        return Ok(g);
    }
    if st.header.header.log_length == 0 {
        return Err(Error::Unsupported {
            path: f.path.clone(),
            detail: "the VHDX file has no log, so its metadata cannot be updated safely".into(),
        });
    }
    let guid = Uuid::new_v4();
    write_header(f, st, |h| h.log_guid = guid)?;
    st.session = Some(guid);
    Ok(guid)
}

/// Before the first write since opening: new file write and data write GUIDs (MS-VHDX:
/// before the first change a reader could see), durably.
pub(super) fn new_write_guids(f: &FileCore, st: &mut WriteState) -> Result<()> {
    if st.guids_changed {
        return Ok(());
    }
    let data = st.next_data_guid.take().unwrap_or_else(Uuid::new_v4);
    write_header(f, st, |h| {
        h.file_write_guid = Uuid::new_v4();
        h.data_write_guid = data;
    })?;
    st.guids_changed = true;
    Ok(())
}

/// Before the first metadata-only update since opening (a parent locator rewritten):
/// a new file write GUID, the data write GUID kept (what the disk reads does not
/// change, so children made against it stay linked), durably.
pub(super) fn new_file_write_guid(f: &FileCore, st: &mut WriteState) -> Result<()> {
    if st.guids_changed || st.file_guid_changed {
        return Ok(());
    }
    write_header(f, st, |h| h.file_write_guid = Uuid::new_v4())?;
    st.file_guid_changed = true;
    Ok(())
}

/// The data write GUID the file has now (changed by the first data write).
pub(super) fn data_write_guid(st: &WriteState) -> Uuid {
    st.header.header.data_write_guid
}

/// Step 5: clears the header's log GUID when a session is open.
pub(super) fn close_log(v: &Vhdx, f: &FileCore) -> Result<()> {
    let mut st = v.write_state();
    f.sync("syncing")?;
    if st.session.is_none() {
        return Ok(());
    }
    write_header(f, &mut st, |h| h.log_guid = Uuid::nil())?;
    st.session = None;
    Ok(())
}

/// The metadata a batch of runs (or a release) changes.
#[derive(Default)]
pub(super) struct Changes {
    /// BAT index → new entry.
    pub bat: BTreeMap<u64, BatEntry>,
    /// File offset of a sector-bitmap page → its new bytes.
    pub pages: BTreeMap<u64, Vec<u8>>,
}

/// Writes sector-aligned `runs` (inside the disk) in the order of the module's
/// documentation.
pub(super) fn write_runs(v: &Vhdx, f: &FileCore, runs: &[(u64, &[u8])]) -> Result<()> {
    let mut st = v.write_state();
    let bs = v.block_size();
    let sector = u64::from(v.metadata.logical_sector_size);
    let differencing = v.metadata.file_parameters.has_parent;
    if differencing && sector > 512 {
        if let Some(&(o, d)) = runs
            .iter()
            .find(|(o, d)| !o.is_multiple_of(sector) || !(d.len() as u64).is_multiple_of(sector))
        {
            return Err(Error::Unsupported {
                path: f.path.clone(),
                detail: format!(
                    "a write at {o} of {} bytes is not aligned to the VHDX file's {sector}-byte logical sectors",
                    d.len()
                ),
            });
        }
    }
    let mut changes = Changes::default();
    let mut data: Vec<(u64, &[u8])> = Vec::new();
    let mut end = st.file_end;
    let mut alloc = |n: u64| -> u64 {
        let at = end.div_ceil(MIB) * MIB;
        end = at + n;
        at
    };
    {
        let bat = v.bat();
        let g = bat.geometry;
        let entry_of = |changes: &Changes, i: u64| {
            changes
                .bat
                .get(&i)
                .copied()
                .unwrap_or(bat.entries[i as usize])
        };
        for &(offset, bytes) in runs {
            let mut pos = offset;
            let mut rest = bytes;
            while !rest.is_empty() {
                let block = pos / bs;
                let in_block = pos % bs;
                let n = ((bs - in_block) as usize).min(rest.len());
                let (now, later) = rest.split_at(n);
                let index = g
                    .payload_index(block)
                    .expect("the write lies inside the disk");
                let e = entry_of(&changes, index);
                let state = PayloadState::from_bits(e.state());
                let at = match state {
                    Some(PayloadState::FullyPresent | PayloadState::PartiallyPresent) => {
                        e.file_offset()
                    }
                    _ => {
                        let at = alloc(bs);
                        // A differencing file's absent block keeps reading the parent
                        // outside what is written; a zero block (or any block of a
                        // file without a parent) reads zeros there, as the new space.
                        let partial = differencing && state != Some(PayloadState::Zero);
                        let s = if partial {
                            PAYLOAD_BLOCK_PARTIALLY_PRESENT
                        } else {
                            PAYLOAD_BLOCK_FULLY_PRESENT
                        };
                        changes.bat.insert(index, BatEntry::new(s, at));
                        at
                    }
                };
                let partial = PayloadState::from_bits(entry_of(&changes, index).state())
                    == Some(PayloadState::PartiallyPresent);
                if partial {
                    let (chunk, first_bit, _) = bitmap_bits(&g, block);
                    let sb = g.bitmap_index(chunk).expect("a differencing table has it");
                    let se = entry_of(&changes, sb);
                    let bitmap_at = match SectorBitmapState::from_bits(se.state()) {
                        Some(SectorBitmapState::Present) => se.file_offset(),
                        _ => {
                            let at = alloc(SECTOR_BITMAP_BLOCK_SIZE);
                            changes.bat.insert(sb, BatEntry::new(SB_BLOCK_PRESENT, at));
                            at
                        }
                    };
                    let first = first_bit + in_block / sector;
                    let count = (n as u64).div_ceil(sector);
                    if bitmap_at >= st.file_end {
                        // A bitmap block placed past the file's end now: it starts
                        // empty (it is not in the file to be read yet).
                        let page_bits = (LOG_SECTOR_SIZE * 8) as u64;
                        for page in first / page_bits..=(first + count - 1) / page_bits {
                            changes
                                .pages
                                .entry(bitmap_at + page * LOG_SECTOR_SIZE as u64)
                                .or_insert_with(|| vec![0u8; LOG_SECTOR_SIZE]);
                        }
                    }
                    set_bits(v, f, &mut changes, bitmap_at, first, count, true)?;
                }
                data.push((at + in_block, now));
                pos += n as u64;
                rest = later;
            }
        }
    }
    // Step 2: the data, durable before anything names it.
    new_write_guids(f, &mut st)?;
    if end > st.file_end {
        f.backend
            .set_len(end)
            .map_err(|e| Error::file(&f.path, "growing the VHDX file", e))?;
    }
    for (at, bytes) in &data {
        f.write(bytes, *at, "writing disk data")?;
    }
    f.sync("syncing disk data")?;
    st.file_end = end;
    if changes.bat.is_empty() && changes.pages.is_empty() {
        return Ok(());
    }
    // Steps 3 and 4: the metadata pages through the log, then in place.
    log_and_apply(f, &mut st, &metadata_pages(v, &changes))?;
    apply_bat(v, changes);
    Ok(())
}

/// The BAT entries of `changes`, into the in-memory table (once they are in the file).
pub(super) fn apply_bat(v: &Vhdx, changes: Changes) {
    let mut bat = v.bat.write().unwrap_or_else(|e| e.into_inner());
    for (i, e) in changes.bat {
        bat.entries[i as usize] = e;
    }
}

/// Steps 3 and 4 for `pages` (4 KiB-aligned file offsets and 4 KiB of bytes each):
/// a log session opened if none is, each group of pages as one log entry (synced),
/// then written in place (synced). A log entry replays whole or not at all.
pub(super) fn log_and_apply(
    f: &FileCore,
    st: &mut WriteState,
    pages: &[(u64, Vec<u8>)],
) -> Result<()> {
    if pages.is_empty() {
        return Ok(());
    }
    let guid = begin(f, st)?;
    let h = st.header.header;
    let end = st.file_end;
    for chunk in pages.chunks(PAGES_PER_ENTRY) {
        let writes: Vec<LogWrite> = chunk
            .iter()
            .map(|(offset, bytes)| LogWrite::Data {
                offset: *offset,
                bytes: bytes.clone(),
            })
            .collect();
        let placed = st
            .cursor
            .append(guid, end, end, &writes)
            .map_err(|e| corrupt(&f.path, e))?;
        for (at, r) in &placed.pieces {
            f.write(
                &placed.bytes[r.clone()],
                h.log_offset + at,
                "writing the VHDX log",
            )?;
        }
        f.sync("syncing the VHDX log")?;
        for (offset, bytes) in chunk {
            f.write(bytes, *offset, "writing VHDX metadata")?;
        }
        f.sync("syncing VHDX metadata")?;
    }
    Ok(())
}

/// Sets (`present`) or clears bits `first..first + count` of the sector bitmap at
/// `bitmap_at`, in the pages `changes` holds (read from the file the first time).
pub(super) fn set_bits(
    v: &Vhdx,
    f: &FileCore,
    changes: &mut Changes,
    bitmap_at: u64,
    first: u64,
    count: u64,
    present: bool,
) -> Result<()> {
    let page_bits = (LOG_SECTOR_SIZE * 8) as u64;
    let mut bit = first;
    let end = first + count;
    while bit < end {
        let page = bit / page_bits;
        let upto = ((page + 1) * page_bits).min(end);
        let at = bitmap_at + page * LOG_SECTOR_SIZE as u64;
        let b = match changes.pages.entry(at) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mut b = vec![0u8; LOG_SECTOR_SIZE];
                v.read_file(f, &mut b, at, "reading a VHDX sector bitmap")?;
                e.insert(b)
            }
        };
        set_bitmap_bits(b, bit - page * page_bits, upto - bit, present);
        bit = upto;
    }
    Ok(())
}

/// The 4 KiB pages (file offset, bytes) of the BAT and sector bitmaps `changes` makes.
pub(super) fn metadata_pages(v: &Vhdx, changes: &Changes) -> Vec<(u64, Vec<u8>)> {
    let bat = v.bat();
    let per_page = (LOG_SECTOR_SIZE / 8) as u64;
    let base = v.regions.bat.offset;
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut pages: Vec<u64> = changes.bat.keys().map(|i| i / per_page).collect();
    pages.dedup();
    for page in pages {
        let mut b = vec![0u8; LOG_SECTOR_SIZE];
        for k in 0..per_page {
            let i = page * per_page + k;
            let Some(e) = changes
                .bat
                .get(&i)
                .copied()
                .or_else(|| bat.entries.get(i as usize).copied())
            else {
                break;
            };
            let at = (k * 8) as usize;
            b[at..at + 8].copy_from_slice(&e.0.to_le_bytes());
        }
        out.push((base + page * LOG_SECTOR_SIZE as u64, b));
    }
    out.extend(changes.pages.iter().map(|(a, b)| (*a, b.clone())));
    out
}
