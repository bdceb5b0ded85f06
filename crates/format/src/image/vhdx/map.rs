//! Where a VHDX file's virtual bytes live: each payload block's BAT state, and for a
//! partially present block of a differencing file its sector bitmap (one bit per
//! logical sector, least significant bit first, 1 = in this file).
//!
//! | state | fixed / dynamic | differencing |
//! |---|---|---|
//! | fully present | `Data` | `Data` |
//! | partially present | (refused on open) | `Data` / `Parent` by the sector bitmap |
//! | zero | `Zero` | `Zero` |
//! | not present, undefined, unmapped | `Zero` | `Parent` |
//!
//! A differencing file's undefined and unmapped blocks read from the parent: the
//! specification leaves their content to the implementation, and the parent's bytes are
//! what the child showed before (qemu-img, which has no differencing support, reads
//! zeros for them in a file without a parent, as vhdkit does).

use crate::error::Result;
use crate::vhdx::bat::{bitmap_bits, Bat};
use crate::vhdx::PayloadState;

use super::super::core::FileCore;
use super::super::extent::{push, LayerExtent};
use super::Vhdx;

/// Appends the extents of the virtual range `pos..end` to `out`.
pub(super) fn extents(
    v: &Vhdx,
    f: &FileCore,
    mut pos: u64,
    end: u64,
    out: &mut Vec<LayerExtent>,
) -> Result<()> {
    let bs = v.block_size();
    let differencing = v.metadata.file_parameters.has_parent;
    let absent = |len| {
        if differencing {
            LayerExtent::Parent { len }
        } else {
            LayerExtent::Zero { len }
        }
    };
    let bat = v.bat();
    while pos < end {
        let block = pos / bs;
        let in_block = pos % bs;
        let len = (bs - in_block).min(end - pos);
        let entry = bat
            .payload(block)
            .unwrap_or(crate::vhdx::bat::PayloadBlock {
                state: None,
                file_offset: None,
            });
        match (entry.state, entry.file_offset) {
            (Some(PayloadState::FullyPresent), Some(at)) => push(
                out,
                LayerExtent::Data {
                    file_offset: at + in_block,
                    len,
                },
            ),
            (Some(PayloadState::PartiallyPresent), Some(at)) if differencing => {
                partial(v, &bat, f, block, at, in_block, len, out)?
            }
            (Some(PayloadState::Zero), _) => push(out, LayerExtent::Zero { len }),
            _ => push(out, absent(len)),
        }
        pos += len;
    }
    Ok(())
}

/// The extents of `in_block..in_block + len` of partially present block `block`,
/// stored at `at`, by its sector bitmap.
#[allow(clippy::too_many_arguments)]
fn partial(
    v: &Vhdx,
    bat: &Bat,
    f: &FileCore,
    block: u64,
    at: u64,
    in_block: u64,
    len: u64,
    out: &mut Vec<LayerExtent>,
) -> Result<()> {
    let g = bat.geometry;
    let sector = u64::from(g.logical_sector_size);
    let (chunk, first_bit, _) = bitmap_bits(&g, block);
    // Open checked that a partially present block's chunk has its bitmap.
    let bitmap = bat.sector_bitmap(chunk);
    let bitmap_at = match bitmap {
        Some((Some(crate::vhdx::SectorBitmapState::Present), o)) => o,
        _ => {
            return Err(crate::error::Error::corrupt(
                &f.path,
                "VHDX BAT",
                v.regions.bat.offset,
                format!("partially present block {block} has no sector bitmap"),
            ))
        }
    };
    // The bits of the sectors the range meets (whole sectors; the range is clipped to
    // them below).
    let s0 = in_block / sector;
    let s1 = (in_block + len).div_ceil(sector);
    let (b0, b1) = (first_bit + s0, first_bit + s1);
    let (byte0, byte1) = (b0 / 8, b1.div_ceil(8));
    let mut bits = vec![0u8; (byte1 - byte0) as usize];
    v.read_file(
        f,
        &mut bits,
        bitmap_at + byte0,
        "reading a VHDX sector bitmap",
    )?;
    let bit = |s: u64| {
        let k = first_bit + s - byte0 * 8;
        bits[(k / 8) as usize] >> (k % 8) & 1 == 1
    };
    let end = in_block + len;
    let mut s = s0;
    while s < s1 {
        let present = bit(s);
        let mut t = s + 1;
        while t < s1 && bit(t) == present {
            t += 1;
        }
        let from = (s * sector).max(in_block);
        let to = (t * sector).min(end);
        let n = to - from;
        push(
            out,
            if present {
                LayerExtent::Data {
                    file_offset: at + from,
                    len: n,
                }
            } else {
                LayerExtent::Parent { len: n }
            },
        );
        s = t;
    }
    Ok(())
}
