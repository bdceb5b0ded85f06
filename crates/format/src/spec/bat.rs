//! The Block Allocation Table: one big-endian sector number per block.

use byteorder::{BigEndian, ByteOrder};

use super::SECTOR_SIZE;

/// BAT entry of a block that is not allocated.
pub const BAT_ENTRY_UNUSED: u32 = 0xFFFF_FFFF;

/// The decoded BAT: entry `i` is the sector where block `i`'s bitmap starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bat {
    entries: Vec<u32>,
}

impl Bat {
    /// A BAT of `n` unused entries.
    pub fn new_unused(n: u32) -> Bat {
        Bat {
            entries: vec![BAT_ENTRY_UNUSED; n as usize],
        }
    }

    /// Decodes `bytes.len() / 4` entries (a trailing partial entry is ignored).
    pub fn decode(bytes: &[u8]) -> Bat {
        Bat {
            entries: bytes.chunks_exact(4).map(BigEndian::read_u32).collect(),
        }
    }

    /// A BAT holding `entries`.
    pub fn from_entries(entries: Vec<u32>) -> Bat {
        Bat { entries }
    }

    /// Decodes big-endian entries from `bytes` and appends them (a trailing partial entry
    /// is ignored).
    pub fn extend_from_bytes(&mut self, bytes: &[u8]) {
        self.entries
            .extend(bytes.chunks_exact(4).map(BigEndian::read_u32));
    }

    /// Encodes the table padded with unused entries to a whole number of sectors.
    pub fn encode(&self) -> Vec<u8> {
        let len = super::layout::table_bytes(self.entries.len() as u64);
        let mut out = vec![0xFF; len as usize];
        for (i, e) in self.entries.iter().enumerate() {
            BigEndian::write_u32(&mut out[i * 4..], *e);
        }
        out
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw entry of block `i`, `None` past the end.
    pub fn entry(&self, i: u64) -> Option<u32> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.entries.get(i).copied())
    }

    /// Byte offset of block `i`'s bitmap, or `None` if unallocated or out of range.
    pub fn block_offset(&self, i: u64) -> Option<u64> {
        match self.entry(i)? {
            BAT_ENTRY_UNUSED => None,
            sector => Some(u64::from(sector) * SECTOR_SIZE),
        }
    }

    /// Sets entry `i`. Panics never: out-of-range indexes are ignored and reported.
    pub fn set(&mut self, i: u64, value: u32) -> bool {
        match usize::try_from(i)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        {
            Some(e) => {
                *e = value;
                true
            }
            None => false,
        }
    }

    /// All entries.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// Indexes and byte offsets of allocated blocks.
    pub fn allocated(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, &e)| e != BAT_ENTRY_UNUSED)
            .map(|(i, &e)| (i as u64, u64::from(e) * SECTOR_SIZE))
    }

    /// Runs of consecutive allocated blocks, as ranges of block indexes, in order: one
    /// step per run, however many unused entries lie between them.
    ///
    /// ```
    /// use vhdkit_format::spec::{Bat, BAT_ENTRY_UNUSED as U};
    ///
    /// let bat = Bat::from_entries(vec![U, 7, 23, U, U, 39]);
    /// assert_eq!(bat.allocated_runs().collect::<Vec<_>>(), vec![1..3, 5..6]);
    /// ```
    pub fn allocated_runs(&self) -> impl Iterator<Item = std::ops::Range<u64>> + '_ {
        let len = self.entries.len() as u64;
        let mut i = 0u64;
        std::iter::from_fn(move || {
            let start = self.next_allocated(i, len);
            if start >= len {
                return None;
            }
            i = self.next_unused(start, len);
            Some(start..i)
        })
    }

    /// The first unused entry in `i..end` (`end` when there is none; `end` is clipped to
    /// the table): where a run of allocated blocks starting at `i` ends.
    pub fn next_unused(&self, i: u64, end: u64) -> u64 {
        self.next_where(i, end, |e| e == BAT_ENTRY_UNUSED)
    }

    /// The first allocated entry in `i..end` (`end` when there is none; `end` is clipped
    /// to the table): where a run of unused entries starting at `i` ends. The search
    /// looks no further than `end`, so a walk window by window stays linear.
    ///
    /// ```
    /// use vhdkit_format::spec::{Bat, BAT_ENTRY_UNUSED as U};
    ///
    /// let bat = Bat::from_entries(vec![U, U, U, 9, U]);
    /// assert_eq!(bat.next_allocated(0, 5), 3);
    /// assert_eq!(bat.next_allocated(0, 2), 2);
    /// assert_eq!(bat.next_allocated(4, 5), 5);
    /// ```
    pub fn next_allocated(&self, i: u64, end: u64) -> u64 {
        self.next_where(i, end, |e| e != BAT_ENTRY_UNUSED)
    }

    fn next_where(&self, i: u64, end: u64, pred: impl Fn(u32) -> bool) -> u64 {
        let len = self.entries.len();
        let to = usize::try_from(end).unwrap_or(len).min(len);
        let from = usize::try_from(i).unwrap_or(to).min(to);
        self.entries[from..to]
            .iter()
            .position(|&e| pred(e))
            .map_or(end.max(from as u64), |p| (from + p) as u64)
    }

    /// Number of allocated blocks.
    pub fn allocated_count(&self) -> u64 {
        self.entries
            .iter()
            .filter(|&&e| e != BAT_ENTRY_UNUSED)
            .count() as u64
    }

    /// The 512-byte sector of the encoded table that holds entry `i`, with its index
    /// within the table, for the one-sector BAT update of the crash-safe write order.
    pub fn sector_of(&self, i: u64) -> (u64, [u8; 512]) {
        // Divide first: `i * 4` overflows for indexes past 2^62.
        let per_sector = SECTOR_SIZE / 4;
        let sector = i / per_sector;
        let mut out = [0xFFu8; 512];
        let first = sector * per_sector;
        for k in 0..128u64 {
            if let Some(e) = self.entry(first + k) {
                BigEndian::write_u32(&mut out[(k * 4) as usize..], e);
            }
        }
        (sector, out)
    }
}

