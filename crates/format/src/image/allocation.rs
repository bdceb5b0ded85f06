//! What is allocated where, from metadata alone: the virtual ranges a file, and a whole
//! chain, may hold data in (a sparse file's allocated blocks, a flat file's stored
//! extents), one step per run — so that the work of an operation follows the data, not
//! the virtual size — and read-ahead of the metadata a walk of a range will read.

use std::ops::Range;

use super::chain::Disk;
use super::file::VhdFile;

impl Disk {
    /// The virtual byte ranges where some level of the chain may hold data — sorted,
    /// disjoint, merged, within the virtual size: the union of every level's
    /// [`VhdFile::stored_ranges`] (allocated blocks, a flat file's stored extents).
    /// Outside them the disk reads as zeros. From metadata alone: a 2 TiB disk holding
    /// a few blocks answers in a few steps.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use vhdkit_format::image::{CreateOptions, Disk, DiskKind};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("big.vhd");
    /// Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 1 << 40))?;
    /// let disk = Disk::open_rw(&path)?;
    /// disk.write_at(&[1u8; 4096], 700 << 30)?;
    /// let block = 2 << 20; // the default block size
    /// assert_eq!(disk.stored_ranges(), vec![700 << 30..(700 << 30) + block]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stored_ranges(&self) -> Vec<Range<u64>> {
        let size = self.virtual_size();
        let mut all: Vec<Range<u64>> = self
            .layers()
            .iter()
            .flat_map(VhdFile::stored_ranges)
            .map(|r| r.start.min(size)..r.end.min(size))
            .filter(|r| r.start < r.end)
            .collect();
        if self.layers().len() > 1 {
            all.sort_unstable_by_key(|r| r.start);
        }
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(all.len());
        for r in all {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }

    /// Asks the kernel to read ahead the metadata that a walk of the virtual `range`
    /// reads block by block — every level's sector bitmaps of the blocks it meets — so
    /// that the walk finds it in the page cache (a hint; see
    /// `VhdFile::will_need_bitmaps`).
    pub(crate) fn will_need(&self, range: Range<u64>) {
        for layer in self.layers() {
            layer.will_need_bitmaps(range.clone());
        }
    }
}

/// The blocks of `block_size` bytes that `offset..offset + len` covers entirely, on a
/// disk of `size` bytes whose last block may be shorter: it counts as covered when the
/// range reaches the end of the disk. What a discard releases.
pub(crate) fn covered_blocks(offset: u64, len: u64, size: u64, block_size: u64) -> Range<u64> {
    let end = offset.saturating_add(len).min(size);
    let first = offset.div_ceil(block_size);
    let stop = if end == size {
        size.div_ceil(block_size)
    } else {
        end / block_size
    };
    first..stop.max(first)
}
