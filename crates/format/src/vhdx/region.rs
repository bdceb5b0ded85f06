//! The region table (MS-VHDX 2.2.3): two identical 64 KiB copies at 192 KiB and
//! 256 KiB listing where the BAT and the metadata region lie. A region marked required
//! whose GUID is unknown makes the file unreadable.

use uuid::Uuid;

use super::error::{first, need, Structure, VhdxError};
use super::{
    crc32c_with_zeroed_field, guid_at, put_guid, put_u32, put_u64, seal, u32_at, u64_at, ALIGNMENT,
    HEADER_SECTION_SIZE,
};

/// Offset of region table 1.
pub const REGION_TABLE_1_OFFSET: u64 = 192 * 1024;
/// Offset of region table 2.
pub const REGION_TABLE_2_OFFSET: u64 = 256 * 1024;
/// Bytes of a region table: the checksum covers all of them.
pub const REGION_TABLE_SIZE: usize = 64 * 1024;
/// `regi`: the region table signature.
pub const REGION_SIGNATURE: [u8; 4] = *b"regi";
/// Offset of the CRC-32C in the table.
pub const REGION_CHECKSUM_OFFSET: usize = 4;
/// Offset of the entry count.
pub const REGION_COUNT_OFFSET: usize = 8;
/// Bytes of the table header (signature, checksum, count, reserved).
pub const REGION_HEADER_SIZE: usize = 16;
/// Bytes of one entry: GUID, file offset, length, flags.
pub const REGION_ENTRY_SIZE: usize = 32;
/// Most entries a table may hold.
pub const MAX_REGION_ENTRIES: u32 = 2047;
/// The entry flag bit saying the region must be understood to open the file.
pub const REGION_REQUIRED: u32 = 1;
/// GUID of the block allocation table region.
pub const BAT_REGION_GUID: Uuid = Uuid::from_u128(0x2dc27766_f623_4200_9d64_115e9bfd4a08);
/// GUID of the metadata region.
pub const METADATA_REGION_GUID: Uuid = Uuid::from_u128(0x8b7ca206_4790_4b9a_b8fe_575f050f886e);

/// One region table entry as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRegionEntry {
    /// What the region holds.
    pub guid: Uuid,
    /// Where it starts.
    pub file_offset: u64,
    /// Its length in bytes.
    pub length: u32,
    /// Flags; bit 0 is [`REGION_REQUIRED`].
    pub flags: u32,
}

/// A region table as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRegionTable {
    /// `regi` in a valid table.
    pub signature: [u8; 4],
    /// CRC-32C as stored.
    pub checksum: u32,
    /// CRC-32C of the 64 KiB as decoded.
    pub computed_checksum: u32,
    /// The entry count as stored.
    pub entry_count: u32,
    /// The entries, at most [`MAX_REGION_ENTRIES`] of them (what the count claims
    /// beyond that is not read).
    pub entries: Vec<RawRegionEntry>,
}

/// A region of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Where it starts (a multiple of 1 MiB, past the header section).
    pub offset: u64,
    /// Its length (a multiple of 1 MiB, not zero).
    pub length: u32,
    /// Whether the table marks it required.
    pub required: bool,
}

impl Region {
    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.length)
    }
}

/// A valid region table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionTable {
    /// The block allocation table.
    pub bat: Region,
    /// The metadata region.
    pub metadata: Region,
    /// Regions of unknown kinds that are not required (kept so that an update writes
    /// them back).
    pub optional: Vec<(Uuid, Region)>,
}

/// Which of the two region table copies.
pub fn table_offset(copy: u8) -> u64 {
    if copy == 1 {
        REGION_TABLE_1_OFFSET
    } else {
        REGION_TABLE_2_OFFSET
    }
}

