//! The layout of a dynamic or differencing file, in one place: which byte ranges hold
//! metadata, where blocks may lie, where a new block goes, where the trailing footer
//! sits, and which BAT sectors a set of changed entries touches. Pure arithmetic over
//! the decoded footer and dynamic header and the file's length: open, check, repair,
//! compact, create, convert and the fuzz builders all ask it, so they cannot disagree.
//!
//! The rules (see `docs/format.md` for the specification's text and what real writers
//! do):
//!
//! - **Metadata** is the footer copy at offset 0 (512 bytes), the dynamic header (1024
//!   bytes at the footer's data offset), the BAT (`max_table_entries` entries rounded up
//!   to whole sectors, padding included), and every used parent locator's payload:
//!   `data_offset .. data_offset + data_length` rounded up to whole sectors. A locator
//!   whose length is absurd (over [`MAX_LOCATOR_DATA`]) claims nothing (it is reported,
//!   not trusted to fence off a region that may well hold blocks). A payload is clipped
//!   to the end of the file (a file opened for writing refuses such a payload instead:
//!   new blocks would land inside it).
//! - A **block** (its sector bitmap, then its data) lies entirely between the end of the
//!   first sector and the trailing footer, overlaps no metadata and no other block.
//! - **New blocks** go at the first free offset past every block and every piece of
//!   metadata, placed so that the data (not the bitmap) starts on a
//!   [`DATA_ALIGNMENT`] boundary, as Windows and blktap place them.
//! - The **trailing footer** follows the last block or metadata, rounded up to a sector.

use super::bat::{BlockLayoutProblem, BAT_ENTRY_UNUSED};
use super::locator::MAX_LOCATOR_DATA;
use super::{DynamicHeader, FOOTER_SIZE, HEADER_SIZE, SECTOR_SIZE};

/// Block data starts on this boundary (the bitmap just before it), as Windows and blktap
/// place it: page-aligned data for the page cache and memory maps.
pub const DATA_ALIGNMENT: u64 = 4096;

/// BAT bytes read (and validated) at a time: the BAT is never held twice, and a BAT
/// that a sparse file's hole fills with zeros fails in its first chunk.
pub const BAT_CHUNK_BYTES: usize = 1 << 20;

/// Where the parts of a dynamic or differencing file lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseLayout {
    /// Bytes of data per block.
    pub block_size: u64,
    /// Bytes of sector bitmap before each block's data.
    pub bitmap_size: u64,
    /// Offset of the dynamic header.
    pub header_offset: u64,
    /// Offset of the BAT.
    pub table_offset: u64,
    /// Entries that cover the virtual size (the rest of the table is padding).
    pub used_entries: u64,
    /// Byte ranges `[start, end)` of metadata, in the order listed in the module docs.
    pub metadata: Vec<(u64, u64)>,
    /// Locator slots whose length is absurd and which therefore claim nothing.
    pub ignored_locators: Vec<usize>,
    /// Locator slots whose payload runs past the end of the file (clipped here).
    pub clipped_locators: Vec<usize>,
    /// Where the trailing footer is (blocks must end at or before it).
    pub footer_at: u64,
}

