//! `vhdkit resize` and the disk's partition table: `--to-minimum` shrinks to the end of
//! the last partition of a real MBR or GPT (made by sfdisk), every partition's bytes
//! surviving for qemu-img and libvhdi, and is refused, with the reason, where no table
//! is understood; the note about a GPT's backup copy is printed only when true; a
//! shrink that cut only zeros says so.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A raw image of `size` bytes partitioned by sfdisk with `script`, every partition
/// filled with its own pattern (its first and last sectors included); the image's bytes.
fn partitioned_raw(path: &Path, size: u64, script: &str) -> Vec<u8> {
    std::fs::write(path, vec![0u8; size as usize]).expect("write raw");
    sfdisk(path, script);
    let mut bytes = std::fs::read(path).expect("read raw");
    let parts = sfdisk_partitions(path);
    for (i, &(start, len)) in parts.iter().enumerate() {
        // An extended partition contains the logical ones, and holds their EBRs.
        let container = parts
            .iter()
            .any(|&(s, l)| (s, l) != (start, len) && s >= start && s + l <= start + len);
        if container {
            continue;
        }
        let (start, len) = (start as usize, len as usize);
        let fill = pattern(40 + i as u64, len);
        bytes[start..start + len].copy_from_slice(&fill);
    }
    std::fs::write(path, &bytes).expect("fill raw");
    bytes
}

/// `raw` converted into a VHD of `kind` next to it.
fn to_vhd(raw: &Path, kind: &str) -> PathBuf {
    let vhd = raw.with_extension(format!("{kind}.vhd"));
    vhdkit(["convert", p(raw), p(&vhd), "--type", kind]).ok();
    vhd
}

fn resize_json(path: &Path, args: &[&str]) -> Value {
    let mut a = vec!["resize", p(path)];
    a.extend_from_slice(args);
    a.extend(["--json", "--progress", "none"]);
    vhdkit(a).ok().json()
}

/// vhdkit, qemu-img and libvhdi all read `want` from `vhd`, and `check` is clean.
fn everyone_reads(vhd: &Path, want: &[u8]) {
    assert_eq!(vhdkit(["check", p(vhd)]).code, EXIT_OK, "check clean");
    assert_bytes_eq("vhdkit read", &read_all(vhd), want);
    assert!(have(Tool::QemuImg));
    assert_eq!(qemu_size(vhd), want.len() as u64, "qemu-img's size");
    assert_bytes_eq("qemu-img convert", &qemu_read_all(vhd), want);
    assert!(have(Tool::Pyvhdi));
    assert_eq!(pyvhdi_size(vhd), want.len() as u64, "libvhdi's size");
    assert_bytes_eq("pyvhdi read", &pyvhdi_read_all(&[vhd]), want);
}

#[test]
fn to_minimum_of_an_mbr_with_logical_partitions_ends_at_the_last_one() {
    let dir = tempdir();
    let raw = dir.path().join("mbr.raw");
    let bytes = partitioned_raw(
        &raw,
        64 * MIB,
        "label: dos\n1MiB,12MiB,83\n,8MiB,83\n,4MiB,83\n,14MiB,5\n,5MiB,83\n,6MiB,7\n",
    );
    // The extended container (25 MiB .. 39 MiB) ends after its last logical partition
    // (32 MiB .. 38 MiB).
    let end = 39 * MIB;
    for kind in ["dynamic", "fixed"] {
        let vhd = to_vhd(&raw, kind);

        let r = resize_json(&vhd, &["--to-minimum"]);

        assert_eq!(r["size_before"], 64 * MIB, "{r}");
        assert_eq!(r["size_after"], end, "{kind}: {r}");
        assert_eq!(
            r["nonzero_bytes_cut"], 0,
            "nothing of a partition is cut: {r}"
        );
        everyone_reads(&vhd, &bytes[..end as usize]);
    }
}

#[test]
fn to_minimum_of_a_gpt_keeps_room_for_the_backup_copy_which_sgdisk_then_moves() {
    let dir = tempdir();
    let raw = dir.path().join("gpt.raw");
    let bytes = partitioned_raw(&raw, 64 * MIB, "label: gpt\n1MiB,20MiB,L\n,9MiB,L\n");
    let vhd = to_vhd(&raw, "dynamic");

    let r = vhdkit(["resize", p(&vhd), "--to-minimum"]).ok();

    // The last partition ends at 30 MiB; the backup copy takes what the primary keeps
    // before the first usable sector (2048), less the protective MBR: 2047 sectors.
    let end = 30 * MIB + 2047 * SECTOR;
    assert_eq!(vhdkit_size(&vhd), end);
    assert!(
        r.stderr.contains("backup GPT header was at the old end"),
        "{}",
        r.stderr
    );
    everyone_reads(&vhd, &bytes[..end as usize]);
    // What the note asks for works: `sgdisk -e` moves the backup to the new end, and
    // the table then verifies with both the partitions where they were.
    let out = dir.path().join("after.raw");
    qemu_convert_raw(&vhd, &out);
    need("sgdisk", &["--version"]);
    for args in [["-e"], ["-v"]] {
        let r = std::process::Command::new("sgdisk")
            .args(args)
            .arg(&out)
            .output()
            .expect("sgdisk");
        let text = String::from_utf8_lossy(&r.stdout).into_owned();
        assert!(r.status.success(), "sgdisk {args:?}: {text}");
        if args == ["-v"] {
            assert!(text.contains("No problems found"), "{text}");
        }
    }
    assert_eq!(
        sfdisk_partitions(&out),
        vec![(MIB, 20 * MIB), (21 * MIB, 9 * MIB)]
    );
}

