//! Parent-aware compaction (dedupe) of differencing disks: what it releases, what it
//! keeps, and that the disk reads the same.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use vhdkit_format::check::check;
use vhdkit_format::ops::{self, OpTask, OpsOptions, Report};
use vhdkit_format::{Disk, DiskKind, Error, ErrorKind, OpenOptions, VhdFile};
use vhdkit_task::{CancelToken, Phase, Progress, ProgressEvent, TaskBuilder};

const KIB: u64 = 1024;
const BS: u64 = 512 * KIB;

fn progress() -> Progress {
    Progress::detached(CancelToken::new())
}

fn opts(dedupe: bool, verify: bool) -> OpsOptions {
    OpsOptions {
        dedupe,
        verify,
        chunk_bytes: 2 * BS,
        ..OpsOptions::default()
    }
}

fn compact(path: &Path, o: &OpsOptions) -> Report {
    ops::compact::compact(path, o, &progress())
        .unwrap_or_else(|e| panic!("compact {}: {e}", path.display()))
}

fn allocated(path: &Path) -> u64 {
    VhdFile::open(path, &OpenOptions::new().no_parents(true))
        .expect("open")
        .allocated_blocks()
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

fn assert_clean(path: &Path) {
    let r = check(path, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{}: {r:?}", path.display());
}

/// A 16 MiB dynamic base with data in its first 12 MiB, and a child over it:
///
/// - blocks 0..8: the parent's bytes written back unchanged (a guest rewriting files);
/// - block 8: the parent's bytes with one byte changed (partially equal: stays);
/// - block 9: zeros over the parent's data (hides it: stays);
/// - block 10: the first 64 KiB only, copied from the parent (a partial bitmap whose
///   sectors all equal the parent's: released);
/// - block 11: 64 KiB of the parent's bytes, then 64 KiB of other bytes (stays);
/// - block 26: zeros where the parent holds nothing (equal to the parent's zeros:
///   released).
///
/// Returns (base, child). Deduplicable: 0..8, 10, 26 (10 blocks); kept: 8, 9, 11.
fn copying_chain(dir: &Path) -> (PathBuf, PathBuf) {
    let base = create(dir, "base.vhd", DiskKind::Dynamic, 16 * MIB, BS as u32);
    write(&base, &pattern(1, 12 * MIB as usize), 0);
    let parent = read_file(&base);
    let child = create_child(dir, "child.vhd", &base, BS as u32);
    let d = Disk::open_rw(&child).expect("open child");
    let block = |b: u64| &parent[(b * BS) as usize..((b + 1) * BS) as usize];
    for b in 0..8 {
        d.write_at(block(b), b * BS).expect("copy");
    }
    let mut changed = block(8).to_vec();
    changed[BS as usize / 2] ^= 1;
    d.write_at(&changed, 8 * BS).expect("changed");
    d.write_at(&vec![0; BS as usize], 9 * BS).expect("zeros");
    d.write_at(&block(10)[..64 * KIB as usize], 10 * BS)
        .expect("partial copy");
    d.write_at(&block(11)[..64 * KIB as usize], 11 * BS)
        .expect("partial copy");
    d.write_at(&pattern(2, 64 * KIB as usize), 11 * BS + 64 * KIB)
        .expect("other");
    d.write_at(&vec![0; BS as usize], 26 * BS)
        .expect("zeros over a hole");
    d.flush().expect("flush");
    (base, child)
}

#[test]
fn dedupe_releases_the_blocks_a_child_copied_from_its_parent_and_keeps_its_view() {
    let dir = tempfile::tempdir().expect("tmp");
    let (base, child) = copying_chain(dir.path());
    let view = read_file(&child);
    let parent_before = std::fs::read(&base).expect("base");
    let (size_before, blocks_before) = (len(&child), allocated(&child));
    assert_eq!(blocks_before, 13);

    let r = compact(&child, &opts(true, true));

    assert_eq!(r.blocks_total, 13);
    assert_eq!(r.blocks_deduplicated, 10);
    assert_eq!(r.blocks_zero, 0);
    assert_eq!(r.blocks_released, 10);
    assert!(r.verified);
    assert_eq!(allocated(&child), 3, "blocks 8, 9 and 11 stay");
    assert_bytes_eq("the child's view", &read_file(&child), &view);
    assert!(
        std::fs::read(&base).expect("base") == parent_before,
        "the parent is only read"
    );
    assert_clean(&child);
    let size_after = len(&child);
    assert_eq!(size_after, r.file_size_after);
    eprintln!("dedupe: child {size_before} -> {size_after} bytes, {blocks_before} -> 3 blocks");
    // 3 blocks of 512 KiB and their 512-byte bitmaps remain, plus the metadata.
    assert!(size_after < 3 * (BS + 512) + 64 * KIB, "{size_after}");
    assert!(size_after < size_before / 4);

    // A second run finds nothing more.
    let again = compact(&child, &opts(true, true));
    assert_eq!((again.blocks_released, again.blocks_moved), (0, 0));
    assert_eq!(len(&child), size_after);
}

#[test]
fn no_dedupe_keeps_the_copied_blocks() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_, child) = copying_chain(dir.path());
    let view = read_file(&child);
    let size_before = len(&child);

    let r = compact(&child, &opts(false, true));

    assert_eq!((r.blocks_deduplicated, r.blocks_released), (0, 0));
    assert_eq!(allocated(&child), 13);
    assert_eq!(len(&child), size_before);
    assert_bytes_eq("the child's view", &read_file(&child), &view);
}

