//! Differencing chains: finding the parent by its relative or absolute locator, by an
//! explicit path, and the errors when it is missing, replaced, or the chain loops.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_bytes_eq, create, create_child, pattern, read_file, MIB};
use vhdkit_format::spec::{DynamicHeader, ParentLocator, HEADER_SIZE, LOCATOR_COUNT};
use vhdkit_format::{Disk, DiskKind, Error, ErrorKind, OpenOptions};

const BS: u32 = 512 * 1024;

/// `dir/sub/p.vhd` (3 MiB dynamic, filled) and `dir/sub/c.vhd` over it with a few bytes
/// of its own. Returns both paths and the child's whole content.
fn pair(dir: &Path, sub: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let d = dir.join(sub);
    std::fs::create_dir_all(&d).expect("mkdir");
    let parent = create(&d, "p.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let mut content = pattern(1, 3 * MIB as usize);
    common::write(&parent, &content, 0);
    let child = create_child(&d, "c.vhd", &parent, BS);
    common::write(&child, b"child bytes", 4096);
    content[4096..4096 + 11].copy_from_slice(b"child bytes");
    (parent, child, content)
}

fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::canonicalize(a).expect("canonicalize")
        == std::fs::canonicalize(b).expect("canonicalize")
}

/// Rewrites the dynamic header of the file at `path` through `edit` (checksum redone).
fn patch_header(path: &Path, edit: impl FnOnce(&mut DynamicHeader)) {
    let mut bytes = std::fs::read(path).expect("read");
    let mut header = DynamicHeader::decode(&bytes[512..512 + HEADER_SIZE]).expect("header");
    edit(&mut header);
    bytes[512..512 + HEADER_SIZE].copy_from_slice(&header.encode());
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn chain_moved_together_finds_the_parent_by_its_relative_locator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, child, content) = pair(dir.path(), "a");
    let dest = dir.path().join("elsewhere/deeper");
    std::fs::create_dir_all(&dest).expect("mkdir");
    std::fs::rename(dir.path().join("a/p.vhd"), dest.join("p.vhd")).expect("mv");
    std::fs::rename(&child, dest.join("c.vhd")).expect("mv");
    std::fs::remove_dir(dir.path().join("a")).expect("rmdir: the old place is gone");

    let disk = Disk::open(dest.join("c.vhd")).expect("open");

    assert_eq!(disk.layers().len(), 2);
    assert!(same_file(disk.layers()[1].path(), &dest.join("p.vhd")));
    assert_bytes_eq("moved chain", &common::read_all(&disk), &content);
}

#[test]
fn chain_with_parent_one_directory_up_moved_together_finds_it_by_dotdot_locator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    std::fs::create_dir_all(a.join("kids")).expect("mkdir");
    let parent = create(&a, "p.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    common::write(&parent, b"from the parent", 0);
    create_child(&a.join("kids"), "c.vhd", &parent, BS);
    let b = dir.path().join("b");
    std::fs::rename(&a, &b).expect("mv the whole tree");

    let disk = Disk::open(b.join("kids/c.vhd")).expect("open");

    assert!(same_file(disk.layers()[1].path(), &b.join("p.vhd")));
    assert_eq!(common::read_range(&disk, 0, 15), b"from the parent");
}

#[test]
fn child_moved_alone_does_not_follow_its_absolute_locator_out_of_its_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent, child, _) = pair(dir.path(), "a");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::rename(&child, other.join("c.vhd")).expect("mv");

    let err = Disk::open(other.join("c.vhd")).unwrap_err();

    let Error::ParentNotFound { refused, .. } = &err else {
        panic!("{err}")
    };
    assert!(refused.iter().any(|r| same_file(r, &parent)), "{err}");
    assert!(err.to_string().contains("--allow-absolute-parent"), "{err}");
}

#[test]
fn child_moved_alone_finds_the_parent_by_its_absolute_locator_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent, child, content) = pair(dir.path(), "a");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::rename(&child, other.join("c.vhd")).expect("mv");

    let disk = Disk::open_with(
        other.join("c.vhd"),
        &vhdkit_format::OpenOptions::new().absolute_parents(true),
    )
    .expect("open");

    assert!(same_file(disk.layers()[1].path(), &parent));
    assert_eq!(
        disk.found_by(1),
        Some(vhdkit_format::image::FoundBy::AbsoluteOutside)
    );
    assert_bytes_eq("moved child", &common::read_all(&disk), &content);
}

