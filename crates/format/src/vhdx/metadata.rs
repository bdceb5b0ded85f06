//! The metadata region (MS-VHDX 2.6): a 64 KiB table at the region's start listing
//! items by GUID, and the system items every file has — file parameters (block size,
//! leave-blocks-allocated, has-parent), virtual disk size, page 83 identifier, logical
//! and physical sector size — plus the parent locator of a differencing file
//! ([`super::locator`]). An item marked required whose GUID is unknown makes the file
//! unreadable.

use uuid::Uuid;

use super::error::{first, need, Structure, VhdxError};
use super::locator::ParentLocator;
use super::{guid_at, put_guid, put_u16, put_u32, u16_at, u32_at, u64_at, MIB};

/// Bytes of the metadata table at the start of the metadata region.
pub const METADATA_TABLE_SIZE: usize = 64 * 1024;
/// `metadata`: the table's signature.
pub const METADATA_SIGNATURE: [u8; 8] = *b"metadata";
/// Offset of the entry count in the table header.
pub const METADATA_COUNT_OFFSET: usize = 10;
/// Bytes of the table header.
pub const METADATA_HEADER_SIZE: usize = 32;
/// Bytes of one table entry.
pub const METADATA_ENTRY_SIZE: usize = 32;
/// Most entries the table may hold.
pub const MAX_METADATA_ENTRIES: u16 = 2047;
/// Most user (non-system) entries.
pub const MAX_USER_ENTRIES: usize = 1024;
/// Items start at or past this offset in the region (the table comes first).
pub const MIN_ITEM_OFFSET: u32 = 64 * 1024;
/// Largest item.
pub const MAX_ITEM_LENGTH: u32 = MIB as u32;
/// Entry flag: a user item (else a system item).
pub const FLAG_IS_USER: u32 = 1;
/// Entry flag: describes the virtual disk (else the file).
pub const FLAG_IS_VIRTUAL_DISK: u32 = 2;
/// Entry flag: must be understood to open the file.
pub const FLAG_IS_REQUIRED: u32 = 4;

/// GUID of the file parameters item (8 bytes).
pub const FILE_PARAMETERS_GUID: Uuid = Uuid::from_u128(0xcaa16737_fa36_4d43_b3b6_33f0aa44e76b);
/// GUID of the virtual disk size item (8 bytes).
pub const VIRTUAL_DISK_SIZE_GUID: Uuid = Uuid::from_u128(0x2fa54224_cd1b_4876_b211_5dbed83bf4b8);
/// GUID of the page 83 data item (16 bytes: the disk's SCSI identifier).
pub const PAGE83_GUID: Uuid = Uuid::from_u128(0xbeca12ab_b2e6_4523_93ef_c309e000c746);
/// GUID of the logical sector size item (4 bytes).
pub const LOGICAL_SECTOR_SIZE_GUID: Uuid = Uuid::from_u128(0x8141bf1d_a96f_4709_ba47_f233a8faab5f);
/// GUID of the physical sector size item (4 bytes).
pub const PHYSICAL_SECTOR_SIZE_GUID: Uuid = Uuid::from_u128(0xcda348c7_445d_4471_9cc9_e9885251c556);
/// GUID of the parent locator item (differencing files).
pub const PARENT_LOCATOR_GUID: Uuid = Uuid::from_u128(0xa8d35f2d_b30b_454d_abf7_d3d84834ab0c);

/// File parameters flag: never turn a block back to not-present (fixed files).
pub const LEAVE_BLOCKS_ALLOCATED: u32 = 1;
/// File parameters flag: a differencing file.
pub const HAS_PARENT: u32 = 2;
/// Smallest payload block.
pub const MIN_BLOCK_SIZE: u32 = MIB as u32;
/// Largest payload block.
pub const MAX_BLOCK_SIZE: u32 = 256 * MIB as u32;
/// Hyper-V's default payload block size: 32 MiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 32 * MIB as u32;

