//! Disks that depend on each other: merge, merge into an ancestor, resize and compact
//! with unused ranges refuse, before writing anything, when a disk outside the operation's
//! own chain names a disk they change as its parent — found in that disk's folder and in
//! `OpsOptions::also_check` — naming each one; `OpsOptions::force` proceeds. And the one
//! discovery function they share, `image::find_children`.

mod common;

use std::path::{Path, PathBuf};

use vhdkit_format::image::find_children;
use vhdkit_format::ops::merge_into::Ancestor;
use vhdkit_format::ops::unused::Unused;
use vhdkit_format::ops::{self, OpsOptions, ResizeOptions};
use vhdkit_format::{Disk, DiskKind, Error, ErrorKind, OpenOptions};
use vhdkit_task::HResult;

use common::*;

const SIZE: u64 = 4 * MIB;

/// base ← mid ← {top, sib} in `dir`, each with data of its own (2 MiB blocks):
/// the reproduction of the issue.
fn forked(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let base = create(dir, "base.vhd", DiskKind::Dynamic, SIZE, (512 * KIB) as u32);
    write(&base, &pattern(1, 3 * MIB as usize), 0);
    let mid = create_child(dir, "mid.vhd", &base, (512 * KIB) as u32);
    write(&mid, &pattern(2, MIB as usize), MIB);
    let top = create_child(dir, "top.vhd", &mid, (512 * KIB) as u32);
    write(&top, &pattern(3, MIB as usize), 2 * MIB + 1);
    let sib = create_child(dir, "sib.vhd", &mid, (512 * KIB) as u32);
    write(&sib, &pattern(4, 4096), 0);
    (base, mid, top, sib)
}

fn id(path: &Path) -> uuid::Uuid {
    Disk::open_with(path, &OpenOptions::new().no_parents(true))
        .expect("open")
        .top()
        .footer()
        .unique_id
}

/// The bytes of every file in `dir`, by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = dir_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".vhd"))
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).expect("read");
            (n, bytes)
        })
        .collect();
    v.sort();
    v
}

fn children_of(e: &Error) -> Vec<String> {
    match e {
        Error::HasChildren { children, .. } => children
            .iter()
            .map(|c| c.file_name().expect("name").to_string_lossy().into_owned())
            .collect(),
        other => panic!("not a has-children refusal: {other}"),
    }
}

fn finish(task: ops::OpTask) -> ops::Report {
    task.join().expect("the operation succeeded")
}

#[test]
fn find_children_names_a_child_in_the_folder_and_in_folders_asked_for() {
    let dir = tempdir();
    let (_, mid, top, sib) = forked(dir.path());
    let away = dir.path().join("away");
    std::fs::create_dir(&away).expect("mkdir");
    let far = away.join("far.avhd");
    std::fs::rename(&sib, &far).expect("move a child away");

    assert_eq!(
        find_children(&mid, id(&mid), &[]).expect("scan"),
        vec![top.clone()]
    );
    let both = find_children(&mid, id(&mid), &[away.clone(), dir.path().to_owned()]).expect("scan");
    assert_eq!(both, vec![far, top], "each once, sorted");
    let e = find_children(&mid, id(&mid), &[dir.path().join("nope")]).expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::PathNotFound);
}

#[test]
fn find_children_names_a_child_another_process_holds() {
    let dir = tempdir();
    let (_, mid, top, sib) = forked(dir.path());
    // The sibling open for writing (a running VM's disk): its lock is exclusive.
    let held = Disk::open_rw(&sib).expect("hold the sibling");

    let found = find_children(&mid, id(&mid), &[]).expect("scan");

    assert_eq!(found, vec![sib, top]);
    drop(held);
}

#[test]
fn merge_into_a_parent_with_another_child_is_refused_before_any_write() {
    let dir = tempdir();
    let (_, _, top, _) = forked(dir.path());
    let before = files(dir.path());

    let e = ops::merge_task(&top, &OpsOptions::default()).expect_err("refused");

    assert_eq!(children_of(&e), vec!["sib.vhd"]);
    assert_eq!(e.kind(), ErrorKind::HasChildren);
    assert_eq!(e.hresult(), HResult::E_SHARING_VIOLATION);
    let msg = e.to_string();
    assert!(
        msg.contains("sib.vhd") && msg.contains("mid.vhd") && msg.contains("different bytes"),
        "{msg}"
    );
    assert!(msg.contains("--force"), "{msg}");
    assert_eq!(files(dir.path()), before, "nothing written");
}

