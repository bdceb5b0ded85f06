//! `vhdkit compact` of VHDX files moves the blocks stored last into the holes the
//! released blocks leave: a dynamic file ends as long as `convert` makes a fresh
//! dynamic VHDX of the same data, a differencing `.avhdx` as long as its header
//! section, log, regions, live payload blocks and sector-bitmap blocks; every reader
//! (vhdkit, qemu-img for files without a parent, system libvhdi, libvhdi-python,
//! dissect.hypervisor) reads the result byte-identically; `--dry-run` predicts it.

// qemu-img and the Python readers: Linux CI only.
#![cfg(target_os = "linux")]

mod common;

#[path = "../crates/format/tests/common/vhdx_build.rs"]
mod vhdx_build;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use vhdkit_format::vhdx::{DiskType, NewVhdx, ParentLocator, MIB};
use vhdx_build::{build, model, Content};

const SIZE: u64 = 40 * MIB;
const BLOCK: u64 = 2 * MIB;

fn len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// `vhdkit compact --json --verify` of `disk`.
fn compact(disk: &Path) -> serde_json::Value {
    let r = vhdkit(["compact", p(disk), "--json", "--verify"]).json();
    assert_eq!(r["verified"], true, "{r}");
    r
}

/// qemu-img: `check` clean, then the whole disk.
fn qemu_read(disk: &Path) -> Vec<u8> {
    let q = run_cmd(Command::new("qemu-img").args(["check", "-q", "-f", "vhdx", p(disk)]));
    assert_eq!(q.code, 0, "qemu-img check: {}", q.stderr);
    let dir = tempdir();
    let out = dir.path().join("q.raw");
    let q = run_cmd(Command::new("qemu-img").args([
        "convert",
        "-f",
        "vhdx",
        "-O",
        "raw",
        p(disk),
        p(&out),
    ]));
    assert_eq!(q.code, 0, "qemu-img convert: {}", q.stderr);
    fs::read(&out).unwrap()
}

/// Every reader of the chain `chain` (top first) reads `want`; vhdkit's `check` finds
/// nothing. qemu-img reads files without a parent only.
fn all_read(chain: &[&Path], want: &[u8]) {
    let top = chain[0];
    assert!(read_all(top) == want, "vhdkit");
    let c = vhdkit(["check", "--json", p(top)]).ok().json();
    assert_eq!(c["problem_count"], 0, "{c}");
    if chain.len() == 1 {
        assert!(qemu_read(top) == want, "qemu-img");
    }
    assert!(pyvhdi_read_all(chain) == want, "libvhdi (system)");
    assert!(libvhdi_python_read_all(chain) == want, "libvhdi-python");
    assert!(dissect_read_all(top) == want, "dissect.hypervisor");
}

/// A dynamic VHDX with data blocks between zero-filled ones: compact releases the zero
/// blocks, moves the data blocks stored last into the holes, and the file ends where a
/// fresh `convert` of the same data ends.
#[test]
fn compact_of_a_dynamic_vhdx_with_holes_is_as_long_as_a_fresh_conversion() {
    have(Tool::QemuImg);
    let dir = tempdir();
    let disk = dir.path().join("disk.vhdx");
    let mut n = NewVhdx::new(DiskType::Dynamic, SIZE);
    n.block_size = BLOCK as u32;
    let blocks = [
        (0, Content::Full(0x41)),
        (1, Content::Full(0)),
        (2, Content::Full(0)),
        (3, Content::Full(0x43)),
        (4, Content::Full(0)),
        (9, Content::Full(0x49)),
        (7, Content::Full(0)),
        (12, Content::Full(0x4c)),
        (15, Content::Full(0x4f)),
        (19, Content::Full(0)),
    ];
    build(&disk, &n, None, &blocks);
    let want = model(SIZE, &n, &[&blocks]);
    let fresh = dir.path().join("fresh.vhdx");
    vhdkit([
        "convert",
        p(&disk),
        p(&fresh),
        "--type",
        "dynamic",
        "--block-size",
        "2M",
    ])
    .ok();
    let before = len(&disk);
    let dry = vhdkit(["compact", p(&disk), "--json", "--dry-run"]).json();
    assert_eq!(len(&disk), before, "a dry run writes nothing");
    let r = compact(&disk);
    assert_eq!(r["blocks_released"], 5, "{r}");
    // 5 data blocks in 10 places (stored in list order): the three stored last fill
    // the three holes below them (the zero block stored last is cut off).
    assert_eq!(r["blocks_moved"], 3, "{r}");
    assert_eq!(len(&disk), len(&fresh), "{r}");
    assert_eq!(r["file_size_after"], len(&disk), "{r}");
    assert_eq!(dry["blocks_moved"], r["blocks_moved"], "{dry}");
    assert_eq!(dry["file_size_after"], r["file_size_after"], "{dry}");
    assert_eq!(info(&disk)["vhdx"]["log"], "clean");
    all_read(&[&disk], &want);
    // Again: nothing left to do.
    let again = compact(&disk);
    assert_eq!(again["blocks_moved"], 0, "{again}");
    assert_eq!(len(&disk), len(&fresh));
    // Written again where blocks were released: fresh blocks, the moved ones intact.
    let data = pattern(3, 3 * MIB as usize);
    write_at(&disk, BLOCK + 512, &data, &[]);
    let mut want = want;
    want[(BLOCK + 512) as usize..(BLOCK + 512) as usize + data.len()].copy_from_slice(&data);
    all_read(&[&disk], &want);
}

