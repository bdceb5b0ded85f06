//! The block allocation table (MS-VHDX 2.5): one 64-bit entry per payload block, with
//! one sector-bitmap entry after every `chunk_ratio` payload entries. An entry holds a
//! 3-bit state and a 44-bit file offset in MiB.
//!
//! A chunk is the span of virtual disk one 1 MiB sector-bitmap block covers: 2^23
//! logical sectors, so `chunk_ratio = 2^23 · logical_sector_size / block_size`
//! payload blocks. Fixed and dynamic files have `data_blocks + ⌊(data_blocks − 1) /
//! chunk_ratio⌋` entries (no trailing bitmap entry); differencing files have
//! `bitmap_blocks · (chunk_ratio + 1)`.

use super::error::{need, Structure, VhdxError};
use super::layout::FileAreas;
use super::metadata::{check_block_size, check_virtual_size, Metadata};
use super::{u64_at, MIB};

/// Bytes of one entry.
pub const BAT_ENTRY_SIZE: u64 = 8;
/// Bits of the state.
pub const STATE_MASK: u64 = 0x7;
/// Reserved bits between the state and the offset (zero when written).
pub const RESERVED_MASK: u64 = 0x000F_FFF8;
/// Bits of the file offset, in bytes (the stored value is in MiB, bits 20..63).
pub const OFFSET_MASK: u64 = !0x000F_FFFF;
/// Bytes of a sector-bitmap block.
pub const SECTOR_BITMAP_BLOCK_SIZE: u64 = MIB;
/// Logical sectors one sector-bitmap block covers (one bit each).
pub const SECTORS_PER_CHUNK: u64 = 1 << 23;

/// Payload state: no data here; read from the parent, or zeros without one.
pub const PAYLOAD_BLOCK_NOT_PRESENT: u8 = 0;
/// Payload state: content undefined (reads may return anything; vhdkit reads zeros).
pub const PAYLOAD_BLOCK_UNDEFINED: u8 = 1;
/// Payload state: reads as zeros.
pub const PAYLOAD_BLOCK_ZERO: u8 = 2;
/// Payload state: unmapped (trimmed); reads as zeros or the old data.
pub const PAYLOAD_BLOCK_UNMAPPED: u8 = 3;
/// Payload state of draft 0.95 for unmapped, still read by qemu.
pub const PAYLOAD_BLOCK_UNMAPPED_V095: u8 = 5;
/// Payload state: the block is in the file at the entry's offset.
pub const PAYLOAD_BLOCK_FULLY_PRESENT: u8 = 6;
/// Payload state (differencing only): the sector bitmap says which sectors are here.
pub const PAYLOAD_BLOCK_PARTIALLY_PRESENT: u8 = 7;
/// Sector-bitmap state: no bitmap block (all sectors from the parent).
pub const SB_BLOCK_NOT_PRESENT: u8 = 0;
/// Sector-bitmap state: the bitmap block is in the file.
pub const SB_BLOCK_PRESENT: u8 = 6;

/// Most problems one BAT validation lists before summing up the rest.
pub const MAX_BAT_PROBLEMS: usize = 1000;

/// One entry as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BatEntry(pub u64);

impl BatEntry {
    /// An entry of `state` pointing at `file_offset` (a multiple of 1 MiB).
    pub fn new(state: u8, file_offset: u64) -> BatEntry {
        BatEntry((file_offset & OFFSET_MASK) | u64::from(state) & STATE_MASK)
    }

    /// The state bits.
    pub fn state(self) -> u8 {
        (self.0 & STATE_MASK) as u8
    }

    /// The file offset in bytes.
    pub fn file_offset(self) -> u64 {
        self.0 & OFFSET_MASK
    }

    /// The reserved bits as stored.
    pub fn reserved(self) -> u64 {
        self.0 & RESERVED_MASK
    }
}

/// The state of a payload block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadState {
    /// Not in this file.
    NotPresent,
    /// Content undefined.
    Undefined,
    /// Zeros.
    Zero,
    /// Unmapped (trimmed); also draft 0.95's value 5.
    Unmapped,
    /// In the file.
    FullyPresent,
    /// Partly in the file (differencing; see the sector bitmap).
    PartiallyPresent,
}

