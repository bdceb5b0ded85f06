//! The GUID partition table: header (CRC32 checked), entry array (CRC32 checked), and the
//! backup pair at the end of the disk when the primary is damaged.

use crate::bytes::{has, le16, le32, le64};
use crate::error::{Error, Reason};
use uuid::Uuid;

use crate::table::{Entry, GptCopies, PartitionType, Table, TableKind, SECTOR};
use crate::ReadAt;

/// `EFI PART`.
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// The smallest header (revision 1.0).
pub const MIN_HEADER_SIZE: u32 = 92;
/// The largest entry array read: 16 384 entries of 128 bytes (the common array is 16 KiB).
pub const MAX_ARRAY_BYTES: u64 = 2 << 20;
/// Entry sizes are 128 × 2^n; larger than this is not read.
pub const MAX_ENTRY_SIZE: u32 = 4096;

/// A validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) my_lba: u64,
    pub(crate) alternate_lba: u64,
    pub(crate) first_usable: u64,
    pub(crate) last_usable: u64,
    pub(crate) entries_lba: u64,
    pub(crate) num_entries: u32,
    pub(crate) entry_size: u32,
    pub(crate) entries_crc: u32,
}

impl Header {
    fn array_bytes(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }

    fn array_sectors(&self) -> u64 {
        self.array_bytes().div_ceil(SECTOR)
    }
}

/// Decodes and validates a header sector read at `lba` of a disk of `sectors` sectors.
pub(crate) fn parse_header(s: &[u8], lba: u64, sectors: u64) -> Result<Header, String> {
    if !has(s, 0, SIGNATURE) {
        return Err("no EFI PART signature".into());
    }
    let hsize = le32(s, 12);
    if hsize < MIN_HEADER_SIZE || u64::from(hsize) > SECTOR {
        return Err(format!("header size {hsize}"));
    }
    let mut copy = s[..hsize as usize].to_vec();
    copy[16..20].fill(0);
    let crc = crc32fast::hash(&copy);
    if crc != le32(s, 16) {
        return Err("header CRC mismatch".into());
    }
    let h = Header {
        my_lba: le64(s, 24),
        alternate_lba: le64(s, 32),
        first_usable: le64(s, 40),
        last_usable: le64(s, 48),
        entries_lba: le64(s, 72),
        num_entries: le32(s, 80),
        entry_size: le32(s, 84),
        entries_crc: le32(s, 88),
    };
    if h.my_lba != lba {
        return Err(format!(
            "header says it is at sector {}, read at {lba}",
            h.my_lba
        ));
    }
    if h.entry_size < 128 || h.entry_size > MAX_ENTRY_SIZE || !h.entry_size.is_power_of_two() {
        return Err(format!("entry size {}", h.entry_size));
    }
    if h.array_bytes() > MAX_ARRAY_BYTES {
        return Err(format!("{} entries", h.num_entries));
    }
    if h.first_usable > h.last_usable || h.last_usable >= sectors {
        return Err(format!(
            "usable sectors {}..={} on a disk of {sectors}",
            h.first_usable, h.last_usable
        ));
    }
    let arr_end = h.entries_lba.checked_add(h.array_sectors());
    if h.entries_lba < 1 || arr_end.is_none_or(|e| e > sectors) {
        return Err(format!(
            "entry array at sector {} past the disk",
            h.entries_lba
        ));
    }
    if arr_end.is_some_and(|e| h.entries_lba <= h.last_usable && e > h.first_usable) {
        return Err("entry array inside the usable area".into());
    }
    if h.my_lba >= h.first_usable && h.my_lba <= h.last_usable {
        return Err("header inside the usable area".into());
    }
    Ok(h)
}