#[test]
fn child_with_missing_parent_is_parent_not_found_naming_the_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent, child, _) = pair(dir.path(), "a");
    std::fs::remove_file(&parent).expect("rm");

    let err = Disk::open(&child).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::ParentNotFound, "{err}");
    let Error::ParentNotFound { name, tried, .. } = &err else {
        unreachable!()
    };
    assert_eq!(name, "p.vhd");
    assert!(tried.iter().any(|t| t.ends_with("a/p.vhd")), "{tried:?}");
    assert!(err.to_string().contains("p.vhd"), "{err}");
}

#[test]
fn child_whose_parent_was_replaced_is_parent_id_mismatch_never_naming_the_found_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent, child, _) = pair(dir.path(), "a");
    let old_id = Disk::open(&parent).expect("open").top().footer().unique_id;
    std::fs::remove_file(&parent).expect("rm");
    let parent = create(
        &dir.path().join("a"),
        "p.vhd",
        DiskKind::Dynamic,
        3 * MIB,
        BS,
    );
    let new_id = Disk::open(&parent).expect("open").top().footer().unique_id;

    let err = Disk::open(&child).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::ParentIdMismatch, "{err}");
    let Error::ParentIdMismatch { expected, .. } = &err else {
        unreachable!()
    };
    assert_eq!(*expected, old_id);
    // The id the child records is its own; the id of the file found is another file's
    // and must not leak (a crafted child could learn it and be rebuilt to match).
    let msg = err.to_string();
    assert!(msg.contains(&old_id.to_string()), "{msg}");
    assert!(!msg.contains(&new_id.to_string()), "{msg}");
}

#[test]
fn child_whose_parent_was_replaced_opens_with_ignore_parent_id_and_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent, child, _) = pair(dir.path(), "a");
    std::fs::remove_file(&parent).expect("rm");
    let parent = create(
        &dir.path().join("a"),
        "p.vhd",
        DiskKind::Dynamic,
        3 * MIB,
        BS,
    );
    common::write(&parent, b"new parent", 0);

    let disk = Disk::open_with(&child, &OpenOptions::new().ignore_parent_id(true)).expect("open");

    assert_eq!(disk.layers().len(), 2);
    assert_eq!(common::read_range(&disk, 0, 10), b"new parent");
    assert_eq!(common::read_range(&disk, 4096, 11), b"child bytes");
    assert!(
        disk.warnings().iter().any(|w| w.contains("unique id")),
        "{:?}",
        disk.warnings()
    );
}

#[test]
fn child_whose_parent_is_itself_is_chain_loop_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, child, _) = pair(dir.path(), "a");
    let own_id = Disk::open(&child).expect("open").top().footer().unique_id;
    patch_header(&child, |h| {
        h.parent_unique_id = own_id;
        h.set_parent_name("c.vhd").expect("name");
        h.locators = [ParentLocator::EMPTY; LOCATOR_COUNT];
    });

    let err = Disk::open(&child).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::ChainLoop, "{err}");
}

#[test]
fn child_whose_parent_is_itself_opened_for_writing_is_chain_loop_not_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, child, _) = pair(dir.path(), "a");
    let own_id = Disk::open(&child).expect("open").top().footer().unique_id;
    patch_header(&child, |h| {
        h.parent_unique_id = own_id;
        h.set_parent_name("c.vhd").expect("name");
        h.locators = [ParentLocator::EMPTY; LOCATOR_COUNT];
    });

    let err = Disk::open_rw(&child).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::ChainLoop, "{err}");
}

#[test]
fn two_children_pointing_at_each_other_are_chain_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, child, _) = pair(dir.path(), "a");
    let a = dir.path().join("a");
    // b.vhd is a child of c.vhd; then c.vhd is made to name b.vhd as its parent.
    let b = create_child(&a, "b.vhd", &child, BS);
    let b_id = Disk::open(&b).expect("open").top().footer().unique_id;
    patch_header(&child, |h| {
        h.parent_unique_id = b_id;
        h.set_parent_name("b.vhd").expect("name");
        h.locators = [ParentLocator::EMPTY; LOCATOR_COUNT];
    });

    for start in [&child, &b] {
        let err = Disk::open(start).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ChainLoop,
            "{}: {err}",
            start.display()
        );
        let err = Disk::open_rw(start).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::ChainLoop,
            "{} rw: {err}",
            start.display()
        );
    }
}