impl PayloadState {
    /// The state of the bits `s`, `None` for values the format does not define.
    pub fn from_bits(s: u8) -> Option<PayloadState> {
        Some(match s {
            PAYLOAD_BLOCK_NOT_PRESENT => PayloadState::NotPresent,
            PAYLOAD_BLOCK_UNDEFINED => PayloadState::Undefined,
            PAYLOAD_BLOCK_ZERO => PayloadState::Zero,
            PAYLOAD_BLOCK_UNMAPPED | PAYLOAD_BLOCK_UNMAPPED_V095 => PayloadState::Unmapped,
            PAYLOAD_BLOCK_FULLY_PRESENT => PayloadState::FullyPresent,
            PAYLOAD_BLOCK_PARTIALLY_PRESENT => PayloadState::PartiallyPresent,
            _ => return None,
        })
    }

    /// The bits vhdkit writes for the state.
    pub fn bits(self) -> u8 {
        match self {
            PayloadState::NotPresent => PAYLOAD_BLOCK_NOT_PRESENT,
            PayloadState::Undefined => PAYLOAD_BLOCK_UNDEFINED,
            PayloadState::Zero => PAYLOAD_BLOCK_ZERO,
            PayloadState::Unmapped => PAYLOAD_BLOCK_UNMAPPED,
            PayloadState::FullyPresent => PAYLOAD_BLOCK_FULLY_PRESENT,
            PayloadState::PartiallyPresent => PAYLOAD_BLOCK_PARTIALLY_PRESENT,
        }
    }

    /// Whether the entry's offset points at data in the file.
    pub fn has_data(self) -> bool {
        matches!(
            self,
            PayloadState::FullyPresent | PayloadState::PartiallyPresent
        )
    }
}

/// The state of a sector-bitmap block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SectorBitmapState {
    /// No bitmap block.
    NotPresent,
    /// The bitmap block is in the file.
    Present,
}

impl SectorBitmapState {
    /// The state of the bits `s`, `None` for values the format does not define.
    pub fn from_bits(s: u8) -> Option<SectorBitmapState> {
        match s {
            SB_BLOCK_NOT_PRESENT => Some(SectorBitmapState::NotPresent),
            SB_BLOCK_PRESENT => Some(SectorBitmapState::Present),
            _ => None,
        }
    }
}

/// What a BAT index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// The entry of payload block `n`.
    Payload(u64),
    /// The sector-bitmap entry of chunk `n`.
    SectorBitmap(u64),
}

/// The shape of a BAT: how many entries, which are payload and which sector bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatGeometry {
    /// Virtual disk size.
    pub virtual_size: u64,
    /// Payload block size.
    pub block_size: u32,
    /// Logical sector size.
    pub logical_sector_size: u32,
    /// Payload blocks per chunk.
    pub chunk_ratio: u64,
    /// Payload blocks covering the virtual size.
    pub data_blocks: u64,
    /// Chunks covering the payload blocks.
    pub bitmap_blocks: u64,
    /// Entries of the table.
    pub entries: u64,
    /// Whether the file is differencing (sector bitmaps in use).
    pub differencing: bool,
}

impl BatGeometry {
    /// The geometry of a disk of `virtual_size` bytes in blocks of `block_size`, with
    /// logical sectors of `logical_sector_size`; `differencing` sizes the table with
    /// every chunk's bitmap entry. Refuses values the format does not allow.
    pub fn new(
        virtual_size: u64,
        block_size: u32,
        logical_sector_size: u32,
        differencing: bool,
    ) -> Result<BatGeometry, VhdxError> {
        let s = Structure::Bat;
        check_block_size(block_size)
            .map_err(|m| VhdxError::field(s, 0, "block size", block_size, m))?;
        if logical_sector_size != 512 && logical_sector_size != 4096 {
            return Err(VhdxError::field(
                s,
                0,
                "logical sector size",
                logical_sector_size,
                "512 or 4096",
            ));
        }
        check_virtual_size(virtual_size, u64::from(logical_sector_size))
            .map_err(|m| VhdxError::field(s, 0, "virtual size", virtual_size, m))?;
        let chunk_ratio =
            SECTORS_PER_CHUNK * u64::from(logical_sector_size) / u64::from(block_size);
        let data_blocks = virtual_size.div_ceil(u64::from(block_size));
        let bitmap_blocks = data_blocks.div_ceil(chunk_ratio);
        let entries = if differencing {
            bitmap_blocks * (chunk_ratio + 1)
        } else {
            data_blocks + (data_blocks - 1) / chunk_ratio
        };
        Ok(BatGeometry {
            virtual_size,
            block_size,
            logical_sector_size,
            chunk_ratio,
            data_blocks,
            bitmap_blocks,
            entries,
            differencing,
        })
    }

