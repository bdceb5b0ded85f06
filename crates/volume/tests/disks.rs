//! Partitioned disks made with sfdisk: MBR with an extended partition and logical ones,
//! GPT; each partition formatted, filled and checked as in `real_fs.rs`. Then damaged
//! tables: a GPT whose primary copy is broken, an EBR chain that loops, overlapping and
//! unknown-type partitions.

// Disks built by sfdisk, mkfs and loop devices: Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use vhdkit_platform::FileExt;
use vhdkit_volume::{PartitionType, Reason, TableKind};

fn parts(disk: &Disk, kinds: &[&'static str]) -> Vec<Part> {
    let extents = disk.partitions();
    assert_eq!(extents.len(), kinds.len(), "{extents:?}");
    extents
        .into_iter()
        .zip(kinds)
        .map(|((start, len), fs)| Part { start, len, fs })
        .collect()
}

#[test]
fn mbr_with_logical_partitions_every_file_system_checked() {
    let disk = Disk::new(128 * MIB);
    disk.sfdisk("label: dos\n1MiB,40MiB,c\n,24MiB,83\n,,5\n,24MiB,7\n,16MiB,83\n,8MiB,82\n");
    let all = parts(&disk, &["fat32", "ext4", "none", "ntfs", "ext2", "swap"]);
    let made: Vec<Made> = all
        .iter()
        .filter(|p| p.fs != "none")
        .enumerate()
        .map(|(i, p)| make(&disk, p, 100 + i as u64, 24, 200_000))
        .collect();
    let report = verify(&disk, &made);
    assert_eq!(report.table, TableKind::Mbr);
    let indexes: Vec<u32> = report.partitions.iter().map(|p| p.index).collect();
    assert_eq!(indexes, vec![1, 2, 3, 5, 6, 7]);
    assert_eq!(report.partitions[2].left_alone, Some(Reason::Container));
    for p in report.partitions.iter().filter(|p| p.index != 3) {
        assert!(p.left_alone.is_none(), "{p:#?}");
    }
    // Nothing before the first partition, and no EBR sector, is ever free.
    let free = report.free_ranges();
    assert!(free.iter().all(|r| r.start >= MIB));
    for p in report.partitions.iter().filter(|p| p.index >= 5) {
        let ebr = p.start - MIB..p.start; // sfdisk leaves 1 MiB before each logical
        assert!(!free.iter().any(|r| r.start < ebr.end && ebr.start < r.end));
    }
}

#[test]
fn gpt_every_file_system_checked() {
    let disk = Disk::new(128 * MIB);
    disk.sfdisk(
        "label: gpt\n,40MiB,U\n,24MiB,L\n,24MiB,EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n,16MiB,L\n,8MiB,S\n",
    );
    let all = parts(&disk, &["fat32", "ext4", "ntfs", "fat16", "swap"]);
    let made: Vec<Made> = all
        .iter()
        .enumerate()
        .map(|(i, p)| make(&disk, p, 200 + i as u64, 24, 200_000))
        .collect();
    let report = verify(&disk, &made);
    assert_eq!(report.table, TableKind::Gpt);
    assert_eq!(report.partitions.len(), 5);
    assert_eq!(report.partitions[0].type_name, "EFI System");
    assert_eq!(report.partitions[2].type_name, "Microsoft basic data");
    for p in &report.partitions {
        assert!(p.left_alone.is_none(), "{p:#?}");
    }
    // The backup GPT (last 33 sectors) is never free.
    let free = report.free_ranges();
    assert!(free.iter().all(|r| r.end <= disk.size - 33 * 512));
}

#[test]
fn gpt_with_damaged_primary_uses_the_backup() {
    let disk = Disk::new(64 * MIB);
    disk.sfdisk("label: gpt\n,32MiB,L\n");
    let p = parts(&disk, &["ext4"]).remove(0);
    make(&disk, &p, 7, 10, 100_000);
    let before = disk.scan();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .expect("open");
    f.write_all_at(&[0xFF; 16], 512 + 24)
        .expect("damage the primary header");
    drop(f);
    let after = disk.scan();
    assert_eq!(after.table, TableKind::Gpt);
    assert!(
        after.warnings.iter().any(|w| w.contains("backup")),
        "{:?}",
        after.warnings
    );
    assert_eq!(after.free_ranges(), before.free_ranges());
}

#[test]
fn gpt_with_both_copies_damaged_is_all_used() {
    let disk = Disk::new(32 * MIB);
    disk.sfdisk("label: gpt\n,16MiB,L\n");
    let p = parts(&disk, &["ext4"]).remove(0);
    make(&disk, &p, 7, 4, 10_000);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .expect("open");
    // One entry byte changed: both arrays' CRCs fail.
    f.write_all_at(&[0x42], 2 * 512 + 40)
        .expect("damage primary array");
    f.write_all_at(&[0x42], disk.size - 33 * 512 + 40)
        .expect("damage backup array");
    drop(f);
    let report = disk.scan();
    assert_eq!(report.table, TableKind::Unrecognised);
    assert!(report.free_ranges().is_empty());
}

#[test]
fn ebr_link_outside_the_extended_partition_is_not_followed() {
    let disk = Disk::new(32 * MIB);
    disk.sfdisk("label: dos\n1MiB,8MiB,83\n,,5\n,8MiB,83\n,8MiB,83\n");
    let all = parts(&disk, &["ext2", "none", "ext2", "ext2"]);
    let first_ebr = all[2].start - MIB;
    let mut entry = [0u8; 16];
    entry[4] = 0x05;
    entry[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    entry[12..16].copy_from_slice(&2048u32.to_le_bytes());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .expect("open");
    f.write_all_at(&entry, first_ebr + 446 + 16).expect("link");
    drop(f);
    let report = disk.scan();
    assert!(
        report.warnings.iter().any(|w| w.contains("outside")),
        "{:?}",
        report.warnings
    );
    assert_eq!(report.partitions.iter().filter(|p| p.index >= 5).count(), 1);
}

#[test]
fn ebr_self_loop_is_detected() {
    let disk = Disk::new(32 * MIB);
    disk.sfdisk("label: dos\n1MiB,8MiB,83\n,,5\n,8MiB,83\n,8MiB,83\n");
    let all = parts(&disk, &["ext2", "none", "ext2", "ext2"]);
    let ext = all[1].start;
    let second_ebr = all[3].start - MIB;
    // The second EBR links to itself (relative to the extended partition's start).
    let rel = ((second_ebr - ext) / 512) as u32;
    let mut entry = [0u8; 16];
    entry[4] = 0x05;
    entry[8..12].copy_from_slice(&rel.to_le_bytes());
    entry[12..16].copy_from_slice(&2048u32.to_le_bytes());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .expect("open");
    f.write_all_at(&entry, second_ebr + 446 + 16).expect("link");
    drop(f);
    let report = disk.scan();
    assert!(
        report.warnings.iter().any(|w| w.contains("loops")),
        "{:?}",
        report.warnings
    );
    assert_eq!(report.partitions.iter().filter(|p| p.index >= 5).count(), 2);
}

#[test]
fn overlapping_partitions_are_both_left_alone() {
    let disk = Disk::new(32 * MIB);
    disk.sfdisk("label: dos\n1MiB,8MiB,83\n,8MiB,83\n");
    let all = parts(&disk, &["ext2", "ext2"]);
    for p in &all {
        make(&disk, p, 5, 3, 10_000);
    }
    // Stretch partition 1 over partition 2.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .expect("open");
    f.write_all_at(&(3 * 8192u32).to_le_bytes(), 446 + 12)
        .expect("stretch");
    drop(f);
    let report = disk.scan();
    for p in &report.partitions {
        assert!(matches!(p.left_alone, Some(Reason::BadExtent(_))), "{p:#?}");
    }
    assert!(report.free_ranges().is_empty());
}

#[test]
fn unknown_partition_type_is_left_alone_but_probed() {
    let disk = Disk::new(32 * MIB);
    disk.sfdisk("label: dos\n1MiB,16MiB,8e\n");
    let p = parts(&disk, &["ext4"]).remove(0);
    make(&disk, &p, 9, 3, 10_000);
    let report = disk.scan();
    let p = &report.partitions[0];
    assert_eq!(p.ptype, PartitionType::Mbr(0x8e));
    assert_eq!(p.fs, vhdkit_volume::FsKind::Ext4);
    assert_eq!(p.left_alone, Some(Reason::UnknownPartitionType));
    assert!(report.free_ranges().is_empty());
}

#[test]
fn partition_without_file_system_is_left_alone() {
    let disk = Disk::new(16 * MIB);
    disk.sfdisk("label: dos\n1MiB,8MiB,83\n");
    let report = disk.scan();
    assert_eq!(report.partitions[0].left_alone, Some(Reason::NoFileSystem));
    assert!(report.free_ranges().is_empty());
}