impl RawRegionTable {
    /// Decodes the first 64 KiB of `bytes`; fails only when shorter. `copy` (1 or 2)
    /// places the error.
    pub fn decode(bytes: &[u8], copy: u8) -> Result<RawRegionTable, VhdxError> {
        need(
            bytes,
            REGION_TABLE_SIZE,
            Structure::RegionTable(copy),
            table_offset(copy),
        )?;
        let b = &bytes[..REGION_TABLE_SIZE];
        let mut signature = [0; 4];
        signature.copy_from_slice(&b[..4]);
        let entry_count = u32_at(b, REGION_COUNT_OFFSET);
        let entries = (0..entry_count.min(MAX_REGION_ENTRIES) as usize)
            .map(|i| {
                let e = REGION_HEADER_SIZE + i * REGION_ENTRY_SIZE;
                RawRegionEntry {
                    guid: guid_at(b, e),
                    file_offset: u64_at(b, e + 16),
                    length: u32_at(b, e + 24),
                    flags: u32_at(b, e + 28),
                }
            })
            .collect();
        Ok(RawRegionTable {
            signature,
            checksum: u32_at(b, REGION_CHECKSUM_OFFSET),
            computed_checksum: crc32c_with_zeroed_field(b, REGION_CHECKSUM_OFFSET),
            entry_count,
            entries,
        })
    }

    /// Every problem of copy `copy` (1 or 2): signature, checksum, count, each entry's
    /// placement, duplicates, overlaps, unknown required regions, missing BAT or
    /// metadata region.
    pub fn problems(&self, copy: u8) -> Vec<VhdxError> {
        let s = Structure::RegionTable(copy);
        let at = table_offset(copy);
        let mut p = Vec::new();
        if self.signature != REGION_SIGNATURE {
            p.push(VhdxError::signature(s, at, &self.signature, "regi"));
            return p;
        }
        if self.checksum != self.computed_checksum {
            p.push(VhdxError::Checksum {
                structure: s,
                offset: at,
                stored: self.checksum,
                computed: self.computed_checksum,
            });
            return p;
        }
        if self.entry_count > MAX_REGION_ENTRIES {
            p.push(VhdxError::field(
                s,
                at + REGION_COUNT_OFFSET as u64,
                "entry count",
                self.entry_count,
                "at most 2047",
            ));
        }
        for (i, e) in self.entries.iter().enumerate() {
            let eat = at + (REGION_HEADER_SIZE + i * REGION_ENTRY_SIZE) as u64;
            let known = e.guid == BAT_REGION_GUID || e.guid == METADATA_REGION_GUID;
            if !known && e.flags & REGION_REQUIRED != 0 {
                p.push(VhdxError::UnknownRequired {
                    structure: s,
                    offset: eat,
                    what: "region",
                    guid: e.guid,
                });
            }
            if !e.file_offset.is_multiple_of(ALIGNMENT) || e.file_offset < HEADER_SECTION_SIZE {
                p.push(VhdxError::field(
                    s,
                    eat + 16,
                    "region offset",
                    format_args!("{:#x}", e.file_offset),
                    "a multiple of 1 MiB past the header section",
                ));
            }
            if e.length == 0 || !u64::from(e.length).is_multiple_of(ALIGNMENT) {
                p.push(VhdxError::field(
                    s,
                    eat + 24,
                    "region length",
                    e.length,
                    "a non-zero multiple of 1 MiB",
                ));
            }
            if e.file_offset.checked_add(u64::from(e.length)).is_none() {
                p.push(VhdxError::placement(s, eat, "region ends past 2^64"));
            }
            // One problem per entry (the first earlier entry it clashes with): a table
            // of 2047 alike entries gives 2047 problems, not two million.
            let clash = self.entries[..i]
                .iter()
                .enumerate()
                .find(|(_, o)| o.guid == e.guid || overlaps(o, e));
            if let Some((j, o)) = clash {
                let detail = match o.guid == e.guid {
                    true => format!("region {} listed twice (entries {j} and {i})", e.guid),
                    false => format!("region {} overlaps region {} (entry {j})", e.guid, o.guid),
                };
                p.push(VhdxError::placement(s, eat, detail));
            }
        }
        for (guid, what) in [
            (BAT_REGION_GUID, "BAT region"),
            (METADATA_REGION_GUID, "metadata region"),
        ] {
            if !self.entries.iter().any(|e| e.guid == guid) {
                p.push(VhdxError::Missing {
                    structure: s,
                    offset: at,
                    what,
                });
            }
        }
        p
    }