impl SparseLayout {
    /// The layout of a file of `file_len` bytes whose trailing footer is at `footer_at`,
    /// for a disk of `current_size` bytes described by `header` found at
    /// `header_offset`. The header's block size must have been validated.
    pub fn new(
        header: &DynamicHeader,
        header_offset: u64,
        current_size: u64,
        file_len: u64,
        footer_at: u64,
    ) -> SparseLayout {
        let block_size = u64::from(header.block_size).max(SECTOR_SIZE);
        let toff = header.table_offset;
        let mut metadata = vec![
            (0, FOOTER_SIZE as u64),
            (
                header_offset,
                header_offset.saturating_add(HEADER_SIZE as u64),
            ),
            (toff, toff.saturating_add(header.bat_size_on_disk())),
        ];
        let mut ignored_locators = Vec::new();
        let mut clipped_locators = Vec::new();
        for (slot, l) in header.locators.iter().enumerate() {
            if !l.is_used() || l.data_length == 0 {
                continue;
            }
            if l.data_length > MAX_LOCATOR_DATA {
                ignored_locators.push(slot);
                continue;
            }
            let used = locator_space(u64::from(l.data_length));
            let end = l.data_offset.saturating_add(used);
            if end > file_len {
                clipped_locators.push(slot);
            }
            if l.data_offset < file_len {
                metadata.push((l.data_offset, end.min(file_len)));
            }
        }
        SparseLayout {
            block_size,
            bitmap_size: header.bitmap_size(),
            header_offset,
            table_offset: toff,
            used_entries: current_size.div_ceil(block_size),
            metadata,
            ignored_locators,
            clipped_locators,
            footer_at,
        }
    }

    /// The layout with Xen's batmap (its header sector at `header_offset` and its bitmap
    /// area) counted as metadata: blocks stay clear of it and the footer goes after it.
    pub fn with_batmap(mut self, header_offset: u64, batmap: &super::batmap::BatmapHeader) -> Self {
        let hend = header_offset.saturating_add(super::batmap::BATMAP_HEADER_SIZE as u64);
        self.metadata.push((header_offset, hend));
        if batmap.map_offset > 0 {
            self.metadata.push((
                batmap.map_offset,
                batmap.map_offset.saturating_add(batmap.map_area()),
            ));
        }
        self
    }

    /// Bytes a block takes in the file: its bitmap and its data.
    pub fn stride(&self) -> u64 {
        self.bitmap_size + self.block_size
    }

    /// Bytes of the BAT that cover the virtual size.
    pub fn used_bat_bytes(&self) -> u64 {
        self.used_entries.saturating_mul(4)
    }

    /// The end of the last piece of metadata.
    pub fn metadata_end(&self) -> u64 {
        self.metadata.iter().map(|&(_, e)| e).max().unwrap_or(0)
    }

    /// The table's byte range as the metadata lists it: `max_table_entries` entries in
    /// whole sectors ([`table_bytes`]) from the table offset.
    pub fn table_range(&self, max_table_entries: u32) -> (u64, u64) {
        let t = self.table_offset;
        (
            t,
            t.saturating_add(table_bytes(u64::from(max_table_entries))),
        )
    }

    /// Counts `range` (new locator payloads, in whole sectors) as metadata.
    pub fn add_metadata(&mut self, range: (u64, u64)) {
        self.metadata.push(range);
    }

    /// Moves the table (a resize that relocates it): the range it took, `old` (from
    /// [`SparseLayout::table_range`]), becomes `table_offset` and `entries` entries in
    /// whole sectors.
    pub fn move_table(&mut self, old: (u64, u64), table_offset: u64, entries: u32) {
        let new = (
            table_offset,
            table_offset.saturating_add(table_bytes(u64::from(entries))),
        );
        for r in self.metadata.iter_mut().filter(|r| **r == old) {
            *r = new;
        }
        self.table_offset = table_offset;
    }

    /// The disk's size changed (a resize): the entries that cover it follow.
    pub fn set_size(&mut self, current_size: u64) {
        self.used_entries = current_size.div_ceil(self.block_size);
    }

    /// The blocks that cover `size` bytes.
    pub fn blocks_for(&self, size: u64) -> u64 {
        size.div_ceil(self.block_size)
    }

    /// The end of everything stored: past every block (`blocks_end`: the end of the
    /// block stored highest, 0 if none) and every piece of metadata, not rounded.
    pub fn content_end(&self, blocks_end: u64) -> u64 {
        blocks_end.max(self.metadata_end())
    }

    /// Whether a block stored at `offset` would overlap metadata.
    pub fn overlaps_metadata(&self, offset: u64) -> bool {
        let end = offset.saturating_add(self.stride());
        offset < SECTOR_SIZE || self.metadata.iter().any(|&(s, e)| offset < e && s < end)
    }