    /// The geometry the metadata describes.
    pub fn from_metadata(md: &Metadata) -> Result<BatGeometry, VhdxError> {
        BatGeometry::new(
            md.virtual_size,
            md.file_parameters.block_size,
            md.logical_sector_size,
            md.file_parameters.has_parent,
        )
    }

    /// Bytes of the table.
    pub fn bat_bytes(&self) -> u64 {
        self.entries * BAT_ENTRY_SIZE
    }

    /// Bytes of virtual disk one chunk covers.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_ratio * u64::from(self.block_size)
    }

    /// The index of payload block `block`'s entry.
    pub fn payload_index(&self, block: u64) -> Option<u64> {
        (block < self.data_blocks).then(|| block + block / self.chunk_ratio)
    }

    /// The index of chunk `chunk`'s sector-bitmap entry (`None` past the table: the
    /// last chunk of a fixed or dynamic file has none).
    pub fn bitmap_index(&self, chunk: u64) -> Option<u64> {
        let i = chunk
            .checked_mul(self.chunk_ratio + 1)?
            .checked_add(self.chunk_ratio)?;
        (i < self.entries).then_some(i)
    }

    /// What entry `index` holds, `None` past the table.
    pub fn kind_of(&self, index: u64) -> Option<EntryKind> {
        if index >= self.entries {
            return None;
        }
        let (chunk, pos) = (
            index / (self.chunk_ratio + 1),
            index % (self.chunk_ratio + 1),
        );
        if pos == self.chunk_ratio {
            return Some(EntryKind::SectorBitmap(chunk));
        }
        let block = chunk * self.chunk_ratio + pos;
        // A differencing table's last chunk has entries past the last block: padding.
        (block < self.data_blocks).then_some(EntryKind::Payload(block))
    }
}

/// A decoded BAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bat {
    /// Its shape.
    pub geometry: BatGeometry,
    /// Every entry, in table order.
    pub entries: Vec<BatEntry>,
}

/// A payload block's entry, interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadBlock {
    /// The state; `None` for bits the format does not define.
    pub state: Option<PayloadState>,
    /// Where its data lies, when the state says it has data.
    pub file_offset: Option<u64>,
}

impl Bat {
    /// A table of `geometry` with every entry `entry`.
    pub fn filled(geometry: BatGeometry, entry: BatEntry) -> Bat {
        Bat {
            geometry,
            entries: vec![entry; geometry.entries as usize],
        }
    }

    /// Decodes the table from `bytes` (the BAT region as far as needed); fails only
    /// when shorter than the geometry's table. `at` is the region's offset.
    pub fn decode(bytes: &[u8], geometry: BatGeometry, at: u64) -> Result<Bat, VhdxError> {
        let len = usize::try_from(geometry.bat_bytes()).map_err(|_| VhdxError::Truncated {
            structure: Structure::Bat,
            offset: at,
            expected: geometry.bat_bytes(),
            found: bytes.len() as u64,
        })?;
        need(bytes, len, Structure::Bat, at)?;
        let entries = bytes[..len]
            .chunks_exact(BAT_ENTRY_SIZE as usize)
            .map(|c| BatEntry(u64_at(c, 0)))
            .collect();
        Ok(Bat { geometry, entries })
    }

