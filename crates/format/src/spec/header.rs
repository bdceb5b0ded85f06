//! The dynamic disk header (`cxsparse`), 1024 bytes, of dynamic and differencing disks.

use byteorder::{BigEndian, ByteOrder};
use uuid::Uuid;

use super::locator::{ParentLocator, LOCATOR_COUNT, LOCATOR_ENTRY_SIZE};
use super::{
    fixed, ones_complement_checksum, LengthError, Problem, Severity, VhdTime, FORMAT_VERSION,
    MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, SECTOR_SIZE,
};

/// Size of the dynamic header on disk.
pub const HEADER_SIZE: usize = 1024;
/// Magic at offset 0 of the dynamic header.
pub const HEADER_COOKIE: [u8; 8] = *b"cxsparse";
/// Offset of the header checksum.
pub const HEADER_CHECKSUM_OFFSET: usize = 36;
/// Offset of the parent Unicode name (512 bytes, UTF-16BE).
pub const PARENT_NAME_OFFSET: usize = 64;
/// Bytes of the parent Unicode name field.
pub const PARENT_NAME_SIZE: usize = 512;
/// Offset of the first parent locator entry.
pub const LOCATORS_OFFSET: usize = 576;

/// The decoded dynamic header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicHeader {
    /// `cxsparse` in a valid header.
    pub cookie: [u8; 8],
    /// "Next structure" offset; unused, all ones.
    pub data_offset: u64,
    /// Absolute offset of the BAT.
    pub table_offset: u64,
    /// Header version (0x00010000).
    pub header_version: u32,
    /// Number of BAT entries.
    pub max_table_entries: u32,
    /// Bytes of data per block (bitmap excluded).
    pub block_size: u32,
    /// Checksum as stored.
    pub checksum: u32,
    /// Unique id of the parent (differencing disks).
    pub parent_unique_id: Uuid,
    /// Modification time of the parent when the child last matched it.
    pub parent_timestamp: VhdTime,
    /// Reserved u32 at offset 60.
    pub reserved1: u32,
    /// Parent Unicode name as stored: 512 bytes of UTF-16BE.
    pub parent_name_raw: [u8; PARENT_NAME_SIZE],
    /// The eight parent locator entries.
    pub locators: [ParentLocator; LOCATOR_COUNT],
    /// Reserved bytes 768..1024.
    pub reserved2: [u8; 256],
}

impl DynamicHeader {
    /// A header for a new disk with `entries` BAT entries of `block_size` bytes, its BAT
    /// at `table_offset`, no parent.
    pub fn new(table_offset: u64, entries: u32, block_size: u32) -> DynamicHeader {
        DynamicHeader {
            cookie: HEADER_COOKIE,
            data_offset: u64::MAX,
            table_offset,
            header_version: FORMAT_VERSION,
            max_table_entries: entries,
            block_size,
            checksum: 0,
            parent_unique_id: Uuid::nil(),
            parent_timestamp: VhdTime(0),
            reserved1: 0,
            parent_name_raw: [0; PARENT_NAME_SIZE],
            locators: [ParentLocator::EMPTY; LOCATOR_COUNT],
            reserved2: [0; 256],
        }
    }

    /// Decodes 1024 bytes; fails only on length.
    pub fn decode(bytes: &[u8]) -> Result<DynamicHeader, LengthError> {
        let b: &[u8; HEADER_SIZE] = fixed(bytes, "dynamic header")?;
        let mut cookie = [0; 8];
        cookie.copy_from_slice(&b[0..8]);
        let mut id = [0; 16];
        id.copy_from_slice(&b[40..56]);
        let mut parent_name_raw = [0; PARENT_NAME_SIZE];
        parent_name_raw.copy_from_slice(&b[PARENT_NAME_OFFSET..PARENT_NAME_OFFSET + 512]);
        let mut locators = [ParentLocator::EMPTY; LOCATOR_COUNT];
        for (i, slot) in locators.iter_mut().enumerate() {
            let at = LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE;
            *slot = ParentLocator::decode(&b[at..at + LOCATOR_ENTRY_SIZE])?;
        }
        let mut reserved2 = [0; 256];
        reserved2.copy_from_slice(&b[768..]);
        Ok(DynamicHeader {
            cookie,
            data_offset: BigEndian::read_u64(&b[8..]),
            table_offset: BigEndian::read_u64(&b[16..]),
            header_version: BigEndian::read_u32(&b[24..]),
            max_table_entries: BigEndian::read_u32(&b[28..]),
            block_size: BigEndian::read_u32(&b[32..]),
            checksum: BigEndian::read_u32(&b[36..]),
            parent_unique_id: Uuid::from_bytes(id),
            parent_timestamp: VhdTime(BigEndian::read_u32(&b[56..])),
            reserved1: BigEndian::read_u32(&b[60..]),
            parent_name_raw,
            locators,
            reserved2,
        })
    }