    /// The first free byte past every block (`blocks_end`: the end of the block stored
    /// highest, 0 if none) and every piece of metadata, rounded up to a sector: where
    /// the trailing footer of a file holding exactly these goes.
    pub fn data_end(&self, blocks_end: u64) -> u64 {
        round_up_sector(self.content_end(blocks_end))
    }

    /// Where a block allocated at or after `free` goes: its data starts on a
    /// [`DATA_ALIGNMENT`] boundary, its bitmap just before.
    pub fn place_block(&self, free: u64) -> u64 {
        align_block(free, self.bitmap_size)
    }

    /// The BAT sectors (indexes from the table's start) that hold the given entries,
    /// sorted and without repeats.
    pub fn bat_sectors(entries: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut s: Vec<u64> = entries.into_iter().map(|i| i / (SECTOR_SIZE / 4)).collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// The file offset of BAT sector `sector`.
    pub fn bat_sector_offset(&self, sector: u64) -> u64 {
        self.table_offset + sector * SECTOR_SIZE
    }

    /// A scanner validating the BAT's entries chunk by chunk as they are read.
    pub fn scan(&self) -> BatScan<'_> {
        BatScan {
            layout: self,
            blocks: Vec::new(),
            problems: Vec::new(),
            problem_count: 0,
            max_listed: usize::MAX,
            blocks_end: 0,
            allocated: 0,
        }
    }
}

/// How a dynamic or differencing file's BAT makes room for more entries when its disk
/// grows (resize). See [`bat_growth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatGrowth {
    /// `max_table_entries` already covers them (a disk shrunk earlier): only the
    /// entries past the old size are made unused.
    Fits,
    /// The table's last sector has room (the padding after `max_table_entries`): those
    /// padding entries are made unused and `max_table_entries` raised; the table does not
    /// move, and nothing after it does either.
    InPlace,
    /// The table moves to the end of the file: it starts at `table_offset`, the first
    /// sector past every block and piece of metadata (over unreferenced space a cut
    /// allocation or an earlier attempt left, if any), and the trailing footer is at
    /// `footer_at`: where it is, or right after the new table if that ends past it.
    /// The old table's sectors are left behind, referenced by nothing.
    Relocate {
        /// Where the new table starts.
        table_offset: u64,
        /// Where the trailing footer goes (at or after where it is now).
        footer_at: u64,
    },
}

/// How the BAT of `header` makes room for `entries` entries (the blocks covering a
/// grown disk), when the disk's size covers `used` of them now: in place — within
/// `max_table_entries`, or within it rounded up to whole sectors — when the bytes of
/// entries `used..entries` overlap none of the `occupied` ranges (every other piece of
/// metadata: footer copy, header, locator payloads, Xen's batmap); else at the end of a
/// file whose blocks and metadata end at `data_end` and whose trailing footer is at
/// `footer_at`. The rules kept: the table, with its padding, is metadata no block
/// overlaps; no other metadata is written over (a locator some writer put in the
/// table's padding stays where it is, the table moves); the trailing footer follows the
/// last block or metadata.
pub fn bat_growth(
    header: &DynamicHeader,
    data_end: u64,
    footer_at: u64,
    used: u64,
    entries: u64,
    occupied: &[(u64, u64)],
) -> BatGrowth {
    let toff = header.table_offset;
    let from = toff.saturating_add(used.saturating_mul(4));
    let to = toff.saturating_add(entries.saturating_mul(4));
    let clear = from >= to || occupied.iter().all(|&(s, e)| e <= from || s >= to);
    if clear && entries <= u64::from(header.max_table_entries) {
        BatGrowth::Fits
    } else if clear && entries.saturating_mul(4) <= header.bat_size_on_disk() {
        BatGrowth::InPlace
    } else {
        let table_offset = round_up_sector(data_end.min(footer_at));
        let table_end = table_offset.saturating_add(table_bytes(entries));
        BatGrowth::Relocate {
            table_offset,
            footer_at: footer_at.max(table_end),
        }
    }
}

