//! Partition tables: MBR (with extended and logical partitions), GPT (with its protective
//! MBR, primary or backup), or none (a file system from the first byte).
//!
//! Sectors are 512 bytes, as in every VHD. The table's own sectors (MBR, EBRs, GPT
//! headers and entry arrays) are recorded, and a partition that overlaps one of them,
//! another partition, or the end of the disk is marked with a [`Reason`] so it is left
//! alone.

use std::fmt;
use std::ops::Range;

use uuid::Uuid;

use crate::error::{Error, Reason};
use crate::fs;
use crate::ReadAt;

pub(crate) mod gpt;
pub(crate) mod mbr;

/// Bytes per sector of the tables read here.
pub const SECTOR: u64 = 512;

/// Which kind of table the disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum TableKind {
    /// Master boot record (possibly with logical partitions).
    Mbr,
    /// GUID partition table.
    Gpt,
    /// No table: one file system (or volume) starts at byte 0 and spans the disk.
    WholeDisk,
    /// Nothing recognised (blank, damaged or foreign): the whole disk counts as used.
    Unrecognised,
}

/// A GPT type GUID in its usual text form, upper case
/// (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`): how reports print and serialize it.
fn guid_text(g: &Uuid) -> String {
    format!("{g:X}")
}

#[cfg(feature = "serde")]
fn serialize_guid<S: serde::Serializer>(g: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&guid_text(g))
}

/// A GUID of [`GPT_TYPES`] (they are all well formed: a unit test parses each).
fn known_guid(s: &str) -> Option<Uuid> {
    Uuid::try_parse(s).ok()
}

/// GPT partition types known by name: (GUID, name, holds a file system directly).
pub const GPT_TYPES: &[(&str, &str, bool)] = &[
    ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI System", true),
    (
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        "Microsoft basic data",
        true,
    ),
    (
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC",
        "Windows recovery environment",
        true,
    ),
    (
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE",
        "Microsoft reserved",
        false,
    ),
    (
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3",
        "Microsoft LDM metadata",
        false,
    ),
    (
        "AF9B60A0-1431-4F62-BC68-3311714A69AD",
        "Microsoft LDM data",
        false,
    ),
    (
        "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D",
        "Microsoft Storage Spaces",
        false,
    ),
    (
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        "Linux filesystem",
        true,
    ),
    ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "Linux swap", true),
    (
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
        "Linux root (x86-64)",
        true,
    ),
    (
        "44479540-F297-41B2-9AF7-D131D5F0458A",
        "Linux root (x86)",
        true,
    ),
    (
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        "Linux root (ARM64)",
        true,
    ),
    (
        "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3",
        "Linux root (ARM)",
        true,
    ),
    ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", "Linux home", true),
    (
        "3B8F8425-20E0-4F3B-907F-1A25A76F98E8",
        "Linux server data",
        true,
    ),
    (
        "4D21B016-B534-45C2-A9FB-5C16E091FD2D",
        "Linux variable data",
        true,
    ),
    (
        "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1",
        "Linux temporary data",
        true,
    ),
    (
        "773F91EF-66D4-49B5-BD83-D683BF40AD16",
        "Linux user home",
        true,
    ),
    (
        "BC13C2FF-59E6-4262-A352-B275FD6F7172",
        "Linux extended boot",
        true,
    ),
    ("E6D6D379-F507-44C2-A23C-238F2A3DF928", "Linux LVM", false),
    ("A19D880F-05FC-4D3B-A006-743F0F84911E", "Linux RAID", false),
    ("CA7D7CCB-63ED-4C53-861C-1742536059CC", "Linux LUKS", false),
    (
        "7FFEC5C9-2D00-49B7-8941-3EA10A5586B7",
        "Linux dm-crypt",
        false,
    ),
    (
        "8DA63339-0007-60C0-C436-083AC8230908",
        "Linux reserved",
        false,
    ),
    ("21686148-6449-6E6F-744E-656564454649", "BIOS boot", false),
    ("48465300-0000-11AA-AA11-00306543ECAC", "Apple HFS+", false),
    ("7C3457EF-0000-11AA-AA11-00306543ECAC", "Apple APFS", false),
    ("516E7CB6-6ECF-11D6-8FF8-00022D09712B", "FreeBSD UFS", false),
];