    /// Encodes with the stored checksum as is.
    pub fn encode_raw(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.cookie);
        BigEndian::write_u64(&mut b[8..], self.data_offset);
        BigEndian::write_u64(&mut b[16..], self.table_offset);
        BigEndian::write_u32(&mut b[24..], self.header_version);
        BigEndian::write_u32(&mut b[28..], self.max_table_entries);
        BigEndian::write_u32(&mut b[32..], self.block_size);
        BigEndian::write_u32(&mut b[36..], self.checksum);
        b[40..56].copy_from_slice(self.parent_unique_id.as_bytes());
        BigEndian::write_u32(&mut b[56..], self.parent_timestamp.0);
        BigEndian::write_u32(&mut b[60..], self.reserved1);
        b[PARENT_NAME_OFFSET..PARENT_NAME_OFFSET + 512].copy_from_slice(&self.parent_name_raw);
        for (i, l) in self.locators.iter().enumerate() {
            let at = LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE;
            b[at..at + LOCATOR_ENTRY_SIZE].copy_from_slice(&l.encode());
        }
        b[768..].copy_from_slice(&self.reserved2);
        b
    }

    /// Encodes with a freshly computed checksum.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = self.encode_raw();
        let sum = ones_complement_checksum(&b, HEADER_CHECKSUM_OFFSET);
        BigEndian::write_u32(&mut b[HEADER_CHECKSUM_OFFSET..], sum);
        b
    }

    /// The checksum the content calls for.
    pub fn computed_checksum(&self) -> u32 {
        ones_complement_checksum(&self.encode_raw(), HEADER_CHECKSUM_OFFSET)
    }

    /// Whether the stored checksum is right.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.computed_checksum()
    }

    /// The parent's name, decoded leniently: UTF-16BE, an optional byte-order mark,
    /// unpaired surrogates replaced, cut at the first NUL.
    pub fn parent_name(&self) -> String {
        let mut units: Vec<u16> = self
            .parent_name_raw
            .chunks_exact(2)
            .map(BigEndian::read_u16)
            .collect();
        if units.first() == Some(&0xFFFE) {
            units = units.iter().map(|u| u.swap_bytes()).collect();
        }
        if units.first() == Some(&0xFEFF) {
            units.remove(0);
        }
        let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
        String::from_utf16_lossy(&units[..end])
    }

    /// Stores `name` as the parent Unicode name (UTF-16BE). Fails if it needs more than
    /// 256 code units.
    pub fn set_parent_name(&mut self, name: &str) -> Result<(), String> {
        let units: Vec<u16> = name.encode_utf16().collect();
        if units.len() > PARENT_NAME_SIZE / 2 {
            return Err(format!(
                "parent name is {} UTF-16 units, the header holds 256",
                units.len()
            ));
        }
        self.parent_name_raw = [0; PARENT_NAME_SIZE];
        for (i, u) in units.iter().enumerate() {
            self.parent_name_raw[2 * i..2 * i + 2].copy_from_slice(&u.to_be_bytes());
        }
        Ok(())
    }

    /// Bytes of the sector bitmap in front of each block, padded to whole sectors.
    pub fn bitmap_size(&self) -> u64 {
        bitmap_size_for(self.block_size)
    }

    /// Bytes the BAT takes on disk (rounded up to whole sectors).
    pub fn bat_size_on_disk(&self) -> u64 {
        super::layout::table_bytes(u64::from(self.max_table_entries))
    }

    /// Every problem with the header's content. `current_size` is the footer's virtual
    /// size, `file_len` the file's length, `differencing` whether the footer says type 4.
    pub fn validate(
        &self,
        current_size: u64,
        file_len: Option<u64>,
        differencing: bool,
    ) -> Vec<Problem> {
        let mut p = Vec::new();
        let s = "dynamic header";
        if self.cookie != HEADER_COOKIE {
            p.push(Problem::new(
                Severity::Error,
                s,
                "cookie",
                format!(
                    "found {:?}, expected \"cxsparse\"",
                    String::from_utf8_lossy(&self.cookie)
                ),
            ));
            return p;
        }
        if !self.checksum_ok() {
            p.push(Problem::new(
                Severity::Error,
                s,
                "checksum",
                format!(
                    "stored {:#010x}, computed {:#010x}",
                    self.checksum,
                    self.computed_checksum()
                ),
            ));
        }
        if self.header_version != FORMAT_VERSION {
            p.push(Problem::new(
                Severity::Error,
                s,
                "header version",
                format!("found {:#010x}, expected 0x00010000", self.header_version),
            ));
        }
        if self.data_offset != u64::MAX {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "data offset",
                format!("found {:#x}, expected all ones", self.data_offset),
            ));
        }
        if let Err(msg) = check_block_size(self.block_size) {
            p.push(Problem::new(Severity::Error, s, "block size", msg));
        }
        if self.table_offset == 0 || !self.table_offset.is_multiple_of(SECTOR_SIZE) {
            p.push(Problem::new(
                Severity::Error,
                s,
                "table offset",
                format!("{:#x} is not a positive multiple of 512", self.table_offset),
            ));
        }
        if self.max_table_entries == 0 {
            p.push(Problem::new(
                Severity::Error,
                s,
                "max table entries",
                "the BAT has no entries",
            ));
        }
        if let Some(len) = file_len {
            let end = self.table_offset.saturating_add(self.bat_size_on_disk());
            if end > len.saturating_sub(512) {
                p.push(Problem::new(
                    Severity::Error,
                    s,
                    "table offset",
                    format!(
                        "the BAT ({:#x}..{end:#x}) runs into the footer or past the end of the file ({len:#x})",
                        self.table_offset
                    ),
                ));
            }
        }
        if check_block_size(self.block_size).is_ok() {
            let covered = u64::from(self.max_table_entries) * u64::from(self.block_size);
            if covered < current_size {
                p.push(Problem::new(
                    Severity::Error,
                    s,
                    "max table entries",
                    format!(
                        "{} entries of {} bytes cover {covered} bytes, less than the virtual size {current_size}",
                        self.max_table_entries, self.block_size
                    ),
                ));
            } else if covered - current_size >= u64::from(self.block_size) {
                p.push(Problem::new(
                    Severity::Info,
                    s,
                    "max table entries",
                    format!(
                        "{} entries are more than the {} the virtual size needs",
                        self.max_table_entries,
                        current_size.div_ceil(u64::from(self.block_size))
                    ),
                ));
            }
        }
        if differencing {
            if self.parent_unique_id.is_nil() {
                p.push(Problem::new(
                    Severity::Warning,
                    s,
                    "parent unique id",
                    "differencing disk without a parent unique id",
                ));
            }
        } else if !self.parent_unique_id.is_nil()
            || self.parent_timestamp.0 != 0
            || self.parent_name_raw.iter().any(|&b| b != 0)
            || self.locators.iter().any(|l| l.is_used())
        {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "parent",
                "dynamic disk carries parent fields",
            ));
        }
        for (i, l) in self.locators.iter().enumerate() {
            p.extend(l.validate(i, file_len));
        }
        if self.reserved1 != 0 || self.reserved2.iter().any(|&b| b != 0) {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "reserved",
                "reserved bytes are not zero",
            ));
        }
        p
    }
}