const KNOWN: [(Uuid, &str, usize); 6] = [
    (FILE_PARAMETERS_GUID, "VHDX file parameters", 8),
    (VIRTUAL_DISK_SIZE_GUID, "VHDX virtual disk size", 8),
    (PAGE83_GUID, "VHDX page 83 data", 16),
    (LOGICAL_SECTOR_SIZE_GUID, "VHDX logical sector size", 4),
    (PHYSICAL_SECTOR_SIZE_GUID, "VHDX physical sector size", 4),
    (PARENT_LOCATOR_GUID, "VHDX parent locator", 0),
];

/// One table entry as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMetadataEntry {
    /// What the item is.
    pub item_id: Uuid,
    /// Offset of the item from the region's start.
    pub offset: u32,
    /// Length of the item.
    pub length: u32,
    /// Flags ([`FLAG_IS_USER`], [`FLAG_IS_VIRTUAL_DISK`], [`FLAG_IS_REQUIRED`]).
    pub flags: u32,
}

impl RawMetadataEntry {
    /// Whether a user item.
    pub fn is_user(&self) -> bool {
        self.flags & FLAG_IS_USER != 0
    }

    /// Whether required.
    pub fn is_required(&self) -> bool {
        self.flags & FLAG_IS_REQUIRED != 0
    }

    fn is_known(&self) -> bool {
        !self.is_user() && KNOWN.iter().any(|k| k.0 == self.item_id)
    }
}

/// The metadata table as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMetadataTable {
    /// `metadata` in a valid table.
    pub signature: [u8; 8],
    /// The entry count as stored.
    pub entry_count: u16,
    /// The entries, at most [`MAX_METADATA_ENTRIES`].
    pub entries: Vec<RawMetadataEntry>,
}

/// File parameters: how the file stores data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileParameters {
    /// Bytes per payload block: a power of two from 1 MiB to 256 MiB.
    pub block_size: u32,
    /// Blocks are never returned to not-present (how a fixed file says it is one).
    pub leave_blocks_allocated: bool,
    /// A differencing file: a parent locator names the parent.
    pub has_parent: bool,
}

/// Every system item of a valid metadata region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// File parameters.
    pub file_parameters: FileParameters,
    /// Virtual disk size in bytes (a multiple of the logical sector size, ≤ 64 TiB).
    pub virtual_size: u64,
    /// The page 83 (SCSI) identifier of the virtual disk.
    pub page83: Uuid,
    /// Logical sector size: 512 or 4096.
    pub logical_sector_size: u32,
    /// Physical sector size: 512 or 4096.
    pub physical_sector_size: u32,
    /// The parent locator: present when `has_parent` is set (required then); one left
    /// in a file without a parent is kept and not used.
    pub parent_locator: Option<ParentLocator>,
    /// Items this implementation does not know and that are not required (user items,
    /// future system items): listed, not interpreted.
    pub other_items: Vec<RawMetadataEntry>,
}

impl RawMetadataTable {
    /// Decodes the table from the first 64 KiB of the metadata region; fails only when
    /// shorter. `region_offset` places errors.
    pub fn decode(region: &[u8], region_offset: u64) -> Result<RawMetadataTable, VhdxError> {
        need(
            region,
            METADATA_TABLE_SIZE,
            Structure::MetadataTable,
            region_offset,
        )?;
        let mut signature = [0; 8];
        signature.copy_from_slice(&region[..8]);
        let entry_count = u16_at(region, METADATA_COUNT_OFFSET);
        let entries = (0..entry_count.min(MAX_METADATA_ENTRIES) as usize)
            .map(|i| {
                let e = METADATA_HEADER_SIZE + i * METADATA_ENTRY_SIZE;
                RawMetadataEntry {
                    item_id: guid_at(region, e),
                    offset: u32_at(region, e + 16),
                    length: u32_at(region, e + 20),
                    flags: u32_at(region, e + 24),
                }
            })
            .collect();
        Ok(RawMetadataTable {
            signature,
            entry_count,
            entries,
        })
    }

