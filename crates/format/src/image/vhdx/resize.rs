//! Resizing a VHDX file in place: the virtual disk size item and the BAT entries the
//! new size adds (or drops) change together, through the log. The order
//! (`docs/crash-safety.md`, "VHDX resize"):
//!
//! 1. **New write GUIDs** (the first change since opening: the disk's size is part of
//!    what it shows); `fsync`.
//! 2. **New space** (a grow): past everything the file holds, 1 MiB aligned — the new
//!    BAT region when the table outgrows its region (the old entries at the same
//!    indices, the new ones not present; a fixed file's new blocks fully present), then
//!    a fixed file's new payload blocks (reserved unless `--sparse`; they read as
//!    zeros). The bytes of the old last block past the old size are zeroed (they
//!    become disk space). `fsync`. Nothing the file names has changed yet.
//! 3. **Log entries**: with the BAT in place, the BAT pages the change touches (new
//!    entries; dropped entries cleared) first, then, in the last entry, the metadata
//!    page holding the virtual disk size; with the BAT moved, one entry: both region
//!    table copies (the BAT region's new offset and length) and the size page. Each
//!    entry synced, then applied in place and synced. Until the last entry lands the
//!    file has its old size (and its old BAT region).
//! 4. **Close the log**: a header with the log GUID cleared; `fsync`.
//! 5. **Shorten** (a fixed file shrunk): the file cut after the last block it keeps;
//!    `fsync`.
//!
//! A moved BAT leaves its old region behind, referenced by nothing (a later compact
//! does not reuse it either). A shrink of a dynamic or differencing file is refused
//! over blocks it stores; a fixed file's blocks past the new end are cut (as a fixed
//! VHD's data is), and every block it keeps stays allocated.

use crate::error::{Error, Result};
use crate::spec::layout::BatGrowth;
use crate::vhdx::bat::{BatEntry, BatGeometry, BAT_ENTRY_SIZE, PAYLOAD_BLOCK_FULLY_PRESENT};
use crate::vhdx::log::LOG_SECTOR_SIZE;
use crate::vhdx::metadata::VIRTUAL_DISK_SIZE_GUID;
use crate::vhdx::region::{REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE};
use crate::vhdx::{FileAreas, PayloadState, Region, SectorBitmapState, MIB};

use super::super::container::ResizePlan;
use super::super::core::{resized_footer, FileCore};
use super::relink::{find_item, metadata_region_pages};
use super::write::{close_log, log_and_apply, new_write_guids, Changes};
use super::Vhdx;

fn unsupported(f: &FileCore, detail: String) -> Error {
    Error::Unsupported {
        path: f.path.clone(),
        detail,
    }
}

/// The geometry of the file at `new` bytes, refused when the format does not allow it.
fn geometry(v: &Vhdx, f: &FileCore, new: u64) -> Result<BatGeometry> {
    let p = &v.metadata.file_parameters;
    BatGeometry::new(
        new,
        p.block_size,
        v.metadata.logical_sector_size,
        p.has_parent,
    )
    .map_err(|e| Error::InvalidArgument(format!("{}: {e}", f.path.display())))
}

/// Where a grow puts what it adds (step 2 of the module's documentation).
struct Growth {
    /// The new BAT region, when the table outgrows the one it has.
    bat: Option<Region>,
    /// A fixed file's new blocks: (block, file offset).
    blocks: Vec<(u64, u64)>,
    /// The file's length after.
    end: u64,
}

/// The layout of a grow to geometry `g` of a file whose end is `file_end`.
fn growth(v: &Vhdx, f: &FileCore, g: &BatGeometry, file_end: u64) -> Result<Growth> {
    let bat = v.bat();
    let bs = v.block_size();
    // Past everything the file holds: its length, its metadata, every block and sector
    // bitmap whole (a qemu-img fixed file ends inside its last block).
    let mut end = file_end.max(v.areas.metadata_end());
    for b in 0..bat.geometry.data_blocks {
        if let Some(at) = bat.payload(b).and_then(|p| p.file_offset) {
            end = end.max(at + bs);
        }
    }
    for c in 0..bat.geometry.bitmap_blocks {
        if let Some((Some(SectorBitmapState::Present), at)) = bat.sector_bitmap(c) {
            end = end.max(at + MIB);
        }
    }
    let mut end = end.div_ceil(MIB) * MIB;
    let region = v.regions.bat;
    let bat_region = if g.bat_bytes() > u64::from(region.length) {
        let length = u32::try_from(g.bat_bytes().div_ceil(MIB) * MIB).map_err(|_| {
            unsupported(
                f,
                format!(
                    "a BAT of {} bytes does not fit in a VHDX region (at most 4 GiB)",
                    g.bat_bytes()
                ),
            )
        })?;
        let r = Region {
            offset: end,
            length,
            required: region.required,
        };
        end = r.end();
        Some(r)
    } else {
        None
    };
    let mut blocks = Vec::new();
    if v.metadata.file_parameters.leave_blocks_allocated {
        for b in bat.geometry.data_blocks..g.data_blocks {
            blocks.push((b, end));
            end += bs;
        }
    }
    Ok(Growth {
        bat: bat_region,
        blocks,
        end,
    })
}

