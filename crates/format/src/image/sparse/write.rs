//! The crash-safe write path of a sparse file: new blocks placed by the layout, their
//! bitmaps and data durable before the BAT sectors that name them.

use crate::error::{Error, Result};
use crate::image::core::FileCore;
use crate::spec::bitmap::set_range;
use crate::spec::{Bat, SparseLayout, BAT_ENTRY_UNUSED, FOOTER_SIZE, SECTOR_SIZE};

use super::{differencing, Sparse};

impl Sparse {
    /// Writes sector-aligned runs `(virtual offset, bytes)`.
    ///
    /// Crash-safe write order (the image stays valid and reads as either the old or the
    /// new data if the process dies between any two steps; a BAT entry never points at a
    /// block whose bitmap and data are not durable):
    ///
    /// 1. If new blocks are needed, write the footer at the new end of the file first
    ///    and `fdatasync`: the file ends with a valid footer at every instant. The new
    ///    space counts as taken from here on, even if a later step fails.
    /// 2. Write every new block's bitmap (bits of the written sectors only) and data,
    ///    zero-filling whatever part of it overlaps the old file contents, and write the
    ///    data of ranges in already allocated blocks.
    /// 3. `fdatasync`.
    /// 4. Set the new bitmap bits of already allocated blocks, and write the BAT sectors
    ///    holding the new entries (one 512-byte sector each).
    /// 5. `fdatasync`.
    ///
    /// A crash before 4 leaves unreferenced space before the footer (`check` reports it;
    /// after reopening, the next allocation reuses it, zero-filling what it does not
    /// write; `check --repair` or `compact` reclaims it) and sectors whose bits are still
    /// clear, which read as before. `docs/crash-safety.md` has the full analysis.
    ///
    /// The order is applied once to all `runs`: one footer move, one barrier after the
    /// data, one after the metadata (merge writes a whole chunk of runs this way).
    pub(super) fn write_blocks(&self, f: &FileCore, runs: &[(u64, &[u8])]) -> Result<()> {
        let s = self;
        let (block_size, bitmap_size) = (s.layout.block_size, s.layout.bitmap_size);
        let mut state = s.state();
        let old_len = state.footer_at + FOOTER_SIZE as u64;
        let stride = s.layout.stride();

        // Plan: split into block pieces; place new blocks.
        struct Piece<'d> {
            block: u64,
            in_block: u64,
            data: &'d [u8],
            block_offset: u64,
            new: bool,
        }
        let mut pieces = Vec::new();
        let mut next_free = state.next_free;
        // Blocks placed by this write: block index → offset.
        let mut placed = std::collections::HashMap::new();
        {
            let bat = s.bat_read();
            for &(offset, data) in runs {
                let mut pos = offset;
                let end = offset + data.len() as u64;
                while pos < end {
                    let block = pos / block_size;
                    let in_block = pos % block_size;
                    let n = (block_size - in_block).min(end - pos);
                    let src = &data[(pos - offset) as usize..(pos - offset + n) as usize];
                    let (block_offset, new) = match bat.block_offset(block) {
                        Some(o) => (o, false),
                        None => {
                            let at = *placed.entry(block).or_insert_with(|| {
                                let at = s.layout.place_block(next_free);
                                next_free = at + stride;
                                at
                            });
                            (at, true)
                        }
                    };
                    pieces.push(Piece {
                        block,
                        in_block,
                        data: src,
                        block_offset,
                        new,
                    });
                    pos += n;
                }
            }
        }
        let new_blocks: Vec<(u64, u64)> = {
            let mut v: Vec<(u64, u64)> = placed.into_iter().collect();
            v.sort_unstable();
            v
        };
        // The pieces by block, for the bitmaps: each block's read and written once however
        // many pieces it has (a merged block whose bitmap alternates has one per sector).
        let mut by_block: Vec<&Piece> = pieces.iter().collect();
        by_block.sort_by_key(|p| p.block);
        for &(_, at) in &new_blocks {
            if (at / SECTOR_SIZE) >= u64::from(BAT_ENTRY_UNUSED) {
                return Err(Error::Unsupported {
                    path: f.path.clone(),
                    detail: "the file would grow past 2 TiB, beyond what a BAT entry can address"
                        .into(),
                });
            }
        }

