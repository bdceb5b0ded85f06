//! Chain management: `set-parent` (relinking after the parent moved, by path or by
//! `--search`, refusing a wrong unique id) and `merge --into` / `--depth` (a chain
//! flattened into an ancestor: the child's view unchanged, the ancestor holding the
//! data), judged by libvhdi (pyvhdi reads the relinked chain) and qemu-img (reads the
//! ancestor alone).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn run(args: &[String]) -> Run {
    vhdkit(args.iter().map(OsStr::new))
}

/// base (dynamic, data) ← mid ← top, each with data of its own, in `dir`.
fn chain(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let base = dir.join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "16M"]);
    write_at(&base, 1000, &Rng::new(1).bytes(3 << 20), &[]);
    let mid = dir.join("mid.vhd");
    create(&mid, &["--type", "differencing", "--parent", "base.vhd"]);
    write_at(&mid, 2_000_000, &Rng::new(2).bytes(2 << 20), &[]);
    let top = dir.join("top.vhd");
    create(
        &top,
        &[
            "--type",
            "differencing",
            "--parent",
            "mid.vhd",
            "--block-size",
            "512K",
        ],
    );
    write_at(&top, 7777, &Rng::new(3).bytes(300_000), &[]);
    (base, mid, top)
}

#[test]
fn set_parent_after_the_parent_moved_restores_the_chain_for_every_reader() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "8M"]);
    write_at(&base, 0, &Rng::new(4).bytes(1 << 20), &[]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);
    write_at(&child, 4096, b"written in the child", &[]);
    let view = read_all(&child);
    let moved = dir.path().join("elsewhere");
    std::fs::create_dir(&moved).expect("mkdir");
    let new_base = moved.join("renamed-base.vhd");
    std::fs::rename(&base, &new_base).expect("move");
    assert_ne!(vhdkit(["read".as_ref(), child.as_os_str()]).code, EXIT_OK);

    let r = run(&["set-parent".into(), s(&child), s(&new_base)]);

    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_bytes_eq("vhdkit reads the relinked chain", &read_all(&child), &view);
    assert_bytes_eq(
        "libvhdi reads the relinked chain",
        &pyvhdi_read_all(&[&child, &new_base]),
        &view,
    );
    let i = info(&child);
    assert_eq!(i["parent"]["name"], "renamed-base.vhd");
    assert_eq!(vhdkit(["check".as_ref(), child.as_os_str()]).code, EXIT_OK);
    // vhdiinfo names the new parent too.
    let v = vhdiinfo(&child);
    assert!(
        v.stdout_str().contains("renamed-base.vhd"),
        "{}",
        v.stdout_str()
    );
}

#[test]
fn set_parent_search_finds_the_one_file_with_the_parents_id() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "8M"]);
    write_at(&base, 0, b"base data", &[]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);
    let view = read_all(&child);
    let archive = dir.path().join("archive/deep/er");
    std::fs::create_dir_all(&archive).expect("mkdir");
    std::fs::rename(&base, archive.join("b.vhd")).expect("move");
    // Decoys: another VHD, a non-VHD.
    create(
        &dir.path().join("archive/other.vhd"),
        &["--type", "dynamic", "--size", "8M"],
    );
    std::fs::write(dir.path().join("archive/notes.vhd"), b"not a vhd").expect("decoy");

    let r = run(&[
        "set-parent".into(),
        s(&child),
        "--search".into(),
        s(&dir.path().join("archive")),
    ]);

    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert!(
        r.stdout_str().contains("b.vhd"),
        "says which: {}",
        r.stdout_str()
    );
    assert_bytes_eq("relinked", &read_all(&child), &view);

    // Two copies carrying the id: refused, both named.
    std::fs::copy(archive.join("b.vhd"), dir.path().join("archive/copy.vhd")).expect("copy");
    let r = run(&[
        "set-parent".into(),
        s(&child),
        "--search".into(),
        s(&dir.path().join("archive")),
    ]);
    let line = assert_failed_one_line(&r);
    assert!(
        line.contains("b.vhd") && line.contains("copy.vhd"),
        "{line}"
    );
    // None: refused.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let r = run(&["set-parent".into(), s(&child), "--search".into(), s(&empty)]);
    assert_failed_one_line(&r);
}

