//! Each file system made by its real mkfs, filled and thinned through a real mount, then
//! scanned: filling every reported free range with a pattern leaves the checker clean and
//! every surviving file identical, and the free bytes match what the file system reports.
//! Runs as root with e2fsprogs, dosfstools, ntfs-3g, util-linux and xfsprogs (`.ci/run`).

// Disks built by sfdisk, mkfs and loop devices: Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use vhdkit_volume::{FsKind, Reason, TableKind};

/// One whole-disk file system of `size` bytes, with files written and some deleted.
fn whole_disk(fs: &'static str, size: u64) {
    let disk = Disk::new(size);
    let part = Part {
        start: 0,
        len: size,
        fs,
    };
    let made = make(&disk, &part, size ^ fs.len() as u64, 40, 300_000);
    let report = verify(&disk, &[made]);
    assert_eq!(report.table, TableKind::WholeDisk);
    let p = &report.partitions[0];
    assert!(p.left_alone.is_none(), "{p:#?}");
    assert!(p.free_bytes > 0);
}

#[test]
fn ext4_default_free_ranges_hold_no_file_data() {
    whole_disk("ext4", 48 * MIB);
}

#[test]
fn ext4_without_flex_bg_free_ranges_hold_no_file_data() {
    whole_disk("ext4-noflex", 48 * MIB);
}

#[test]
fn ext4_64bit_1k_blocks_free_ranges_hold_no_file_data() {
    whole_disk("ext4-1k64", 24 * MIB);
}

#[test]
fn ext4_without_uninit_groups_free_ranges_hold_no_file_data() {
    whole_disk("ext4-nouninit", 40 * MIB);
}

#[test]
fn ext3_free_ranges_hold_no_file_data() {
    whole_disk("ext3", 32 * MIB);
}

#[test]
fn ext2_free_ranges_hold_no_file_data() {
    whole_disk("ext2", 24 * MIB);
}

#[test]
fn fat12_free_ranges_hold_no_file_data() {
    whole_disk("fat12", 8 * MIB);
}

#[test]
fn fat16_free_ranges_hold_no_file_data() {
    whole_disk("fat16", 24 * MIB);
}

#[test]
fn fat32_free_ranges_hold_no_file_data() {
    whole_disk("fat32", 40 * MIB);
}

#[test]
fn ntfs_free_ranges_hold_no_file_data() {
    whole_disk("ntfs", 32 * MIB);
}

#[test]
fn ext4_journal_blocks_are_never_free() {
    let disk = Disk::new(32 * MIB);
    let part = Part {
        start: 0,
        len: 32 * MIB,
        fs: "ext4",
    };
    make(&disk, &part, 3, 10, 100_000);
    let report = disk.scan();
    let free = report.free_ranges();
    let bs = report.partitions[0].fs_unit.expect("block size");
    // debugfs lists the journal inode's blocks (and extent tree blocks).
    let out = sh(&format!(
        "debugfs -R 'blocks <8>' '{}' 2>/dev/null",
        disk.path.display()
    ));
    let blocks: Vec<u64> = out
        .split_whitespace()
        .map(|b| b.parse().expect("block"))
        .collect();
    assert!(blocks.len() > 100, "journal blocks: {}", blocks.len());
    for b in blocks {
        let off = b * bs;
        assert!(
            !free.iter().any(|r| r.start < off + bs && off < r.end),
            "journal block {b} reported free"
        );
    }
}

#[test]
fn swap_all_but_the_header_page_is_free() {
    let size = 16 * MIB;
    let disk = Disk::new(size);
    let lo = Loop::new(&disk.path, 0, size);
    mkfs("swap", &lo.dev);
    drop(lo);
    let report = disk.scan();
    let p = &report.partitions[0];
    assert_eq!(p.fs, FsKind::Swap);
    assert_eq!(p.free, vec![4096..size]);
    // The header still reads as a swap area after the free space is overwritten.
    let copy = disk.copy();
    fill(&copy, &p.free);
    let out = sh(&format!(
        "blkid -p -o value -s TYPE '{}' || true",
        copy.path.display()
    ));
    assert_eq!(out.trim(), "swap");
}

#[test]
fn swap_bad_pages_are_not_free() {
    use vhdkit_platform::FileExt;
    let size = 8 * MIB;
    let disk = Disk::new(size);
    sh(&format!("mkswap '{}' >/dev/null", disk.path.display()));
    // mkswap -c would find real bad blocks; list three in the header as it would.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .expect("open");
    f.write_all_at(&3u32.to_le_bytes(), 1024 + 8)
        .expect("count");
    for (i, page) in [9u32, 5, 10].iter().enumerate() {
        f.write_all_at(&page.to_le_bytes(), 1536 + 4 * i as u64)
            .expect("page");
    }
    drop(f);
    let p = &disk.scan().partitions[0];
    assert_eq!(p.fs, FsKind::Swap);
    assert_eq!(
        p.free,
        vec![4096..5 * 4096, 6 * 4096..9 * 4096, 11 * 4096..size]
    );
}

#[test]
fn xfs_is_recognised_and_counted_as_used() {
    let size = 320 * MIB;
    let disk = Disk::new(size);
    let lo = Loop::new(&disk.path, 0, size);
    mkfs("xfs", &lo.dev);
    drop(lo);
    let p = &disk.scan().partitions[0];
    assert_eq!(p.fs, FsKind::Xfs);
    assert!(
        matches!(p.left_alone, Some(Reason::Unsupported(_))),
        "{p:#?}"
    );
    assert!(p.free.is_empty());
}