#[test]
fn dedupe_compares_with_the_whole_chain_not_only_the_parent() {
    // base (data) <- mid (other data in block 1, nothing in block 0) <- top, which
    // copies base's block 0 (the chain shows base there: released) and base's block 1
    // (the chain shows mid's bytes there: the copy differs, it stays).
    let dir = tempfile::tempdir().expect("tmp");
    let base = create(
        dir.path(),
        "base.vhd",
        DiskKind::Dynamic,
        4 * MIB,
        BS as u32,
    );
    write(&base, &pattern(3, 2 * BS as usize), 0);
    let mid = create_child(dir.path(), "mid.vhd", &base, BS as u32);
    write(&mid, &pattern(4, BS as usize), BS);
    let top = create_child(dir.path(), "top.vhd", &mid, BS as u32);
    let base_bytes = read_file(&base);
    write(&top, &base_bytes[..2 * BS as usize], 0);
    let view = read_file(&top);
    assert_eq!(allocated(&top), 2);

    let r = compact(&top, &opts(true, true));

    assert_eq!(r.blocks_deduplicated, 1);
    assert_eq!(allocated(&top), 1);
    assert_bytes_eq("the top's view", &read_file(&top), &view);
    let f = VhdFile::open(&top, &OpenOptions::new().no_parents(true)).expect("open");
    assert!(f.bat().expect("BAT").block_offset(0).is_none());
    assert!(f.bat().expect("BAT").block_offset(1).is_some());
}

#[test]
fn dedupe_past_the_end_of_a_smaller_parent_compares_with_zeros() {
    // A parent smaller than its child reads as zeros past its end: zeros the child
    // wrote there equal that view; data does not.
    let dir = tempfile::tempdir().expect("tmp");
    let base = create(
        dir.path(),
        "base.vhd",
        DiskKind::Dynamic,
        4 * MIB,
        BS as u32,
    );
    write(&base, &pattern(5, 4 * MIB as usize), 0);
    let child = create_child(dir.path(), "child.vhd", &base, BS as u32);
    let d = Disk::open_rw(&child).expect("open");
    d.write_at(&vec![0; BS as usize], 5 * BS).expect("zeros");
    d.write_at(&pattern(6, BS as usize), 6 * BS).expect("data");
    d.flush().expect("flush");
    drop(d);
    // Shrink the parent's virtual size to 2 MiB (its footer only).
    {
        let mut f = VhdFile::open(&base, &OpenOptions::new().writable(true)).expect("open");
        let mut footer = f.footer().clone();
        footer.current_size = 2 * MIB;
        f.rewrite_footer(footer).expect("rewrite the footer");
    }
    let view = read_file(&child);
    assert!(view[(4 * BS) as usize..(6 * BS) as usize]
        .iter()
        .all(|&b| b == 0));

    let r = compact(&child, &opts(true, true));

    assert_eq!(r.blocks_deduplicated, 1, "block 5's zeros");
    assert_eq!(allocated(&child), 1, "block 6's data");
    assert_bytes_eq("the child's view", &read_file(&child), &view);
}