#[test]
fn merge_with_force_changes_what_the_sibling_reads() {
    let dir = tempdir();
    let (_, mid, top, sib) = forked(dir.path());
    let (top_view, sib_view) = (read_file(&top), read_file(&sib));
    let forced = OpsOptions {
        force: true,
        ..OpsOptions::default()
    };

    finish(ops::merge_task(&top, &forced).expect("forced"));

    assert_bytes_eq(
        "the parent holds the child's view",
        &read_file(&mid),
        &top_view,
    );
    assert_ne!(read_file(&sib), sib_view, "what the refusal warned of");
}

#[test]
fn merge_finds_a_sibling_only_in_a_folder_asked_for() {
    let dir = tempdir();
    let (_, mid, top, sib) = forked(dir.path());
    let away = dir.path().join("away");
    std::fs::create_dir(&away).expect("mkdir");
    // A sibling in another folder, relinked there by its absolute locator.
    let far = away.join("sib.vhd");
    std::fs::rename(&sib, &far).expect("move");
    let o = OpsOptions {
        also_check: vec![away.clone()],
        ..OpsOptions::default()
    };
    let before = std::fs::read(&mid).expect("read");

    let e = ops::merge_task(&top, &o).expect_err("refused");

    assert_eq!(children_of(&e), vec!["sib.vhd"]);
    assert!(e.to_string().contains(&away.display().to_string()), "{e}");
    assert_eq!(std::fs::read(&mid).expect("read"), before);
    // A folder that does not exist is refused, not taken as empty.
    let o = OpsOptions {
        also_check: vec![dir.path().join("typo")],
        ..OpsOptions::default()
    };
    let e = ops::merge_task(&top, &o).expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::PathNotFound);
    // Without the folder: nothing in mid's folder names it but top.
    finish(ops::merge_task(&top, &OpsOptions::default()).expect("merges"));
}

#[test]
fn merge_with_delete_child_names_siblings_and_grandchildren_together() {
    let dir = tempdir();
    let (_, _, top, _) = forked(dir.path());
    create_child(dir.path(), "grand.vhd", &top, (512 * KIB) as u32);
    let o = OpsOptions {
        delete_child: true,
        ..OpsOptions::default()
    };

    let e = ops::merge_task(&top, &o).expect_err("refused");

    assert_eq!(children_of(&e), vec!["sib.vhd", "grand.vhd"]);
    let msg = e.to_string();
    assert!(
        msg.contains("different bytes") && msg.contains("orphaned"),
        "{msg}"
    );
}

#[test]
fn merge_into_the_base_refuses_for_a_child_of_the_ancestor_outside_the_chain() {
    let dir = tempdir();
    let (base, mid, top, _) = forked(dir.path());
    // Another child of the base: the merge rewrites the base under it.
    let other = create_child(dir.path(), "other.vhd", &base, (512 * KIB) as u32);
    let before = files(dir.path());

    let e = ops::merge_into_task(&top, &Ancestor::Path(base.clone()), &OpsOptions::default())
        .expect_err("refused");

    // mid (a chain member) is not named; sib (mid's other child, orphaned) and other
    // (the base's other child, whose view changes) are.
    assert_eq!(children_of(&e), vec!["other.vhd", "sib.vhd"]);
    let msg = e.to_string();
    assert!(
        msg.contains("different bytes") && msg.contains("orphaned"),
        "{msg}"
    );
    assert_eq!(files(dir.path()), before, "nothing written");
    let _ = (mid, other);
}