    /// The table's bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.entries
            .iter()
            .flat_map(|e| e.0.to_le_bytes())
            .collect()
    }

    /// Payload block `block`, `None` past the disk.
    pub fn payload(&self, block: u64) -> Option<PayloadBlock> {
        let e = self.entries[self.geometry.payload_index(block)? as usize];
        let state = PayloadState::from_bits(e.state());
        Some(PayloadBlock {
            state,
            file_offset: state.filter(|s| s.has_data()).map(|_| e.file_offset()),
        })
    }

    /// Sets payload block `block`'s entry; false past the disk.
    pub fn set_payload(&mut self, block: u64, state: PayloadState, file_offset: u64) -> bool {
        match self.geometry.payload_index(block) {
            Some(i) => {
                self.entries[i as usize] = BatEntry::new(state.bits(), file_offset);
                true
            }
            None => false,
        }
    }

    /// Chunk `chunk`'s sector bitmap: its state and, when present, its file offset.
    pub fn sector_bitmap(&self, chunk: u64) -> Option<(Option<SectorBitmapState>, u64)> {
        let e = self.entries[self.geometry.bitmap_index(chunk)? as usize];
        Some((SectorBitmapState::from_bits(e.state()), e.file_offset()))
    }

    /// Every problem of the table in a file whose areas are `areas`: undefined
    /// states, partially present blocks outside differencing files or without their
    /// chunk's bitmap, sector bitmaps in files without a parent, blocks inside the
    /// header section, log or regions, past the end of the file (for the last block:
    /// its part below the virtual size), or overlapping each other. Reserved bits are not judged (writers zero them, readers ignore them). At
    /// most [`MAX_BAT_PROBLEMS`] are listed, then one that counts the rest.
    pub fn problems(&self, areas: &FileAreas, at: u64) -> Vec<VhdxError> {
        let g = &self.geometry;
        let s = Structure::Bat;
        let mut p = Vec::new();
        let mut more = 0u64;
        let mut push = |p: &mut Vec<VhdxError>, e: VhdxError| {
            if p.len() < MAX_BAT_PROBLEMS {
                p.push(e);
            } else {
                more += 1;
            }
        };
        let mut used: Vec<(u64, u64, u64)> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let eat = at + i as u64 * BAT_ENTRY_SIZE;
            let (len, kind) = match g.kind_of(i as u64) {
                Some(EntryKind::Payload(block)) => {
                    let chunk = block / g.chunk_ratio;
                    match PayloadState::from_bits(e.state()) {
                        None => {
                            push(&mut p, bad_state(eat, "payload", e.state()));
                            continue;
                        }
                        Some(PayloadState::PartiallyPresent) if !g.differencing => {
                            push(
                                &mut p,
                                VhdxError::field(
                                    s,
                                    eat,
                                    "payload state",
                                    "partially present",
                                    "a state of a file without parent",
                                ),
                            );
                            continue;
                        }
                        Some(PayloadState::PartiallyPresent) => {
                            let sb = g.bitmap_index(chunk).map(|j| self.entries[j as usize]);
                            if sb.map(|b| b.state()) != Some(SB_BLOCK_PRESENT) {
                                push(
                                    &mut p,
                                    VhdxError::field(
                                        s,
                                        eat,
                                        "payload state",
                                        "partially present",
                                        format!("a present sector bitmap for chunk {chunk}"),
                                    ),
                                );
                            }
                        }
                        Some(st) if !st.has_data() => continue,
                        Some(_) => {}
                    }
                    // The last block of a disk whose size is not a multiple of the
                    // block size needs only its part below the virtual size in the
                    // file (qemu-img's fixed files end there).
                    let start = block * u64::from(g.block_size);
                    let need = u64::from(g.block_size).min(g.virtual_size - start);
                    (need, "payload block")
                }
                Some(EntryKind::SectorBitmap(_)) => match SectorBitmapState::from_bits(e.state()) {
                    None => {
                        push(&mut p, bad_state(eat, "sector bitmap", e.state()));
                        continue;
                    }
                    Some(SectorBitmapState::NotPresent) => continue,
                    Some(SectorBitmapState::Present) if !g.differencing => {
                        push(
                            &mut p,
                            VhdxError::field(
                                s,
                                eat,
                                "sector bitmap state",
                                "present",
                                "not present in a file without parent",
                            ),
                        );
                        continue;
                    }
                    Some(SectorBitmapState::Present) => (SECTOR_BITMAP_BLOCK_SIZE, "sector bitmap"),
                },
                None => continue,
            };
            let off = e.file_offset();
            let end = off.saturating_add(len);
            if let Some(area) = areas.metadata_overlap(off, end) {
                push(
                    &mut p,
                    VhdxError::placement(
                        s,
                        eat,
                        format!("{kind} at {off:#x}..{end:#x} overlaps the {area}"),
                    ),
                );
            } else if end > areas.file_len {
                push(
                    &mut p,
                    VhdxError::placement(
                        s,
                        eat,
                        format!(
                            "{kind} at {off:#x}..{end:#x} ends past the end of the file ({:#x})",
                            areas.file_len
                        ),
                    ),
                );
            } else {
                used.push((off, end, eat));
            }
        }
        used.sort_unstable();
        let mut last: Option<(u64, u64, u64)> = None;
        for &(off, end, eat) in &used {
            if let Some((loff, lend, leat)) = last {
                if off < lend {
                    push(
                        &mut p,
                        VhdxError::placement(
                            s,
                            eat,
                            format!(
                                "block at {off:#x} overlaps the block at {loff:#x} (entry at {leat:#x})"
                            ),
                        ),
                    );
                    if end <= lend {
                        continue;
                    }
                }
            }
            last = Some((off, end, eat));
        }
        if more > 0 {
            p.push(VhdxError::placement(s, at, format!("{more} more problems")));
        }
        p
    }
}