/// MBR partition types known by name: (type byte, name, holds a file system directly).
pub const MBR_TYPES: &[(u8, &str, bool)] = &[
    (0x01, "FAT12", true),
    (0x04, "FAT16 <32M", true),
    (0x05, "Extended", false),
    (0x06, "FAT16", true),
    (0x07, "HPFS/NTFS/exFAT", true),
    (0x0B, "W95 FAT32", true),
    (0x0C, "W95 FAT32 (LBA)", true),
    (0x0E, "W95 FAT16 (LBA)", true),
    (0x0F, "W95 Extended (LBA)", false),
    (0x11, "Hidden FAT12", true),
    (0x14, "Hidden FAT16 <32M", true),
    (0x16, "Hidden FAT16", true),
    (0x17, "Hidden HPFS/NTFS", true),
    (0x1B, "Hidden W95 FAT32", true),
    (0x1C, "Hidden W95 FAT32 (LBA)", true),
    (0x1E, "Hidden W95 FAT16 (LBA)", true),
    (0x27, "Hidden NTFS WinRE", true),
    (0x42, "SFS / Windows dynamic disk", false),
    (0x82, "Linux swap", true),
    (0x83, "Linux", true),
    (0x85, "Linux extended", false),
    (0x8E, "Linux LVM", false),
    (0xA5, "FreeBSD", false),
    (0xA8, "Darwin UFS", false),
    (0xAF, "HFS / HFS+", false),
    (0xEE, "GPT protective", false),
    (0xEF, "EFI (FAT-12/16/32)", true),
    (0xFD, "Linux raid autodetect", false),
];

/// MBR types of extended partitions (containers of logical partitions).
pub const MBR_EXTENDED: [u8; 3] = [0x05, 0x0F, 0x85];

/// A partition's type as its table states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum PartitionType {
    /// An MBR type byte.
    Mbr(u8),
    /// A GPT type GUID (decoded from its mixed-endian bytes on disk).
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_guid"))]
    Gpt(Uuid),
    /// No table: the whole disk.
    WholeDisk,
}

impl PartitionType {
    /// The type's usual name, or `"unknown"`.
    pub fn name(&self) -> &'static str {
        match self {
            PartitionType::Mbr(t) => MBR_TYPES
                .iter()
                .find(|(b, _, _)| b == t)
                .map_or("unknown", |(_, n, _)| n),
            PartitionType::Gpt(g) => GPT_TYPES
                .iter()
                .find(|(s, _, _)| known_guid(s) == Some(*g))
                .map_or("unknown", |(_, n, _)| n),
            PartitionType::WholeDisk => "whole disk",
        }
    }

    /// Whether this type is known to hold a file system directly (not a container, a
    /// volume manager's, RAID or encrypted data, or a vendor format).
    pub fn holds_fs(&self) -> bool {
        match self {
            PartitionType::Mbr(t) => MBR_TYPES.iter().any(|(b, _, fs)| b == t && *fs),
            PartitionType::Gpt(g) => GPT_TYPES
                .iter()
                .any(|(s, _, fs)| *fs && known_guid(s) == Some(*g)),
            PartitionType::WholeDisk => true,
        }
    }
}

impl fmt::Display for PartitionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionType::Mbr(t) => write!(f, "{t:#04x} ({})", self.name()),
            PartitionType::Gpt(g) => write!(f, "{} ({})", guid_text(g), self.name()),
            PartitionType::WholeDisk => f.write_str("whole disk"),
        }
    }
}

/// One entry of the partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The number Linux gives it: MBR primaries 1–4, logicals 5 and up; GPT entries from
    /// 1 in table order; 0 for the whole disk.
    pub index: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Type from the table.
    pub ptype: PartitionType,
    /// The GPT partition name (empty for MBR).
    pub name: String,
    /// Set when the table already says this entry must be left alone (container, bad
    /// extent, overlap).
    pub problem: Option<Reason>,
}

/// A decoded partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Which table.
    pub kind: TableKind,
    /// Its partitions, in index order.
    pub entries: Vec<Entry>,
    /// The table's own byte ranges (MBR, EBRs, GPT headers and entry arrays).
    pub reserved: Vec<Range<u64>>,
    /// Damage found and worked around (a backup GPT used, a broken EBR chain...).
    pub warnings: Vec<String>,
    /// A GPT's copies: where its backup lies (`None` for other tables).
    pub gpt: Option<GptCopies>,
}

/// Where a GPT keeps its backup copy, as the copy that was read states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptCopies {
    /// Byte offset of the backup header: the disk's last sector when the table was
    /// written for the disk's present size.
    pub backup_header: u64,
    /// Bytes the backup copy takes at the end of the disk, after the last usable
    /// sector, when it mirrors the primary: as many sectors as the table keeps before
    /// its first usable sector, less the protective MBR (2047 for a table sfdisk
    /// wrote, whose first usable sector is 2048; 33 for the usual 34 of Windows and
    /// parted), and at least the entry array and the header. `sgdisk -e` moves the backup to the end
    /// of the disk only when that much room follows the last partition.
    pub backup_room: u64,
}