/// Decodes the used entries of a CRC-checked array (type GUID not all zero).
pub(crate) fn parse_entries(arr: &[u8], h: &Header, table: &mut Table) {
    for i in 0..h.num_entries as usize {
        let o = i * h.entry_size as usize;
        let Some(e) = arr.get(o..o + 128) else {
            return;
        };
        let mut ty = [0u8; 16];
        ty.copy_from_slice(&e[..16]);
        if ty == [0u8; 16] {
            continue;
        }
        let first = le64(e, 32);
        let last = le64(e, 40);
        let name: Vec<u16> = (0..36)
            .map(|k| le16(e, 56 + 2 * k))
            .take_while(|&c| c != 0)
            .collect();
        let problem = if first > last {
            Some(Reason::BadExtent(format!(
                "first sector {first} after last {last}"
            )))
        } else if first < h.first_usable || last > h.last_usable {
            Some(Reason::BadExtent(format!(
                "sectors {first}..={last} outside the usable {}..={}",
                h.first_usable, h.last_usable
            )))
        } else {
            None
        };
        let (start, len) = if problem.is_none() {
            (first * SECTOR, (last - first + 1) * SECTOR)
        } else {
            (first.saturating_mul(SECTOR), 0)
        };
        table.entries.push(Entry {
            index: i as u32 + 1,
            start,
            len,
            ptype: PartitionType::Gpt(Uuid::from_bytes_le(ty)),
            name: String::from_utf16_lossy(&name),
            problem,
        });
    }
}

/// Reads the header at `lba` and its entry array; `Err` says what is wrong.
fn try_copy<R: ReadAt + ?Sized>(
    disk: &R,
    lba: u64,
    sectors: u64,
) -> Result<Result<(Header, Vec<u8>), String>, Error> {
    let mut s = [0u8; SECTOR as usize];
    disk.read_exact_at(&mut s, lba * SECTOR)
        .map_err(|source| Error::Read {
            what: "GPT header",
            offset: lba * SECTOR,
            len: s.len(),
            source,
        })?;
    let h = match parse_header(&s, lba, sectors) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let mut arr = vec![0u8; h.array_bytes() as usize];
    disk.read_exact_at(&mut arr, h.entries_lba * SECTOR)
        .map_err(|source| Error::Read {
            what: "GPT entry array",
            offset: h.entries_lba * SECTOR,
            len: arr.len(),
            source,
        })?;
    if crc32fast::hash(&arr) != h.entries_crc {
        return Ok(Err("entry array CRC mismatch".into()));
    }
    Ok(Ok((h, arr)))
}

pub(crate) fn read<R: ReadAt + ?Sized>(
    disk: &R,
    size: u64,
    table: &mut Table,
) -> Result<(), Error> {
    let sectors = size / SECTOR;
    table.reserved.push(0..SECTOR);
    if sectors < 3 {
        table
            .warnings
            .push("protective MBR on a disk too small for a GPT".into());
        return Ok(());
    }
    let primary = try_copy(disk, 1, sectors)?;
    let chosen = match primary {
        Ok(p) => Some(p),
        Err(why) => {
            let last = sectors - 1;
            match try_copy(disk, last, sectors)? {
                Ok(b) => {
                    table.warnings.push(format!(
                        "primary GPT damaged ({why}); the backup at the end of the disk was used"
                    ));
                    Some(b)
                }
                Err(why2) => {
                    table
                        .warnings
                        .push(format!("GPT unreadable: primary: {why}; backup: {why2}"));
                    None
                }
            }
        }
    };
    let Some((h, arr)) = chosen else {
        // A protective MBR without a readable GPT: nothing is trusted.
        return Ok(());
    };
    table.kind = TableKind::Gpt;
    // The copy read names the other one; the backup is whichever is not at sector 1.
    let backup = if h.my_lba == 1 {
        h.alternate_lba
    } else {
        h.my_lba
    };
    let room = h.first_usable.saturating_sub(1).max(h.array_sectors() + 1);
    table.gpt = Some(GptCopies {
        backup_header: backup.saturating_mul(SECTOR),
        backup_room: room.saturating_mul(SECTOR),
    });
    table
        .reserved
        .push(h.my_lba * SECTOR..(h.my_lba + 1) * SECTOR);
    table
        .reserved
        .push(h.entries_lba * SECTOR..(h.entries_lba + h.array_sectors()) * SECTOR);
    // The other copy's place too (even if damaged): outside the usable area by the rules,
    // but a partition is never allowed over it.
    if h.alternate_lba < sectors {
        table
            .reserved
            .push(h.alternate_lba * SECTOR..(h.alternate_lba + 1) * SECTOR);
    }
    parse_entries(&arr, &h, table);
    Ok(())
}