    /// The valid table, or its first problem.
    pub fn validate(&self, copy: u8) -> Result<RegionTable, VhdxError> {
        first(self.problems(copy))?;
        let region = |e: &RawRegionEntry| Region {
            offset: e.file_offset,
            length: e.length,
            required: e.flags & REGION_REQUIRED != 0,
        };
        let find = |g: Uuid| {
            self.entries
                .iter()
                .find(|e| e.guid == g)
                .map(region)
                .expect("problems() checked the region is listed")
        };
        Ok(RegionTable {
            bat: find(BAT_REGION_GUID),
            metadata: find(METADATA_REGION_GUID),
            optional: self
                .entries
                .iter()
                .filter(|e| e.guid != BAT_REGION_GUID && e.guid != METADATA_REGION_GUID)
                .map(|e| (e.guid, region(e)))
                .collect(),
        })
    }
}

fn overlaps(a: &RawRegionEntry, b: &RawRegionEntry) -> bool {
    let end = |e: &RawRegionEntry| e.file_offset.saturating_add(u64::from(e.length));
    a.file_offset < end(b) && b.file_offset < end(a)
}

impl RegionTable {
    /// The whole 64 KiB table with its checksum; BAT and metadata marked required, as
    /// the specification and Hyper-V write them.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; REGION_TABLE_SIZE];
        b[..4].copy_from_slice(&REGION_SIGNATURE);
        let entries: Vec<(Uuid, Region)> = [
            (BAT_REGION_GUID, self.bat),
            (METADATA_REGION_GUID, self.metadata),
        ]
        .into_iter()
        .chain(self.optional.iter().copied())
        .collect();
        put_u32(&mut b, REGION_COUNT_OFFSET, entries.len() as u32);
        for (i, (guid, r)) in entries.iter().enumerate() {
            let e = REGION_HEADER_SIZE + i * REGION_ENTRY_SIZE;
            put_guid(&mut b, e, guid);
            put_u64(&mut b, e + 16, r.offset);
            put_u32(&mut b, e + 24, r.length);
            put_u32(&mut b, e + 28, if r.required { REGION_REQUIRED } else { 0 });
        }
        seal(&mut b, REGION_CHECKSUM_OFFSET);
        b
    }

    /// Chooses the table to use from both copies' 64 KiB: copy 1 when valid, else copy
    /// 2 (both are written identically; a torn update leaves one). Returns the table
    /// and whether the copies agree (a difference is worth reporting, not refusing).
    pub fn choose(first: &[u8], second: &[u8]) -> Result<(RegionTable, bool), VhdxError> {
        let one = RawRegionTable::decode(first, 1).and_then(|r| r.validate(1));
        let two = RawRegionTable::decode(second, 2).and_then(|r| r.validate(2));
        match (one, two) {
            (Ok(a), Ok(b)) => {
                let same = a == b;
                Ok((a, same))
            }
            (Ok(a), Err(_)) => Ok((a, false)),
            (Err(_), Ok(b)) => Ok((b, false)),
            (Err(a), Err(b)) => Err(VhdxError::NoRegionTable {
                first: Box::new(a),
                second: Box::new(b),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhdx::MIB;

    fn sample() -> RegionTable {
        RegionTable {
            bat: Region {
                offset: 3 * MIB,
                length: MIB as u32,
                required: true,
            },
            metadata: Region {
                offset: 2 * MIB,
                length: MIB as u32,
                required: true,
            },
            optional: vec![],
        }
    }

    fn raw_with(entries: Vec<RawRegionEntry>) -> Vec<u8> {
        let mut b = vec![0u8; REGION_TABLE_SIZE];
        b[..4].copy_from_slice(&REGION_SIGNATURE);
        put_u32(&mut b, REGION_COUNT_OFFSET, entries.len() as u32);
        for (i, e) in entries.iter().enumerate() {
            let at = REGION_HEADER_SIZE + i * REGION_ENTRY_SIZE;
            put_guid(&mut b, at, &e.guid);
            put_u64(&mut b, at + 16, e.file_offset);
            put_u32(&mut b, at + 24, e.length);
            put_u32(&mut b, at + 28, e.flags);
        }
        seal(&mut b, REGION_CHECKSUM_OFFSET);
        b
    }

    fn entry(guid: Uuid, off: u64, flags: u32) -> RawRegionEntry {
        RawRegionEntry {
            guid,
            file_offset: off,
            length: MIB as u32,
            flags,
        }
    }

    #[test]
    fn region_table_round_trips() {
        let t = sample();
        let bytes = t.encode();
        assert_eq!(
            RawRegionTable::decode(&bytes, 1)
                .unwrap()
                .validate(1)
                .unwrap(),
            t
        );
    }

    /// Found by the `vhdx_open` fuzz target (a timeout): a full table of alike entries
    /// listed a problem per pair, two million formatted messages.
    #[test]
    fn a_table_of_alike_entries_lists_one_problem_per_entry() {
        let n = (REGION_TABLE_SIZE - REGION_HEADER_SIZE) / REGION_ENTRY_SIZE;
        let entries = vec![entry(BAT_REGION_GUID, 2 * MIB, 1); n];
        let b = raw_with(entries);
        let raw = RawRegionTable::decode(&b, 1).unwrap();
        let problems = raw.problems(1);
        assert!(problems.len() <= n + 4, "{} problems", problems.len());
        assert!(
            problems[1].to_string().contains("listed twice"),
            "{}",
            problems[1]
        );
        assert!(raw.validate(1).is_err());
    }

    #[test]
    fn unknown_required_region_is_refused() {
        let other = Uuid::from_u128(0x1234);
        let b = raw_with(vec![
            entry(BAT_REGION_GUID, 2 * MIB, 1),
            entry(METADATA_REGION_GUID, 3 * MIB, 1),
            entry(other, 4 * MIB, REGION_REQUIRED),
        ]);
        let err = RawRegionTable::decode(&b, 1)
            .unwrap()
            .validate(1)
            .unwrap_err();
        assert!(
            matches!(err, VhdxError::UnknownRequired { guid, offset, .. }
                if guid == other && offset == REGION_TABLE_1_OFFSET + 16 + 64),
            "{err}"
        );
    }

    #[test]
    fn unknown_optional_region_is_kept() {
        let other = Uuid::from_u128(0x1234);
        let b = raw_with(vec![
            entry(BAT_REGION_GUID, 2 * MIB, 0),
            entry(METADATA_REGION_GUID, 3 * MIB, 0),
            entry(other, 4 * MIB, 0),
        ]);
        let t = RawRegionTable::decode(&b, 1).unwrap().validate(1).unwrap();
        assert_eq!(t.optional.len(), 1);
        assert!(!t.bat.required, "qemu-img leaves the required flag clear");
    }

    #[test]
    fn overlapping_regions_are_refused() {
        let b = raw_with(vec![
            entry(BAT_REGION_GUID, 2 * MIB, 1),
            RawRegionEntry {
                length: 2 * MIB as u32,
                ..entry(METADATA_REGION_GUID, MIB, 1)
            },
        ]);
        let p = RawRegionTable::decode(&b, 2).unwrap().problems(2);
        assert!(
            p.iter().any(|e| matches!(e, VhdxError::Placement { .. })),
            "{p:?}"
        );
    }

    #[test]
    fn missing_metadata_region_is_refused() {
        let b = raw_with(vec![entry(BAT_REGION_GUID, 2 * MIB, 1)]);
        let err = RawRegionTable::decode(&b, 1)
            .unwrap()
            .validate(1)
            .unwrap_err();
        assert!(matches!(
            err,
            VhdxError::Missing {
                what: "metadata region",
                ..
            }
        ));
    }

    #[test]
    fn region_in_header_section_or_unaligned_is_refused() {
        let b = raw_with(vec![
            entry(BAT_REGION_GUID, 0, 1),
            RawRegionEntry {
                length: 4096,
                ..entry(METADATA_REGION_GUID, 3 * MIB, 1)
            },
        ]);
        assert_eq!(RawRegionTable::decode(&b, 1).unwrap().problems(1).len(), 2);
    }

    #[test]
    fn huge_entry_count_reads_at_most_2047_entries() {
        let mut b = sample().encode();
        put_u32(&mut b, REGION_COUNT_OFFSET, u32::MAX);
        seal(&mut b, REGION_CHECKSUM_OFFSET);
        let raw = RawRegionTable::decode(&b, 1).unwrap();
        assert_eq!(raw.entries.len(), MAX_REGION_ENTRIES as usize);
        assert!(raw.validate(1).is_err());
    }

    #[test]
    fn damaged_first_copy_falls_back_to_second() {
        let t = sample();
        let mut one = t.encode();
        one[40] ^= 0xff;
        let (chosen, same) = RegionTable::choose(&one, &t.encode()).unwrap();
        assert_eq!((chosen, same), (t, false));
    }
}
