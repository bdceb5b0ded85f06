//! `Table::minimum_size` over tables sfdisk wrote: the end of the last partition
//! (an extended container's end for logical partitions), plus for a GPT the room its
//! backup copy takes; refused for no table, a file system spanning the disk, and a
//! partition past the end.

// Disks built by sfdisk, mkfs and loop devices: Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use vhdkit_platform::FileExt;
use vhdkit_volume::table::{read_table, TableKind};

fn table_of(disk: &Disk) -> vhdkit_volume::table::Table {
    let f = std::fs::File::open(&disk.path).expect("open image");
    read_table(&f).expect("read table")
}

#[test]
fn mbr_minimum_is_the_end_of_the_extended_container() {
    let disk = Disk::new(64 * MIB);
    disk.sfdisk("label: dos\n1MiB,12MiB,83\n,8MiB,83\n,4MiB,83\n,14MiB,5\n,5MiB,83\n,6MiB,7\n");

    let t = table_of(&disk);

    assert_eq!(t.kind, TableKind::Mbr);
    assert_eq!(t.gpt, None);
    assert_eq!(t.minimum_size(), Ok(39 * MIB));
}

#[test]
fn gpt_minimum_adds_the_room_the_primary_keeps_before_its_first_usable_sector() {
    let disk = Disk::new(64 * MIB);
    disk.sfdisk("label: gpt\n1MiB,20MiB,L\n,9MiB,L\n");

    let t = table_of(&disk);

    assert_eq!(t.kind, TableKind::Gpt);
    let g = t.gpt.expect("GPT copies");
    assert_eq!(g.backup_header, 64 * MIB - 512);
    // sfdisk's first usable sector is 2048: the backup takes 2047 sectors.
    assert_eq!(g.backup_room, 2047 * 512);
    assert_eq!(t.minimum_size(), Ok(30 * MIB + 2047 * 512));
}

#[test]
fn gpt_read_from_its_backup_gives_the_same_minimum() {
    let disk = Disk::new(64 * MIB);
    disk.sfdisk("label: gpt\n1MiB,20MiB,L\n");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .expect("open");
    f.write_all_at(&[0u8; 512], 512)
        .expect("break the primary header");

    let t = table_of(&disk);

    assert!(t.warnings.iter().any(|w| w.contains("backup")), "{t:?}");
    assert_eq!(t.gpt.map(|g| g.backup_header), Some(64 * MIB - 512));
    assert_eq!(t.minimum_size(), Ok(21 * MIB + 2047 * 512));
}

#[test]
fn no_table_and_whole_disk_file_systems_have_no_minimum() {
    let blank = Disk::new(16 * MIB);
    let fat = Disk::new(16 * MIB);
    sh(&format!("mkfs.vfat '{}' >/dev/null", fat.path.display()));

    let blank_min = table_of(&blank).minimum_size();
    let fat_min = table_of(&fat).minimum_size();

    assert!(blank_min.is_err_and(|w| w.contains("no partition table")));
    assert_eq!(table_of(&fat).kind, TableKind::WholeDisk);
    assert!(fat_min.is_err_and(|w| w.contains("spans the disk")));
}

#[test]
fn a_partition_past_the_end_of_the_disk_has_no_minimum() {
    let disk = Disk::new(64 * MIB);
    disk.sfdisk("label: dos\n1MiB,40MiB,83\n");
    std::fs::File::options()
        .write(true)
        .open(&disk.path)
        .expect("open")
        .set_len(32 * MIB)
        .expect("cut the image under its partition");

    let min = table_of(&disk).minimum_size();

    assert!(
        min.as_ref().is_err_and(|w| w.contains("partition 1")),
        "{min:?}"
    );
}