/// The bytes a used parent locator's payload takes, `data_offset .. data_offset +
/// data_length` (not rounded to sectors: what the locator itself claims); `None` for an
/// unused slot, an empty payload or an absurd length (over [`MAX_LOCATOR_DATA`]).
pub fn locator_payload(l: &super::locator::ParentLocator) -> Option<(u64, u64)> {
    (l.is_used() && l.data_length > 0 && l.data_length <= MAX_LOCATOR_DATA).then(|| {
        (
            l.data_offset,
            l.data_offset.saturating_add(u64::from(l.data_length)),
        )
    })
}

/// What a new differencing image records about its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewParent {
    /// The parent footer's unique id.
    pub unique_id: uuid::Uuid,
    /// The parent's modification time.
    pub timestamp: super::VhdTime,
    /// The parent name stored in the header.
    pub name: String,
    /// The locators, in slot order: platform code and path text (UTF-16LE on disk).
    pub locators: Vec<(super::PlatformCode, String)>,
}

/// The one builder of the dynamic and differencing files vhdkit writes (create,
/// convert and merge-to to dynamic, the fuzz crate's images): footer copy, dynamic
/// header at 512, BAT at 1536 (padded to whole sectors with unused entries), locator
/// payloads (each in whole sectors), then blocks from [`NewSparse::first_block`], and
/// the footer after the last of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSparse {
    /// The footer (the same at offset 0 and at the end).
    pub footer: super::Footer,
    /// The dynamic header.
    pub header: DynamicHeader,
    /// The layout of the new file.
    pub layout: SparseLayout,
    payloads: Vec<(u64, Vec<u8>)>,
}

impl NewSparse {
    /// A disk of `size` bytes in blocks of `block_size` (validated by the caller), with
    /// a parent for a differencing disk. Fails when the BAT would be larger than
    /// 2^32 entries or a locator's text is over 64 KiB.
    pub fn new(
        size: u64,
        block_size: u32,
        parent: Option<&NewParent>,
    ) -> Result<NewSparse, String> {
        use super::locator::{encode_utf16le, ParentLocator};
        let entries = u32::try_from(size.div_ceil(u64::from(block_size.max(1))))
            .map_err(|_| format!("a {size}-byte disk needs too many {block_size}-byte blocks"))?;
        let table_offset = (super::FOOTER_SIZE + HEADER_SIZE) as u64;
        let mut header = DynamicHeader::new(table_offset, entries, block_size);
        let kind = if parent.is_some() {
            super::DiskType::Differencing
        } else {
            super::DiskType::Dynamic
        };
        let mut footer = super::Footer::new(kind, size);
        let mut end = table_offset + header.bat_size_on_disk();
        let mut payloads = Vec::new();
        if let Some(p) = parent {
            header.parent_unique_id = p.unique_id;
            header.parent_timestamp = p.timestamp;
            header.set_parent_name(&p.name)?;
            for (slot, (code, text)) in p.locators.iter().enumerate().take(8) {
                let data = encode_utf16le(text);
                let space = locator_space(data.len() as u64);
                if space > u64::from(MAX_LOCATOR_DATA) {
                    return Err(format!("parent path {text:?} is too long for a locator"));
                }
                header.locators[slot] = ParentLocator {
                    code: *code,
                    // Both fit: at most MAX_LOCATOR_DATA. Data space in bytes, as every
                    // real writer stores it.
                    data_space: space as u32,
                    data_length: data.len() as u32,
                    reserved: 0,
                    data_offset: end,
                };
                payloads.push((end, data));
                end += space;
            }
            footer.original_size = size;
        }
        let layout = SparseLayout::new(&header, super::FOOTER_SIZE as u64, size, end + 512, end);
        Ok(NewSparse {
            footer,
            header,
            layout,
            payloads,
        })
    }