impl Table {
    /// The smallest disk that still holds every partition and the table itself: the
    /// end of the last partition (extended containers included), and for a GPT the
    /// room its backup copy needs after it ([`GptCopies::backup_room`]), so that
    /// `sgdisk -e` can write the backup at the new end. What `Resize-VHD
    /// -ToMinimumSize` shrinks to; never less than the table's own sectors.
    ///
    /// `Err(why)`, in words, where the answer cannot be trusted: no partition table
    /// understood (a file system spanning the disk from byte 0, or nothing
    /// recognised), or a partition whose extent is damaged (past the disk, over the
    /// table or over another partition).
    ///
    /// ```
    /// use vhdkit_volume::table::read_table;
    ///
    /// // An MBR whose one partition (type 0x83) spans sectors 2048..6144 of an 8 MiB disk.
    /// let mut disk = vec![0u8; 8 << 20];
    /// disk[446 + 4] = 0x83;
    /// disk[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    /// disk[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
    /// disk[510] = 0x55;
    /// disk[511] = 0xAA;
    /// assert_eq!(read_table(&disk).unwrap().minimum_size(), Ok(3 << 20));
    /// // A blank disk has no table to go by.
    /// assert!(read_table(&vec![0u8; 1 << 20]).unwrap().minimum_size().is_err());
    /// ```
    pub fn minimum_size(&self) -> Result<u64, String> {
        match self.kind {
            TableKind::WholeDisk => {
                return Err(
                    "it has no partition table: a file system starts at byte 0 and \
                     spans the disk, and where its data end is not known"
                        .into(),
                )
            }
            TableKind::Unrecognised => {
                let why = if self.warnings.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", self.warnings.join("; "))
                };
                return Err(format!("no partition table was understood{why}"));
            }
            TableKind::Mbr | TableKind::Gpt => {}
        }
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| matches!(e.problem, Some(Reason::BadExtent(_))))
        {
            let why = match &e.problem {
                Some(r) => r.to_string(),
                None => String::new(),
            };
            return Err(format!(
                "partition {} is damaged ({why}), so where the partitions end is not known",
                e.index
            ));
        }
        let ends = self.entries.iter().map(|e| e.start.saturating_add(e.len));
        let tables = self.reserved.iter().map(|r| r.end);
        let end = match (self.kind, self.gpt) {
            // The backup copy's own sectors are not a limit: they move to the new end.
            (TableKind::Gpt, Some(g)) => {
                let primary = self
                    .reserved
                    .iter()
                    .filter(|r| r.end <= g.backup_header.saturating_sub(g.backup_room))
                    .map(|r| r.end);
                ends.chain(primary)
                    .max()
                    .unwrap_or(0)
                    .saturating_add(g.backup_room)
            }
            _ => ends.chain(tables).max().unwrap_or(0),
        };
        Ok(end.max(SECTOR))
    }
}

/// Reads the partition table of `disk`.
///
/// A GPT (protective MBR with a 0xEE entry) comes first; then a FAT or NTFS boot sector at
/// sector 0 (a volume without a table); then an MBR with at least one entry; then any
/// other file-system signature at byte 0. Anything else is [`TableKind::Unrecognised`].
///
/// ```
/// use vhdkit_volume::table::{read_table, TableKind};
///
/// let blank = vec![0u8; 1 << 20];
/// assert_eq!(read_table(&blank).unwrap().kind, TableKind::Unrecognised);
/// ```
pub fn read_table<R: ReadAt + ?Sized>(disk: &R) -> Result<Table, Error> {
    let size = disk.size().map_err(|source| Error::Size { source })?;
    let mut table = Table {
        kind: TableKind::Unrecognised,
        entries: Vec::new(),
        reserved: Vec::new(),
        warnings: Vec::new(),
        gpt: None,
    };
    if size < SECTOR {
        table.warnings.push(format!("disk of {size} bytes"));
        return Ok(table);
    }
    let head_len = size.min(fs::PROBE_BYTES);
    let mut head = vec![0u8; head_len as usize];
    disk.read_exact_at(&mut head, 0)
        .map_err(|source| Error::Read {
            what: "first sectors",
            offset: 0,
            len: head.len(),
            source,
        })?;
    let s0 = &head[..SECTOR as usize];
    if mbr::is_protective(s0) {
        gpt::read(disk, size, &mut table)?;
    } else if fs::fat::detect(&head).is_some()
        || fs::ntfs::detect(&head)
        || crate::bytes::has(&head, 3, b"EXFAT   ")
    {
        whole_disk(&mut table, size);
    } else if mbr::is_mbr(s0) {
        mbr::read(disk, size, s0, &mut table)?;
    } else if !fs::probe(&head).is_empty() {
        whole_disk(&mut table, size);
    } else {
        table
            .warnings
            .push("no partition table or file system recognised".into());
    }
    check_extents(&mut table, size);
    Ok(table)
}

