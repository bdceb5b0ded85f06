//! Volumes recognised by their signature only: their space always counts as used.

use crate::bytes::{be32, be64, has, le32};
use crate::error::{unsupported, Fail, Reason};
use crate::fs::{FsKind, FsReport};
use crate::ranges::Runs;
use crate::region::Region;
use crate::ReadAt;

/// XFS superblock magic at offset 0.
pub const XFS_MAGIC: &[u8; 4] = b"XFSB";
/// btrfs superblock magic at 64 KiB + 0x40.
pub const BTRFS_MAGIC: &[u8; 8] = b"_BHRfS_M";
/// LUKS header magic at 0.
pub const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
/// LVM2 label in one of the first four sectors.
pub const LVM_LABEL: &[u8; 8] = b"LABELONE";
/// MD RAID superblock 1.x magic (little-endian) at 0 (1.1) or 4096 (1.2).
pub const MD_MAGIC: u32 = 0xa92b_4efc;

pub(crate) fn detect(head: &[u8]) -> Vec<FsKind> {
    let mut found = Vec::new();
    if has(head, 0, XFS_MAGIC) {
        found.push(FsKind::Xfs);
    }
    if has(head, 3, b"EXFAT   ") {
        found.push(FsKind::ExFat);
    }
    if has(head, 65536 + 0x40, BTRFS_MAGIC) {
        found.push(FsKind::Btrfs);
    }
    if has(head, 0, LUKS_MAGIC) {
        found.push(FsKind::Luks);
    }
    if (0..4).any(|s| has(head, s * 512, LVM_LABEL)) {
        found.push(FsKind::LvmPv);
    }
    if le32(head, 0) == MD_MAGIC || le32(head, 4096) == MD_MAGIC {
        found.push(FsKind::MdRaid);
    }
    found
}

pub(crate) fn analyse<R: ReadAt + ?Sized>(
    region: &Region<'_, R>,
    kind: FsKind,
    rep: &mut FsReport,
) -> Result<Runs, Fail> {
    if kind == FsKind::Xfs {
        let mut sb = [0u8; 16];
        region.read(0, &mut sb, "XFS superblock")?;
        let block = u64::from(be32(&sb, 4));
        if let Some(size) = be64(&sb, 8).checked_mul(block) {
            rep.unit = Some(block);
            rep.size = Some(size);
            if size > region.len {
                return Err(Fail::Left(Reason::SizeMismatch {
                    fs_size: size,
                    partition_size: region.len,
                }));
            }
        }
        return Err(unsupported("XFS free-space B+trees are not read"));
    }
    Err(match kind {
        FsKind::Unknown => Fail::Left(Reason::NoFileSystem),
        k => unsupported(format!("{k} is not read")),
    })
}