    /// Every problem of the table in a region of `region_length` bytes at
    /// `region_offset`: signature, count, each item inside the region and past the
    /// table, items overlapping or listed twice, unknown required items.
    pub fn problems(&self, region_offset: u64, region_length: u64) -> Vec<VhdxError> {
        let s = Structure::MetadataTable;
        let at = region_offset;
        let mut p = Vec::new();
        if self.signature != METADATA_SIGNATURE {
            p.push(VhdxError::signature(s, at, &self.signature, "metadata"));
            return p;
        }
        if self.entry_count > MAX_METADATA_ENTRIES {
            p.push(VhdxError::field(
                s,
                at + METADATA_COUNT_OFFSET as u64,
                "entry count",
                self.entry_count,
                "at most 2047",
            ));
        }
        if self.entries.iter().filter(|e| e.is_user()).count() > MAX_USER_ENTRIES {
            p.push(VhdxError::field(
                s,
                at,
                "user entries",
                self.entries.iter().filter(|e| e.is_user()).count(),
                "at most 1024",
            ));
        }
        let mut ranges: Vec<(u64, u64, usize)> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let eat = at + (METADATA_HEADER_SIZE + i * METADATA_ENTRY_SIZE) as u64;
            if !e.is_known() && e.is_required() {
                p.push(VhdxError::UnknownRequired {
                    structure: s,
                    offset: eat,
                    what: "metadata item",
                    guid: e.item_id,
                });
            }
            if e.length > MAX_ITEM_LENGTH {
                p.push(VhdxError::field(
                    s,
                    eat + 20,
                    "item length",
                    e.length,
                    "at most 1 MiB",
                ));
            }
            let end = u64::from(e.offset) + u64::from(e.length);
            if e.length == 0 {
                if e.offset != 0 {
                    p.push(VhdxError::field(
                        s,
                        eat + 16,
                        "item offset",
                        e.offset,
                        "0 for an empty item",
                    ));
                }
            } else if e.offset < MIN_ITEM_OFFSET || end > region_length {
                p.push(VhdxError::field(
                    s,
                    eat + 16,
                    "item offset",
                    format_args!("{:#x}..{end:#x}", e.offset),
                    format!("inside the region past the table (64 KiB..{region_length:#x})"),
                ));
            } else {
                ranges.push((u64::from(e.offset), end, i));
            }
            if self.entries[..i]
                .iter()
                .any(|o| o.item_id == e.item_id && o.is_user() == e.is_user())
            {
                p.push(VhdxError::placement(
                    s,
                    eat,
                    format!("item {} listed twice", e.item_id),
                ));
            }
        }
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            if w[1].0 < w[0].1 {
                p.push(VhdxError::placement(
                    s,
                    at + (METADATA_HEADER_SIZE + w[1].2 * METADATA_ENTRY_SIZE) as u64,
                    format!("item {} overlaps entry {}", w[1].2, w[0].2),
                ));
            }
        }
        p
    }
}