#[test]
fn chain_deeper_than_max_depth_is_chain_too_deep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, child, _) = pair(dir.path(), "a");
    let top = create_child(&dir.path().join("a"), "top.vhd", &child, BS);
    let opts = OpenOptions {
        max_depth: 1,
        ..OpenOptions::new()
    };

    let err = Disk::open_with(&top, &opts).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::ChainTooDeep, "{err}");
    assert_eq!(Disk::open(&top).expect("default depth").layers().len(), 3);
}

#[test]
fn explicit_parent_option_opens_a_parent_no_locator_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent, child, content) = pair(dir.path(), "a");
    let hidden = dir.path().join("vault");
    std::fs::create_dir_all(&hidden).expect("mkdir");
    let renamed = hidden.join("renamed-base.vhd");
    std::fs::rename(&parent, &renamed).expect("mv");
    assert_eq!(
        Disk::open(&child).unwrap_err().kind(),
        ErrorKind::ParentNotFound
    );

    let disk = Disk::open_with(&child, &OpenOptions::new().parent(&renamed)).expect("open");

    assert!(same_file(disk.layers()[1].path(), &renamed));
    assert_bytes_eq("explicit parent", &common::read_all(&disk), &content);
}

#[test]
fn explicit_parent_option_with_the_wrong_disk_is_parent_id_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, child, _) = pair(dir.path(), "a");
    let stranger = create(dir.path(), "stranger.vhd", DiskKind::Dynamic, 3 * MIB, BS);

    let err = Disk::open_with(&child, &OpenOptions::new().parent(&stranger)).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::ParentIdMismatch, "{err}");
}

#[test]
fn child_opened_without_parents_reads_only_its_own_sectors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent, child, content) = pair(dir.path(), "a");
    std::fs::remove_file(&parent).expect("rm");

    let disk = Disk::open_with(&child, &OpenOptions::new().no_parents(true)).expect("open");

    assert_eq!(disk.layers().len(), 1);
    // The child holds the whole bitmap byte's worth of sectors (4 KiB) it wrote into,
    // completed from the parent, and nothing else.
    let mut expected = vec![0u8; 3 * MIB as usize];
    expected[4096..8192].copy_from_slice(&content[4096..8192]);
    assert_bytes_eq("child alone", &common::read_all(&disk), &expected);
}

#[test]
fn writing_a_child_leaves_its_parent_file_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent, child, _) = pair(dir.path(), "a");
    let before = std::fs::read(&parent).expect("read");
    common::write(&child, &pattern(2, 1_500_000), 12345);
    assert_eq!(std::fs::read(&parent).expect("read"), before);
    let content = read_file(&parent);
    assert_eq!(content.len(), 3 * MIB as usize);
}

/// base ← x ← y in `dir` (y over x over base).
fn three(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let base = create(dir, "base.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let x = create_child(dir, "x.vhd", &base, BS);
    let y = create_child(dir, "y.vhd", &x, BS);
    (base, x, y)
}

#[test]
fn set_parent_to_its_own_child_or_itself_is_a_loop_not_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, x, y) = three(dir.path());
    let before = std::fs::read(&x).expect("read");

    for parent in [&y, &x] {
        let e = vhdkit_format::ops::relink::set_parent(&x, parent, true).expect_err("refused");

        assert_eq!(e.kind(), ErrorKind::ChainLoop, "{}: {e}", parent.display());
        assert!(e.to_string().contains("loops"), "{e}");
    }
    assert_eq!(std::fs::read(&x).expect("read"), before, "nothing written");
}

#[test]
fn set_parent_to_a_grandchild_while_the_own_parent_is_missing_is_a_loop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, x, y) = three(dir.path());
    let z = create_child(dir.path(), "z.vhd", &y, BS);
    // The reason to run set-parent: x's parent is gone. z's chain cannot open (it
    // stops at x), but what opens shows it leads back to x.
    std::fs::remove_file(&base).expect("rm");

    let e = vhdkit_format::ops::relink::set_parent(&x, &z, true).expect_err("refused");

    assert_eq!(e.kind(), ErrorKind::ChainLoop, "{e}");
}