/// The bits of a sector-bitmap block that cover payload block `block`: one bit per
/// logical sector, the block's sectors starting at bit `(block % chunk_ratio) ·
/// sectors_per_block` of its chunk's bitmap. Returns `(chunk, first bit, bit count)`.
pub fn bitmap_bits(g: &BatGeometry, block: u64) -> (u64, u64, u64) {
    let per_block = u64::from(g.block_size) / u64::from(g.logical_sector_size);
    (
        block / g.chunk_ratio,
        (block % g.chunk_ratio) * per_block,
        per_block,
    )
}

/// Whether bit `bit` of a sector bitmap is set: bit 0 is the least significant bit of
/// byte 0 (a set bit means the sector is in this file, a clear one that it comes from
/// the parent). `false` past the bitmap.
pub fn bitmap_bit(bitmap: &[u8], bit: u64) -> bool {
    usize::try_from(bit / 8)
        .ok()
        .and_then(|i| bitmap.get(i))
        .is_some_and(|b| b >> (bit % 8) & 1 == 1)
}

/// Sets or clears bits `[first, first + count)` of a sector bitmap (those past its end
/// are ignored).
pub fn set_bitmap_bits(bitmap: &mut [u8], first: u64, count: u64, present: bool) {
    let end = first.saturating_add(count).min(bitmap.len() as u64 * 8);
    for bit in first..end {
        let (i, m) = ((bit / 8) as usize, 1u8 << (bit % 8));
        if present {
            bitmap[i] |= m;
        } else {
            bitmap[i] &= !m;
        }
    }
}