/// A problem in the layout of allocated blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockLayoutProblem {
    /// Block `block` starts inside the file's metadata (before `metadata_end`).
    IntoMetadata {
        /// Block index.
        block: u64,
        /// Byte offset of the block.
        offset: u64,
    },
    /// Block `block` ends past `limit` (the footer or the end of file).
    PastEnd {
        /// Block index.
        block: u64,
        /// Byte offset of the block.
        offset: u64,
        /// Offset the block runs past.
        limit: u64,
    },
    /// Blocks `a` and `b` overlap in the file.
    Overlap {
        /// First block index.
        a: u64,
        /// Second block index.
        b: u64,
        /// Byte offset of the second block.
        offset: u64,
    },
}

impl BlockLayoutProblem {
    /// Byte offset of the block the problem concerns.
    pub fn offset(&self) -> u64 {
        match *self {
            BlockLayoutProblem::IntoMetadata { offset, .. }
            | BlockLayoutProblem::PastEnd { offset, .. }
            | BlockLayoutProblem::Overlap { offset, .. } => offset,
        }
    }
}

impl std::fmt::Display for BlockLayoutProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockLayoutProblem::IntoMetadata { block, offset } => write!(
                f,
                "block {block} at {offset:#x} lies inside the header, BAT or locator area"
            ),
            BlockLayoutProblem::PastEnd {
                block,
                offset,
                limit,
            } => write!(
                f,
                "block {block} at {offset:#x} runs past the footer at {limit:#x}"
            ),
            BlockLayoutProblem::Overlap { a, b, offset } => {
                write!(f, "block {b} at {offset:#x} overlaps block {a}")
            }
        }
    }
}

/// Checks every allocated block against the metadata area, the footer position and each
/// other, in O(n log n). `stride` is bitmap + block bytes. `metadata` lists the byte
/// ranges the blocks must not touch (header, BAT, locator payloads).
pub fn check_block_layout(
    bat: &Bat,
    stride: u64,
    metadata: &[(u64, u64)],
    footer_at: u64,
) -> Vec<BlockLayoutProblem> {
    let mut problems = Vec::new();
    let mut blocks: Vec<(u64, u64)> = bat.allocated().map(|(i, off)| (off, i)).collect();
    blocks.sort_unstable();
    for &(off, i) in &blocks {
        let end = off.saturating_add(stride);
        if metadata.iter().any(|&(s, e)| off < e && s < end) || off < SECTOR_SIZE {
            problems.push(BlockLayoutProblem::IntoMetadata {
                block: i,
                offset: off,
            });
        }
        if end > footer_at {
            problems.push(BlockLayoutProblem::PastEnd {
                block: i,
                offset: off,
                limit: footer_at,
            });
        }
    }
    for w in blocks.windows(2) {
        let (a_off, a) = w[0];
        let (b_off, b) = w[1];
        if a_off.saturating_add(stride) > b_off {
            problems.push(BlockLayoutProblem::Overlap {
                a,
                b,
                offset: b_off,
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bat_round_trips_and_pads_with_unused_entries() {
        let mut bat = Bat::new_unused(3);
        bat.set(1, 4);
        let bytes = bat.encode();
        assert_eq!(bytes.len(), 512);
        assert!(bytes[12..].iter().all(|&b| b == 0xFF));
        let back = Bat::decode(&bytes[..12]);
        assert_eq!(back, bat);
        assert_eq!(back.block_offset(1), Some(2048));
        assert_eq!(back.block_offset(0), None);
        assert_eq!(back.block_offset(99), None);
    }

    #[test]
    fn sector_of_holds_the_entry() {
        let mut bat = Bat::new_unused(300);
        bat.set(200, 0x1234);
        let (sector, bytes) = bat.sector_of(200);
        assert_eq!(sector, 1);
        assert_eq!(BigEndian::read_u32(&bytes[(200 - 128) * 4..]), 0x1234);
        assert_eq!(
            BigEndian::read_u32(&bytes[(255 - 128) * 4..]),
            BAT_ENTRY_UNUSED
        );
    }

    #[test]
    fn overlapping_blocks_are_found() {
        let mut bat = Bat::new_unused(3);
        bat.set(0, 10);
        bat.set(2, 11);
        let p = check_block_layout(&bat, 1024, &[(0, 2048)], 1 << 20);
        assert!(p
            .iter()
            .any(|x| matches!(x, BlockLayoutProblem::Overlap { .. })));
    }

    #[test]
    fn blocks_past_the_footer_or_in_metadata_are_found() {
        let mut bat = Bat::new_unused(2);
        bat.set(0, 1);
        bat.set(1, 1000);
        let p = check_block_layout(&bat, 1024, &[(512, 2048)], 4096);
        assert!(p.contains(&BlockLayoutProblem::IntoMetadata {
            block: 0,
            offset: 512
        }));
        assert!(p
            .iter()
            .any(|x| matches!(x, BlockLayoutProblem::PastEnd { block: 1, .. })));
    }
}