impl Metadata {
    /// Decodes and validates the metadata region `region` (its bytes as far as the file
    /// holds them, at most the region's length) at `region_offset`.
    pub fn decode(region: &[u8], region_offset: u64) -> Result<Metadata, VhdxError> {
        let table = RawMetadataTable::decode(region, region_offset)?;
        first(table.problems(region_offset, region.len() as u64))?;
        let item = |guid: Uuid| -> Option<(&[u8], u64)> {
            table
                .entries
                .iter()
                .find(|e| e.item_id == guid && !e.is_user())
                .map(|e| {
                    let start = e.offset as usize;
                    let bytes = &region[start..start + e.length as usize];
                    (bytes, region_offset + u64::from(e.offset))
                })
        };
        let fixed = |guid: Uuid| -> Result<(&[u8], u64), VhdxError> {
            let (name, len) = KNOWN
                .iter()
                .find(|k| k.0 == guid)
                .map(|k| (k.1, k.2))
                .expect("a known GUID");
            let s = Structure::MetadataItem(name);
            let (bytes, at) = item(guid).ok_or(VhdxError::Missing {
                structure: Structure::MetadataTable,
                offset: region_offset,
                what: name,
            })?;
            if bytes.len() != len {
                return Err(VhdxError::field(
                    s,
                    at,
                    "length",
                    bytes.len(),
                    len.to_string(),
                ));
            }
            Ok((bytes, at))
        };
        let (fp, fp_at) = fixed(FILE_PARAMETERS_GUID)?;
        let flags = u32_at(fp, 4);
        let file_parameters = FileParameters {
            block_size: u32_at(fp, 0),
            leave_blocks_allocated: flags & LEAVE_BLOCKS_ALLOCATED != 0,
            has_parent: flags & HAS_PARENT != 0,
        };
        let (vs, vs_at) = fixed(VIRTUAL_DISK_SIZE_GUID)?;
        let (p83, _) = fixed(PAGE83_GUID)?;
        let (ls, ls_at) = fixed(LOGICAL_SECTOR_SIZE_GUID)?;
        let (ps, ps_at) = fixed(PHYSICAL_SECTOR_SIZE_GUID)?;
        let parent_locator = match item(PARENT_LOCATOR_GUID) {
            Some((bytes, at)) => Some(ParentLocator::decode(bytes, at)?),
            None => None,
        };
        let md = Metadata {
            file_parameters,
            virtual_size: u64_at(vs, 0),
            page83: guid_at(p83, 0),
            logical_sector_size: u32_at(ls, 0),
            physical_sector_size: u32_at(ps, 0),
            parent_locator,
            other_items: table
                .entries
                .iter()
                .filter(|e| !e.is_known())
                .copied()
                .collect(),
        };
        first(md.problems([fp_at, vs_at, ls_at, ps_at], region_offset))?;
        Ok(md)
    }

    /// Every problem of the items' values; `at` holds the file offsets of the file
    /// parameters, virtual size, logical and physical sector size items.
    fn problems(&self, at: [u64; 4], region_offset: u64) -> Vec<VhdxError> {
        let mut p = Vec::new();
        let bs = self.file_parameters.block_size;
        if let Err(msg) = check_block_size(bs) {
            p.push(VhdxError::field(
                Structure::MetadataItem("VHDX file parameters"),
                at[0],
                "block size",
                bs,
                msg,
            ));
        }
        for (v, name, off) in [
            (self.logical_sector_size, "VHDX logical sector size", at[2]),
            (
                self.physical_sector_size,
                "VHDX physical sector size",
                at[3],
            ),
        ] {
            if v != 512 && v != 4096 {
                p.push(VhdxError::field(
                    Structure::MetadataItem(name),
                    off,
                    "sector size",
                    v,
                    "512 or 4096",
                ));
            }
        }
        let ls = u64::from(self.logical_sector_size.max(1));
        if let Err(msg) = check_virtual_size(self.virtual_size, ls) {
            p.push(VhdxError::field(
                Structure::MetadataItem("VHDX virtual disk size"),
                at[1],
                "virtual size",
                self.virtual_size,
                msg,
            ));
        }
        if self.file_parameters.has_parent && self.parent_locator.is_none() {
            p.push(VhdxError::Missing {
                structure: Structure::MetadataTable,
                offset: region_offset,
                what: "parent locator (the file parameters say the file has a parent)",
            });
        }
        p
    }