    /// Where the first block goes.
    pub fn first_block(&self) -> u64 {
        self.layout.place_block(self.layout.metadata_end())
    }

    /// The metadata bytes, from offset 0 to the end of the last locator payload, with
    /// `bat` as the table (`None`: every entry unused).
    pub fn metadata(&self, bat: Option<&super::Bat>) -> Vec<u8> {
        let end = self.layout.metadata_end() as usize;
        let mut out = vec![0u8; end];
        let f = self.footer.encode();
        out[..super::FOOTER_SIZE].copy_from_slice(&f);
        out[super::FOOTER_SIZE..super::FOOTER_SIZE + HEADER_SIZE]
            .copy_from_slice(&self.header.encode());
        let unused = super::Bat::new_unused(self.header.max_table_entries);
        let table = bat.unwrap_or(&unused).encode();
        let t = self.layout.table_offset as usize;
        let n = table.len().min(end - t);
        out[t..t + n].copy_from_slice(&table[..n]);
        for (at, data) in &self.payloads {
            out[*at as usize..*at as usize + data.len()].copy_from_slice(data);
        }
        out
    }

    /// The whole file of an image without blocks: the metadata, then the footer.
    pub fn image(&self) -> Vec<u8> {
        let mut out = self.metadata(None);
        out.extend_from_slice(&self.footer.encode());
        out
    }
}

/// Where a block allocated at or after `free` goes: the bitmap ends where the data
/// starts, on a [`DATA_ALIGNMENT`] boundary.
pub fn align_block(free: u64, bitmap_size: u64) -> u64 {
    let data = (free.saturating_add(bitmap_size)).div_ceil(DATA_ALIGNMENT) * DATA_ALIGNMENT;
    data - bitmap_size
}

/// `n` rounded up to a whole sector (saturating: no real offset is that large).
pub fn round_up_sector(n: u64) -> u64 {
    n.div_ceil(SECTOR_SIZE).saturating_mul(SECTOR_SIZE)
}

/// Bytes a BAT of `entries` entries takes on disk: 4 bytes each, padded to whole
/// sectors with unused entries.
pub fn table_bytes(entries: u64) -> u64 {
    round_up_sector(entries.saturating_mul(4))
}

/// Bytes a locator payload of `len` bytes takes in the file vhdkit writes: whole
/// sectors, at least one (an empty payload still gets its sector, as every writer
/// gives it one).
pub fn locator_space(len: u64) -> u64 {
    round_up_sector(len).max(SECTOR_SIZE)
}

/// Validates BAT entries as they are read: each allocated entry must lie past the first
/// sector, outside metadata and before the trailing footer; blocks that pass are then
/// checked for overlaps with each other. Memory: 8 bytes per plausible entry (one that
/// passed the first checks, which needs four real, non-zero bytes in the file); entries
/// that fail are counted, and listed up to [`BatScan::list_at_most`].
#[derive(Debug)]
pub struct BatScan<'a> {
    layout: &'a SparseLayout,
    /// (sector of the block, block index) of every plausible block.
    blocks: Vec<(u32, u32)>,
    problems: Vec<BlockLayoutProblem>,
    problem_count: u64,
    max_listed: usize,
    blocks_end: u64,
    allocated: u64,
}