/// Bitmap bytes in front of a block of `block_size` bytes: one bit per sector, padded up
/// to whole sectors.
pub fn bitmap_size_for(block_size: u32) -> u64 {
    let sectors = u64::from(block_size) / SECTOR_SIZE;
    sectors.div_ceil(8).div_ceil(SECTOR_SIZE).max(1) * SECTOR_SIZE
}

/// Checks the block size of a disk to be written: a power of two from
/// [`MIN_CREATE_BLOCK_SIZE`](super::MIN_CREATE_BLOCK_SIZE) (4 KiB) to 256 MiB. Smaller
/// blocks are valid by the specification and vhdkit reads them, but most readers do not:
/// their bitmap is under a byte per block (qemu, dissect, Bochs and others read wrong
/// data; libvhdi refuses them).
pub fn check_create_block_size(block_size: u32) -> Result<(), String> {
    check_block_size(block_size)?;
    if block_size < super::MIN_CREATE_BLOCK_SIZE {
        return Err(format!(
            "block size {block_size} is below {} bytes: most other readers cannot read such disks",
            super::MIN_CREATE_BLOCK_SIZE
        ));
    }
    Ok(())
}

/// Checks a block size: a power of two from 512 bytes to 256 MiB.
pub fn check_block_size(block_size: u32) -> Result<(), String> {
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(format!(
            "{block_size} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::PlatformCode;
    use super::*;

    #[test]
    fn header_round_trips_through_bytes() {
        let mut h = DynamicHeader::new(1536, 3, 2 << 20);
        h.parent_unique_id = Uuid::new_v4();
        h.parent_timestamp = VhdTime(12345);
        h.set_parent_name("parent.vhd").expect("fits");
        h.locators[0] = ParentLocator {
            code: PlatformCode::W2ku,
            data_space: 512,
            data_length: 20,
            reserved: 0,
            data_offset: 2048,
        };
        let bytes = h.encode();
        let back = DynamicHeader::decode(&bytes).expect("len");
        assert!(back.checksum_ok());
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.parent_name(), "parent.vhd");
        assert_eq!(back.locators[0], h.locators[0]);
    }

    #[test]
    fn bitmap_size_is_one_sector_for_2mib_and_512kib_blocks() {
        assert_eq!(bitmap_size_for(2 << 20), 512);
        assert_eq!(bitmap_size_for(512 << 10), 512);
        assert_eq!(bitmap_size_for(8 << 20), 2048);
        assert_eq!(bitmap_size_for(512), 512);
    }

    #[test]
    fn block_size_that_is_not_a_power_of_two_is_rejected() {
        assert!(check_block_size(3 << 20).is_err());
        assert!(check_block_size(0).is_err());
        assert!(check_block_size(1 << 31).is_err());
        assert!(check_block_size(256).is_err());
        assert!(check_block_size(1 << 20).is_ok());
    }

    #[test]
    fn header_too_small_for_the_disk_is_an_error() {
        let h = DynamicHeader::decode(&DynamicHeader::new(1536, 1, 2 << 20).encode()).expect("l");
        let problems = h.validate(4 << 20, Some(1 << 30), false);
        assert!(problems
            .iter()
            .any(|p| p.field == "max table entries" && p.severity == Severity::Error));
    }

    #[test]
    fn header_with_bat_past_the_end_is_an_error() {
        let h = DynamicHeader::new(1536, 1 << 20, 2 << 20);
        let problems = h.validate(1 << 40, Some(8192), false);
        assert!(problems.iter().any(|p| p.field == "table offset"));
    }

    #[test]
    fn parent_name_with_bad_surrogates_decodes_lossily() {
        let mut h = DynamicHeader::new(1536, 1, 2 << 20);
        h.parent_name_raw[0] = 0xD8; // lone high surrogate
        h.parent_name_raw[2] = 0;
        h.parent_name_raw[3] = b'a';
        assert_eq!(h.parent_name(), "\u{fffd}a");
    }

    #[test]
    fn virtual_pc_header_fragment_decodes() {
        // libvhdi's fragment (LGPL-3.0): outside the repository, passed over where that
        // folder is absent (unless VHDKIT_REQUIRE_REALWORLD=1).
        let Some(dir) = vhdkit_testkit::shared_realworld() else {
            return;
        };
        let path = dir.join("fragments/virtualpc-differencing-dynheader.bin");
        let bytes = std::fs::read(&path).expect("the fragment is in the shared folder");
        let h = DynamicHeader::decode(&bytes).expect("1024 bytes");
        assert!(h.checksum_ok());
        assert_eq!(h.table_offset, 0x600);
        assert_eq!(h.max_table_entries, 256);
        assert_eq!(h.block_size, 2 << 20);
        assert_eq!(h.parent_name(), "dynamic.vhd");
        assert_eq!(
            h.parent_unique_id.to_string(),
            "d49c5c80-350a-4a89-898a-5ad6d10f6578"
        );
        let codes: Vec<_> = h.locators[4..].iter().map(|l| l.code).collect();
        assert_eq!(
            codes,
            [
                PlatformCode::W2ku,
                PlatformCode::W2ru,
                PlatformCode::Wi2k,
                PlatformCode::Wi2r
            ]
        );
        assert!(h.locators[..4].iter().all(|l| !l.is_used()));
    }
}