    /// The metadata region's content: the table then the items packed from 64 KiB, as
    /// qemu-img and vhdkit lay them out. Pad to the region's length before writing.
    /// Unknown items are not written (they are not kept).
    pub fn encode(&self) -> Vec<u8> {
        let mut fp_flags = 0;
        if self.file_parameters.leave_blocks_allocated {
            fp_flags |= LEAVE_BLOCKS_ALLOCATED;
        }
        if self.file_parameters.has_parent {
            fp_flags |= HAS_PARENT;
        }
        let mut items: Vec<(Uuid, u32, Vec<u8>)> = vec![
            (FILE_PARAMETERS_GUID, FLAG_IS_REQUIRED, {
                let mut b = vec![0; 8];
                put_u32(&mut b, 0, self.file_parameters.block_size);
                put_u32(&mut b, 4, fp_flags);
                b
            }),
            (
                VIRTUAL_DISK_SIZE_GUID,
                FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
                self.virtual_size.to_le_bytes().to_vec(),
            ),
            (
                PAGE83_GUID,
                FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
                self.page83.to_bytes_le().to_vec(),
            ),
            (
                LOGICAL_SECTOR_SIZE_GUID,
                FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
                self.logical_sector_size.to_le_bytes().to_vec(),
            ),
            (
                PHYSICAL_SECTOR_SIZE_GUID,
                FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
                self.physical_sector_size.to_le_bytes().to_vec(),
            ),
        ];
        if let Some(l) = &self.parent_locator {
            items.push((
                PARENT_LOCATOR_GUID,
                FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
                l.encode(),
            ));
        }
        let total: usize = items.iter().map(|i| i.2.len()).sum();
        let mut b = vec![0u8; METADATA_TABLE_SIZE + total];
        b[..8].copy_from_slice(&METADATA_SIGNATURE);
        put_u16(&mut b, METADATA_COUNT_OFFSET, items.len() as u16);
        let mut off = METADATA_TABLE_SIZE;
        for (i, (guid, flags, bytes)) in items.iter().enumerate() {
            let e = METADATA_HEADER_SIZE + i * METADATA_ENTRY_SIZE;
            put_guid(&mut b, e, guid);
            put_u32(&mut b, e + 16, off as u32);
            put_u32(&mut b, e + 20, bytes.len() as u32);
            put_u32(&mut b, e + 24, *flags);
            b[off..off + bytes.len()].copy_from_slice(bytes);
            off += bytes.len();
        }
        debug_assert_eq!(off, b.len());
        b
    }
}

/// Whether `bs` is a valid payload block size.
pub fn check_block_size(bs: u32) -> Result<(), String> {
    if !bs.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&bs) {
        return Err("a power of two from 1 MiB to 256 MiB".into());
    }
    Ok(())
}

