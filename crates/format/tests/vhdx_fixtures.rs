//! `fixtures/vhdx/`: each file carries one of Hyper-V's choices where qemu-img's differ
//! (docs/vhdx.md, "Where qemu-img's files differ from Hyper-V's"), read by vhdkit's
//! format layer, qemu-img (`-f vhdx`) and libvhdi (vhdiinfo, pyvhdi), each asserting the
//! difference and the guest content the fixture script wrote.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use vhdkit_format::vhdx::{ParsedVhdx, PayloadState, MIB};

use common::{have, pattern, pyvhdi_read_all, run_cmd, vhdiinfo_field, vhdiinfo_size, Tool};

fn fixture(name: &str) -> PathBuf {
    vhdkit_testkit::workspace_root()
        .join("fixtures/vhdx")
        .join(name)
}

fn parse(path: &Path) -> ParsedVhdx {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParsedVhdx::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The guest content `fixtures/make-vhdx-fixtures.sh` wrote: zeros but for
/// `pattern(seed, len)` at each offset.
fn content(size: u64, writes: &[(u64, u64, usize)]) -> Vec<u8> {
    let mut b = vec![0u8; size as usize];
    for &(seed, at, len) in writes {
        b[at as usize..at as usize + len].copy_from_slice(&pattern(seed, len));
    }
    b
}

fn qemu(args: &[&str], path: &Path) -> vhdkit_testkit::Run {
    have(Tool::QemuImg);
    run_cmd(Command::new("qemu-img").args(args).arg(path))
}

/// qemu-img's check is clean and its raw conversion is `want`.
fn assert_qemu_reads(path: &Path, want: &[u8]) {
    let r = qemu(&["check", "-f", "vhdx"], path);
    assert_eq!(r.code, 0, "{}: {}", path.display(), r.stdout_str());
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("out.raw");
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["convert", "-f", "vhdx", "-O", "raw"])
            .arg(path)
            .arg(&raw),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(std::fs::read(&raw).unwrap() == want, "{}", path.display());
}

fn assert_libvhdi_reads(path: &Path, want: &[u8]) {
    assert_eq!(vhdiinfo_size(path), want.len() as u64);
    assert!(
        pyvhdi_read_all(&[path]) == want,
        "{}: pyvhdi",
        path.display()
    );
}

#[test]
fn hyperv_block_size_and_512e_sectors() {
    let path = fixture("hyperv-dynamic-32m.vhdx");
    let p = parse(&path);
    let md = &p.metadata;
    assert_eq!(md.file_parameters.block_size, 32 << 20, "Hyper-V's 32 MiB");
    assert_eq!(
        (md.logical_sector_size, md.physical_sector_size),
        (512, 4096)
    );
    assert!(p.regions.bat.required && p.regions.metadata.required);
    // Block 0 holds the data, block 1 was never written: not present (qemu: "zero").
    assert_eq!(
        p.bat.payload(0).unwrap().state,
        Some(PayloadState::FullyPresent)
    );
    assert_eq!(
        p.bat.payload(1).unwrap().state,
        Some(PayloadState::NotPresent)
    );
    let want = content(40 * MIB, &[(1, 0, 65536), (2, 1234567, 10001)]);
    assert_qemu_reads(&path, &want);
    let info = qemu(&["info", "-f", "vhdx", "--output=json"], &path).json();
    assert_eq!(info["cluster-size"], 32 << 20);
    assert_libvhdi_reads(&path, &want);
}

#[test]
fn hyperv_4k_logical_sectors() {
    let path = fixture("hyperv-4k-sectors.vhdx");
    let md = parse(&path).metadata;
    assert_eq!(
        (md.logical_sector_size, md.physical_sector_size),
        (4096, 4096)
    );
    let want = content(8 * MIB, &[(3, 0, 65536), (4, 8 * MIB - 4096, 4096)]);
    // qemu-img 10.0 refuses 4096-byte logical sectors; libvhdi reads them.
    let r = qemu(&["info", "-f", "vhdx"], &path);
    assert_ne!(
        r.code, 0,
        "qemu-img now reads 4 KiB sectors: read the data too"
    );
    assert!(r.stderr.contains("not supported"), "{}", r.stderr);
    assert_eq!(
        vhdiinfo_field(&path, "Bytes per sector").as_deref(),
        Some("4096 bytes")
    );
    assert_libvhdi_reads(&path, &want);
}

#[test]
fn hyperv_fixed_blocks_are_present_in_order() {
    let path = fixture("hyperv-fixed.vhdx");
    let p = parse(&path);
    assert!(p.metadata.file_parameters.leave_blocks_allocated);
    let first = p.areas.metadata_end();
    for b in 0..p.bat.geometry.data_blocks {
        let e = p.bat.payload(b).unwrap();
        assert_eq!(e.state, Some(PayloadState::FullyPresent), "block {b}");
        assert_eq!(e.file_offset, Some(first + b * MIB), "block {b} in order");
    }
    let want = content(3 * MIB, &[(5, MIB, 65536)]);
    assert_qemu_reads(&path, &want);
    assert_libvhdi_reads(&path, &want);
}

#[test]
fn hyperv_log_guid_on_a_clean_file_replays_to_the_same() {
    let path = fixture("hyperv-log-applied.vhdx");
    let p = parse(&path);
    assert!(
        !p.header.header.log_guid.is_nil(),
        "the header names its log"
    );
    let plan = p.replay.as_ref().expect("an active entry");
    assert_eq!(plan.sequence.entries.len(), 1);
    // Replaying it changes no byte: the entry was applied before the file was closed.
    let bytes = std::fs::read(&path).unwrap();
    let replayed = vhdkit_format::vhdx::parse::apply(&bytes, plan).unwrap();
    assert!(
        replayed == bytes,
        "an applied entry replays to the same bytes"
    );
    let want = content(8 * MIB, &[(6, 2 * MIB, 65536)]);
    // qemu-img refuses a read-only open of a file that names a log; replayed on a copy
    // (`check -r all`), it reads the content. libvhdi ignores the log.
    let r = qemu(&["info", "-f", "vhdx"], &path);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("log that needs to be replayed"),
        "{}",
        r.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.vhdx");
    std::fs::copy(&path, &copy).unwrap();
    let r = qemu(&["check", "-r", "all", "-f", "vhdx"], &copy);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        parse(&copy).header.header.log_guid.is_nil(),
        "qemu resets it"
    );
    assert_qemu_reads(&copy, &want);
    assert_libvhdi_reads(&path, &want);
}
