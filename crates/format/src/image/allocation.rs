//! What is allocated where, from metadata alone: the virtual ranges a file, and a whole
//! chain, may hold data in (a sparse file's allocated blocks, a flat file's stored
//! extents), one step per run — so that the work of an operation follows the data, not
//! the virtual size — and read-ahead of the metadata a walk of a range will read.

use std::ops::Range;

use super::chain::Disk;
use super::file::{Layout, VhdFile};
use super::flat::data_ranges;
use super::sparse::Sparse;

impl VhdFile {
    /// The virtual byte ranges this file may hold data in — sorted, disjoint, merged,
    /// within the virtual size: a dynamic or differencing disk's allocated blocks
    /// (whole, whatever their sector bitmaps say), a read-only fixed or raw file's
    /// stored extents (its holes left out: `SEEK_DATA`/`SEEK_HOLE`, found once), the
    /// whole disk for other files. Outside them this file holds nothing: those bytes
    /// read as zeros, or (differencing) from the parent. From metadata alone, one step
    /// per run: its cost follows the allocation, not the virtual size.
    pub fn stored_ranges(&self) -> Vec<Range<u64>> {
        let size = self.virtual_size();
        let whole = || std::iter::once(0..size).collect::<Vec<_>>();
        match &self.layout {
            Layout::Sparse(s) => s.stored_ranges(size),
            Layout::Raw | Layout::Fixed => {
                match self.backend.as_file().filter(|_| !self.writable) {
                    Some(f) => self
                        .data_map
                        .get_or_init(|| data_ranges(f, size))
                        .iter()
                        .map(|&(a, b)| a..b)
                        .collect(),
                    None => whole(),
                }
            }
            Layout::HostDrive(_) => whole(),
        }
        .into_iter()
        .filter(|r| r.start < r.end)
        .collect()
    }

    /// Asks the kernel to read ahead, asynchronously, the sector bitmaps of the
    /// allocated blocks that meet the virtual `range` (`POSIX_FADV_WILLNEED`): a walk
    /// that will read them one by one then finds them in the page cache instead of
    /// waiting for each in turn (from a cold cache, a conversion that clones its data
    /// reads nothing else). A hint: nothing happens on files that are not files.
    pub(crate) fn will_need_bitmaps(&self, range: Range<u64>) {
        let (Layout::Sparse(s), Some(f)) = (&self.layout, self.backend.as_file()) else {
            return;
        };
        let bat = s.bat.read().unwrap_or_else(|e| e.into_inner());
        let end = range.end.div_ceil(s.block_size).min(bat.len() as u64);
        let mut b = bat.next_allocated(range.start / s.block_size, end);
        while b < end {
            if let Some(at) = bat.block_offset(b) {
                // Failing advice changes nothing: the reads happen anyway.
                let _ = rustix::fs::fadvise(
                    f,
                    at,
                    std::num::NonZeroU64::new(s.bitmap_size),
                    rustix::fs::Advice::WillNeed,
                );
            }
            b = bat.next_allocated(b + 1, end);
        }
    }
}

impl Sparse {
    /// The virtual byte ranges of the allocated blocks (whole blocks, whatever their
    /// bitmaps say), clipped to `size`, merged, in order: one step per run of blocks.
    pub(crate) fn stored_ranges(&self, size: u64) -> Vec<Range<u64>> {
        let bat = self.bat.read().unwrap_or_else(|e| e.into_inner());
        let bs = self.block_size;
        bat.allocated_runs()
            .map(|r| r.start.saturating_mul(bs).min(size)..r.end.saturating_mul(bs).min(size))
            .filter(|r| r.start < r.end)
            .collect()
    }
}

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