/// Whether `size` is a valid virtual size for logical sectors of `sector` bytes.
pub fn check_virtual_size(size: u64, sector: u64) -> Result<(), String> {
    if size == 0 || size > super::MAX_VIRTUAL_SIZE || !size.is_multiple_of(sector) {
        return Err(format!(
            "a non-zero multiple of the {sector}-byte logical sector, at most 64 TiB"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Metadata {
        Metadata {
            file_parameters: FileParameters {
                block_size: DEFAULT_BLOCK_SIZE,
                leave_blocks_allocated: false,
                has_parent: false,
            },
            virtual_size: 100 * MIB,
            page83: Uuid::from_u128(0x1234_5678),
            logical_sector_size: 512,
            physical_sector_size: 4096,
            parent_locator: None,
            other_items: vec![],
        }
    }

    fn region(md: &Metadata) -> Vec<u8> {
        let mut b = md.encode();
        b.resize(MIB as usize, 0);
        b
    }

    #[test]
    fn metadata_round_trips() {
        let md = sample();
        assert_eq!(Metadata::decode(&region(&md), 3 * MIB).unwrap(), md);
    }

    #[test]
    fn metadata_with_parent_locator_round_trips() {
        let mut md = sample();
        md.file_parameters.has_parent = true;
        md.parent_locator = Some(ParentLocator::new(
            Uuid::from_u128(77),
            Some(r".\base.vhdx"),
            None,
            Some(r"C:\vms\base.vhdx"),
        ));
        assert_eq!(Metadata::decode(&region(&md), 3 * MIB).unwrap(), md);
    }

    #[test]
    fn differencing_without_locator_is_refused() {
        let mut md = sample();
        md.file_parameters.has_parent = true;
        let err = Metadata::decode(&region(&md), 0).unwrap_err();
        assert!(matches!(err, VhdxError::Missing { .. }), "{err}");
    }

    #[test]
    fn odd_block_size_and_sector_size_are_refused() {
        for (bs, ls, vs) in [
            (3 * MIB as u32, 512, MIB),
            (MIB as u32 / 2, 512, MIB),
            (MIB as u32, 1024, MIB),
            (MIB as u32, 4096, MIB + 512),
            (MIB as u32, 512, 0),
            (MIB as u32, 512, (64 << 40) + 512),
        ] {
            let mut md = sample();
            md.file_parameters.block_size = bs;
            md.logical_sector_size = ls;
            md.virtual_size = vs;
            let err = Metadata::decode(&region(&md), 0).unwrap_err();
            assert!(
                matches!(err, VhdxError::Field { .. }),
                "{bs} {ls} {vs}: {err}"
            );
        }
    }

    fn with_extra_entry(flags: u32) -> Vec<u8> {
        let mut b = region(&sample());
        let n = u16_at(&b, METADATA_COUNT_OFFSET) as usize;
        let e = METADATA_HEADER_SIZE + n * METADATA_ENTRY_SIZE;
        put_guid(&mut b, e, &Uuid::from_u128(0xfeed));
        put_u32(&mut b, e + 16, 0x20000);
        put_u32(&mut b, e + 20, 16);
        put_u32(&mut b, e + 24, flags);
        put_u16(&mut b, METADATA_COUNT_OFFSET, n as u16 + 1);
        b
    }

    #[test]
    fn unknown_required_item_is_refused() {
        let err = Metadata::decode(&with_extra_entry(FLAG_IS_REQUIRED), 2 * MIB).unwrap_err();
        assert!(
            matches!(err, VhdxError::UnknownRequired { guid, .. } if guid == Uuid::from_u128(0xfeed)),
            "{err}"
        );
        assert_eq!(err.offset(), 2 * MIB + 32 + 5 * 32);
    }

    #[test]
    fn unknown_optional_item_is_listed() {
        let md = Metadata::decode(&with_extra_entry(FLAG_IS_USER), 0).unwrap();
        assert_eq!(md.other_items.len(), 1);
    }

    #[test]
    fn overlapping_items_are_refused() {
        let mut b = region(&sample());
        // Second entry's offset onto the first item.
        put_u32(
            &mut b,
            METADATA_HEADER_SIZE + METADATA_ENTRY_SIZE + 16,
            0x10004,
        );
        let err = Metadata::decode(&b, 0).unwrap_err();
        assert!(matches!(err, VhdxError::Placement { .. }), "{err}");
    }

    #[test]
    fn item_past_region_end_is_refused() {
        let mut b = region(&sample());
        put_u32(&mut b, METADATA_HEADER_SIZE + 16, MIB as u32 - 4);
        let err = Metadata::decode(&b, 0).unwrap_err();
        assert!(
            matches!(
                err,
                VhdxError::Field {
                    field: "item offset",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn item_of_wrong_length_is_refused() {
        let mut b = region(&sample());
        put_u32(&mut b, METADATA_HEADER_SIZE + METADATA_ENTRY_SIZE + 20, 4);
        let err = Metadata::decode(&b, 0).unwrap_err();
        assert!(
            matches!(
                err,
                VhdxError::Field {
                    field: "length",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_item_is_refused() {
        let mut b = region(&sample());
        put_u16(&mut b, METADATA_COUNT_OFFSET, 4);
        let err = Metadata::decode(&b, 0).unwrap_err();
        assert!(
            matches!(
                err,
                VhdxError::Missing {
                    what: "VHDX physical sector size",
                    ..
                }
            ),
            "{err}"
        );
    }
}