#[test]
fn dedupe_needs_the_parent_chain() {
    let dir = tempfile::tempdir().expect("tmp");
    let (base, child) = copying_chain(dir.path());
    // A disk opened alone cannot be compared with its parent: refused, nothing changed.
    let alone =
        Disk::open_with(&child, &OpenOptions::new().writable(true).no_parents(true)).expect("open");
    let before = std::fs::read(&child).expect("child");
    let err = ops::compact::run(alone, &opts(true, false), &progress()).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(std::fs::read(&child).expect("child") == before);

    // A missing parent fails compact::open with dedupe, and is not needed without.
    std::fs::rename(&base, dir.path().join("moved.vhd")).expect("move the parent");
    let err =
        ops::compact::compact(&child, &opts(true, false), &progress()).expect_err("no parent");
    assert!(matches!(err, Error::ParentNotFound { .. }), "{err}");
    assert!(std::fs::read(&child).expect("child") == before);
    let r = compact(&child, &opts(false, true));
    assert_eq!(r.blocks_released, 0);
}

#[test]
fn dedupe_leaves_dynamic_disks_as_before() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = create(dir.path(), "d.vhd", DiskKind::Dynamic, 4 * MIB, BS as u32);
    write(&p, &pattern(7, 4 * MIB as usize), 0);
    write(&p, &vec![0; BS as usize], BS);
    let r = compact(&p, &opts(true, true));
    assert_eq!(
        (r.blocks_zero, r.blocks_deduplicated, r.blocks_released),
        (1, 0, 1)
    );
}

/// Every event of a compaction run as a task that starts only once subscribed to.
fn events(path: PathBuf, o: OpsOptions) -> (Vec<ProgressEvent>, Report) {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let task = OpTask::from(
        TaskBuilder::new("measured")
            .cancelable(true)
            .event_capacity(100_000)
            .spawn(move |p| {
                wait.recv().expect("started");
                ops::compact::compact(&path, &o, p)
            }),
    );
    let sub = task.subscribe();
    go.send(()).expect("start");
    let all: Vec<ProgressEvent> = sub.iter().collect();
    let report = task.join().expect("the compaction succeeds");
    assert!(all.iter().all(|e| e.lost == 0), "no event was lost");
    (all, report)
}

#[test]
fn dedupe_scan_progress_counts_the_child_and_parent_bytes() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_, child) = copying_chain(dir.path());
    let (ev, report) = events(child, opts(true, true));
    let scan: Vec<&ProgressEvent> = ev
        .iter()
        .filter(|e| !e.is_final && e.phase == Phase::Scan)
        .collect();
    let last = scan.last().expect("scan events");
    // Each of the 13 blocks counts its own bytes and the parent's view of them.
    assert_eq!(last.phase_blocks_total, 13);
    assert_eq!(last.phase_bytes_total, 13 * 2 * BS);
    let done_by_scan = scan.iter().map(|e| e.phase_bytes_done).max().unwrap_or(0);
    assert_eq!(done_by_scan, 13 * 2 * BS);
    // The percentage never goes down and moves in every phase.
    let mut prev = 0;
    for e in ev.iter().filter(|e| !e.is_final) {
        assert!(e.task_percent >= prev && e.task_percent < 100);
        prev = e.task_percent;
    }
    for p in [Phase::Scan, Phase::Move, Phase::Verify] {
        assert!(ev.iter().any(|e| e.phase == p), "no {p:?} event");
    }
    assert!(report.verified);
    // Verify reads the 3 live blocks (bitmap and data) and the view of the 10
    // deduplicated ones.
    let verify = ev
        .iter()
        .rfind(|e| !e.is_final && e.phase == Phase::Verify)
        .expect("verify events");
    assert_eq!(verify.phase_bytes_total, 3 * (BS + 512) + 10 * BS);
    assert_eq!(verify.phase_bytes_done, verify.phase_bytes_total);
}