/// Copies the image while the file system is mounted read-write (as a crash or a
/// snapshot of a running guest would leave it) and scans the copy.
fn scan_while_mounted(fs: &'static str, size: u64) -> vhdkit_volume::Partition {
    let disk = Disk::new(size);
    let lo = Loop::new(&disk.path, 0, size);
    mkfs(fs, &lo.dev);
    let m = Mount::new(&lo.dev, mount_kind(fs).expect("mountable"), false);
    std::fs::write(m.path().join("a"), content(1, 100_000)).expect("write");
    sh("sync");
    let copy = disk.copy();
    m.unmount();
    copy.scan().partitions.remove(0)
}

#[test]
fn ext4_needing_recovery_is_left_alone() {
    let p = scan_while_mounted("ext4", 32 * MIB);
    assert_eq!(p.fs, FsKind::Ext4);
    assert!(matches!(p.left_alone, Some(Reason::NotClean(_))), "{p:#?}");
    assert!(p.free.is_empty());
}

#[test]
fn ext2_mounted_state_is_left_alone() {
    let p = scan_while_mounted("ext2", 16 * MIB);
    assert_eq!(p.fs, FsKind::Ext2);
    assert!(matches!(p.left_alone, Some(Reason::NotClean(_))), "{p:#?}");
}

#[test]
fn fat_dirty_bit_is_left_alone() {
    for (fs, fat32) in [("fat16", false), ("fat32", true)] {
        let size = 40 * MIB;
        let disk = Disk::new(size);
        let lo = Loop::new(&disk.path, 0, size);
        mkfs(fs, &lo.dev);
        drop(lo);
        assert!(disk.scan().partitions[0].left_alone.is_none());
        set_fat_dirty_bit(&disk, 0, fat32);
        // fsck.vfat reads the same bit.
        let (_, out) = sh_status(&format!("fsck.vfat -n '{}'", disk.path.display()));
        assert!(out.contains("Dirty bit"), "{out}");
        let p = &disk.scan().partitions[0];
        assert!(
            matches!(p.left_alone, Some(Reason::NotClean(_))),
            "{fs}: {p:#?}"
        );
        assert!(p.free.is_empty());
    }
}

/// Sets flags in NTFS's `$VOLUME_INFORMATION` (MFT record 3) of a whole-disk image.
fn set_ntfs_volume_flags(disk: &Disk, flags: u16) {
    use vhdkit_platform::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk.path)
        .expect("open");
    let mut bs = [0u8; 512];
    f.read_exact_at(&mut bs, 0).expect("boot");
    let bps = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
    let cluster = bps * u64::from(bs[13]);
    let mft = u64::from_le_bytes(bs[48..56].try_into().expect("8")) * cluster;
    let mirror = u64::from_le_bytes(bs[56..64].try_into().expect("8")) * cluster;
    let rec_off = mft + 3 * 1024;
    let mut rec = [0u8; 1024];
    f.read_exact_at(&mut rec, rec_off).expect("record 3");
    let mut off = usize::from(u16::from_le_bytes([rec[20], rec[21]]));
    loop {
        let ty = u32::from_le_bytes(rec[off..off + 4].try_into().expect("4"));
        let len = u32::from_le_bytes(rec[off + 4..off + 8].try_into().expect("4")) as usize;
        assert!(ty != 0xFFFF_FFFF && len > 0, "no $VOLUME_INFORMATION");
        if ty == 0x70 {
            let v = off + usize::from(u16::from_le_bytes([rec[off + 20], rec[off + 21]]));
            let old = u16::from_le_bytes([rec[v + 10], rec[v + 11]]);
            // Records 0-3 are mirrored in $MFTMirr; both copies change.
            for base in [mft, mirror] {
                f.write_all_at(
                    &(old | flags).to_le_bytes(),
                    base + 3 * 1024 + v as u64 + 10,
                )
                .expect("write");
            }
            return;
        }
        off += len;
    }
}

#[test]
fn ntfs_dirty_flag_is_left_alone() {
    let size = 16 * MIB;
    let disk = Disk::new(size);
    sh(&format!(
        "mkfs.ntfs -q -f -F '{}' >/dev/null",
        disk.path.display()
    ));
    assert!(disk.scan().partitions[0].left_alone.is_none());
    set_ntfs_volume_flags(&disk, 0x0001);
    let p = &disk.scan().partitions[0];
    assert_eq!(p.fs, FsKind::Ntfs);
    assert!(matches!(p.left_alone, Some(Reason::NotClean(_))), "{p:#?}");
    // ntfsinfo reads the same flag.
    let out = sh(&format!(
        "ntfsinfo -f -m '{}' 2>/dev/null",
        disk.path.display()
    ));
    assert!(out.contains("Volume Flags: 0x0001"), "{out}");
}

#[test]
fn file_system_larger_than_its_disk_is_rejected() {
    for fs in ["ext4", "fat16", "ntfs", "swap"] {
        let disk = Disk::new(32 * MIB);
        let lo = Loop::new(&disk.path, 0, 32 * MIB);
        mkfs(fs, &lo.dev);
        drop(lo);
        // Cut the disk short under the file system.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk.path)
            .expect("open")
            .set_len(24 * MIB)
            .expect("truncate");
        let d = Disk {
            size: 24 * MIB,
            ..disk
        };
        let p = &d.scan().partitions[0];
        assert!(
            matches!(p.left_alone, Some(Reason::SizeMismatch { .. })),
            "{fs}: {p:#?}"
        );
        assert!(p.free.is_empty());
    }
}
