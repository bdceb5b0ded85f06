//! Resizing a VHDX file in place: the virtual disk size item and the BAT entries the
//! new size adds (or drops) change together, through the log. The order
//! (`docs/crash-safety.md`, "VHDX resize"):
//!
//! 1. **New write GUIDs** (the first change since opening: the disk's size is part of
//!    what it shows); `fsync`.
//! 2. **Log entries**: the BAT pages the change touches (new entries not present;
//!    dropped entries cleared — only ever entries that read as nothing, see
//!    [`plan`]) first, then, in the last entry, the metadata page holding the virtual
//!    disk size; each entry synced, then applied in place and synced. Until the last
//!    entry lands the file has its old size, and the BAT pages written before it
//!    change nothing that size shows.
//! 3. **Close the log**: a header with the log GUID cleared; `fsync`.
//!
//! Grown only within the BAT region (the region is not moved); a fixed file (leave
//! blocks allocated) is not resized; a shrink is refused over stored blocks.

use crate::error::{Error, Result};
use crate::spec::layout::BatGrowth;
use crate::vhdx::bat::{BatEntry, BatGeometry, BAT_ENTRY_SIZE};
use crate::vhdx::log::LOG_SECTOR_SIZE;
use crate::vhdx::metadata::VIRTUAL_DISK_SIZE_GUID;
use crate::vhdx::PayloadState;

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

/// The geometry of the file at `new` bytes, refused when the format or the BAT region
/// does not allow it.
fn geometry(v: &Vhdx, f: &FileCore, new: u64) -> Result<BatGeometry> {
    let p = &v.metadata.file_parameters;
    let g = BatGeometry::new(
        new,
        p.block_size,
        v.metadata.logical_sector_size,
        p.has_parent,
    )
    .map_err(|e| Error::InvalidArgument(format!("{}: {e}", f.path.display())))?;
    let room = u64::from(v.regions.bat.length);
    if g.bat_bytes() > room {
        return Err(unsupported(
            f,
            format!(
                "growing this VHDX file to {new} bytes needs a BAT of {} bytes, and its BAT region holds {room}; moving the BAT region is not supported (convert it to a new VHDX of that size instead)",
                g.bat_bytes()
            ),
        ));
    }
    Ok(g)
}

/// What a resize to `new` bytes does (see the module's documentation).
pub(super) fn plan(v: &Vhdx, f: &FileCore, new: u64) -> Result<ResizePlan> {
    let old = v.metadata.virtual_size;
    if new == old {
        return Ok(ResizePlan::Nothing);
    }
    if v.metadata.file_parameters.leave_blocks_allocated {
        return Err(unsupported(
            f,
            "resizing a fixed VHDX file is not yet supported (dynamic and differencing ones are)"
                .into(),
        ));
    }
    geometry(v, f, new)?;
    if new > old {
        return Ok(ResizePlan::Grow(BatGrowth::InPlace));
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

/// Resizes to `new` bytes, in the order of the module's documentation.
pub(super) fn resize(v: &mut Vhdx, f: &mut FileCore, new: u64) -> Result<()> {
    let g = geometry(v, f, new)?;
    let old_entries = v.bat().geometry.entries;
    let mut changes = Changes::default();
    // Grown: every new entry, not present; shrunk: every dropped one cleared; and the
    // entries past the new size of the block the new size ends in (a shrink inside it).
    let bs = v.block_size();
    let lo = old_entries.min(g.entries);
    let hi = old_entries.max(g.entries);
    for i in lo..hi {
        changes.bat.insert(i, BatEntry::new(0, 0));
    }
    if new < v.metadata.virtual_size {
        // Payload entries of blocks at or past the new end (checked by `plan`).
        let first = new.div_ceil(bs);
        let bat = v.bat();
        for b in first..bat.geometry.data_blocks {
            if let Some(i) = bat.geometry.payload_index(b) {
                changes.bat.insert(i, BatEntry::new(0, 0));
            }
        }
    }
    let mut pages = bat_pages(v, &changes, g.entries);
    pages.extend(metadata_region_pages(v, f, |region, table| {
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
    })?);
    {
        let mut st = v.write_state();
        new_write_guids(f, &mut st)?;
        // The size page last: it lands in the last entry.
        log_and_apply(f, &mut st, &pages)?;
    }
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
    v.metadata.virtual_size = new;
    f.footer = resized_footer(&f.footer, new);
    Ok(())
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