#[test]
fn merge_into_keeping_intermediates_counts_their_other_children_as_changed() {
    let dir = tempdir();
    let (base, _, top, _) = forked(dir.path());
    let o = OpsOptions {
        keep_intermediates: true,
        ..OpsOptions::default()
    };

    let e = ops::merge_into_task(&top, &Ancestor::Depth(2), &o).expect_err("refused");

    assert_eq!(children_of(&e), vec!["sib.vhd"]);
    let msg = e.to_string();
    assert!(
        msg.contains("different bytes") && !msg.contains("orphaned"),
        "{msg}"
    );
    // With force it goes ahead.
    let o = OpsOptions { force: true, ..o };
    finish(ops::merge_into_task(&top, &Ancestor::Path(base), &o).expect("forced"));
}

#[test]
fn merge_into_a_straight_chain_is_not_refused() {
    let dir = tempdir();
    let (top, _, base, m) = three_level_chain(dir.path(), SIZE, 5);

    finish(
        ops::merge_into_task(&top, &Ancestor::Path(base.clone()), &OpsOptions::default())
            .expect("no one else depends on the chain"),
    );

    assert_bytes_eq("the base holds the view", &read_file(&base), &m.0);
}

#[test]
fn compact_with_unused_ranges_of_a_parent_is_refused_unless_forced() {
    let dir = tempdir();
    let (_, mid, _, _) = forked(dir.path());
    let o = OpsOptions {
        unused_ranges: Some(Unused::ranges(std::iter::once(0..SIZE))),
        ..OpsOptions::default()
    };
    let before = std::fs::read(&mid).expect("read");

    let e = ops::compact_task(&mid, &o).expect_err("refused");

    assert_eq!(children_of(&e), vec!["sib.vhd", "top.vhd"]);
    assert!(e.to_string().contains("free space"), "{e}");
    assert_eq!(std::fs::read(&mid).expect("read"), before);
    // A dry run writes nothing: not refused. Plain compact keeps the view: not refused.
    let dry = OpsOptions {
        dry_run: true,
        ..o.clone()
    };
    finish(ops::compact_task(&mid, &dry).expect("dry run"));
    finish(ops::compact_task(&mid, &OpsOptions::default()).expect("plain compact"));
    let forced = OpsOptions { force: true, ..o };
    let r = finish(ops::compact_task(&mid, &forced).expect("forced"));
    assert!(r.blocks_unused > 0, "{r:?}");
}

#[test]
fn resize_names_a_child_found_in_a_folder_asked_for() {
    let dir = tempdir();
    let base = create(
        dir.path(),
        "base.vhd",
        DiskKind::Dynamic,
        SIZE,
        (512 * KIB) as u32,
    );
    let away = dir.path().join("away");
    std::fs::create_dir(&away).expect("mkdir");
    create_child(&away, "child.vhd", &base, (512 * KIB) as u32);
    let grow = ResizeOptions {
        size: Some(2 * SIZE),
        ..ResizeOptions::default()
    };
    let o = OpsOptions {
        also_check: vec![away],
        ..OpsOptions::default()
    };

    let e = ops::resize_task(&base, &grow, &o).expect_err("refused");

    assert_eq!(children_of(&e), vec!["child.vhd"]);
    assert!(e.to_string().contains(&format!("{}", 2 * SIZE)), "{e}");
}

#[test]
fn a_merge_whose_data_the_parent_holds_already_is_not_refused() {
    let dir = tempdir();
    let (_, mid, top, _) = forked(dir.path());
    let forced = OpsOptions {
        force: true,
        ..OpsOptions::default()
    };
    finish(ops::merge_task(&top, &forced).expect("forced"));
    let merged = std::fs::read(&mid).expect("read");

    // Again (a rerun after a stop): the parent already reads so; the sibling's view
    // does not change, nothing to refuse.
    finish(ops::merge_task(&top, &OpsOptions::default()).expect("not refused"));

    assert_bytes_eq("the parent", &read_file(&mid), &read_file(&top));
    assert_eq!(merged.len(), std::fs::read(&mid).expect("read").len());
    // New data in the child: refused again.
    write(&top, b"new bytes", 3 * MIB);
    let e = ops::merge_task(&top, &OpsOptions::default()).expect_err("refused");
    assert_eq!(children_of(&e), vec!["sib.vhd"]);
}