fn whole_disk(table: &mut Table, size: u64) {
    table.kind = TableKind::WholeDisk;
    table.entries.push(Entry {
        index: 0,
        start: 0,
        len: size,
        ptype: PartitionType::WholeDisk,
        name: String::new(),
        problem: None,
    });
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Marks entries past the disk, over the table's own sectors, or over one another.
fn check_extents(table: &mut Table, size: u64) {
    let reserved = table.reserved.clone();
    for e in &mut table.entries {
        if e.problem.is_some() {
            continue;
        }
        let Some(end) = e
            .start
            .checked_add(e.len)
            .filter(|&end| end <= size && e.len > 0)
        else {
            e.problem = Some(Reason::BadExtent(format!(
                "{} bytes at {} do not fit the disk's {size}",
                e.len, e.start
            )));
            continue;
        };
        let r = e.start..end;
        if let Some(t) = reserved.iter().find(|t| overlaps(&r, t)) {
            e.problem = Some(Reason::BadExtent(format!(
                "overlaps the partition table at bytes {}..{}",
                t.start, t.end
            )));
        }
    }
    // Containers (extended partitions) hold logicals; every other pair must be disjoint.
    // A sweep in start order: an entry starting before the furthest end seen so far
    // overlaps the entry that reached that end.
    let n = table.entries.len();
    let mut bad: Vec<Option<u32>> = vec![None; n];
    let is_cont = |e: &Entry| e.problem == Some(Reason::Container);
    let mut order: Vec<usize> = (0..n).filter(|&i| !is_cont(&table.entries[i])).collect();
    order.sort_by_key(|&i| table.entries[i].start);
    let mut reach: Option<(u64, usize)> = None;
    for &i in &order {
        let e = &table.entries[i];
        let end = e.start.saturating_add(e.len);
        if let Some((far, owner)) = reach {
            if e.start < far {
                bad[i] = Some(table.entries[owner].index);
                bad[owner] = Some(e.index);
            }
        }
        if reach.is_none_or(|(far, _)| end > far) {
            reach = Some((end, i));
        }
    }
    // Primaries must also stay out of the containers (logicals are checked inside).
    let containers: Vec<usize> = (0..n).filter(|&j| is_cont(&table.entries[j])).collect();
    for (i, a) in table.entries.iter().enumerate() {
        for &j in &containers {
            let c = &table.entries[j];
            if a.index == 0 || a.index > 4 || is_cont(a) || !is_cont(c) {
                continue;
            }
            let ra = a.start..a.start.saturating_add(a.len);
            let rc = c.start..c.start.saturating_add(c.len);
            if overlaps(&ra, &rc) {
                bad[i] = Some(c.index);
            }
        }
    }
    for (e, other) in table.entries.iter_mut().zip(bad) {
        if let (Some(o), None) = (other, &e.problem) {
            e.problem = Some(Reason::BadExtent(format!("overlaps partition {o}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_gpt_type_guid_parses() {
        for (s, name, _) in GPT_TYPES {
            let g = known_guid(s).unwrap_or_else(|| panic!("{name}: {s}"));
            assert_eq!(guid_text(&g), *s, "{name}");
        }
    }

    #[test]
    fn gpt_type_from_its_on_disk_bytes_prints_upper_case_with_its_name() {
        // The EFI System partition's type as a GPT entry stores it (mixed-endian).
        let on_disk = [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B,
        ];
        let t = PartitionType::Gpt(Uuid::from_bytes_le(on_disk));
        assert_eq!(
            t.to_string(),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI System)"
        );
        assert!(t.holds_fs());
        let unknown = PartitionType::Gpt(Uuid::from_bytes_le([0xAB; 16]));
        assert_eq!(
            unknown.to_string(),
            "ABABABAB-ABAB-ABAB-ABAB-ABABABABABAB (unknown)"
        );
        assert!(!unknown.holds_fs());
    }
}
