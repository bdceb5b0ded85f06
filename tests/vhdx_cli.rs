//! The CLI on VHDX files (`.vhdx`, `.avhdx`): `info` names the container and its facts,
//! `check` (and `--repair` of a pending log), `read`, `map`, `compare`, `measure`,
//! `convert` and `merge-to` from a checkpoint chain, the Azure one-liner, and what is
//! refused clearly (what a checkpoint cannot take) and on damaged files.

// qemu-img and libvhdi read the results: Linux CI only.
#![cfg(target_os = "linux")]

mod common;

#[path = "../crates/format/tests/common/vhdx_build.rs"]
mod vhdx_build;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use vhdkit_format::vhdx::{DiskType, NewVhdx, ParentLocator, MIB};
use vhdx_build::{build, file_with_pending_log, model, Content};

/// A checkpoint chain as Hyper-V makes one: `disk.vhdx` and `disk_A1B2.avhdx` on it
/// (2 MiB blocks, 20 MiB), and the bytes it reads as.
fn checkpoint_chain(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let size = 20 * MIB;
    let mut n = NewVhdx::new(DiskType::Dynamic, size);
    n.block_size = 2 * MIB as u32;
    let base_blocks: &[(u64, Content)] = &[
        (0, Content::Full(0x41)),
        (2, Content::Full(0x42)),
        (9, Content::Full(0x43)),
    ];
    let base = dir.join("disk.vhdx");
    let (_, id) = build(&base, &n, None, base_blocks);
    n.disk_type = DiskType::Differencing;
    let child_blocks: &[(u64, Content)] = &[
        (0, Content::Partial(0x51, 16, 100)),
        (3, Content::Full(0x52)),
        (9, Content::Partial(0x53, 4000, 96)),
    ];
    let child = dir.join("disk_A1B2.avhdx");
    let loc = ParentLocator::new(
        id,
        Some(r".\disk.vhdx"),
        Some(r"\\?\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\vms\disk.vhdx"),
        Some(r"C:\vms\disk.vhdx"),
    );
    build(&child, &n, Some(loc), child_blocks);
    (base, child, model(size, &n, &[child_blocks, base_blocks]))
}

#[test]
fn azure_one_liner_turns_a_checkpoint_chain_into_a_fixed_aligned_vhd() {
    let dir = tempdir();
    let (base, child, want) = checkpoint_chain(dir.path());
    assert!(
        pyvhdi_read_all(&[&child, &base]) == want,
        "libvhdi reads the chain as modelled"
    );
    let azure = dir.path().join("azure.vhd");
    vhdkit([
        "convert",
        p(&child),
        p(&azure),
        "--type",
        "fixed",
        "--align",
        "1M",
    ])
    .ok();
    let r = vhdkit(["check", p(&azure), "--for", "azure"]);
    assert_eq!(r.code, EXIT_OK, "{}{}", r.stdout_str(), r.stderr);
    let got = qemu_read_all(&azure);
    assert!(got == want, "qemu-img reads what the chain held");
    // merge-to flattens the same chain to raw.
    let raw = dir.path().join("flat.raw");
    vhdkit(["merge-to", p(&child), p(&raw), "--type", "raw"]).ok();
    assert!(fs::read(&raw).unwrap() == want);
}

#[test]
fn info_names_the_vhdx_container_its_sectors_log_and_parent_locator() {
    let dir = tempdir();
    let (base, child, _) = checkpoint_chain(dir.path());
    let v = info(&child);
    assert_schema("info", &v);
    assert_eq!(v["container"], "vhdx");
    assert_eq!(v["disk_type"], "differencing");
    assert_eq!(v["block_size"], 2 * MIB);
    assert_eq!(v["vhdx"]["logical_sector_size"], 512);
    assert_eq!(v["vhdx"]["log"], "clean");
    assert_eq!(v["parent"]["path"], p(&base));
    let keys: Vec<&str> = v["vhdx"]["parent_locator"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"parent_linkage") && keys.contains(&"volume_path"),
        "{keys:?}"
    );
    assert_eq!(v["chain"].as_array().unwrap().len(), 2);
    assert_eq!(info(&base)["container"], "vhdx");
    let text = vhdkit(["info", p(&child)]).ok().stdout_str();
    for want in [
        "container:         vhdx",
        "sectors:           512 bytes logical",
        "log:               clean",
        "parent locator:    relative_path = .\\disk.vhdx",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn check_reports_a_pending_log_and_repair_replays_it() {
    let dir = tempdir();
    let path = dir.path().join("log.vhdx");
    let before = file_with_pending_log(&path);
    let r = vhdkit(["check", p(&path)]);
    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stdout_str());
    assert!(r.stdout_str().contains("VHDX log"), "{}", r.stdout_str());
    assert_eq!(fs::read(&path).unwrap(), before, "check never writes");
    let v = info(&path);
    assert_schema("info", &v);
    assert_eq!(v["vhdx"]["log"], "replayed-in-memory");
    assert_schema("check", &vhdkit(["check", "--json", p(&path)]).json());
    let r = vhdkit(["check", "--repair", p(&path)]).ok();
    assert!(
        r.stdout_str().contains("replayed the VHDX log"),
        "{}",
        r.stdout_str()
    );
    vhdkit(["check", p(&path)]).ok();
    assert_eq!(info(&path)["vhdx"]["log"], "clean");
    let q = run_cmd(Command::new("qemu-img").args(["check", "-q", "-f", "vhdx", p(&path)]));
    assert_eq!(q.code, 0, "{}", q.stderr);
}