/// What a resize to `new` bytes does (see the module's documentation).
pub(super) fn plan(v: &Vhdx, f: &FileCore, new: u64) -> Result<ResizePlan> {
    let old = v.metadata.virtual_size;
    if new == old {
        return Ok(ResizePlan::Nothing);
    }
    let g = geometry(v, f, new)?;
    if new > old {
        let end = v.write_state().file_end;
        let grow = growth(v, f, &g, end)?;
        return Ok(ResizePlan::Grow(match grow.bat {
            Some(r) => BatGrowth::Relocate {
                table_offset: r.offset,
                footer_at: grow.end,
            },
            None => BatGrowth::InPlace,
        }));
    }
    if v.metadata.file_parameters.leave_blocks_allocated {
        // A fixed file: the blocks past the new end are cut, as a fixed VHD's data.
        return Ok(ResizePlan::Shrink);
    }
    // A shrink drops the entries of the blocks past the new size: only blocks that
    // read as nothing there (not present; in a file without a parent any state that
    // reads zeros) — the bytes a block holds past the new size would come back if it
    // grew again.
    let bat = v.bat();
    let bs = v.block_size();
    let first = new / bs;
    for b in first..bat.geometry.data_blocks {
        let state = bat.payload(b).and_then(|p| p.state);
        let nothing = match state {
            Some(PayloadState::NotPresent) => true,
            Some(PayloadState::FullyPresent | PayloadState::PartiallyPresent) | None => false,
            Some(_) => !v.metadata.file_parameters.has_parent,
        };
        if !nothing {
            return Err(unsupported(
                f,
                format!(
                    "shrinking this VHDX file to {new} bytes would cut block {b}, which it stores; only a shrink over blocks it does not store is supported"
                ),
            ));
        }
    }
    Ok(ResizePlan::Shrink)
}

/// Resizes to `new` bytes, in the order of the module's documentation; `sparse` leaves
/// a fixed file's new blocks unreserved. Returns the blocks a shrink cut.
pub(super) fn resize(v: &mut Vhdx, f: &mut FileCore, new: u64, sparse: bool) -> Result<u64> {
    let g = geometry(v, f, new)?;
    let old = v.metadata.virtual_size;
    let old_entries = v.bat().geometry.entries;
    let bs = v.block_size();
    let mut changes = Changes::default();
    // Grown: every new entry, not present; shrunk: every dropped one cleared.
    for i in old_entries.min(g.entries)..old_entries.max(g.entries) {
        changes.bat.insert(i, BatEntry::new(0, 0));
    }
    let mut cut = 0;
    if new < old {
        // Payload entries of blocks at or past the new end (a dynamic file's: checked
        // by `plan`; a fixed file's are cut).
        let first = new.div_ceil(bs);
        let bat = v.bat();
        for b in first..bat.geometry.data_blocks {
            if let Some(i) = bat.geometry.payload_index(b) {
                cut += u64::from(bat.payload(b).is_some_and(|p| p.file_offset.is_some()));
                changes.bat.insert(i, BatEntry::new(0, 0));
            }
        }
    }
    let mut st = v.write_state();
    new_write_guids(f, &mut st)?;
    let mut moved = None;
    if new > old {
        let grow = growth(v, f, &g, st.file_end)?;
        for &(b, at) in &grow.blocks {
            let i = g.payload_index(b).expect("a new block of the grown disk");
            changes
                .bat
                .insert(i, BatEntry::new(PAYLOAD_BLOCK_FULLY_PRESENT, at));
        }
        // Step 2: the new space, durable before anything names it.
        zero_last_block_tail(v, f, old, st.file_end)?;
        if grow.end > st.file_end {
            if !sparse && !grow.blocks.is_empty() {
                f.backend
                    .reserve(st.file_end, grow.end - st.file_end)
                    .map_err(|e| Error::io(&f.path, "reserving the new space", st.file_end, e))?;
            }
            f.backend
                .set_len(grow.end)
                .map_err(|e| Error::file(&f.path, "growing the VHDX file", e))?;
        }
        if let Some(r) = grow.bat {
            f.write(
                &new_table(v, &changes, &g, r),
                r.offset,
                "writing the VHDX BAT at its new place",
            )?;
            moved = Some(r);
        }
        f.sync("syncing the new space of the VHDX file")?;
        st.file_end = st.file_end.max(grow.end);
    }
    let size_pages = metadata_region_pages(v, f, |region, table| {
        let (_, e) = find_item(f, v, table, VIRTUAL_DISK_SIZE_GUID, "virtual disk size")?;
        let at = e.offset as usize;
        if e.length < 8 || at + 8 > region.len() {
            return Err(Error::corrupt(
                &f.path,
                "VHDX metadata",
                v.regions.metadata.offset + e.offset as u64,
                "the virtual disk size item is too short",
            ));
        }
        region[at..at + 8].copy_from_slice(&new.to_le_bytes());
        Ok(())
    })?;
    let mut pages = match moved {
        // The table in its new place already; the region tables switch to it.
        Some(r) => region_table_pages(v, f, r)?,
        None => bat_pages(v, &changes, g.entries),
    };
    // The size page last: it lands in the last entry (with the region tables: one).
    pages.extend(size_pages);
    log_and_apply(f, &mut st, &pages)?;
    drop(st);
    close_log(v, f)?;
    {
        let mut bat = v.bat.write().unwrap_or_else(|e| e.into_inner());
        bat.entries.resize(g.entries as usize, BatEntry::new(0, 0));
        for (i, e) in &changes.bat {
            if let Some(slot) = bat.entries.get_mut(*i as usize) {
                *slot = *e;
            }
        }
        bat.geometry = g;
    }
    if let Some(r) = moved {
        v.regions.bat = r;
        v.regions_agree = true;
        let len = v.write_state().file_end;
        v.areas = FileAreas::new(&v.header.header, &v.regions, len)
            .map_err(|e| super::open::corrupt(&f.path, e))?;
    }
    v.metadata.virtual_size = new;
    f.footer = resized_footer(&f.footer, new);
    if new < old && v.metadata.file_parameters.leave_blocks_allocated {
        // Step 5: the blocks cut are referenced by nothing now.
        v.shorten(f)?;
    }
    Ok(cut)
}