impl BatScan<'_> {
    /// Lists at most `n` problems (the rest are counted).
    pub fn list_at_most(mut self, n: usize) -> Self {
        self.max_listed = n;
        self
    }

    fn problem(&mut self, p: BlockLayoutProblem) {
        self.problem_count += 1;
        if self.problems.len() < self.max_listed {
            self.problems.push(p);
        }
    }

    /// Validates `entries`, the BAT entries from index `first` on.
    pub fn push(&mut self, first: u64, entries: &[u32]) {
        let stride = self.layout.stride();
        for (k, &e) in entries.iter().enumerate() {
            if e == BAT_ENTRY_UNUSED {
                continue;
            }
            let block = first + k as u64;
            self.allocated += 1;
            let offset = u64::from(e) * SECTOR_SIZE;
            let end = offset.saturating_add(stride);
            let mut ok = true;
            if self.layout.overlaps_metadata(offset) {
                self.problem(BlockLayoutProblem::IntoMetadata { block, offset });
                ok = false;
            }
            if end > self.layout.footer_at {
                self.problem(BlockLayoutProblem::PastEnd {
                    block,
                    offset,
                    limit: self.layout.footer_at,
                });
                ok = false;
            }
            if ok {
                // A BAT has at most 2^32 entries (its size field is 32 bits).
                self.blocks
                    .push((e, u32::try_from(block).unwrap_or(u32::MAX)));
                self.blocks_end = self.blocks_end.max(end);
            }
        }
    }

    /// Validates `count` entries from index `first` on that are all zero (a BAT region
    /// that is a hole of a sparse file) without materialising them: each is a block at
    /// offset 0, inside the footer copy.
    pub fn push_zeros(&mut self, first: u64, count: u64) {
        let listed = (self.max_listed.saturating_sub(self.problems.len()) as u64).min(count);
        let mut k = 0;
        while k < listed {
            let n = (listed - k).min(1024);
            self.push(first + k, &[0u32; 1024][..n as usize]);
            k += n;
        }
        let rest = count - listed;
        let per_entry = 1 + u64::from(self.layout.stride() > self.layout.footer_at);
        self.allocated += rest;
        self.problem_count += rest * per_entry;
    }

    /// Whether any problem was found so far.
    pub fn has_problems(&self) -> bool {
        self.problem_count > 0
    }

    /// Ends the scan: checks the plausible blocks for overlaps and returns every
    /// problem listed, the count of all problems, the allocated entries seen and the end
    /// of the block stored highest (0 if none).
    pub fn finish(mut self) -> BatScanResult {
        self.blocks.sort_unstable();
        let stride = self.layout.stride();
        let blocks = std::mem::take(&mut self.blocks);
        for w in blocks.windows(2) {
            let (a_sec, a) = w[0];
            let (b_sec, b) = w[1];
            let a_off = u64::from(a_sec) * SECTOR_SIZE;
            let b_off = u64::from(b_sec) * SECTOR_SIZE;
            if a_off.saturating_add(stride) > b_off {
                self.problem(BlockLayoutProblem::Overlap {
                    a: u64::from(a),
                    b: u64::from(b),
                    offset: b_off,
                });
            }
        }
        BatScanResult {
            problems: self.problems,
            problem_count: self.problem_count,
            allocated: self.allocated,
            blocks_end: self.blocks_end,
        }
    }
}