#[test]
fn read_map_compare_and_measure_work_on_qemu_vhdx_files() {
    let dir = tempdir();
    let raw = dir.path().join("p.raw");
    let data = pattern(7, 12 * MIB as usize);
    let mut data = data;
    data[(5 * MIB) as usize..(9 * MIB) as usize].fill(0);
    fs::write(&raw, &data).unwrap();
    let x = dir.path().join("d.vhdx");
    let q = run_cmd(Command::new("qemu-img").args([
        "convert",
        "-f",
        "raw",
        "-O",
        "vhdx",
        "-o",
        "subformat=dynamic,block_size=1M,block_state_zero=off",
        p(&raw),
        p(&x),
    ]));
    assert_eq!(q.code, 0, "{}", q.stderr);
    assert!(read_all(&x) == data);
    vhdkit(["compare", p(&x), p(&raw)]).ok();
    let map = vhdkit(["map", p(&x), "--json"]).ok().json();
    let extents = map["rows"].as_array().expect("rows");
    assert!(extents.iter().any(|e| e["kind"] == "zero"), "{map}");
    let m = vhdkit(["measure", p(&x), "--type", "dynamic", "--json"])
        .ok()
        .json();
    let out = dir.path().join("d.vhd");
    vhdkit(["convert", p(&x), p(&out), "--type", "dynamic"]).ok();
    assert_eq!(
        m["required_bytes"].as_u64().unwrap(),
        fs::metadata(&out).unwrap().len()
    );
    assert!(qemu_read_all(&out) == data);
}

#[test]
fn a_resize_a_checkpoint_cannot_take_is_refused_clearly_and_leaves_it_untouched() {
    let dir = tempdir();
    let (base, child, _) = checkpoint_chain(dir.path());
    let before = fs::read(&child).unwrap();
    let base_before = fs::read(&base).unwrap();
    let r = vhdkit(["resize", p(&child), "--size", "40M"]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("its parent's"), "{line}");
    assert_eq!(fs::read(&child).unwrap(), before, "resize changed the file");
    assert_eq!(
        fs::read(&base).unwrap(),
        base_before,
        "resize changed the parent"
    );
}

#[test]
fn write_into_a_checkpoint_reads_back_through_the_chain_in_vhdkit_and_libvhdi() {
    let dir = tempdir();
    let (base, child, mut want) = checkpoint_chain(dir.path());
    let base_before = fs::read(&base).unwrap();
    let input = dir.path().join("in.bin");
    let data = pattern(3, 3 * MIB as usize + 1234);
    fs::write(&input, &data).unwrap();
    let at = 3 * MIB + 777;
    vhdkit([
        "write",
        p(&child),
        "--offset",
        &at.to_string(),
        "--input",
        p(&input),
    ])
    .ok();
    want[at as usize..at as usize + data.len()].copy_from_slice(&data);
    assert!(read_all(&child) == want);
    assert!(pyvhdi_read_all(&[&child, &base]) == want);
    assert_eq!(
        fs::read(&base).unwrap(),
        base_before,
        "the parent is untouched"
    );
    vhdkit(["check", p(&child)]).ok();
    assert_eq!(info(&child)["vhdx"]["log"], "clean");
}

#[test]
fn damaged_vhdx_is_one_line_naming_the_structure() {
    let dir = tempdir();
    let (_, child, _) = checkpoint_chain(dir.path());
    let mut b = fs::read(&child).unwrap();
    b[64 * 1024 + 200] ^= 1;
    b[128 * 1024 + 200] ^= 1;
    fs::write(&child, &b).unwrap();
    let line = assert_failed_one_line(&vhdkit(["info", p(&child)]));
    assert!(line.contains("VHDX header"), "{line}");
    let r = vhdkit([
        "read",
        p(&child),
        "--json",
        "--output",
        p(&dir.path().join("o")),
    ]);
    assert_failed_json(&r, EXIT_FAILED);
}

#[test]
fn check_of_a_checkpoint_chain_is_clean_and_a_parent_of_another_size_is_an_error() {
    let dir = tempdir();
    let (_, child, _) = checkpoint_chain(dir.path());
    let r = vhdkit(["check", p(&child)]).ok();
    assert!(r.stdout_str().contains("no problems"), "{}", r.stdout_str());
    let mut n = NewVhdx::new(DiskType::Dynamic, 24 * MIB);
    n.block_size = MIB as u32;
    let big = dir.path().join("big.vhdx");
    let (_, id) = build(&big, &n, None, &[]);
    n.virtual_size = 20 * MIB;
    n.disk_type = DiskType::Differencing;
    let small = dir.path().join("small.avhdx");
    build(
        &small,
        &n,
        Some(ParentLocator::new(id, Some("big.vhdx"), None, None)),
        &[],
    );
    let r = vhdkit(["check", "--json", p(&small)]);
    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stderr);
    let text = r.stdout_str();
    assert!(
        text.contains("virtual disk size") && text.contains("one size"),
        "{text}"
    );
}