#[test]
fn set_parent_refuses_a_parent_with_another_unique_id_unless_told() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "8M"]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);
    let other = dir.path().join("other.vhd");
    create(&other, &["--type", "dynamic", "--size", "8M"]);
    let before = std::fs::read(&child).expect("child");

    let r = run(&["set-parent".into(), s(&child), s(&other)]);

    let line = assert_failed_one_line(&r);
    assert!(line.contains("--ignore-parent-id"), "{line}");
    assert_eq!(std::fs::read(&child).expect("child"), before, "untouched");
    let r = run(&[
        "set-parent".into(),
        s(&child),
        s(&other),
        "--ignore-parent-id".into(),
    ]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_eq!(
        info(&child)["parent"]["unique_id"],
        info(&other)["unique_id"],
        "the child now records the new parent's id"
    );
    // Another size: refused even with the override.
    let small = dir.path().join("small.vhd");
    create(&small, &["--type", "dynamic", "--size", "4M"]);
    let r = run(&[
        "set-parent".into(),
        s(&child),
        s(&small),
        "--ignore-parent-id".into(),
    ]);
    assert_failed_one_line(&r);
}

#[test]
fn merge_into_the_base_keeps_the_view_and_leaves_the_data_in_the_base() {
    let dir = tempdir();
    let (base, mid, top) = chain(dir.path());
    // A fourth level: top2 over top.
    let top2 = dir.path().join("top2.vhd");
    create(&top2, &["--type", "differencing", "--parent", "top.vhd"]);
    write_at(&top2, 10_000_000, &Rng::new(5).bytes(70_000), &[]);
    let view = read_all(&top2);

    let r = run(&["merge".into(), s(&top2), "--into".into(), s(&base)]);

    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert!(!mid.exists() && !top.exists(), "intermediates removed");
    assert_bytes_eq("the child's view", &read_all(&top2), &view);
    assert_bytes_eq(
        "libvhdi's view of child over base",
        &pyvhdi_read_all(&[&top2, &base]),
        &view,
    );
    assert_bytes_eq(
        "qemu-img reads the base alone",
        &qemu_read_all(&base),
        &view,
    );
    assert_eq!(info(&top2)["chain"].as_array().map(Vec::len), Some(2));
    assert_eq!(vhdkit(["check".as_ref(), top2.as_os_str()]).code, EXIT_OK);
}

#[test]
fn merge_depth_two_merges_into_the_grandparent_and_keeps_what_is_asked() {
    let dir = tempdir();
    let (base, mid, top) = chain(dir.path());
    let view = read_all(&top);
    let r = run(&[
        "merge".into(),
        s(&top),
        "--depth".into(),
        "2".into(),
        "--keep-intermediates".into(),
    ]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert!(mid.exists(), "kept as asked");
    assert_bytes_eq("the child's view", &read_all(&top), &view);
    assert_bytes_eq("the base", &qemu_read_all(&base), &view);
}

#[test]
fn merge_into_with_delete_child_leaves_the_ancestor_as_the_disk() {
    let dir = tempdir();
    let (base, mid, top) = chain(dir.path());
    let view = read_all(&top);
    let r = run(&[
        "merge".into(),
        s(&top),
        "--into".into(),
        s(&base),
        "--delete-child".into(),
    ]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert!(!top.exists() && !mid.exists());
    assert_bytes_eq("the base is the disk now", &read_all(&base), &view);
}

#[test]
fn merge_into_refuses_to_orphan_another_child_of_an_intermediate() {
    let dir = tempdir();
    let (base, mid, top) = chain(dir.path());
    let sibling = dir.path().join("sibling.vhd");
    create(&sibling, &["--type", "differencing", "--parent", "mid.vhd"]);
    let before = std::fs::read(&base).expect("base");

    let r = run(&["merge".into(), s(&top), "--into".into(), s(&base)]);

    let line = assert_failed_one_line(&r);
    assert!(
        line.contains("sibling.vhd") && line.contains("--force"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&base).expect("base"),
        before,
        "nothing written"
    );
    assert!(mid.exists());
    // Not an ancestor: refused.
    let r = run(&["merge".into(), s(&top), "--into".into(), s(&sibling)]);
    assert_failed_one_line(&r);
}
