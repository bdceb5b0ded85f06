//! `compact --fs-aware` and `convert --fs-aware` on disks made by the real tools: sfdisk
//! (MBR and GPT), mkfs.ext4, mkfs.vfat -F 32 and Debian's mkfs.ntfs, filled through loop
//! mounts, ntfs-3g and mtools, with some files deleted, then converted to a dynamic VHD.
//! After the operation every file system passes its own checker on the disk read back
//! (`vhdkit convert --type raw`), every surviving file is byte-identical, and the result
//! is as small (within 1%) as zero-filling the free space from inside and running a plain
//! `compact`. Runs as root with the tools `.ci/run` installs: a missing one fails.
//!
//! The disk helpers (loop devices, mounts, mkfs, file plans, checkers) are
//! `vhdkit_testkit::disks`, which the volume crate's suites use too.

// Linux tools and signals: not on Windows.
#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use common::{bin, p, vhdkit, Run};
use vhdkit_testkit::disks::{
    assert_fat_files, assert_files, fat_free, fsck, is_fat, make, mount_kind, mtools,
    set_fat_dirty_bit, sh, sh_status, Disk, Made, Mount, Part, MIB,
};

/// Size of every test disk (a sparse file).
const SIZE: u64 = 128 * MIB;
/// Files written into each file system (every third is deleted).
const FILES: usize = 24;
/// The largest of them on a disk with one file system: big enough that deleted files
/// free whole 2 MiB blocks.
const MAX_FILE: usize = 6_000_000;
/// The largest of them on a disk with two file systems (half the space each).
const MAX_FILE_HALF: usize = 2_500_000;
/// How far the fs-aware result may exceed the zero-filled reference.
const TOLERANCE_PERCENT: u64 = 1;

/// The partition type sfdisk writes for a file system in a table.
fn part_type(table: &str, fs: &str) -> &'static str {
    match (table, fs) {
        ("gpt", f) if f.starts_with("ext") => "L",
        ("gpt", _) => "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        (_, f) if f.starts_with("ext") => "83",
        (_, "ntfs") => "7",
        _ => "c",
    }
}