/// What a [`BatScan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatScanResult {
    /// Problems listed (at most the scan's limit).
    pub problems: Vec<BlockLayoutProblem>,
    /// Every problem found, listed or not.
    pub problem_count: u64,
    /// Allocated entries seen.
    pub allocated: u64,
    /// End of the block stored highest among the plausible ones (0 if none).
    pub blocks_end: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::locator::{ParentLocator, PlatformCode};

    fn layout(entries: u32, block: u32, file_len: u64) -> SparseLayout {
        let h = DynamicHeader::new(1536, entries, block);
        SparseLayout::new(
            &h,
            512,
            u64::from(entries) * u64::from(block),
            file_len,
            file_len - 512,
        )
    }

    #[test]
    fn metadata_is_footer_copy_header_and_padded_bat() {
        let l = layout(3, 2 << 20, 1 << 20);
        assert_eq!(l.metadata, vec![(0, 512), (512, 1536), (1536, 2048)]);
        assert_eq!(l.metadata_end(), 2048);
        assert_eq!(l.stride(), 512 + (2 << 20));
    }

    #[test]
    fn new_block_data_starts_on_a_page() {
        let l = layout(3, 2 << 20, 1 << 20);
        let at = l.place_block(l.data_end(0));
        assert_eq!((at + l.bitmap_size) % DATA_ALIGNMENT, 0);
        assert!(at >= 2048);
    }

    #[test]
    fn absurd_locator_claims_nothing_and_one_past_the_end_is_clipped() {
        let mut h = DynamicHeader::new(1536, 3, 2 << 20);
        h.locators[0] = ParentLocator {
            code: PlatformCode::W2ru,
            data_space: 512,
            data_length: MAX_LOCATOR_DATA + 1,
            data_offset: 4096,
            reserved: 0,
        };
        h.locators[1] = ParentLocator {
            code: PlatformCode::W2ku,
            data_space: 512,
            data_length: 700,
            data_offset: 8192 + 512,
            reserved: 0,
        };
        let l = SparseLayout::new(&h, 512, 6 << 20, 9000, 9000 - 512);
        assert_eq!(l.ignored_locators, vec![0]);
        assert_eq!(l.clipped_locators, vec![1]);
        assert_eq!(l.metadata.last(), Some(&(8704, 9000)));
    }

    #[test]
    fn a_new_image_opens_with_the_layout_it_was_built_with() {
        let n = NewSparse::new(5 << 20, 2 << 20, None).expect("small");
        let img = n.image();
        assert_eq!(img.len(), 2048 + 512);
        assert_eq!(&img[..512], &img[2048..]);
        assert_eq!((n.first_block() + n.layout.bitmap_size) % DATA_ALIGNMENT, 0);
        let h = DynamicHeader::decode(&img[512..1536]).expect("header");
        let again = SparseLayout::new(&h, 512, 5 << 20, img.len() as u64, 2048);
        assert_eq!(again, n.layout);
    }

    #[test]
    fn bat_grows_in_its_padding_then_moves_to_the_end() {
        // 32 entries of 2 MiB (64 MiB) in one sector: room for 128.
        let h = DynamicHeader::new(1536, 32, 2 << 20);
        assert_eq!(bat_growth(&h, 4096, 4096, 10, 20, &[]), BatGrowth::Fits);
        assert_eq!(bat_growth(&h, 4096, 4096, 32, 128, &[]), BatGrowth::InPlace);
        assert_eq!(
            bat_growth(&h, 4096, 4096, 32, 129, &[]),
            BatGrowth::Relocate {
                table_offset: 4096,
                footer_at: 4096 + 1024
            }
        );
        // 2040 GiB of 2 MiB blocks: a 4 MiB table (1044480 entries, 8160 sectors).
        assert_eq!(
            bat_growth(&h, 4096, 4096, 32, 1_044_480, &[]),
            BatGrowth::Relocate {
                table_offset: 4096,
                footer_at: 4096 + 1_044_480 * 4
            }
        );
    }

    #[test]
    fn a_moved_bat_reuses_unreferenced_space_and_never_pulls_the_footer_back() {
        let h = DynamicHeader::new(1536, 32, 2 << 20);
        // Unreferenced space 4096..1 MiB (an earlier attempt, a cut allocation).
        assert_eq!(
            bat_growth(&h, 4096, 1 << 20, 32, 1000, &[]),
            BatGrowth::Relocate {
                table_offset: 4096,
                footer_at: 1 << 20
            }
        );
        assert_eq!(
            bat_growth(&h, 4000, 1 << 20, 32, 1 << 20, &[]),
            BatGrowth::Relocate {
                table_offset: 4096,
                footer_at: 4096 + (4 << 20)
            }
        );
    }

    #[test]
    fn bat_never_grows_in_place_over_other_metadata() {
        // 32 entries (128 bytes) in the sector at 1536; a locator payload in the
        // sector's padding, at 1536 + 200.
        let h = DynamicHeader::new(1536, 32, 2 << 20);
        let occupied = [(0, 512), (512, 1536), (1736, 1736 + 100), (2048, 2560)];
        // Growing to 50 entries (bytes 128..200 of the table) stays clear of it.
        assert_eq!(
            bat_growth(&h, 4096, 4096, 32, 50, &occupied),
            BatGrowth::InPlace
        );
        // Growing to 100 (bytes 128..400) would write over it: the table moves.
        assert_eq!(
            bat_growth(&h, 4096, 4096, 32, 100, &occupied),
            BatGrowth::Relocate {
                table_offset: 4096,
                footer_at: 4096 + 512
            }
        );
        // So does a table whose own entries hold it (a shrunk disk growing again).
        let shrunk = DynamicHeader::new(1536, 100, 2 << 20);
        assert!(matches!(
            bat_growth(&shrunk, 4096, 4096, 10, 100, &occupied),
            BatGrowth::Relocate { .. }
        ));
        assert_eq!(
            bat_growth(&shrunk, 4096, 4096, 10, 40, &occupied),
            BatGrowth::Fits
        );
    }

    #[test]
    fn table_and_locator_space_are_whole_sectors() {
        assert_eq!(table_bytes(0), 0);
        assert_eq!(table_bytes(1), 512);
        assert_eq!(table_bytes(128), 512);
        assert_eq!(table_bytes(129), 1024);
        // An empty payload still takes its sector, as relink and append write it.
        assert_eq!(locator_space(0), 512);
        assert_eq!(locator_space(700), 1024);
        let h = DynamicHeader::new(1536, 129, 2 << 20);
        assert_eq!(h.bat_size_on_disk(), table_bytes(129));
    }

    #[test]
    fn a_layout_follows_a_moved_table_new_metadata_and_a_new_size() {
        let mut l = layout(3, 2 << 20, 1 << 20);
        let old = l.table_range(3);
        assert_eq!(old, (1536, 2048));
        l.move_table(old, 8192, 200);
        assert_eq!(l.table_offset, 8192);
        assert!(l.metadata.contains(&(8192, 8192 + 1024)));
        assert!(!l.metadata.contains(&old));
        l.add_metadata((9216, 9728));
        assert_eq!(l.metadata_end(), 9728);
        assert_eq!(l.data_end(9000), 9728);
        assert_eq!(l.content_end(10_000), 10_000);
        assert_eq!(l.data_end(10_000), 10_240);
        l.set_size(5 << 20);
        assert_eq!(l.used_entries, 3);
        assert_eq!(l.blocks_for(7 << 20), 4);
    }

    #[test]
    fn bat_sectors_of_entries_are_sorted_and_unique() {
        assert_eq!(
            SparseLayout::bat_sectors([300, 0, 127, 128, 5]),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn scan_of_an_all_zero_bat_reports_every_entry_but_keeps_none() {
        let l = layout(1000, 4096, 1 << 30);
        let mut s = l.scan().list_at_most(10);
        s.push(0, &[0u32; 1000]);
        let r = s.finish();
        assert_eq!(r.problem_count, 1000);
        assert_eq!(r.problems.len(), 10);
        assert_eq!(r.blocks_end, 0);
    }

    #[test]
    fn zeros_pushed_in_bulk_count_as_pushed_one_by_one() {
        let l = layout(100_000, 4096, 1 << 30);
        let mut one = l.scan().list_at_most(7);
        one.push(0, &vec![0u32; 100_000]);
        let mut bulk = l.scan().list_at_most(7);
        bulk.push_zeros(0, 100_000);
        assert_eq!(one.finish(), bulk.finish());
    }

    #[test]
    fn scan_finds_overlaps_across_chunks() {
        let l = layout(4, 4096, 1 << 20);
        let mut s = l.scan();
        s.push(0, &[8, BAT_ENTRY_UNUSED]);
        s.push(2, &[10, BAT_ENTRY_UNUSED]);
        let r = s.finish();
        assert_eq!(r.problem_count, 1);
        assert!(matches!(
            r.problems[0],
            BlockLayoutProblem::Overlap { a: 0, b: 2, .. }
        ));
        assert_eq!(r.allocated, 2);
    }
}
