//! Releasing the whole payload blocks a range covers in a dynamic VHDX (`discard`: what
//! `vhdkit serve` does for NBD trim and write zeroes): they read as zeros afterwards and
//! their space goes back to the file system. The order (`docs/crash-safety.md`, "VHDX
//! discard"):
//!
//! 1. **New file and data write GUIDs** (the first change since opening: the disk's
//!    bytes change); `fsync`.
//! 2. **Log entry**: the BAT pages setting the blocks not present; `fsync`. **Apply** in
//!    place; `fsync`. Before the entry is durable the blocks read as they did, after it
//!    as zeros.
//! 3. **Holes** punched over their payload space, which no entry names any more (a
//!    crash before leaves that space allocated and unnamed, as compact finds it). New
//!    blocks are allocated at the end of the file, never in that space, until a compact
//!    moves blocks into it.
//!
//! A differencing VHDX releases nothing: a block not present there reads its parent's
//! bytes, which are not the guest's.

use crate::error::{Error, Result};
use crate::vhdx::PayloadState;

use super::super::allocation::covered_blocks;
use super::super::core::FileCore;
use super::super::DiskKind;
use super::Vhdx;

/// Releases the stored blocks that `offset..offset + len` covers entirely (the last,
/// shorter block of the disk counts when the range reaches the disk's end), when the
/// file is a dynamic VHDX; returns the bytes of the blocks released.
pub(super) fn discard(v: &Vhdx, f: &FileCore, offset: u64, len: u64) -> Result<u64> {
    if v.disk_kind() != DiskKind::Dynamic {
        return Ok(0);
    }
    let bs = v.block_size();
    let covered = covered_blocks(offset, len, v.metadata.virtual_size, bs);
    let mut blocks = Vec::new();
    let mut places = Vec::new();
    {
        let bat = v.bat();
        for b in covered {
            let Some(p) = bat.payload(b) else { continue };
            if matches!(
                p.state,
                Some(PayloadState::FullyPresent | PayloadState::PartiallyPresent)
            ) {
                blocks.push(b);
                places.extend(p.file_offset);
            }
        }
    }
    if blocks.is_empty() {
        return Ok(0);
    }
    super::compact::release(v, f, &blocks, true)?;
    for at in places {
        f.backend
            .punch(at, bs)
            .map_err(|e| Error::io(&f.path, "punching a hole over a released block", at, e))?;
    }
    Ok(blocks.len() as u64 * bs)
}
