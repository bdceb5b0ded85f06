//! The master boot record and the chain of extended boot records.

use crate::bytes::{has, le32, u8_at};
use crate::error::{Error, Reason};
use crate::table::{Entry, PartitionType, Table, TableKind, MBR_EXTENDED, SECTOR};
use crate::ReadAt;

/// Offset of the four partition entries in an MBR or EBR.
pub const ENTRIES_OFFSET: usize = 446;
/// Size of one entry.
pub const ENTRY_SIZE: usize = 16;
/// The boot signature at 510.
pub const SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// The type of the GPT's protective entry.
pub const PROTECTIVE_TYPE: u8 = 0xEE;
/// At most this many logical partitions are followed (Linux reads at most 255 minors'
/// worth); the chain is also cut at the first EBR seen twice.
pub const MAX_LOGICAL: usize = 256;

/// One decoded MBR/EBR entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub(crate) status: u8,
    pub(crate) ptype: u8,
    pub(crate) lba: u64,
    pub(crate) sectors: u64,
}

pub(crate) fn entries(s: &[u8]) -> [RawEntry; 4] {
    let e = |i: usize| {
        let o = ENTRIES_OFFSET + i * ENTRY_SIZE;
        RawEntry {
            status: u8_at(s, o),
            ptype: u8_at(s, o + 4),
            lba: u64::from(le32(s, o + 8)),
            sectors: u64::from(le32(s, o + 12)),
        }
    };
    [e(0), e(1), e(2), e(3)]
}

/// A boot-signed sector whose entries all have a valid status and one is used.
pub(crate) fn is_mbr(s: &[u8]) -> bool {
    let es = entries(s);
    has(s, 510, &SIGNATURE)
        && es.iter().all(|e| e.status == 0 || e.status == 0x80)
        && es.iter().any(|e| e.ptype != 0)
}

/// An MBR with a GPT protective entry.
pub(crate) fn is_protective(s: &[u8]) -> bool {
    has(s, 510, &SIGNATURE) && entries(s).iter().any(|e| e.ptype == PROTECTIVE_TYPE)
}

fn extent(lba: u64, sectors: u64) -> (u64, u64) {
    (lba * SECTOR, sectors * SECTOR)
}

pub(crate) fn read<R: ReadAt + ?Sized>(
    disk: &R,
    size: u64,
    s0: &[u8],
    table: &mut Table,
) -> Result<(), Error> {
    table.kind = TableKind::Mbr;
    table.reserved.push(0..SECTOR);
    let mut extended_seen = false;
    let mut logicals = Vec::new();
    for (i, e) in entries(s0).iter().enumerate() {
        if e.ptype == 0 {
            continue;
        }
        let (start, len) = extent(e.lba, e.sectors);
        let mut entry = Entry {
            index: i as u32 + 1,
            start,
            len,
            ptype: PartitionType::Mbr(e.ptype),
            name: String::new(),
            problem: None,
        };
        if e.lba == 0 || e.sectors == 0 {
            entry.problem = Some(Reason::BadExtent("zero start or length".into()));
        } else if MBR_EXTENDED.contains(&e.ptype) {
            entry.problem = Some(Reason::Container);
            if extended_seen {
                table
                    .warnings
                    .push(format!("second extended partition {} not followed", i + 1));
            } else if start.checked_add(len).is_some_and(|end| end <= size) {
                extended_seen = true;
                read_logicals(disk, e.lba, e.sectors, table, &mut logicals)?;
            } else {
                table.warnings.push(format!(
                    "extended partition {} past the end of the disk",
                    i + 1
                ));
            }
        }
        table.entries.push(entry);
    }
    table.entries.extend(logicals);
    Ok(())
}

/// Follows the EBR chain of the extended partition at `ext_lba` (`ext_sectors` long).
fn read_logicals<R: ReadAt + ?Sized>(
    disk: &R,
    ext_lba: u64,
    ext_sectors: u64,
    table: &mut Table,
    out: &mut Vec<Entry>,
) -> Result<(), Error> {
    let ext_end = ext_lba + ext_sectors;
    let mut ebr = ext_lba;
    let mut seen = std::collections::HashSet::new();
    let mut sector = [0u8; SECTOR as usize];
    for n in 0..MAX_LOGICAL {
        if !seen.insert(ebr) {
            table
                .warnings
                .push(format!("EBR chain loops back to sector {ebr}"));
            return Ok(());
        }
        disk.read_exact_at(&mut sector, ebr * SECTOR)
            .map_err(|source| Error::Read {
                what: "extended boot record",
                offset: ebr * SECTOR,
                len: sector.len(),
                source,
            })?;
        if !has(&sector, 510, &SIGNATURE) {
            if n > 0 {
                table
                    .warnings
                    .push(format!("EBR chain broken at sector {ebr} (no signature)"));
            }
            return Ok(());
        }
        table.reserved.push(ebr * SECTOR..(ebr + 1) * SECTOR);
        let es = entries(&sector);
        let part = es[0];
        if part.ptype != 0 {
            let lba = ebr + part.lba;
            let (start, len) = extent(lba, part.sectors);
            let problem = if part.lba == 0 || part.sectors == 0 {
                Some(Reason::BadExtent("zero start or length".into()))
            } else if lba + part.sectors > ext_end {
                Some(Reason::BadExtent("outside its extended partition".into()))
            } else if MBR_EXTENDED.contains(&part.ptype) {
                Some(Reason::BadExtent(
                    "extended type as a logical partition".into(),
                ))
            } else {
                None
            };
            out.push(Entry {
                index: 5 + out.len() as u32,
                start,
                len,
                ptype: PartitionType::Mbr(part.ptype),
                name: String::new(),
                problem,
            });
        }
        let next = es[1];
        if next.ptype == 0 || next.lba == 0 {
            return Ok(());
        }
        if !MBR_EXTENDED.contains(&next.ptype) {
            table.warnings.push(format!(
                "EBR at sector {ebr}: link of type {:#04x} not followed",
                next.ptype
            ));
            return Ok(());
        }
        let next_lba = ext_lba + next.lba;
        if next_lba >= ext_end {
            table.warnings.push(format!(
                "EBR at sector {ebr} links outside the extended partition"
            ));
            return Ok(());
        }
        ebr = next_lba;
    }
    table.warnings.push(format!(
        "more than {MAX_LOGICAL} logical partitions; the rest not read"
    ));
    Ok(())
}