/// A raw disk with a `table` (`mbr` or `gpt`) holding one partition per entry of `fs`
/// (the sizes in MiB, the last one `None` for the rest of the disk), each formatted and
/// filled with files of up to `max_file` bytes, some deleted.
fn build(
    table: &str,
    fs: &[(&'static str, Option<u64>)],
    seed: u64,
    max_file: usize,
) -> (Disk, Vec<Made>) {
    let disk = Disk::new(SIZE);
    let mut script = format!("label: {}\n", if table == "gpt" { "gpt" } else { "dos" });
    for &(kind, mib) in fs {
        let size = mib.map(|m| format!("{m}M")).unwrap_or_default();
        script += &format!(",{size},{}\n", part_type(table, kind));
    }
    disk.sfdisk(&script);
    let mut made = disk
        .partitions()
        .into_iter()
        .zip(fs)
        .enumerate()
        .map(|(i, ((start, len), &(kind, _)))| {
            let part = Part {
                start,
                len,
                fs: kind,
            };
            make(&disk, &part, seed + i as u64, FILES, max_file)
        })
        .collect::<Vec<_>>();
    for m in &mut made {
        write_files(&disk, m, &big_files("big", seed, max_file));
    }
    (disk, made)
}

/// Files of `max_file / 8` to `max_file` bytes at the top of a file system, named
/// `{prefix}{i}.bin`: every third is deleted after writing (`i % 3 == 1`).
fn big_files(prefix: &str, seed: u64, max_file: usize) -> Vec<(String, Vec<u8>)> {
    (0..FILES)
        .map(|i| {
            let pick = u32::from_le_bytes(
                vhdkit_testkit::disks::content(seed ^ ((i as u64) << 8), 4)
                    .try_into()
                    .expect("4 bytes"),
            ) as usize;
            let len = max_file / 8 + pick % (max_file - max_file / 8);
            let data =
                vhdkit_testkit::disks::content(seed.wrapping_mul(31).wrapping_add(i as u64), len);
            (format!("{prefix}{i}.bin"), data)
        })
        .collect()
}

/// Writes `files` into the file system of `m` (overwriting any of the same name), deletes
/// every third again, and records the survivors in `m.files`.
fn write_files(disk: &Disk, m: &mut Made, files: &[(String, Vec<u8>)]) {
    let lo = disk.loopdev(&m.part);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = mount_kind(m.part.fs).map(|kind| Mount::new(&lo.dev, kind, false));
    for (i, (name, data)) in files.iter().enumerate() {
        match &mnt {
            Some(mnt) => std::fs::write(mnt.path().join(name), data).expect("write"),
            None => {
                let src = tmp.path().join(i.to_string());
                std::fs::write(&src, data).expect("write");
                mtools(&format!(
                    "mcopy -o -i {} '{}' ::/{name}",
                    lo.dev,
                    src.display()
                ));
            }
        }
    }
    for (i, (name, data)) in files.iter().enumerate() {
        if i % 3 != 1 {
            m.files.insert(name.clone(), data.clone());
            continue;
        }
        m.files.remove(name);
        match &mnt {
            Some(mnt) => std::fs::remove_file(mnt.path().join(name)).expect("delete"),
            None => {
                mtools(&format!("mdel -i {} ::/{name}", lo.dev));
            }
        }
    }
    if let Some(mnt) = mnt {
        sh("sync");
        mnt.unmount();
    }
}

/// Zero-fills the free space of every file system of a raw disk from inside: a file of
/// zeros written until the file system is full, then deleted (for FAT, with mtools, a
/// file of exactly the free size).
fn zero_fill_free_space(disk: &Disk, made: &[Made]) {
    for m in made {
        let lo = disk.loopdev(&m.part);
        if is_fat(m.part.fs) {
            let tmp = tempfile::tempdir().expect("tempdir");
            let zeros = tmp.path().join("zeros");
            File::create(&zeros)
                .and_then(|f| f.set_len(fat_free(&lo.dev)))
                .expect("a file of zeros");
            mtools(&format!(
                "mcopy -i {} '{}' ::/zeros && mdel -i {} ::/zeros",
                lo.dev,
                zeros.display(),
                lo.dev
            ));
        } else {
            let kind = mount_kind(m.part.fs).expect("a mountable file system");
            let mnt = Mount::new(&lo.dev, kind, false);
            let zeros = mnt.path().join("zeros");
            // dd stops with ENOSPC: that is the point.
            let _ = sh_status(&format!(
                "dd if=/dev/zero of='{}' bs=1M 2>&1; sync",
                zeros.display()
            ));
            std::fs::remove_file(&zeros).expect("delete the zeros");
            mnt.unmount();
        }
    }
}

/// Runs `vhdkit ARGS`, asserting success.
fn ok(args: &[&str]) -> Run {
    vhdkit(args).ok()
}

/// `vhdkit convert SRC DST --type KIND EXTRA...`, asserting success.
fn convert(src: &Path, dst: &Path, kind: &str, extra: &[&str]) {
    let mut args = vec!["convert", p(src), p(dst), "--type", kind];
    args.extend_from_slice(extra);
    ok(&args);
}

/// A raw image file of the tests' size as a [`Disk`].
fn raw_disk(path: PathBuf) -> Disk {
    Disk {
        dir: tempfile::tempdir().expect("tempdir"),
        path,
        size: SIZE,
    }
}

/// `vhdkit ARGS --json`: the report.
fn json(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    ok(&a).json()
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

/// Bytes a file has allocated on the host (holes excluded).
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

/// Asserts `got` is at most `TOLERANCE_PERCENT` over `reference`; prints both.
fn assert_near(what: &str, got: u64, reference: u64) {
    eprintln!(
        "FIGURES {what}: fs-aware {got} bytes, zero-filled reference {reference} bytes ({:+.2}%)",
        (got as f64 - reference as f64) * 100.0 / reference.max(1) as f64
    );
    assert!(
        got * 100 <= reference * (100 + TOLERANCE_PERCENT),
        "{what}: {got} bytes, more than {TOLERANCE_PERCENT}% over the reference's {reference}"
    );
}

/// The raw disk a VHD reads as, in `dir` (a raw conversion: zeros are holes).
fn read_back(vhd: &Path, dir: &Path, name: &str) -> Disk {
    let path = dir.join(name);
    convert(vhd, &path, "raw", &[]);
    raw_disk(path)
}

/// Each file system of a raw disk passes its checker, and every expected file reads back
/// identical.
fn assert_intact(disk: &Disk, made: &[Made]) {
    for m in made {
        let lo = disk.loopdev(&m.part);
        fsck(m.part.fs, &lo.dev);
        if is_fat(m.part.fs) {
            assert_fat_files(&lo.dev, &m.files);
        } else {
            let kind = mount_kind(m.part.fs).expect("a mountable file system");
            let mnt = Mount::new(&lo.dev, kind, true);
            assert_files(mnt.path(), &m.files);
            mnt.unmount();
        }
    }
}

/// A disk made, converted to a dynamic VHD, and its zero-filled reference.
struct Case {
    dir: tempfile::TempDir,
    raw: Disk,
    made: Vec<Made>,
    /// The dynamic VHD converted from `raw` (not compacted).
    vhd: PathBuf,
    /// The zero-filled copy of `raw`, converted to dynamic and compacted (plain).
    reference: PathBuf,
    /// The zero-filled copy as raw with holes (a raw conversion of `reference`).
    reference_raw: PathBuf,
}

impl Case {
    fn new(table: &str, fs: &'static str, seed: u64) -> Case {
        let (raw, made) = build(table, &[(fs, None)], seed, MAX_FILE);
        let dir = tempfile::tempdir().expect("tempdir");
        let vhd = dir.path().join("disk.vhd");
        convert(&raw.path, &vhd, "dynamic", &[]);
        let zeroed = raw.copy();
        zero_fill_free_space(&zeroed, &made);
        let reference = dir.path().join("reference.vhd");
        convert(&zeroed.path, &reference, "dynamic", &[]);
        ok(&["compact", p(&reference)]);
        let reference_raw = dir.path().join("reference.img");
        convert(&reference, &reference_raw, "raw", &[]);
        Case {
            dir,
            raw,
            made,
            vhd,
            reference,
            reference_raw,
        }
    }

    /// A copy of the converted VHD.
    fn copy(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::copy(&self.vhd, &path).expect("copy");
        path
    }
}

/// The whole check of one file system: a dry run changes nothing and predicts the run;
/// `compact --fs-aware --verify` keeps every file and the checker clean and is as small as
/// the reference; so are `convert --fs-aware` to dynamic and to raw (holes).
fn fs_aware_matches_the_reference(table: &str, fs: &'static str, seed: u64) {
    let case = Case::new(table, fs, seed);
    let vhd = case.copy("compacted.vhd");
    let bytes = std::fs::read(&vhd).expect("read");

    let dry = json(&["compact", p(&vhd), "--fs-aware", "--dry-run"]);
    let dry_text = ok(&["compact", p(&vhd), "--fs-aware", "--dry-run"]).stdout_str();
    assert!(
        std::fs::read(&vhd).expect("read") == bytes,
        "{fs}: the dry run changed the file"
    );
    let run = json(&["compact", p(&vhd), "--fs-aware", "--verify"]);

    assert_eq!(dry["dry_run"], true);
    assert!(dry_text.contains("would be released"), "{dry_text}");
    assert_eq!(run["verified"], true, "{run}");
    assert!(run["blocks_unused"].as_u64() > Some(0), "{fs}: {run}");
    for key in [
        "blocks_released",
        "blocks_unused",
        "bytes_unused",
        "file_size_after",
    ] {
        assert_eq!(dry[key], run[key], "{fs}: {key} of the dry run and the run");
    }
    assert_eq!(
        dry["partitions"][0]["released_bytes"], run["partitions"][0]["released_bytes"],
        "{fs}: per-partition figures of the dry run and the run"
    );
    assert_eq!(run["partitions"][0]["fs"], fs, "{run}");
    assert_eq!(run["partition_table"], table, "{run}");
    assert_eq!(len(&vhd), run["file_size_after"].as_u64().expect("size"));
    ok(&["check", p(&vhd)]);
    assert_intact(&read_back(&vhd, case.dir.path(), "back.img"), &case.made);
    assert_near(&format!("{fs} compact"), len(&vhd), len(&case.reference));

    let dynamic = case.dir.path().join("converted.vhd");
    convert(&case.vhd, &dynamic, "dynamic", &["--fs-aware"]);
    ok(&["check", p(&dynamic)]);
    assert_intact(
        &read_back(&dynamic, case.dir.path(), "back2.img"),
        &case.made,
    );
    assert_near(
        &format!("{fs} convert dynamic"),
        len(&dynamic),
        len(&case.reference),
    );

    let raw = case.dir.path().join("converted.img");
    convert(&case.vhd, &raw, "raw", &["--fs-aware"]);
    assert_eq!(len(&raw), SIZE);
    let raw = raw_disk(raw);
    assert_intact(&raw, &case.made);
    assert!(allocated(&raw.path) < allocated(&case.raw.path), "holes");
    assert_near(
        &format!("{fs} convert raw (allocated)"),
        allocated(&raw.path),
        allocated(&case.reference_raw),
    );
}

#[test]
fn ext4_on_gpt_fs_aware_compact_and_convert_match_the_zero_filled_reference() {
    fs_aware_matches_the_reference("gpt", "ext4", 0xe4);
}

#[test]
fn fat32_on_mbr_fs_aware_compact_and_convert_match_the_zero_filled_reference() {
    fs_aware_matches_the_reference("mbr", "fat32", 0xfa);
}

#[test]
fn ntfs_on_mbr_fs_aware_compact_and_convert_match_the_zero_filled_reference() {
    fs_aware_matches_the_reference("mbr", "ntfs", 0x17);
}

/// `compact --fs-aware` of a VHDX (Hyper-V's format) made from the same ext4 disk:
/// every file and the checker intact, the blocks released counted as unused, as few
/// blocks left as in a VHDX converted from the zero-filled reference, and (the blocks
/// stored last moved into the holes) a file as long as that conversion.
#[test]
fn ext4_in_a_vhdx_fs_aware_compact_keeps_every_file_and_matches_the_zero_filled_reference() {
    let case = Case::new("gpt", "ext4", 0xe4);
    let dir = case.dir.path();
    let vhdx = dir.join("disk.vhdx");
    convert(&case.raw.path, &vhdx, "dynamic", &["--block-size", "2M"]);
    let reference = dir.join("reference.vhdx");
    convert(
        &case.reference_raw,
        &reference,
        "dynamic",
        &["--block-size", "2M"],
    );
    let stored = |path: &Path| {
        json(&["info", p(path)])["allocated_blocks"]
            .as_u64()
            .expect("allocated blocks")
    };
    let before = stored(&vhdx);
    let run = json(&["compact", p(&vhdx), "--fs-aware", "--verify"]);
    assert_eq!(run["verified"], true, "{run}");
    assert!(run["blocks_unused"].as_u64() > Some(0), "{run}");
    assert_eq!(run["partitions"][0]["fs"], "ext4", "{run}");
    let after = stored(&vhdx);
    assert_eq!(
        before - after,
        run["blocks_released"].as_u64().expect("released"),
        "{run}"
    );
    let c = json(&["check", p(&vhdx)]);
    assert_eq!(c["problem_count"], 0, "{c}");
    assert_intact(&read_back(&vhdx, dir, "back-vhdx.img"), &case.made);
    // In bytes of the blocks stored (2 MiB each).
    assert_near(
        "ext4 VHDX compact (stored blocks)",
        after * 2 * MIB,
        stored(&reference) * 2 * MIB,
    );
    // The moves leave no hole: the file holds its metadata and its blocks, as a
    // fresh conversion does (4 MiB of header section, log, metadata and BAT).
    let first_payload = len(&reference) - stored(&reference) * 2 * MIB;
    assert_eq!(len(&vhdx), first_payload + after * 2 * MIB, "{run}");
    assert_near(
        "ext4 VHDX compact (file length)",
        len(&vhdx),
        len(&reference),
    );
}

/// Writes into `child` (a differencing disk over the VHD of `from`) every 64 KiB run
/// where the raw disk `to` differs from `from`: the child then reads as `to`.
fn write_difference(child: &Path, from: &Path, to: &Path) {
    const RUN: usize = 64 * 1024;
    let (a, b) = (
        File::open(from).expect("open"),
        File::open(to).expect("open"),
    );
    let d = vhdkit_format::Disk::open_rw(child).expect("open the child");
    let (mut x, mut y) = (vec![0u8; RUN], vec![0u8; RUN]);
    for off in (0..SIZE).step_by(RUN) {
        a.read_exact_at(&mut x, off).expect("read");
        b.read_exact_at(&mut y, off).expect("read");
        if x != y {
            d.write_at(&y, off).expect("write into the child");
        }
    }
    d.flush().expect("flush");
}

/// The guest's later work on a raw disk: new files in every file system, overwriting
/// some old ones, a third of them deleted again. Updates the expected files.
fn more_files(disk: &Disk, made: &mut [Made], seed: u64) {
    for m in made.iter_mut() {
        write_files(disk, m, &big_files("big", seed, MAX_FILE_HALF)[..FILES / 2]);
        write_files(disk, m, &big_files("new", seed, MAX_FILE_HALF)[..FILES / 2]);
    }
}

/// A differencing child that holds the guest's later writes and deletes: compacting it
/// with `--fs-aware` releases its blocks in free space (they then read from the parent),
/// every file system stays clean and every file identical, and the child ends no larger
/// than a zero-filled child compacted plainly. Flattening the chain with `convert
/// --fs-aware` or `merge-to --fs-aware` is as small as the zero-filled disk converted.
#[test]
fn differencing_child_fs_aware_compact_and_flattening_keep_every_file_at_the_reference_size() {
    let two = [("ext4", Some(64)), ("fat32", None)];
    let (base_raw, mut made) = build("mbr", &two, 0xd1, MAX_FILE_HALF);
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.vhd");
    convert(&base_raw.path, &base, "dynamic", &[]);
    let later = base_raw.copy();
    more_files(&later, &mut made, 0x77);
    let zeroed = later.copy();
    zero_fill_free_space(&zeroed, &made);
    let child = dir.path().join("child.vhd");
    let reference = dir.path().join("reference.vhd");
    for (c, content) in [(&child, &later), (&reference, &zeroed)] {
        ok(&[
            "create",
            p(c),
            "--type",
            "differencing",
            "--parent",
            p(&base),
        ]);
        write_difference(c, &base_raw.path, &content.path);
    }
    ok(&["compact", p(&reference)]);
    let flat_reference = dir.path().join("flat-reference.vhd");
    convert(&zeroed.path, &flat_reference, "dynamic", &[]);
    let before = len(&child);

    let flat = dir.path().join("flat.vhd");
    convert(&child, &flat, "dynamic", &["--fs-aware"]);
    let merged = dir.path().join("merged.vhd");
    ok(&[
        "merge-to",
        p(&child),
        p(&merged),
        "--type",
        "dynamic",
        "--fs-aware",
    ]);
    let run = json(&["compact", p(&child), "--fs-aware", "--verify"]);

    for (what, out) in [("convert", &flat), ("merge-to", &merged)] {
        ok(&["check", p(out)]);
        assert_intact(&read_back(out, dir.path(), &format!("{what}.img")), &made);
        assert_near(
            &format!("ext4+fat32 chain, {what}"),
            len(out),
            len(&flat_reference),
        );
    }

    assert!(run["blocks_unused"].as_u64() > Some(0), "{run}");
    assert!(len(&child) < before);
    assert_eq!(run["partitions"].as_array().map(Vec::len), Some(2), "{run}");
    ok(&["check", p(&child)]);
    assert_intact(&read_back(&child, dir.path(), "back.img"), &made);
    assert_near(
        "ext4+fat32 differencing child",
        len(&child),
        len(&reference),
    );
}

/// An ext4 that needs journal recovery and a FAT32 with its dirty bit set are left alone,
/// with the reason in the text and the JSON report; the disk reads exactly as before.
#[test]
fn unclean_file_systems_are_left_alone_with_the_reason() {
    let (disk, made) = build(
        "gpt",
        &[("ext4", Some(64)), ("fat32", None)],
        0xd7,
        MAX_FILE_HALF,
    );
    let ext = disk.loopdev(&made[0].part);
    sh(&format!(
        "debugfs -w -R 'feature needs_recovery' {}",
        ext.dev
    ));
    drop(ext);
    set_fat_dirty_bit(&disk, made[1].part.start, true);
    let dir = tempfile::tempdir().expect("tempdir");
    let vhd = dir.path().join("d.vhd");
    convert(&disk.path, &vhd, "dynamic", &[]);
    let copy = dir.path().join("copy.vhd");
    std::fs::copy(&vhd, &copy).expect("copy");

    let text = ok(&["compact", p(&vhd), "--fs-aware"]).stdout_str();
    let run = json(&["compact", p(&copy), "--fs-aware"]);

    assert_eq!(
        text.matches("left alone: file system not clean").count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("journal") || text.contains("recovery"),
        "{text}"
    );
    assert!(text.contains("dirty"), "{text}");
    assert_eq!(run["blocks_unused"], 0, "{run}");
    for part in run["partitions"].as_array().expect("partitions") {
        assert_eq!(part["left_alone_reason"], "not_clean", "{part}");
        assert_eq!(part["released_bytes"], 0, "{part}");
        assert_eq!(part["free_bytes"], 0, "{part}");
    }
    let back = read_back(&vhd, dir.path(), "back.img");
    assert!(
        std::fs::read(&back.path).expect("read") == std::fs::read(&disk.path).expect("read"),
        "a disk whose file systems were left alone reads as before"
    );
}

/// The free ranges of every file system of a raw disk, as the scanner finds them.
fn free_ranges(disk: &Disk) -> Vec<std::ops::Range<u64>> {
    let f = File::open(&disk.path).expect("open image");
    vhdkit_volume::scan(&f).expect("scan").free_ranges()
}

/// Starts `compact --fs-aware --progress json` and sends SIGINT at its first progress
/// event of `phase` (`scan`: before anything is written; `move`: blocks already
/// released, some moved); the exit code.
fn interrupt_compact(vhd: &Path, phase: &str) -> Option<i32> {
    let mut child = Command::new(bin())
        .args(["compact", p(vhd), "--fs-aware", "--progress", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut sent = false;
    let wanted = format!("\"phase\":\"{phase}\"");
    for line in lines.map_while(Result::ok) {
        if !sent && line.contains(&wanted) {
            let kill = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(kill.success());
            sent = true;
        }
    }
    child.wait().expect("wait").code()
}

/// Ctrl-C during `compact --fs-aware` (during the scan, or with blocks already released
/// and some moved) leaves a disk that checks clean, whose every byte in use reads as
/// before (file systems clean, files identical); a rerun finishes the compaction.
#[test]
fn fs_aware_compact_interrupted_keeps_a_valid_disk_with_identical_data() {
    let (raw, made) = build("mbr", &[("ext4", None)], 0xc4, MAX_FILE);
    let free = free_ranges(&raw);
    let dir = tempfile::tempdir().expect("tempdir");
    let vhd = dir.path().join("d.vhd");
    // Small blocks: many to scan and move, so the signal lands mid-way.
    convert(&raw.path, &vhd, "dynamic", &["--block-size", "16K"]);
    let whole = dir.path().join("whole.vhd");
    std::fs::copy(&vhd, &whole).expect("copy");
    ok(&["compact", p(&whole), "--fs-aware"]);
    let original = std::fs::read(&raw.path).expect("read");

    let (mut cancelled, mut partial) = (0, 0);
    for (attempt, phase) in ["scan", "move", "move"].into_iter().enumerate() {
        let vhd_i = dir.path().join(format!("d{attempt}.vhd"));
        std::fs::copy(&vhd, &vhd_i).expect("copy");
        let code = interrupt_compact(&vhd_i, phase);

        assert!(code == Some(130) || code == Some(0), "exit {code:?}");
        cancelled += usize::from(code == Some(130));
        partial += usize::from(code == Some(130) && len(&vhd_i) != len(&vhd));
        ok(&["check", p(&vhd_i)]);
        let back = read_back(&vhd_i, dir.path(), &format!("back{attempt}.img"));
        let now = std::fs::read(&back.path).expect("read");
        let mut used_start = 0;
        for r in free.iter().cloned().chain(std::iter::once(SIZE..SIZE)) {
            let used = used_start as usize..r.start as usize;
            assert!(
                now[used.clone()] == original[used],
                "bytes in use changed before {r:?}"
            );
            used_start = r.end;
        }
        assert_intact(&back, &made);
        ok(&["compact", p(&vhd_i), "--fs-aware"]);
        assert_eq!(len(&vhd_i), len(&whole), "a rerun ends where one run does");
    }
    eprintln!(
        "{cancelled} of 3 attempts interrupted before they finished, {partial} with partial work"
    );
    assert!(
        partial > 0,
        "no attempt was interrupted with part of the compaction done"
    );
}