#[test]
fn to_minimum_rounds_up_to_align() {
    let dir = tempdir();
    let raw = dir.path().join("mbr.raw");
    let bytes = partitioned_raw(&raw, 64 * MIB, "label: dos\n1MiB,21MiB,83\n");
    let vhd = to_vhd(&raw, "dynamic");

    let r = resize_json(&vhd, &["--to-minimum", "--align", "8M"]);

    assert_eq!(r["size_after"], 24 * MIB, "{r}");
    everyone_reads(&vhd, &bytes[..(24 * MIB) as usize]);
}

#[test]
fn to_minimum_without_a_partition_table_is_refused_with_the_reason() {
    let dir = tempdir();
    let blank = dir.path().join("blank.vhd");
    create(&blank, &["--type", "dynamic", "--size", "16M"]);
    write_at(&blank, 5 * MIB, &pattern(3, 4096), &[]);
    let fs_raw = dir.path().join("fs.raw");
    std::fs::write(&fs_raw, vec![0u8; (16 * MIB) as usize]).expect("write");
    need("mkfs.ext4", &["-V"]);
    let made = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&fs_raw)
        .status()
        .expect("mkfs.ext4");
    assert!(made.success());
    let whole = to_vhd(&fs_raw, "dynamic");
    for (vhd, why) in [
        (&blank, "no partition table was understood"),
        (&whole, "a file system starts at byte 0"),
    ] {
        let before = std::fs::read(vhd).expect("read");

        let r = vhdkit(["resize", p(vhd), "--to-minimum"]);

        let line = assert_failed_one_line(&r);
        assert!(
            line.contains("--to-minimum") && line.contains(why),
            "{line}"
        );
        assert_eq!(std::fs::read(vhd).expect("read"), before, "nothing written");
    }
}

#[test]
fn to_minimum_and_size_together_are_a_usage_mistake() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    create(&d, &["--type", "dynamic", "--size", "16M"]);

    let r = vhdkit(["resize", p(&d), "--to-minimum", "--size", "8M"]);

    assert_eq!(r.code, EXIT_USAGE, "{}", r.stderr);
    assert!(r.stderr.contains("cannot be used with"), "{}", r.stderr);
}

#[test]
fn gpt_note_is_printed_only_when_the_backup_header_was_at_the_old_end_or_is_cut() {
    let dir = tempdir();
    let raw = dir.path().join("gpt.raw");
    partitioned_raw(&raw, 64 * MIB, "label: gpt\n1MiB,30MiB,L\n");
    let vhd = to_vhd(&raw, "dynamic");
    let resize = |args: &[&str]| {
        let mut a = vec!["resize", p(&vhd)];
        a.extend_from_slice(args);
        vhdkit(a).ok().stderr
    };

    // A grow: the backup header was at the old end, no longer the end.
    let grown = resize(&["--size", "128M"]);
    // A shrink that leaves the backup (still at 64 MiB) where it was: nothing to say.
    let untouched = resize(&["--size", "96M", "--allow-shrink"]);
    // A shrink that cuts it.
    let cut = resize(&["--size", "48M", "--allow-shrink"]);

    assert!(
        grown.contains("backup GPT header was at the old end"),
        "{grown}"
    );
    assert!(!untouched.contains("GPT"), "{untouched}");
    assert!(
        cut.contains("backup GPT header (byte 67108352) lay past the new end and was cut"),
        "{cut}"
    );
}

#[test]
fn shrink_that_cuts_only_zeros_says_so_without_a_zero_byte_count() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    create(&d, &["--type", "dynamic", "--size", "16M"]);
    write_at(&d, 0, &pattern(1, 4096), &[]);

    let r = vhdkit(["resize", p(&d), "--size", "8M", "--allow-shrink"]).ok();

    let out = r.stdout_str();
    assert!(!out.contains("0 B (0 bytes) non-zero cut"), "{out}");
    assert!(out.contains("only zeros cut"), "{out}");
}
