//! `vhdkit_format::volume` as a library: the checks the `vhdkit` command makes about what
//! a disk holds — a shrink must not cut a partition; `--fs-aware` releases only what the
//! file systems call free — are the library's, and behave as the command's did.

use std::path::Path;
use std::process::Command;

use vhdkit_format::ops::{self, OpsOptions, ResizeOptions};
use vhdkit_format::volume::{self, FsKind, FsScan, ShrinkRefusal, TableKind};
use vhdkit_format::{CreateOptions, Disk, DiskKind, ErrorKind};
use vhdkit_testkit::{mbr_with_partition, need, tempdir, MIB};

/// A 64 MiB dynamic disk with an MBR whose one Linux partition spans 1 MiB .. `end`, and
/// data at the partition's last sector.
fn disk_with_partition(path: &Path, end: u64) -> Disk {
    let disk = Disk::create_and_open(path, &CreateOptions::new(DiskKind::Dynamic, 64 * MIB))
        .expect("create");
    disk.write_at(&mbr_with_partition(MIB, end, 0x83), 0)
        .expect("mbr");
    disk.write_at(&[0x5A; 512], end - 512).expect("data");
    disk.flush().expect("flush");
    disk
}

#[test]
fn check_shrink_refuses_a_size_inside_a_partition_and_allows_one_past_it() {
    let dir = tempdir();
    let disk = disk_with_partition(&dir.path().join("d.vhd"), 40 * MIB);

    let table = volume::check_shrink(&disk, 40 * MIB).expect("the partition ends there");
    assert_eq!(table.kind, TableKind::Mbr);
    assert_eq!(table.entries.len(), 1);

    let refusal = volume::check_shrink(&disk, 40 * MIB - 512).expect_err("one sector short");
    match &refusal {
        ShrinkRefusal::CutsPartitions {
            new_size,
            table,
            cut,
        } => {
            assert_eq!(*new_size, 40 * MIB - 512);
            assert_eq!(*table, TableKind::Mbr);
            assert_eq!(cut.iter().map(|e| e.index).collect::<Vec<_>>(), [1]);
        }
        other => panic!("not a cut: {other:?}"),
    }
    assert_eq!(
        refusal.to_string(),
        format!(
            "shrinking to {} bytes would cut partition 1 (bytes {}..{}, Linux); shrink the file system and the partition first, then the disk",
            40 * MIB - 512,
            MIB,
            40 * MIB
        )
    );
}

#[test]
fn check_shrink_of_a_blank_disk_has_nothing_to_cut() {
    let dir = tempdir();
    let disk = Disk::create_and_open(
        dir.path().join("blank.vhd"),
        &CreateOptions::new(DiskKind::Dynamic, 16 * MIB),
    )
    .expect("create");
    let table = volume::check_shrink(&disk, 4 * MIB).expect("nothing to cut");
    assert_eq!(table.kind, TableKind::Unrecognised);
}

#[test]
fn shrink_guard_refuses_in_the_resize_before_anything_is_written() {
    let dir = tempdir();
    let path = dir.path().join("d.vhd");
    drop(disk_with_partition(&path, 40 * MIB));
    let before = std::fs::read(&path).expect("read");
    let shrink = |size| ResizeOptions {
        size: Some(size),
        allow_shrink: true,
        shrink_guard: Some(volume::shrink_guard()),
        ..ResizeOptions::default()
    };

    let refused =
        ops::resize_task(&path, &shrink(32 * MIB), &OpsOptions::default()).expect_err("cuts it");
    assert_eq!(refused.kind(), ErrorKind::NotAllowed);
    assert!(
        refused.to_string().contains("would cut partition 1"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "nothing written"
    );

    let report = ops::resize_task(&path, &shrink(40 * MIB), &OpsOptions::default())
        .expect("past the partition")
        .join()
        .expect("resized");
    let facts = report.resize.expect("resize facts");
    assert_eq!(facts.size_after, 40 * MIB);
    assert_eq!(facts.nonzero_bytes_cut, 0);
}

/// A 32 MiB FAT16 file system over bytes that are not zero (what deleted files leave),
/// with one file on it, as a raw image.
fn fat_image(raw: &Path, file: &Path) {
    need("mkfs.vfat", &["--help"]);
    need("mcopy", &["--version"]);
    std::fs::write(raw, vec![0xEE; 32 * MIB as usize]).expect("raw");
    let ok = |c: &mut Command| {
        let out = c.output().expect("run");
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(Command::new("mkfs.vfat").args(["-F", "16"]).arg(raw));
    std::fs::write(file, vec![0x42; 3 * MIB as usize]).expect("file");
    ok(Command::new("mcopy")
        .arg("-i")
        .arg(raw)
        .arg(file)
        .arg("::KEEP.BIN"));
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "builds file systems with mkfs (Linux)"
)]
fn fs_scan_makes_compact_release_the_free_space_of_a_fat_file_system() {
    let dir = tempdir();
    let (raw, file) = (dir.path().join("fat.raw"), dir.path().join("keep.bin"));
    fat_image(&raw, &file);
    let path = dir.path().join("fat.vhd");
    let disk = Disk::create_and_open(&path, &CreateOptions::new(DiskKind::Dynamic, 32 * MIB))
        .expect("create");
    disk.write_at(&std::fs::read(&raw).expect("raw"), 0)
        .expect("write");
    disk.flush().expect("flush");
    drop(disk);

    // Plain compact: every block holds non-zero bytes, nothing goes.
    let plain = ops::compact_task(&path, &OpsOptions::default())
        .expect("start")
        .join()
        .expect("compact");
    assert_eq!(plain.blocks_released, 0);

    let fs = FsScan::new();
    let opts = OpsOptions {
        unused_ranges: Some(fs.unused()),
        ..OpsOptions::default()
    };
    let aware = ops::compact_task(&path, &opts)
        .expect("start")
        .join()
        .expect("compact");
    let found = fs.report().expect("the scan ran");
    assert_eq!(found.table, TableKind::WholeDisk);
    assert_eq!(found.partitions[0].fs, FsKind::Fat16);
    assert!(found.partitions[0].left_alone.is_none(), "{found:?}");
    assert!(
        aware.blocks_unused >= 10,
        "most of 16 blocks are free: {aware:?}"
    );
    assert!(aware.file_size_after < plain.file_size_after);

    // The file system still holds the file.
    let disk = Disk::open(&path).expect("open");
    let mut bytes = vec![0u8; 32 * MIB as usize];
    disk.read_at(&mut bytes, 0).expect("read");
    std::fs::write(&raw, &bytes).expect("raw");
    let out = Command::new("mcopy")
        .arg("-i")
        .arg(&raw)
        .args(["::KEEP.BIN", "-"])
        .output()
        .expect("mcopy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == std::fs::read(&file).expect("file"),
        "KEEP.BIN changed"
    );
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "builds file systems with mkfs (Linux)"
)]
fn volume_scan_of_a_disk_reads_its_file_system() {
    let dir = tempdir();
    let (raw, file) = (dir.path().join("fat.raw"), dir.path().join("keep.bin"));
    fat_image(&raw, &file);
    let disk = Disk::open_any(&raw, &Default::default()).expect("open raw");
    let report = volume::scan(&disk).expect("scan");
    assert_eq!(report.table, TableKind::WholeDisk);
    assert_eq!(report.partitions[0].fs, FsKind::Fat16);
    // The file's 3 MiB and the file system's metadata are used; the rest is free.
    let free = report.free_bytes();
    assert!(free > 20 * MIB && free < 29 * MIB, "{free}");
}
