//! In-place operations on VHDX checkpoint chains (`.vhdx` + `.avhdx`): `merge`, `merge
//! --depth` / `--into` and `set-parent`, judged by vhdkit, qemu-img (`-f vhdx`, the
//! base alone) and libvhdi (pyvhdi, chains through `set_parent`) against a model of
//! the bytes; the refusals kept (other children of the target).

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
use vhdx_build::{build, model, Content};

const SIZE: u64 = 20 * MIB;

/// Blocks of each level of the chains below, base first.
fn level_blocks(level: usize) -> Vec<(u64, Content)> {
    match level {
        0 => vec![
            (0, Content::Full(0x41)),
            (2, Content::Full(0x42)),
            (5, Content::Full(0x44)),
            (9, Content::Full(0x43)),
        ],
        1 => vec![
            (0, Content::Partial(0x51, 16, 100)),
            (3, Content::Full(0x52)),
            (5, Content::Zero),
            (9, Content::Partial(0x53, 4000, 96)),
        ],
        _ => vec![
            (0, Content::Partial(0x61, 80, 300)),
            (2, Content::Partial(0x62, 0, 8)),
            (7, Content::Full(0x63)),
        ],
    }
}

/// A checkpoint chain as Hyper-V makes one, `names[0]` the base (2 MiB blocks, 20 MiB),
/// each level on the one before by its relative path; the files, top last, and the
/// bytes the top reads as.
fn chain(dir: &Path, names: &[&str]) -> (Vec<PathBuf>, Vec<u8>) {
    let mut n = NewVhdx::new(DiskType::Dynamic, SIZE);
    n.block_size = 2 * MIB as u32;
    let mut files = Vec::new();
    let mut id = None;
    for (level, name) in names.iter().enumerate() {
        let path = dir.join(name);
        let loc = id.map(|id| {
            let rel = format!(".\\{}", names[level - 1]);
            ParentLocator::new(id, Some(&rel), None, Some(r"C:\vms\elsewhere.vhdx"))
        });
        if level > 0 {
            n.disk_type = DiskType::Differencing;
        }
        let (_, guid) = build(&path, &n, loc, &level_blocks(level));
        id = Some(guid);
        files.push(path);
    }
    let blocks: Vec<Vec<(u64, Content)>> = (0..names.len()).rev().map(level_blocks).collect();
    let refs: Vec<&[(u64, Content)]> = blocks.iter().map(Vec::as_slice).collect();
    (files, model(SIZE, &n, &refs))
}