/// Zeroes the bytes of the block holding the old end `old` past it, when that block is
/// stored in the file (they become disk space when it grows); what lies past the
/// file's end (`len`) reads as zeros already.
fn zero_last_block_tail(v: &Vhdx, f: &FileCore, old: u64, len: u64) -> Result<()> {
    let bs = v.block_size();
    if old.is_multiple_of(bs) {
        return Ok(());
    }
    let at = v.bat().payload(old / bs).and_then(|p| {
        p.file_offset
            .filter(|_| p.state == Some(PayloadState::FullyPresent))
    });
    let Some(at) = at else {
        return Ok(());
    };
    let (start, end) = (at + old % bs, (at + bs).min(len));
    if start < end {
        f.zero_range(start, end, &mut |_| Ok(()))?;
    }
    Ok(())
}

/// The whole new BAT region `r`: the table as it will be (`g`), the rest zero.
fn new_table(v: &Vhdx, changes: &Changes, g: &BatGeometry, r: Region) -> Vec<u8> {
    let bat = v.bat();
    let mut b = vec![0u8; r.length as usize];
    for i in 0..g.entries {
        let e = changes
            .bat
            .get(&i)
            .copied()
            .or_else(|| bat.entries.get(i as usize).copied())
            .unwrap_or_default();
        let at = (i * BAT_ENTRY_SIZE) as usize;
        b[at..at + 8].copy_from_slice(&e.0.to_le_bytes());
    }
    b
}

/// The 4 KiB pages of both region table copies that naming `bat` as the BAT region
/// changes: the table in force with that one region changed, its checksum sealed,
/// written over each copy (a copy that differed is made the same).
fn region_table_pages(v: &Vhdx, f: &FileCore, bat: Region) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut table = v.regions.clone();
    table.bat = bat;
    let new = table.encode();
    let mut out = Vec::new();
    for at in [REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET] {
        let mut old = vec![0u8; REGION_TABLE_SIZE];
        v.read_file(f, &mut old, at, "reading a VHDX region table")?;
        for p in (0..REGION_TABLE_SIZE).step_by(LOG_SECTOR_SIZE) {
            let page = &new[p..p + LOG_SECTOR_SIZE];
            if page != &old[p..p + LOG_SECTOR_SIZE] {
                out.push((at + p as u64, page.to_vec()));
            }
        }
    }
    Ok(out)
}

/// The BAT pages `changes` touches, built from the table as it will be (`entries`
/// long; entries past it zero).
fn bat_pages(v: &Vhdx, changes: &Changes, entries: u64) -> Vec<(u64, Vec<u8>)> {
    let bat = v.bat();
    let per_page = LOG_SECTOR_SIZE as u64 / BAT_ENTRY_SIZE;
    let mut pages: Vec<u64> = changes.bat.keys().map(|i| i / per_page).collect();
    pages.dedup();
    pages
        .into_iter()
        .map(|page| {
            let mut b = vec![0u8; LOG_SECTOR_SIZE];
            for k in 0..per_page {
                let i = page * per_page + k;
                if i >= entries {
                    break;
                }
                let e = changes
                    .bat
                    .get(&i)
                    .copied()
                    .or_else(|| bat.entries.get(i as usize).copied())
                    .unwrap_or(BatEntry::new(0, 0));
                let at = (k * BAT_ENTRY_SIZE) as usize;
                b[at..at + 8].copy_from_slice(&e.0.to_le_bytes());
            }
            (v.regions.bat.offset + page * LOG_SECTOR_SIZE as u64, b)
        })
        .collect()
}
