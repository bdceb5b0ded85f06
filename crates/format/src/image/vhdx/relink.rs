//! Rewriting a differencing VHDX file's parent locator in place, through the log
//! (merge, merge --into, set-parent). The order (`docs/crash-safety.md`, "VHDX parent
//! locator"):
//!
//! 1. **New file write GUID** (the first change since opening): a header in the other
//!    slot; `fsync`. The data write GUID is kept: what the file reads does not change,
//!    so disks made against it stay linked.
//! 2. **Log entry**: every 4 KiB page of the metadata region that changes — the new
//!    item (over the old one when it fits there, else after the last item) and the
//!    table page whose entry gives its offset and length — as one entry; `fsync`. An
//!    entry replays whole or not at all: the file names its old parent or its new one.
//! 3. **Apply** the pages in place; `fsync`.
//! 4. **Close the log**: a header with the log GUID cleared; `fsync`.

use crate::error::{Error, Result};
use crate::vhdx::metadata::{
    RawMetadataEntry, RawMetadataTable, METADATA_ENTRY_SIZE, METADATA_HEADER_SIZE,
    PARENT_LOCATOR_GUID,
};
use crate::vhdx::ParentLocator;

use super::super::core::FileCore;
use super::open::corrupt;
use super::write::{close_log, log_and_apply, new_file_write_guid};
use super::Vhdx;

/// A 4 KiB page: the unit of the log.
const PAGE: usize = crate::vhdx::log::LOG_SECTOR_SIZE;

/// The 4 KiB pages (file offset, bytes) of the metadata region that `edit` changes:
/// the region read (as replayed), its table decoded, `edit` given both to change a
/// copy.
pub(super) fn metadata_region_pages(
    v: &Vhdx,
    f: &FileCore,
    edit: impl FnOnce(&mut [u8], &RawMetadataTable) -> Result<()>,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let region = v.regions.metadata;
    let len = region.length as usize;
    let mut old = vec![0u8; len];
    v.read_file(
        f,
        &mut old,
        region.offset,
        "reading the VHDX metadata region",
    )?;
    let table = RawMetadataTable::decode(&old, region.offset).map_err(|e| corrupt(&f.path, e))?;
    let mut new = old.clone();
    edit(&mut new, &table)?;
    Ok((0..len)
        .step_by(PAGE)
        .filter(|&p| new[p..p + PAGE] != old[p..p + PAGE])
        .map(|p| (region.offset + p as u64, new[p..p + PAGE].to_vec()))
        .collect())
}

/// The table entry of item `id`, and its index.
pub(super) fn find_item(
    f: &FileCore,
    v: &Vhdx,
    table: &RawMetadataTable,
    id: uuid::Uuid,
    what: &str,
) -> Result<(usize, RawMetadataEntry)> {
    table
        .entries
        .iter()
        .copied()
        .enumerate()
        .find(|(_, e)| e.item_id == id)
        .ok_or_else(|| {
            Error::corrupt(
                &f.path,
                "VHDX metadata table",
                v.regions.metadata.offset,
                format!("no {what} item"),
            )
        })
}

/// Replaces the parent locator of differencing file `v` by `loc`, in the order of the
/// module's documentation.
pub(super) fn rewrite_parent_locator(v: &Vhdx, f: &FileCore, loc: &ParentLocator) -> Result<()> {
    let pages = metadata_region_pages(v, f, |new, table| {
        let len = new.len();
        let (index, entry) = find_item(f, v, table, PARENT_LOCATOR_GUID, "parent locator")?;
        let item = loc.encode();
        // Over the old item when it fits there, else after the last item.
        let at = if item.len() <= entry.length as usize {
            entry.offset as usize
        } else {
            table
                .entries
                .iter()
                .map(|e| e.offset as usize + e.length as usize)
                .max()
                .unwrap_or(0)
        };
        if at + item.len() > len {
            return Err(Error::Unsupported {
                path: f.path.clone(),
                detail: format!(
                    "the new parent locator ({} bytes) does not fit in the VHDX metadata region ({len} bytes)",
                    item.len()
                ),
            });
        }
        if at == entry.offset as usize {
            let old_end = (entry.offset as usize + entry.length as usize).min(len);
            new[at..old_end].fill(0);
        }
        new[at..at + item.len()].copy_from_slice(&item);
        let e = METADATA_HEADER_SIZE + index * METADATA_ENTRY_SIZE;
        new[e + 16..e + 20].copy_from_slice(&(at as u32).to_le_bytes());
        new[e + 20..e + 24].copy_from_slice(&(item.len() as u32).to_le_bytes());
        Ok(())
    })?;
    {
        let mut st = v.write_state();
        new_file_write_guid(f, &mut st)?;
        log_and_apply(f, &mut st, &pages)?;
    }
    close_log(v, f)
}
