//! Releasing payload blocks of a VHDX file in place and shortening it (`compact`). The
//! order (`docs/crash-safety.md`, "VHDX compact"):
//!
//! 1. **New file write GUID** (the first change since opening); `fsync`. The data write
//!    GUID is kept: a released block reads as it did (zeros in a file without a parent,
//!    the parent's bytes in a differencing file), so children stay linked.
//! 2. **Log entry**: the BAT pages setting the released blocks not present, and the
//!    sector-bitmap pages clearing a released partially present block's bits (a block
//!    allocated there later starts from an empty bitmap); `fsync`. **Apply** in place;
//!    `fsync`.
//! 3. **Close the log**: a header with the log GUID cleared; `fsync`. Only then:
//! 4. **Shorten**: the file cut after the last thing it holds (header section, log,
//!    regions, live payload and sector-bitmap blocks), rounded up to 1 MiB; `fsync`. No
//!    log entry names the longer file any more, so a replay never needs its tail.

use crate::error::{Error, Result};
use crate::vhdx::bat::{bitmap_bits, BatEntry, PAYLOAD_BLOCK_NOT_PRESENT};
use crate::vhdx::{PayloadState, SectorBitmapState, HEADER_SECTION_SIZE, MIB};

use super::super::container::Container;
use super::super::core::FileCore;
use super::write::{
    apply_bat, close_log, log_and_apply, metadata_pages, new_file_write_guid, set_bits, Changes,
};
use super::Vhdx;

/// Steps 1 and 2: `blocks` (fully or partially present) set not present.
pub(super) fn release(v: &Vhdx, f: &FileCore, blocks: &[u64]) -> Result<()> {
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
    new_file_write_guid(f, &mut st)?;
    log_and_apply(f, &mut st, &metadata_pages(v, &changes))?;
    drop(st);
    apply_bat(v, changes);
    Ok(())
}

/// Steps 3 and 4: the log closed, then the file cut after what it holds. Returns the
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