/// The whole disk as `qemu-img convert -f vhdx -O raw` reads it, after a clean
/// `qemu-img check -f vhdx` (a file without a parent).
fn qemu_vhdx(disk: &Path) -> Vec<u8> {
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

/// The parent locator pair `key` of VHDX file `disk`, as `info --json` shows it.
fn locator(disk: &Path, key: &str) -> Option<String> {
    let i = info(disk);
    i["vhdx"]["parent_locator"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["key"] == key))
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

/// The data write GUID of VHDX file `disk`, as `info --json` shows it.
fn data_write_guid(disk: &Path) -> String {
    info(disk)["vhdx"]["data_write_guid"]
        .as_str()
        .expect("info shows the data write GUID")
        .to_owned()
}

/// Whether a `{guid}` locator value names `guid` (any case, braces or not).
fn names(value: &str, guid: &str) -> bool {
    value
        .trim_matches(['{', '}'])
        .eq_ignore_ascii_case(guid.trim_matches(['{', '}']))
}

#[test]
fn merge_of_a_checkpoint_into_its_vhdx_parent_reads_the_same_everywhere() {
    let dir = tempdir();
    let (files, want) = chain(dir.path(), &["disk.vhdx", "disk_A1B2.avhdx"]);
    let (base, child) = (&files[0], &files[1]);
    let guid_before = data_write_guid(base);
    vhdkit(["merge", p(child)]).ok();
    // The base alone now reads what the chain did, in every reader.
    assert!(read_all(base) == want, "vhdkit reads the merged base");
    assert!(qemu_vhdx(base) == want, "qemu-img reads the merged base");
    assert!(
        pyvhdi_read_all(&[base]) == want,
        "libvhdi reads the merged base"
    );
    // The child still opens on it: it names the base's new data write GUID, alone.
    let guid = data_write_guid(base);
    assert_ne!(guid, guid_before, "the base's data write GUID changed");
    let linkage = locator(child, "parent_linkage").expect("a linkage");
    assert!(names(&linkage, &guid), "{linkage} vs {guid}");
    assert_eq!(locator(child, "parent_linkage2"), None);
    assert_eq!(
        locator(child, "relative_path").as_deref(),
        Some(r".\disk.vhdx")
    );
    assert!(read_all(child) == want, "the child reads as before");
    assert!(pyvhdi_read_all(&[child, base]) == want);
    vhdkit(["check", p(child)]).ok();
    assert_eq!(info(child)["vhdx"]["log"], "clean");
    assert_eq!(info(base)["vhdx"]["log"], "clean");
}

#[test]
fn merge_depth_two_along_a_checkpoint_chain_relinks_the_child_and_removes_the_middle() {
    let dir = tempdir();
    let (files, want) = chain(dir.path(), &["disk.vhdx", "disk_A.avhdx", "disk_B.avhdx"]);
    let (base, middle, child) = (&files[0], &files[1], &files[2]);
    vhdkit(["merge", p(child), "--depth", "2"]).ok();
    assert!(!middle.exists(), "the intermediate is removed");
    assert!(read_all(child) == want, "the child reads as before");
    assert!(pyvhdi_read_all(&[child, base]) == want);
    let linkage = locator(child, "parent_linkage").expect("a linkage");
    assert!(names(&linkage, &data_write_guid(base)));
    assert_eq!(
        locator(child, "relative_path").as_deref(),
        Some(r".\disk.vhdx")
    );
    // The base holds every level's sectors: alone it reads as the chain did.
    assert!(qemu_vhdx(base) == want);
    vhdkit(["check", p(child)]).ok();
}

#[test]
fn merge_into_by_path_with_delete_child_leaves_the_base_reading_the_chain() {
    let dir = tempdir();
    let (files, want) = chain(dir.path(), &["disk.vhdx", "disk_A.avhdx", "disk_B.avhdx"]);
    let (base, child) = (&files[0], &files[2]);
    vhdkit(["merge", p(child), "--into", p(base), "--delete-child"]).ok();
    assert!(!child.exists() && !files[1].exists());
    assert!(read_all(base) == want);
    assert!(qemu_vhdx(base) == want);
    assert!(pyvhdi_read_all(&[base]) == want);
}

#[test]
fn merge_into_a_vhdx_parent_with_another_checkpoint_is_refused_unless_forced() {
    let dir = tempdir();
    let (files, want) = chain(dir.path(), &["disk.vhdx", "disk_A.avhdx"]);
    let (base, child) = (&files[0], &files[1]);
    // A second checkpoint on the same base, beside it.
    let other = dir.path().join("disk_C.avhdx");
    fs::copy(child, &other).unwrap();
    let base_before = fs::read(base).unwrap();
    let line = assert_failed_one_line(&vhdkit(["merge", p(child)]));
    assert!(line.contains("disk_C.avhdx"), "{line}");
    assert_eq!(
        fs::read(base).unwrap(),
        base_before,
        "refused before any write"
    );
    vhdkit(["merge", p(child), "--force"]).ok();
    assert!(read_all(base) == want);
}

#[test]
fn set_parent_of_a_checkpoint_moved_with_its_parent_relinks_it_through_the_log() {
    let dir = tempdir();
    let (files, want) = chain(dir.path(), &["disk.vhdx", "disk_A1B2.avhdx"]);
    let (base, child) = (&files[0], &files[1]);
    // libvhdi reads a differencing file's zero-state block from the parent
    // (docs/vhdx.md): it is judged against what it read before the move.
    let libvhdi_before = pyvhdi_read_all(&[child, base]);
    let moved = dir.path().join("moved");
    fs::create_dir(&moved).unwrap();
    let new_base = moved.join("renamed.vhdx");
    fs::rename(base, &new_base).unwrap();
    assert_failed_one_line(&vhdkit(["read", p(child)]));
    vhdkit(["set-parent", p(child), p(&new_base)]).ok();
    assert!(read_all(child) == want, "the child reads its chain again");
    assert!(pyvhdi_read_all(&[child, &new_base]) == libvhdi_before);
    assert_eq!(
        locator(child, "relative_path").as_deref(),
        Some(r".\moved\renamed.vhdx")
    );
    let linkage = locator(child, "parent_linkage").unwrap();
    assert!(names(&linkage, &data_write_guid(&new_base)));
    assert_eq!(info(child)["vhdx"]["log"], "clean");
    vhdkit(["check", p(child)]).ok();
    // The parent's data was not written: its identity is unchanged.
    assert!(qemu_vhdx(&new_base) == read_all(&new_base));
}

#[test]
fn set_parent_of_a_checkpoint_refuses_another_disk_unless_forced_and_a_vhd() {
    let dir = tempdir();
    let (files, _) = chain(dir.path(), &["disk.vhdx", "disk_A1B2.avhdx"]);
    let child = &files[1];
    let before = fs::read(child).unwrap();
    // Another VHDX of the same size: another data write GUID.
    let other = dir.path().join("other.vhdx");
    let mut n = NewVhdx::new(DiskType::Dynamic, SIZE);
    n.block_size = 2 * MIB as u32;
    build(&other, &n, None, &level_blocks(0));
    let line = assert_failed_one_line(&vhdkit(["set-parent", p(child), p(&other)]));
    assert!(line.to_lowercase().contains("id"), "{line}");
    // A VHD parent under a VHDX child: refused whatever the flags.
    let vhd = dir.path().join("other.vhd");
    create(&vhd, &["--type", "dynamic", "--size", "20M"]);
    let line = assert_failed_one_line(&vhdkit([
        "set-parent",
        p(child),
        p(&vhd),
        "--ignore-parent-id",
    ]));
    assert!(line.contains("VHDX"), "{line}");
    assert_eq!(
        fs::read(child).unwrap(),
        before,
        "refusals leave the child untouched"
    );
    // Forced: the child records the other disk's identity.
    vhdkit(["set-parent", p(child), p(&other), "--ignore-parent-id"]).ok();
    let linkage = locator(child, "parent_linkage").unwrap();
    assert!(names(&linkage, &data_write_guid(&other)));
    vhdkit(["read", p(child)]).ok();
}

/// `vhdkit compact --json` of `disk`.
fn compact_json(disk: &Path) -> serde_json::Value {
    let r = vhdkit(["compact", p(disk), "--json", "--verify"]).json();
    assert_eq!(r["verified"], true, "{r}");
    r
}

#[test]
fn compact_of_a_dynamic_vhdx_releases_zero_blocks_moves_the_rest_down_and_cuts_the_tail() {
    let dir = tempdir();
    let disk = dir.path().join("disk.vhdx");
    let mut n = NewVhdx::new(DiskType::Dynamic, SIZE);
    n.block_size = 2 * MIB as u32;
    let blocks = [
        (0, Content::Full(0x41)),
        (1, Content::Full(0)),
        (2, Content::Full(0x42)),
        (3, Content::Full(0)),
        (4, Content::Full(0)),
    ];
    build(&disk, &n, None, &blocks);
    let want = model(SIZE, &n, &[&blocks]);
    let len_before = fs::metadata(&disk).unwrap().len();
    let r = compact_json(&disk);
    assert_eq!(r["blocks_released"], 3, "{r}");
    // Block 2 moves into block 1's place; the three places after it are cut off.
    assert_eq!(r["blocks_moved"], 1, "{r}");
    assert_eq!(fs::metadata(&disk).unwrap().len(), len_before - 6 * MIB);
    assert!(read_all(&disk) == want);
    assert!(qemu_vhdx(&disk) == want, "qemu-img reads the same bytes");
    assert!(
        pyvhdi_read_all(&[&disk]) == want,
        "libvhdi reads the same bytes"
    );
    assert_eq!(info(&disk)["vhdx"]["log"], "clean");
    vhdkit(["check", p(&disk)]).ok();
    // Written again where a block was released: a fresh block, no stale bytes.
    let data = vec![7u8; 4096];
    write_at(&disk, 3 * 2 * MIB + 512, &data, &[]);
    let mut want = want;
    want[(6 * MIB + 512) as usize..(6 * MIB + 512) as usize + 4096].copy_from_slice(&data);
    assert!(qemu_vhdx(&disk) == want);
}

#[test]
fn compact_of_a_checkpoint_releases_empty_and_duplicate_blocks_and_reads_the_same() {
    let dir = tempdir();
    let mut n = NewVhdx::new(DiskType::Dynamic, SIZE);
    n.block_size = 2 * MIB as u32;
    let base_blocks = [(2, Content::Full(0x42)), (3, Content::Full(0x43))];
    let base = dir.path().join("disk.vhdx");
    let (_, id) = build(&base, &n, None, &base_blocks);
    n.disk_type = DiskType::Differencing;
    let child_blocks = [
        (0, Content::Partial(0x51, 0, 0)),
        (2, Content::Full(0x42)),
        (3, Content::Full(0x53)),
        (4, Content::Partial(0x54, 8, 8)),
    ];
    let child = dir.path().join("disk_A.avhdx");
    let loc = ParentLocator::new(id, Some(r".\disk.vhdx"), None, None);
    build(&child, &n, Some(loc), &child_blocks);
    let want = model(SIZE, &n, &[&child_blocks, &base_blocks]);
    let base_before = fs::read(&base).unwrap();
    let r = compact_json(&child);
    assert_eq!(r["blocks_released"], 2, "{r}");
    assert_eq!(r["blocks_deduplicated"], 1, "{r}");
    assert!(read_all(&child) == want);
    assert!(pyvhdi_read_all(&[&child, &base]) == want);
    assert_eq!(
        fs::read(&base).unwrap(),
        base_before,
        "the parent is untouched"
    );
    vhdkit(["check", p(&child)]).ok();
    // The released partially present block starts again from an empty bitmap.
    write_at(&child, 512, &[9u8; 512], &[]);
    let mut want = want;
    want[512..1024].fill(9);
    assert!(read_all(&child) == want);
    assert!(pyvhdi_read_all(&[&child, &base]) == want);
}

#[test]
fn compact_of_a_fixed_vhdx_is_refused_clearly() {
    let dir = tempdir();
    let fixed = dir.path().join("fixed.vhdx");
    let q = run_cmd(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "subformat=fixed",
        p(&fixed),
        "8M",
    ]));
    assert_eq!(q.code, 0, "{}", q.stderr);
    let line = assert_failed_one_line(&vhdkit(["compact", p(&fixed)]));
    assert!(line.contains("dynamic or differencing"), "{line}");
}

