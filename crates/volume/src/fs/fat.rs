//! FAT12/16/32: the boot sector's BIOS parameter block and the file allocation tables.
//!
//! A cluster is free when its entry is 0 in *every* FAT copy. Everything before the data
//! area (reserved sectors, the FATs, the FAT12/16 root directory) and the slack after the
//! last whole cluster count as used. The FAT type follows from the cluster count, as the
//! specification says; a BPB whose layout contradicts that type is left alone.

use crate::bytes::{has, le16, le32, u8_at};
use crate::error::{corrupt, unsupported, Fail, Reason};
use crate::fs::{FsKind, FsReport};
use crate::ranges::Runs;
use crate::region::Region;
use crate::ReadAt;

// BIOS parameter block offsets.
const BPB_BYTES_PER_SEC: usize = 0x0B;
const BPB_SEC_PER_CLUS: usize = 0x0D;
const BPB_RSVD_SEC_CNT: usize = 0x0E;
const BPB_NUM_FATS: usize = 0x10;
const BPB_ROOT_ENT_CNT: usize = 0x11;
const BPB_TOT_SEC16: usize = 0x13;
const BPB_FAT_SZ16: usize = 0x16;
const BPB_TOT_SEC32: usize = 0x20;
const BPB_FAT_SZ32: usize = 0x24;
/// FAT12/16: `BS_Reserved1`, which Linux uses as the state byte.
const BS_STATE_16: usize = 0x25;
/// FAT32: `BS_Reserved1`, the state byte.
const BS_STATE_32: usize = 0x41;
/// Linux's `FAT_STATE_DIRTY` bit of the state byte.
const STATE_DIRTY: u8 = 0x01;
/// Boot sector signature at 510.
const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xAA];

/// FAT16 entry 1: volume cleanly unmounted.
const FAT16_CLEAN: u32 = 0x8000;
/// FAT16 entry 1: no disk error.
const FAT16_NO_ERROR: u32 = 0x4000;
/// FAT32 entry 1: volume cleanly unmounted.
const FAT32_CLEAN: u32 = 0x0800_0000;
/// FAT32 entry 1: no disk error.
const FAT32_NO_ERROR: u32 = 0x0400_0000;

/// Cluster counts below this are FAT12.
const FAT12_MAX_CLUSTERS: u64 = 4085;
/// Cluster counts below this are FAT16; at or above, FAT32.
const FAT16_MAX_CLUSTERS: u64 = 65525;
/// At most this many FAT copies are read.
const MAX_FATS: u64 = 4;

/// The validated layout of a FAT volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bpb {
    kind: FsKind,
    bytes_per_sector: u64,
    cluster_bytes: u64,
    reserved_sectors: u64,
    num_fats: u64,
    fat_sectors: u64,
    total_sectors: u64,
    data_start: u64,
    clusters: u64,
    state_dirty: bool,
}

/// Decodes and validates a boot sector (`b.len() >= 512`).
pub(crate) fn parse_bpb(b: &[u8]) -> Result<Bpb, String> {
    if b.len() < 512 {
        return Err("short boot sector".into());
    }
    let jump = u8_at(b, 0);
    if !(jump == 0xEB && u8_at(b, 2) == 0x90 || jump == 0xE9) {
        return Err(format!("no jump instruction ({jump:#x})"));
    }
    if !has(b, 510, &BOOT_SIGNATURE) {
        return Err("no boot signature".into());
    }
    let bps = u64::from(le16(b, BPB_BYTES_PER_SEC));
    if !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return Err(format!("{bps} bytes per sector"));
    }
    let spc = u64::from(u8_at(b, BPB_SEC_PER_CLUS));
    if spc == 0 || !spc.is_power_of_two() {
        return Err(format!("{spc} sectors per cluster"));
    }
    let reserved = u64::from(le16(b, BPB_RSVD_SEC_CNT));
    if reserved == 0 {
        return Err("no reserved sectors".into());
    }
    let num_fats = u64::from(u8_at(b, BPB_NUM_FATS));
    if num_fats == 0 || num_fats > MAX_FATS {
        return Err(format!("{num_fats} FATs"));
    }
    let root_entries = u64::from(le16(b, BPB_ROOT_ENT_CNT));
    let fat16_size = u64::from(le16(b, BPB_FAT_SZ16));
    let fat_sectors = if fat16_size != 0 {
        fat16_size
    } else {
        u64::from(le32(b, BPB_FAT_SZ32))
    };
    if fat_sectors == 0 {
        return Err("FAT size 0".into());
    }
    let tot16 = u64::from(le16(b, BPB_TOT_SEC16));
    let total_sectors = if tot16 != 0 {
        tot16
    } else {
        u64::from(le32(b, BPB_TOT_SEC32))
    };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data_start = reserved + num_fats * fat_sectors + root_sectors;
    if data_start >= total_sectors {
        return Err("no data area".into());
    }
    let clusters = (total_sectors - data_start) / spc;
    let kind = if clusters < FAT12_MAX_CLUSTERS {
        FsKind::Fat12
    } else if clusters < FAT16_MAX_CLUSTERS {
        FsKind::Fat16
    } else {
        FsKind::Fat32
    };
    let is32 = kind == FsKind::Fat32;
    if is32 != (fat16_size == 0) || is32 != (root_entries == 0) {
        return Err(format!(
            "{kind} by cluster count but the BPB says otherwise"
        ));
    }
    let bits: u64 = match kind {
        FsKind::Fat12 => 12,
        FsKind::Fat16 => 16,
        _ => 32,
    };
    if (clusters + 2) * bits > fat_sectors * bps * 8 {
        return Err("FAT too small for the cluster count".into());
    }
    let state = u8_at(b, if is32 { BS_STATE_32 } else { BS_STATE_16 });
    Ok(Bpb {
        kind,
        bytes_per_sector: bps,
        cluster_bytes: spc * bps,
        reserved_sectors: reserved,
        num_fats,
        fat_sectors,
        total_sectors,
        data_start,
        clusters,
        state_dirty: state & STATE_DIRTY != 0,
    })
}