/// A differencing `.avhdx` (partially present blocks, a sector-bitmap block): the
/// empty and duplicate blocks released, the blocks stored last moved below, the file as
/// long as its metadata, its live payload blocks and its sector-bitmap block; the
/// parent untouched and the chain read alike by every reader.
#[test]
fn compact_of_a_checkpoint_moves_its_blocks_and_sector_bitmap_into_the_holes() {
    let dir = tempdir();
    let mut n = NewVhdx::new(DiskType::Dynamic, SIZE);
    n.block_size = BLOCK as u32;
    let base_blocks = [(2, Content::Full(0x42)), (3, Content::Full(0x43))];
    let base = dir.path().join("disk.vhdx");
    let (_, id) = build(&base, &n, None, &base_blocks);
    n.disk_type = DiskType::Differencing;
    let child_blocks = [
        (0, Content::Partial(0x51, 0, 0)),
        (2, Content::Full(0x42)),
        (5, Content::Partial(0x55, 8, 300)),
        (3, Content::Full(0x53)),
        (8, Content::Partial(0x58, 0, 0)),
        (11, Content::Full(0x5b)),
        (14, Content::Partial(0x5e, 1000, 24)),
    ];
    let child = dir.path().join("disk_A.avhdx");
    let loc = ParentLocator::new(id, Some(r".\disk.vhdx"), None, None);
    let (layout, _) = build(&child, &n, Some(loc), &child_blocks);
    let want = model(SIZE, &n, &[&child_blocks, &base_blocks]);
    let base_before = fs::read(&base).unwrap();
    let before = len(&child);
    let dry = vhdkit(["compact", p(&child), "--json", "--dry-run"]).json();
    let r = compact(&child);
    assert_eq!(r["blocks_released"], 3, "{r}");
    assert_eq!(r["blocks_deduplicated"], 1, "{r}");
    assert!(r["blocks_moved"].as_u64() > Some(0), "{r}");
    // 4 live payload blocks and the sector-bitmap block (1 MiB) after the metadata.
    let expected = layout.first_payload + 4 * BLOCK + MIB;
    assert_eq!(len(&child), expected, "{r} (was {before})");
    assert_eq!(dry["blocks_moved"], r["blocks_moved"], "{dry}");
    assert_eq!(dry["file_size_after"], expected, "{dry}");
    assert_eq!(
        fs::read(&base).unwrap(),
        base_before,
        "the parent is untouched"
    );
    all_read(&[&child, &base], &want);
    // Written again into a partially present block that moved: its bitmap moved too.
    write_at(&child, 5 * BLOCK, &[9u8; 4096], &[]);
    let mut want = want;
    want[(5 * BLOCK) as usize..(5 * BLOCK) as usize + 4096].fill(9);
    all_read(&[&child, &base], &want);
}
