//! `vhdkit compact` of a differencing disk that copied its parent's data: the copies are
//! released (`blocks_deduplicated`), the file shrinks, and the child reads exactly as
//! before — judged by libvhdi (pyvhdi, reading the chain) and by `vhdkit read`;
//! `--no-dedupe` keeps them; `--verify` passes; a missing parent is explained.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

/// A 32 MiB dynamic base (2 MiB blocks) with random data in its first 24 MiB, and a
/// child written with `vhdkit write`:
///
/// - blocks 0..8 (16 MiB): the parent's bytes, read with `vhdkit read`, written back;
/// - block 8: the parent's bytes with one sector changed (partially equal: stays);
/// - block 9: the parent's first MiB, then other bytes (partially equal: stays);
/// - block 10: other bytes (stays);
/// - block 11: its first 64 KiB only, copied from the parent (a partial bitmap whose
///   every sector equals the parent's: released).
///
/// Returns (base, child): 12 blocks allocated, 9 deduplicate.
fn chain(dir: &Path) -> (PathBuf, PathBuf) {
    let base = dir.join("base.vhd");
    create(
        &base,
        &["--type", "dynamic", "--size", "32M", "--block-size", "2M"],
    );
    write_at(&base, 0, &pattern(1, (24 * MIB) as usize), &[]);
    let child = dir.join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&base)]);
    let parent = read_range(&base, 0, 24 * MIB);
    let block = |b: u64| &parent[(b * 2 * MIB) as usize..((b + 1) * 2 * MIB) as usize];
    write_at(&child, 0, &parent[..(16 * MIB) as usize], &[]);
    let mut changed = block(8).to_vec();
    changed[(MIB + 512) as usize..(MIB + 1024) as usize].fill(0xEE);
    write_at(&child, 16 * MIB, &changed, &[]);
    let mut half = block(9).to_vec();
    half[MIB as usize..].copy_from_slice(&pattern(2, MIB as usize));
    write_at(&child, 18 * MIB, &half, &[]);
    write_at(&child, 20 * MIB, &pattern(3, (2 * MIB) as usize), &[]);
    write_at(&child, 22 * MIB, &block(11)[..(64 * KIB) as usize], &[]);
    (base, child)
}

fn json_of(args: &[&str]) -> serde_json::Value {
    vhdkit(args).ok().json()
}

#[test]
fn compact_dedupe_shrinks_a_child_that_copied_its_parent_and_keeps_its_view() {
    have(Tool::Pyvhdi);
    let dir = tempdir();
    let (base, child) = chain(dir.path());
    let libvhdi_before = pyvhdi_read_all(&[&child, &base]);
    let vhdkit_before = read_all(&child);
    assert_bytes_eq(
        "libvhdi and vhdkit agree before",
        &libvhdi_before,
        &vhdkit_before,
    );
    let size_before = len(&child);
    assert_eq!(info(&child)["allocated_blocks"], 12);

    let r = json_of(&[
        "compact",
        p(&child),
        "--verify",
        "--json",
        "--progress",
        "none",
    ]);

    assert_eq!(r["blocks_total"], 12, "{r}");
    assert_eq!(r["blocks_deduplicated"], 9, "{r}");
    assert_eq!(r["blocks_zero"], 0, "{r}");
    assert_eq!(r["blocks_released"], 9, "{r}");
    assert_eq!(r["verified"], true, "{r}");
    let size_after = len(&child);
    assert_eq!(r["file_size_before"], size_before);
    assert_eq!(r["file_size_after"], size_after);
    eprintln!(
        "child.vhd: {size_before} bytes before, {size_after} after ({} of 12 blocks left)",
        info(&child)["allocated_blocks"]
    );
    assert_eq!(info(&child)["allocated_blocks"], 3);
    // Three 2 MiB blocks and their bitmaps, plus the metadata.
    assert!(
        size_after < 3 * (2 * MIB + 4 * KIB) + 64 * KIB,
        "{size_after}"
    );
    assert!(size_after < size_before / 3);

    assert_bytes_eq(
        "libvhdi reads the chain as before",
        &pyvhdi_read_all(&[&child, &base]),
        &libvhdi_before,
    );
    assert_bytes_eq(
        "vhdkit reads the child as before",
        &read_all(&child),
        &vhdkit_before,
    );
    vhdkit(["check", p(&child)]).ok();
}

#[test]
fn compact_no_dedupe_keeps_the_copies() {
    let dir = tempdir();
    let (_, child) = chain(dir.path());
    let before = read_all(&child);
    let size_before = len(&child);

    let r = json_of(&[
        "compact",
        p(&child),
        "--no-dedupe",
        "--verify",
        "--json",
        "--progress",
        "none",
    ]);

    assert_eq!(r["blocks_deduplicated"], 0, "{r}");
    assert_eq!(r["blocks_released"], 0, "{r}");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(len(&child), size_before);
    assert_eq!(info(&child)["allocated_blocks"], 12);
    assert_bytes_eq("the child's view", &read_all(&child), &before);
}

#[test]
fn compact_summary_counts_the_blocks_equal_to_the_parent() {
    let dir = tempdir();
    let (_, child) = chain(dir.path());
    let r = vhdkit(["compact", p(&child), "--progress", "none"]).ok();
    let line = r.stdout_str();
    assert!(
        line.contains("9 of 12 blocks released (9 the same as the parent's)"),
        "{line}"
    );
}

#[test]
fn compact_without_the_parent_says_how_to_compact_alone() {
    let dir = tempdir();
    let (base, child) = chain(dir.path());
    std::fs::rename(&base, dir.path().join("elsewhere.vhd")).expect("move the parent");
    let before = std::fs::read(&child).expect("child");

    let r = vhdkit(["compact", p(&child), "--progress", "none"]);
    assert_eq!(r.code, EXIT_FAILED, "{}", r.stderr);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
    assert!(r.stderr.contains("--no-dedupe"), "{}", r.stderr);
    assert!(
        std::fs::read(&child).expect("child") == before,
        "nothing was changed"
    );

    let r = json_of(&[
        "compact",
        p(&child),
        "--no-dedupe",
        "--json",
        "--progress",
        "none",
    ]);
    assert_eq!(r["blocks_released"], 0, "{r}");
}

#[test]
fn compact_with_its_parent_in_use_says_how_to_compact_alone() {
    let dir = tempdir();
    let (base, child) = chain(dir.path());
    // Another writer holds the parent (as `vhdkit serve base.vhd` would).
    let writer = vhdkit_format::Disk::open_rw(&base).expect("open the parent for writing");

    let r = vhdkit(["compact", p(&child), "--progress", "none"]);
    assert_eq!(r.code, EXIT_FAILED, "{}", r.stderr);
    assert!(r.stderr.contains("--no-dedupe"), "{}", r.stderr);

    let r = json_of(&[
        "compact",
        p(&child),
        "--no-dedupe",
        "--json",
        "--progress",
        "none",
    ]);
    assert_eq!(r["blocks_released"], 0, "{r}");
    drop(writer);
}