pub(crate) fn detect(head: &[u8]) -> Option<FsKind> {
    let b = head.get(..512)?;
    // NTFS and exFAT boot sectors name themselves; they are not FAT.
    if has(b, 3, b"NTFS    ") || has(b, 3, b"EXFAT   ") {
        return None;
    }
    parse_bpb(b).ok().map(|bpb| bpb.kind)
}

/// Entry `n` of a FAT of the given kind.
fn entry(fat: &[u8], kind: FsKind, n: u64) -> u32 {
    match kind {
        FsKind::Fat12 => {
            let off = (n + n / 2) as usize;
            let v = u32::from(le16(fat, off));
            if n.is_multiple_of(2) {
                v & 0xFFF
            } else {
                v >> 4
            }
        }
        FsKind::Fat16 => u32::from(le16(fat, (n * 2) as usize)),
        _ => le32(fat, (n * 4) as usize) & 0x0FFF_FFFF,
    }
}

pub(crate) fn analyse<R: ReadAt + ?Sized>(
    region: &Region<'_, R>,
    rep: &mut FsReport,
) -> Result<Runs, Fail> {
    let mut boot = [0u8; 512];
    region.read(0, &mut boot, "FAT boot sector")?;
    let bpb = parse_bpb(&boot).map_err(corrupt)?;
    rep.kind = bpb.kind;
    rep.unit = Some(bpb.cluster_bytes);
    let size = bpb.total_sectors * bpb.bytes_per_sector;
    rep.size = Some(size);
    if size > region.len {
        return Err(Fail::Left(Reason::SizeMismatch {
            fs_size: size,
            partition_size: region.len,
        }));
    }
    if bpb.state_dirty {
        return Err(Fail::Left(Reason::NotClean(
            "dirty bit set in the boot sector (not cleanly unmounted)".into(),
        )));
    }
    // The entries needed: 0, 1 and one per cluster.
    let entries = bpb.clusters + 2;
    let fat_bytes = match bpb.kind {
        FsKind::Fat12 => (entries * 3).div_ceil(2),
        FsKind::Fat16 => entries * 2,
        _ => entries * 4,
    };
    // Bounded by the FAT size, which lies before the data area inside the file system.
    let fat_len = usize::try_from(fat_bytes).map_err(|_| unsupported("FAT too large"))?;
    let mut free =
        vec![true; usize::try_from(bpb.clusters).map_err(|_| unsupported("too many clusters"))?];
    for copy in 0..bpb.num_fats {
        let off = (bpb.reserved_sectors + copy * bpb.fat_sectors) * bpb.bytes_per_sector;
        let fat = region.read_vec(off, fat_len as u64, "FAT")?;
        let e1 = entry(&fat, bpb.kind, 1);
        let unclean = match bpb.kind {
            FsKind::Fat16 => e1 & FAT16_CLEAN == 0 || e1 & FAT16_NO_ERROR == 0,
            FsKind::Fat32 => e1 & FAT32_CLEAN == 0 || e1 & FAT32_NO_ERROR == 0,
            _ => false,
        };
        if unclean {
            return Err(Fail::Left(Reason::NotClean(format!(
                "FAT entry 1 ({e1:#x}) marks the volume dirty or with errors"
            ))));
        }
        for (i, f) in free.iter_mut().enumerate() {
            if *f && entry(&fat, bpb.kind, i as u64 + 2) != 0 {
                *f = false;
            }
        }
    }
    let base = bpb.data_start * bpb.bytes_per_sector;
    let mut runs = Runs::default();
    let mut i = 0usize;
    while i < free.len() {
        if !free[i] {
            i += 1;
            continue;
        }
        let s = i;
        while i < free.len() && free[i] {
            i += 1;
        }
        runs.push(
            base + s as u64 * bpb.cluster_bytes,
            base + i as u64 * bpb.cluster_bytes,
        );
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fat12_entries_unpack_both_halves() {
        // Entries 0..4 = 0xFF8, 0xFFF, 0x003, 0x000.
        let fat = [0xF8, 0xFF, 0xFF, 0x03, 0x00, 0x00];
        assert_eq!(entry(&fat, FsKind::Fat12, 0), 0xFF8);
        assert_eq!(entry(&fat, FsKind::Fat12, 1), 0xFFF);
        assert_eq!(entry(&fat, FsKind::Fat12, 2), 0x003);
        assert_eq!(entry(&fat, FsKind::Fat12, 3), 0x000);
    }
}
