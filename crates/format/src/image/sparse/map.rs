//! Reading a sparse file's map: where a virtual range lives (BAT, then the sector
//! bitmaps of allocated blocks), which ranges the allocated blocks cover, and read-ahead
//! of the bitmaps a walk will read.

use std::ops::Range;

use crate::error::Result;
use crate::spec::bitmap::SectorBitmap;
use crate::spec::SECTOR_SIZE;

use super::{differencing, Sparse};
use crate::image::core::FileCore;
use crate::image::extent::{push, LayerExtent};

impl Sparse {
    /// Reads the bitmap of the block stored at `block_offset`.
    pub(super) fn read_bitmap(&self, f: &FileCore, block_offset: u64) -> Result<Vec<u8>> {
        let mut bm = vec![0u8; self.layout.bitmap_size as usize];
        f.read(&mut bm, block_offset, "reading a sector bitmap")?;
        Ok(bm)
    }

    /// The extents of `pos..end` (within the virtual size): `Data` where the block is
    /// allocated and the sector's bit set, else `Parent` (differencing) or `Zero`.
    pub(super) fn map_extents(
        &self,
        f: &FileCore,
        mut pos: u64,
        end: u64,
        out: &mut Vec<LayerExtent>,
    ) -> Result<()> {
        let differencing = differencing(f);
        let absent = |len| {
            if differencing {
                LayerExtent::Parent { len }
            } else {
                LayerExtent::Zero { len }
            }
        };
        let (block_size, bitmap_size) = (self.layout.block_size, self.layout.bitmap_size);
        let bat = self.bat_read();
        while pos < end {
            let block = pos / block_size;
            let in_block = pos % block_size;
            let n = (block_size - in_block).min(end - pos);
            match bat.block_offset(block) {
                None => {
                    // The whole run of unused entries in one step: the cost of a walk
                    // follows the allocated blocks, not the virtual size.
                    let last = (end - 1) / block_size + 1;
                    let next = bat.next_allocated(block, last).saturating_mul(block_size);
                    let n = n.max(next.min(end).saturating_sub(pos));
                    push(out, absent(n));
                    pos += n;
                    continue;
                }
                Some(boff) => {
                    let bm = self.read_bitmap(f, boff)?;
                    let bitmap = SectorBitmap::new(&bm);
                    let data = boff + bitmap_size;
                    let mut p = in_block;
                    let stop = in_block + n;
                    while p < stop {
                        let sector = p / SECTOR_SIZE;
                        let last_sector = (stop - 1) / SECTOR_SIZE;
                        let run = bitmap.run_length(sector, last_sector - sector + 1);
                        let run_end = ((sector + run) * SECTOR_SIZE).min(stop);
                        let l = run_end - p;
                        if bitmap.is_set(sector) {
                            push(
                                out,
                                LayerExtent::Data {
                                    file_offset: data + p,
                                    len: l,
                                },
                            );
                        } else {
                            push(out, absent(l));
                        }
                        p = run_end;
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }

    /// The virtual byte ranges of the allocated blocks (whole blocks, whatever their
    /// bitmaps say), clipped to `size`, merged, in order: one step per run of blocks.
    pub(super) fn allocated_ranges(&self, size: u64) -> Vec<Range<u64>> {
        let bat = self.bat_read();
        let bs = self.layout.block_size;
        bat.allocated_runs()
            .map(|r| r.start.saturating_mul(bs).min(size)..r.end.saturating_mul(bs).min(size))
            .filter(|r| r.start < r.end)
            .collect()
    }

    /// Asks the kernel to read ahead, asynchronously, the sector bitmaps of the
    /// allocated blocks that meet the virtual `range` (`POSIX_FADV_WILLNEED`) of the
    /// file `file`.
    pub(crate) fn will_need_bitmaps(&self, file: &std::fs::File, range: Range<u64>) {
        let (block_size, bitmap_size) = (self.layout.block_size, self.layout.bitmap_size);
        let bat = self.bat_read();
        let end = range.end.div_ceil(block_size).min(bat.len() as u64);
        let mut b = bat.next_allocated(range.start / block_size, end);
        while b < end {
            if let Some(at) = bat.block_offset(b) {
                // Failing advice changes nothing: the reads happen anyway.
                vhdkit_platform::will_need(file, at, bitmap_size);
            }
            b = bat.next_allocated(b + 1, end);
        }
    }
}