fn bad_state(at: u64, what: &'static str, state: u8) -> VhdxError {
    VhdxError::field(
        Structure::Bat,
        at,
        if what == "payload" {
            "payload state"
        } else {
            "sector bitmap state"
        },
        state,
        if what == "payload" {
            "0, 1, 2, 3, 5, 6 or 7"
        } else {
            "0 or 6"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhdx::layout::FileAreas;

    fn areas(file_len: u64) -> FileAreas {
        FileAreas {
            file_len,
            log: (MIB, 2 * MIB),
            regions: vec![
                (2 * MIB, 3 * MIB, "BAT region"),
                (3 * MIB, 4 * MIB, "metadata region"),
            ],
        }
    }

    #[test]
    fn chunk_ratio_follows_the_specification_table() {
        // MS-VHDX 2.5: chunk ratio for 512-byte sectors: 1 MiB → 4096 … 256 MiB → 16.
        for (bs, ls, ratio) in [
            (1u32, 512u32, 4096u64),
            (2, 512, 2048),
            (32, 512, 128),
            (256, 512, 16),
            (1, 4096, 32768),
            (32, 4096, 1024),
            (256, 4096, 128),
        ] {
            let g = BatGeometry::new(MIB * 4, bs * MIB as u32, ls, false).unwrap();
            assert_eq!(g.chunk_ratio, ratio, "{bs} MiB, {ls}");
            assert_eq!(g.chunk_bytes(), SECTORS_PER_CHUNK * u64::from(ls));
        }
    }

    #[test]
    fn entries_count_for_dynamic_and_differencing() {
        // qemu-img: 4 TiB with 1 MiB blocks is 4194304 blocks and 1023 bitmap entries.
        let g = BatGeometry::new(4 << 40, MIB as u32, 512, false).unwrap();
        assert_eq!((g.data_blocks, g.entries), (4_194_304, 4_194_304 + 1023));
        let d = BatGeometry::new(4 << 40, MIB as u32, 512, true).unwrap();
        assert_eq!(d.entries, 1024 * 4097);
        // 100 MiB in 8 MiB blocks: 13 entries, no bitmap entry.
        let g = BatGeometry::new(100 * MIB, 8 * MIB as u32, 512, false).unwrap();
        assert_eq!(g.entries, 13);
        let d = BatGeometry::new(100 * MIB, 8 * MIB as u32, 512, true).unwrap();
        assert_eq!((d.entries, d.bitmap_index(0)), (513, Some(512)));
    }

    #[test]
    fn payload_and_bitmap_entries_interleave() {
        let g = BatGeometry::new(8192 * MIB + MIB, MIB as u32, 512, true).unwrap();
        assert_eq!(g.chunk_ratio, 4096);
        assert_eq!(g.payload_index(4095), Some(4095));
        assert_eq!(g.kind_of(4096), Some(EntryKind::SectorBitmap(0)));
        assert_eq!(g.payload_index(4096), Some(4097));
        assert_eq!(g.kind_of(4097), Some(EntryKind::Payload(4096)));
        assert_eq!(g.bitmap_index(2), Some(3 * 4097 - 1));
        assert_eq!(g.kind_of(3 * 4097 - 1), Some(EntryKind::SectorBitmap(2)));
        // Padding after the last block of a differencing table.
        assert_eq!(g.kind_of(2 * 4097 + 1), None);
        for b in 0..g.data_blocks {
            let i = g.payload_index(b).unwrap();
            assert_eq!(g.kind_of(i), Some(EntryKind::Payload(b)));
        }
    }

    #[test]
    fn geometry_refuses_bad_parameters() {
        assert!(BatGeometry::new(MIB, 3 * MIB as u32, 512, false).is_err());
        assert!(BatGeometry::new(MIB, MIB as u32, 1024, false).is_err());
        assert!(BatGeometry::new(0, MIB as u32, 512, false).is_err());
        assert!(BatGeometry::new(u64::MAX, MIB as u32, 512, false).is_err());
    }

    #[test]
    fn entry_packs_state_and_offset() {
        let e = BatEntry::new(PAYLOAD_BLOCK_FULLY_PRESENT, 8 * MIB);
        assert_eq!(
            e.0, 0x800006,
            "as qemu-img writes block 0 of a written disk"
        );
        assert_eq!((e.state(), e.file_offset(), e.reserved()), (6, 8 * MIB, 0));
        assert_eq!(PayloadState::from_bits(5), Some(PayloadState::Unmapped));
        assert_eq!(PayloadState::from_bits(4), None);
        for s in [0, 1, 2, 3, 6, 7] {
            assert_eq!(PayloadState::from_bits(s).unwrap().bits(), s);
        }
    }

    #[test]
    fn bat_round_trips_and_reads_blocks() {
        let g = BatGeometry::new(100 * MIB, 8 * MIB as u32, 512, false).unwrap();
        let mut bat = Bat::filled(g, BatEntry::new(PAYLOAD_BLOCK_ZERO, 0));
        assert!(bat.set_payload(0, PayloadState::FullyPresent, 8 * MIB));
        assert!(!bat.set_payload(13, PayloadState::FullyPresent, 8 * MIB));
        let back = Bat::decode(&bat.encode(), g, 2 * MIB).unwrap();
        assert_eq!(back, bat);
        assert_eq!(
            back.payload(0),
            Some(PayloadBlock {
                state: Some(PayloadState::FullyPresent),
                file_offset: Some(8 * MIB)
            })
        );
        assert_eq!(back.payload(1).unwrap().file_offset, None);
        assert!(back.problems(&areas(16 * MIB), 2 * MIB).is_empty());
    }

    #[test]
    fn short_bat_is_truncated() {
        let g = BatGeometry::new(100 * MIB, 8 * MIB as u32, 512, false).unwrap();
        assert!(matches!(
            Bat::decode(&[0; 100], g, 0),
            Err(VhdxError::Truncated { expected: 104, .. })
        ));
    }

    #[test]
    fn blocks_overlapping_metadata_each_other_or_eof_are_reported() {
        let g = BatGeometry::new(100 * MIB, 8 * MIB as u32, 512, false).unwrap();
        let mut bat = Bat::filled(g, BatEntry::default());
        bat.set_payload(0, PayloadState::FullyPresent, 3 * MIB); // metadata region
        bat.set_payload(1, PayloadState::FullyPresent, 8 * MIB);
        bat.set_payload(2, PayloadState::FullyPresent, 12 * MIB); // overlaps block 1
        bat.set_payload(3, PayloadState::FullyPresent, 60 * MIB); // past EOF
        let p = bat.problems(&areas(32 * MIB), 2 * MIB);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].to_string().contains("metadata region"));
        assert!(p[1].to_string().contains("past the end"));
        assert!(p[2].to_string().contains("overlaps the block at 0x800000"));
        assert_eq!(p[2].offset(), 2 * MIB + 16);
    }

    #[test]
    fn last_partial_block_needs_only_its_part_below_the_virtual_size() {
        let g = BatGeometry::new(40 * MIB, 32 * MIB as u32, 512, false).unwrap();
        let mut bat = Bat::filled(g, BatEntry::default());
        bat.set_payload(0, PayloadState::FullyPresent, 8 * MIB);
        bat.set_payload(1, PayloadState::FullyPresent, 40 * MIB);
        assert!(bat.problems(&areas(48 * MIB), 0).is_empty());
        assert_eq!(bat.problems(&areas(48 * MIB - 1), 0).len(), 1);
    }

    #[test]
    fn states_are_judged_by_entry_kind() {
        let g = BatGeometry::new(100 * MIB, 8 * MIB as u32, 512, true).unwrap();
        let mut bat = Bat::filled(g, BatEntry::default());
        bat.entries[0] = BatEntry::new(4, 0);
        bat.entries[1] = BatEntry::new(PAYLOAD_BLOCK_PARTIALLY_PRESENT, 8 * MIB);
        bat.entries[512] = BatEntry::new(3, 0); // sector bitmap entry with a payload state
        let p = bat.problems(&areas(32 * MIB), 0);
        assert_eq!(p.len(), 3, "{p:#?}");
        bat.entries[512] = BatEntry::new(SB_BLOCK_PRESENT, 16 * MIB);
        bat.entries[0] = BatEntry::default();
        assert!(bat.problems(&areas(32 * MIB), 0).is_empty());
        // The same in a file without parent.
        let g = BatGeometry::new(100 * MIB, 8 * MIB as u32, 512, false).unwrap();
        let mut bat = Bat::filled(g, BatEntry::default());
        bat.entries[1] = BatEntry::new(PAYLOAD_BLOCK_PARTIALLY_PRESENT, 8 * MIB);
        assert_eq!(bat.problems(&areas(32 * MIB), 0).len(), 1);
    }

    #[test]
    fn bitmap_bits_locate_a_blocks_sectors() {
        let g = BatGeometry::new(8192 * MIB, MIB as u32, 512, true).unwrap();
        assert_eq!(bitmap_bits(&g, 0), (0, 0, 2048));
        assert_eq!(bitmap_bits(&g, 4097), (1, 2048, 2048));
        let mut bm = vec![0u8; SECTOR_BITMAP_BLOCK_SIZE as usize];
        set_bitmap_bits(&mut bm, 3, 6, true);
        assert_eq!(bm[0], 0b1111_1000);
        assert_eq!(bm[1], 0b0000_0001);
        assert!(bitmap_bit(&bm, 3) && bitmap_bit(&bm, 8) && !bitmap_bit(&bm, 9));
        assert!(!bitmap_bit(&bm, u64::MAX));
        set_bitmap_bits(&mut bm, 4, 1, false);
        assert_eq!(bm[0], 0b1110_1000);
        set_bitmap_bits(&mut bm, u64::MAX - 1, 10, true);
    }

    #[test]
    fn problem_list_is_capped() {
        let g = BatGeometry::new(4 << 30, MIB as u32, 512, false).unwrap();
        let bat = Bat::filled(g, BatEntry::new(4, 0));
        let p = bat.problems(&areas(32 * MIB), 0);
        assert_eq!(p.len(), MAX_BAT_PROBLEMS + 1);
        assert!(p.last().unwrap().to_string().contains("more problems"));
    }
}