#[test]
fn resize_of_a_dynamic_vhdx_grows_within_its_bat_region_and_shrinks_over_absent_blocks() {
    let dir = tempdir();
    let disk = dir.path().join("disk.vhdx");
    let q = run_cmd(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "subformat=dynamic,block_size=1M",
        p(&disk),
        "24M",
    ]));
    assert_eq!(q.code, 0, "{}", q.stderr);
    let data = pattern(5, 3 * MIB as usize);
    write_at(
        &disk,
        20 * MIB,
        &data[..4 * MIB as usize - MIB as usize],
        &[],
    );
    let mut want = vec![0u8; 24 * MIB as usize];
    want[20 * MIB as usize..23 * MIB as usize].copy_from_slice(&data);
    let guid_before = data_write_guid(&disk);
    vhdkit(["resize", p(&disk), "--size", "100M"]).ok();
    want.resize(100 * MIB as usize, 0);
    assert_eq!(vhdkit_size(&disk), 100 * MIB);
    assert!(read_all(&disk) == want);
    assert!(qemu_vhdx(&disk) == want, "qemu-img reads the grown file");
    assert!(
        pyvhdi_read_all(&[&disk]) == want,
        "libvhdi reads the grown file"
    );
    assert_ne!(data_write_guid(&disk), guid_before);
    assert_eq!(info(&disk)["vhdx"]["log"], "clean");
    // A shrink over stored blocks is refused, untouched…
    let before = fs::read(&disk).unwrap();
    let line = assert_failed_one_line(&vhdkit([
        "resize",
        p(&disk),
        "--size",
        "22M",
        "--allow-shrink",
    ]));
    assert!(line.contains("block 22"), "{line}");
    assert_eq!(fs::read(&disk).unwrap(), before);
    // …and one over blocks it does not store cuts only absent ones.
    vhdkit(["resize", p(&disk), "--size", "60M", "--allow-shrink"]).ok();
    want.truncate(60 * MIB as usize);
    assert!(qemu_vhdx(&disk) == want, "qemu-img reads the shrunk file");
    assert!(pyvhdi_read_all(&[&disk]) == want);
    // The new end takes writes.
    write_at(&disk, 59 * MIB, &data[..MIB as usize], &[]);
    want[59 * MIB as usize..60 * MIB as usize].copy_from_slice(&data[..MIB as usize]);
    assert!(qemu_vhdx(&disk) == want);
    vhdkit(["check", p(&disk)]).ok();
}

#[test]
fn set_parent_search_finds_a_moved_vhdx_parent_by_its_data_write_guid() {
    let dir = tempdir();
    let (files, want) = chain(dir.path(), &["disk.vhdx", "disk_A1B2.avhdx"]);
    let (base, child) = (&files[0], &files[1]);
    let store = dir.path().join("store");
    fs::create_dir_all(store.join("deep")).unwrap();
    let moved = store.join("deep").join("base-copy.vhdx");
    fs::rename(base, &moved).unwrap();
    // A VHD beside it is not a candidate for a VHDX child.
    create(
        &store.join("decoy.vhd"),
        &["--type", "dynamic", "--size", "20M"],
    );
    vhdkit(["set-parent", p(child), "--search", p(&store)]).ok();
    assert!(read_all(child) == want);
    assert_eq!(
        locator(child, "relative_path").as_deref(),
        Some(r".\store\deep\base-copy.vhdx")
    );
}