        // Step 1: footer at the new end, durable before any block write can overwrite the
        // old one or extend the file.
        let new_footer_at = next_free.max(state.footer_at);
        if new_footer_at != state.footer_at || state.footer_stale {
            let bytes = f.footer.encode();
            f.write(&bytes, new_footer_at, "writing the footer at the new end")?;
            f.sync("syncing the footer at the new end")?;
        }
        // The space is taken from here on: if a later step fails, it stays unreferenced
        // (a leak, as after a crash) rather than being handed to another block while the
        // in-memory or on-disk BAT may already point into it.
        state.next_free = next_free.max(state.next_free);
        state.footer_at = new_footer_at;
        state.footer_stale = false;

        // Step 2: new blocks (bitmap + data, zero-filled where old bytes lie) and data of
        // existing blocks.
        let differencing = differencing(f);
        for &(block, at) in &new_blocks {
            // A dynamic disk's new block is wholly its own (what is not written is
            // zero-filled or past the old end): every bit set, as Windows, disk2vhd,
            // mkimg and qemu write it, so that every reader reads it alike (libvhdi's bulk
            // reads return zeros for data behind partly set bitmaps of small blocks). A
            // differencing block sets only the bits of the sectors it holds.
            let mut bitmap = vec![if differencing { 0u8 } else { 0xFF }; bitmap_size as usize];
            let (lo, hi) = (
                by_block.partition_point(|p| p.block < block),
                by_block.partition_point(|p| p.block <= block),
            );
            for p in by_block[lo..hi].iter().filter(|_| differencing) {
                let first = p.in_block / SECTOR_SIZE;
                set_range(&mut bitmap, first, p.data.len() as u64 / SECTOR_SIZE);
            }
            f.write(&bitmap, at, "writing a new block's bitmap")?;
            // Zero whatever of the data area lies inside the old file contents.
            let data_at = at + bitmap_size;
            if data_at < old_len {
                let zero_end = (data_at + block_size).min(old_len);
                let zeros = vec![0u8; (zero_end - data_at) as usize];
                f.write(&zeros, data_at, "zero-filling a new block")?;
            }
        }
        for p in &pieces {
            let at = p.block_offset + bitmap_size + p.in_block;
            f.write(p.data, at, "writing block data")?;
        }
        // Step 3.
        f.sync("syncing block data")?;

        // Step 4: bitmap bits of existing blocks, then BAT sectors of new blocks.
        for group in by_block
            .chunk_by(|a, b| a.block == b.block)
            .filter(|g| !g[0].new)
        {
            let block_offset = group[0].block_offset;
            let mut bm = s.read_bitmap(f, block_offset)?;
            let before = bm.clone();
            for p in group {
                set_range(
                    &mut bm,
                    p.in_block / SECTOR_SIZE,
                    p.data.len() as u64 / SECTOR_SIZE,
                );
            }
            if bm != before {
                // Rewrite only the bitmap sectors that changed.
                for (i, (a, b)) in bm.chunks(512).zip(before.chunks(512)).enumerate() {
                    if a != b {
                        let at = block_offset + i as u64 * SECTOR_SIZE;
                        f.write(a, at, "updating a sector bitmap")?;
                    }
                }
            }
        }
        if !new_blocks.is_empty() {
            let mut bat = s.bat_write();
            for &(block, at) in &new_blocks {
                // Fits: checked against BAT_ENTRY_UNUSED above.
                bat.set(block, (at / SECTOR_SIZE) as u32);
            }
            let blocks: Vec<u64> = new_blocks.iter().map(|&(b, _)| b).collect();
            s.write_bat_sectors(f, &bat, &blocks)?;
        }
        // Step 5.
        f.sync("syncing the BAT")?;
        Ok(())
    }

    /// Writes the BAT sectors holding `blocks`' entries of `bat`.
    pub(super) fn write_bat_sectors(&self, f: &FileCore, bat: &Bat, blocks: &[u64]) -> Result<()> {
        for sector in SparseLayout::bat_sectors(blocks.iter().copied()) {
            let (_, bytes) = bat.sector_of(sector * (SECTOR_SIZE / 4));
            let at = self.layout.bat_sector_offset(sector);
            f.write(&bytes, at, "writing a BAT sector")?;
        }
        Ok(())
    }
}
