//! Cancelling each operation at many points leaves exactly the state its crash-safety
//! table promises:
//!
//! - convert, merge-to: no destination and no temporary file; the source untouched;
//! - compact: the image valid and reading as before at every cancel point, and a rerun
//!   ending at the size of an uncancelled compaction;
//! - merge: the child's view unchanged, and a rerun completing the merge.
//!
//! Cancellation is made frequent with a chunk of one block (one cancellation point per
//! block) and driven from the progress listener: the task is cancelled after K events,
//! for K over the whole run (K = 0 cancels right after spawn). A task that finished
//! before it saw the cancel may end in Success; both outcomes are accepted, the state
//! each promises is asserted, and every loop asserts that it really cancelled mid-way.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vhdkit_format::check::check;
use vhdkit_format::ops::{self, OpTask, OpsOptions, Target};
use vhdkit_format::spec::Severity;
use vhdkit_format::{CreateOptions, Disk, DiskKind, OpenOptions, VhdFile};
use vhdkit_task::{HResult, Phase, TaskFailure, VMTaskResult};

use common::{assert_bytes_eq, copy_keeping_time, dir_names, file_len, read_file, Rng, KIB, MIB};

/// Block size of every disk here, and the chunk of every operation: one block.
const BS: u64 = 64 * KIB;
const SIZE: u64 = 4 * MIB;

fn opts(verify: bool) -> OpsOptions {
    OpsOptions {
        block_size: BS as u32,
        chunk_bytes: BS,
        verify,
        ..OpsOptions::default()
    }
}

fn assert_clean(path: &Path) {
    let r = check(path, &OpenOptions::new())
        .unwrap_or_else(|e| panic!("check {}: {e}", path.display()));
    assert!(r.is_clean(), "{}: {r:?}", path.display());
}

/// Like [`assert_clean`], but a warning that the parent was modified after the time the
/// child records is allowed.
fn assert_clean_but_parent_time(path: &Path) {
    let r = check(path, &OpenOptions::new())
        .unwrap_or_else(|e| panic!("check {}: {e}", path.display()));
    let others: Vec<_> = r
        .problems()
        .filter(|(_, p)| p.severity >= Severity::Warning && p.field != "parent time stamp")
        .collect();
    assert!(others.is_empty(), "{}: {r:?}", path.display());
}

fn bat_entries(path: &Path) -> Vec<u32> {
    VhdFile::open(path, &OpenOptions::new())
        .expect("open")
        .bat()
        .expect("a BAT")
        .entries()
        .to_vec()
}

/// How a task run with a cancel after `k` events ended.
struct Ending {
    result: VMTaskResult,
    /// Phase of the last ordinary event the listener saw.
    last_phase: Phase,
}

/// Listens to `task`, cancels it after `k` events (at once for 0), waits for the end,
/// and checks the IVMTask2 members of the outcome.
fn run_cancelling_after(task: OpTask, k: usize) -> Ending {
    let rx = task.subscribe();
    if k == 0 {
        task.cancel().expect("cancelable");
    }
    let mut seen = 0;
    let mut last_phase = Phase::Prepare;
    let mut final_result = None;
    for e in rx.iter() {
        if e.is_final {
            final_result = e.result;
            break;
        }
        last_phase = e.phase;
        seen += 1;
        if seen == k {
            task.cancel().expect("cancelable");
        }
    }
    assert!(task.wait_for_completion(Some(Duration::from_secs(60))));
    let result = task.result().expect("complete");
    assert_eq!(
        final_result,
        Some(result),
        "the final event carries the result"
    );
    match result {
        VMTaskResult::Cancelled => {
            assert_eq!(task.error(), HResult::E_ABORT);
            assert!(task.percent_completed() < 100);
            assert!(matches!(task.join(), Err(TaskFailure::Cancelled)));
        }
        VMTaskResult::Success => {
            assert_eq!(task.error(), HResult::S_OK);
            assert_eq!(task.percent_completed(), 100);
            task.join().expect("a report");
        }
        other => panic!("unexpected result {other:?}: {}", task.error_description()),
    }
    Ending { result, last_phase }
}

/// Counts of outcomes over a loop, printed at the end (see `--nocapture`).
#[derive(Default)]
struct Tally {
    cancelled: usize,
    succeeded: usize,
    /// Cancelled runs by the last phase the listener saw.
    by_phase: BTreeMap<&'static str, usize>,
}

impl Tally {
    fn add(&mut self, e: &Ending) {
        if e.result == VMTaskResult::Cancelled {
            self.cancelled += 1;
            *self.by_phase.entry(e.last_phase.name()).or_default() += 1;
        } else {
            self.succeeded += 1;
        }
    }

    fn report(&self, what: &str, points: usize, mid_way: usize) {
        eprintln!(
            "{what}: {} cancel points tried: {} cancelled ({} with partial work on disk), {} finished first; cancelled by phase {:?}",
            points,
            self.cancelled,
            mid_way,
            self.succeeded,
            self.by_phase
        );
    }
}

/// Copies the files `names` from `from` into a fresh directory under `root`.
fn fresh_copy(root: &Path, from: &Path, i: usize, names: &[&str]) -> PathBuf {
    let d = root.join(format!("run{i}"));
    std::fs::create_dir(&d).expect("mkdir");
    for n in names {
        copy_keeping_time(&from.join(n), &d.join(n));
    }
    d
}

/// Cancel points `0, step, 2*step, …` up to a little past `events`.
fn points(events: usize, step: usize) -> Vec<usize> {
    (0..=events + 2).step_by(step).collect()
}

// ---------------------------------------------------------------------------------------
// Compact
// ---------------------------------------------------------------------------------------

/// A dynamic disk with every block written, every third one then zeroed: releases and
/// many moves.
fn compact_template(dir: &Path) -> Vec<u8> {
    let p = dir.join("d.vhd");
    Disk::create(
        &p,
        &CreateOptions::new(DiskKind::Dynamic, SIZE).block_size(BS as u32),
    )
    .expect("create");
    let disk = Disk::open_rw(&p).expect("open");
    let mut rng = Rng::xorshift_star(9);
    disk.write_at(&rng.bytes(SIZE as usize), 0).expect("write");
    for b in (0..SIZE / BS).filter(|b| b % 3 == 0) {
        disk.write_at(&vec![0; BS as usize], b * BS).expect("zero");
    }
    disk.flush().expect("flush");
    drop(disk);
    read_file(&p)
}

fn compact_cancelled_at_many_points(differencing: bool) {
    let root = tempfile::tempdir().expect("tempdir");
    let tpl = root.path().join("template");
    std::fs::create_dir(&tpl).expect("mkdir");
    let files: &[&str] = if differencing {
        &["d.vhd", "c.vhd"]
    } else {
        &["d.vhd"]
    };
    let content = compact_template(&tpl);
    let target_name = if differencing {
        // A child whose blocks hold data, zeros (kept where they hide the parent's
        // data, deduplicated where the parent holds zeros too), and blocks with empty
        // bitmaps (released).
        let c = tpl.join("c.vhd");
        Disk::create(
            &c,
            &CreateOptions::differencing(tpl.join("d.vhd")).block_size(BS as u32),
        )
        .expect("create child");
        let disk = Disk::open_rw(&c).expect("open");
        let mut rng = Rng::xorshift_star(10);
        for b in 0..SIZE / BS {
            let data = if b % 4 == 1 {
                vec![0; BS as usize]
            } else {
                rng.bytes(BS as usize)
            };
            disk.write_at(&data, b * BS).expect("write");
        }
        disk.flush().expect("flush");
        drop(disk);
        let f = VhdFile::open(&c, &OpenOptions::new()).expect("open");
        let bat = f.bat().expect("BAT");
        let bitmap = f.bitmap_size().expect("bitmap");
        drop(f);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&c)
            .expect("open");
        for b in (0..SIZE / BS).filter(|b| b % 4 == 2 || b % 4 == 3 && b % 8 == 3) {
            use vhdkit_platform::FileExt;
            let at = bat.block_offset(b).expect("allocated");
            file.write_all_at(&vec![0; bitmap as usize], at)
                .expect("clear bitmap");
        }
        file.sync_all().expect("sync");
        "c.vhd"
    } else {
        "d.vhd"
    };
    let content = if differencing {
        read_file(&tpl.join(target_name))
    } else {
        content
    };
    let original_bat = bat_entries(&tpl.join(target_name));
    let allocated_before = original_bat.iter().filter(|&&e| e != u32::MAX).count();
    let original_len = file_len(&tpl.join(target_name));

    // The uncancelled run: its final size and the number of events it sends.
    let d = fresh_copy(root.path(), &tpl, 1000, files);
    let task = ops::compact_task(d.join(target_name), &opts(false)).expect("starts");
    let rx = task.subscribe();
    let events = rx.iter().filter(|e| !e.is_final).count();
    let report = task.join().expect("compact");
    assert!(report.blocks_released > 0 && report.blocks_moved > 0);
    let final_len = file_len(&d.join(target_name));
    assert!(final_len < original_len);

    let mut tally = Tally::default();
    let mut mid_way = 0;
    let mut stages = BTreeMap::new();
    // Sparse over the scan (one event per allocated block, plus the phase change),
    // dense over the moves and the end.
    let scan_events = allocated_before as usize + 1;
    let pts: Vec<usize> = (0..scan_events)
        .step_by(8)
        .chain(scan_events..=events + 2)
        .collect();
    for (i, &k) in pts.iter().enumerate() {
        let d = fresh_copy(root.path(), &tpl, i, files);
        let p = d.join(target_name);
        let task = ops::compact_task(&p, &opts(i % 2 == 0)).expect("starts");

        let ending = run_cancelling_after(task, k);
        tally.add(&ending);

        // Valid and unchanged in content, whatever the outcome.
        assert_clean(&p);
        assert_bytes_eq(
            &format!("content after cancel at {k}"),
            &read_file(&p),
            &content,
        );
        if ending.result == VMTaskResult::Cancelled {
            let len = file_len(&p);
            assert!(len <= original_len);
            let now = bat_entries(&p);
            let moved = now
                .iter()
                .zip(&original_bat)
                .filter(|(n, o)| n != o && **n != u32::MAX)
                .count();
            let stage = if now == original_bat {
                "nothing changed"
            } else if moved == 0 {
                "released, none moved"
            } else if moved < report.blocks_moved as usize {
                mid_way += 1;
                "part of the moves done"
            } else {
                "all moves done"
            };
            *stages.entry(stage).or_insert(0usize) += 1;
            // A rerun completes to the same size as an uncancelled compaction.
            let task = ops::compact_task(&p, &opts(false)).expect("rerun starts");
            task.join().expect("the rerun completes");
            assert_eq!(
                file_len(&p),
                final_len,
                "size after a rerun of a compaction cancelled after {k} events"
            );
            assert_clean(&p);
            assert_bytes_eq("content after the rerun", &read_file(&p), &content);
        } else {
            assert_eq!(file_len(&p), final_len);
        }
        std::fs::remove_dir_all(&d).expect("clean up");
    }
    tally.report(
        if differencing {
            "compact (differencing)"
        } else {
            "compact (dynamic)"
        },
        pts.len(),
        mid_way,
    );
    eprintln!(
        "  cancelled compactions by state on disk ({} moves in all): {stages:?}",
        report.blocks_moved
    );
    assert!(
        tally.cancelled >= pts.len() / 2,
        "too few runs were cancelled"
    );
    assert!(mid_way > 0, "no cancel landed part-way through the moves");
}

/// A child of `d.vhd` (compact_template's) that copied its parent's bytes into every
/// block, then changed one byte in every fifth: four in five blocks deduplicate.
fn dedupe_template(tpl: &Path) -> Vec<u8> {
    let parent = compact_template(tpl);
    let c = tpl.join("c.vhd");
    Disk::create(
        &c,
        &CreateOptions::differencing(tpl.join("d.vhd")).block_size(BS as u32),
    )
    .expect("create child");
    let disk = Disk::open_rw(&c).expect("open");
    for b in 0..SIZE / BS {
        let mut data = parent[(b * BS) as usize..((b + 1) * BS) as usize].to_vec();
        if b % 5 == 4 {
            data[100] ^= 0xFF;
        }
        disk.write_at(&data, b * BS).expect("write");
    }
    disk.flush().expect("flush");
    drop(disk);
    read_file(&c)
}

#[test]
fn compact_dedupe_cancelled_at_many_points_keeps_the_view_and_rerun_completes() {
    let root = tempfile::tempdir().expect("tempdir");
    let tpl = root.path().join("template");
    std::fs::create_dir(&tpl).expect("mkdir");
    let files = &["d.vhd", "c.vhd"];
    let content = dedupe_template(&tpl);
    let parent_bytes = std::fs::read(tpl.join("d.vhd")).expect("parent");
    let original_bat = bat_entries(&tpl.join("c.vhd"));
    let allocated_before = original_bat.iter().filter(|&&e| e != u32::MAX).count();
    let original_len = file_len(&tpl.join("c.vhd"));

    let d = fresh_copy(root.path(), &tpl, 1000, files);
    let task = ops::compact_task(d.join("c.vhd"), &opts(false)).expect("starts");
    let rx = task.subscribe();
    let events = rx.iter().filter(|e| !e.is_final).count();
    let report = task.join().expect("compact");
    assert_eq!(
        report.blocks_deduplicated,
        (0..SIZE / BS).filter(|b| b % 5 != 4).count() as u64
    );
    assert!(report.blocks_moved > 0);
    let final_len = file_len(&d.join("c.vhd"));
    eprintln!("dedupe compaction: {original_len} -> {final_len} bytes");

    let mut tally = Tally::default();
    let mut mid_way = 0;
    let mut released_only = 0;
    let scan_events = allocated_before + 1;
    let pts: Vec<usize> = (0..scan_events)
        .step_by(8)
        .chain(scan_events..=events + 2)
        .collect();
    for (i, &k) in pts.iter().enumerate() {
        let d = fresh_copy(root.path(), &tpl, i, files);
        let p = d.join("c.vhd");
        let task = ops::compact_task(&p, &opts(i % 2 == 0)).expect("starts");
        let ending = run_cancelling_after(task, k);
        tally.add(&ending);

        assert_clean(&p);
        assert_bytes_eq(
            &format!("view after cancel at {k}"),
            &read_file(&p),
            &content,
        );
        assert!(
            std::fs::read(d.join("d.vhd")).expect("parent") == parent_bytes,
            "the parent is never written"
        );
        if ending.result == VMTaskResult::Cancelled {
            let now = bat_entries(&p);
            let moved = now
                .iter()
                .zip(&original_bat)
                .filter(|(n, o)| n != o && **n != u32::MAX)
                .count();
            if now != original_bat && moved == 0 {
                released_only += 1;
            } else if moved > 0 && moved < report.blocks_moved as usize {
                mid_way += 1;
            }
            let task = ops::compact_task(&p, &opts(false)).expect("rerun starts");
            task.join().expect("the rerun completes");
            assert_eq!(
                file_len(&p),
                final_len,
                "size after a rerun (cancel at {k})"
            );
            assert_clean(&p);
            assert_bytes_eq("view after the rerun", &read_file(&p), &content);
        } else {
            assert_eq!(file_len(&p), final_len);
        }
        std::fs::remove_dir_all(&d).expect("clean up");
    }
    tally.report("compact (dedupe)", pts.len(), mid_way);
    eprintln!("  cancelled after the release, before any move: {released_only}");
    assert!(
        tally.cancelled >= pts.len() / 2,
        "too few runs were cancelled"
    );
    assert!(mid_way > 0, "no cancel landed part-way through the moves");
}

#[test]
fn compact_dynamic_cancelled_at_many_points_stays_valid_and_rerun_completes() {
    compact_cancelled_at_many_points(false);
}

#[test]
fn compact_differencing_cancelled_at_many_points_stays_valid_and_rerun_completes() {
    compact_cancelled_at_many_points(true);
}

// ---------------------------------------------------------------------------------------
// Convert and merge-to
// ---------------------------------------------------------------------------------------

/// A dynamic disk with data in most blocks, and a child over it with its own data.
fn chain_template(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let base = dir.join("base.vhd");
    Disk::create(
        &base,
        &CreateOptions::new(DiskKind::Dynamic, SIZE).block_size(BS as u32),
    )
    .expect("create");
    let mut rng = Rng::xorshift_star(21);
    let disk = Disk::open_rw(&base).expect("open");
    for b in (0..SIZE / BS).filter(|b| b % 5 != 4) {
        disk.write_at(&rng.bytes((BS / 2) as usize), b * BS + 1024)
            .expect("write");
    }
    disk.flush().expect("flush");
    drop(disk);
    let child = dir.join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size(BS as u32),
    )
    .expect("create child");
    let disk = Disk::open_rw(&child).expect("open");
    for b in (0..SIZE / BS).filter(|b| b % 3 != 0) {
        let data = if b % 7 == 0 {
            vec![0; BS as usize]
        } else {
            rng.bytes(BS as usize)
        };
        disk.write_at(&data[..(BS as usize - 4096)], b * BS + 2048)
            .expect("write");
    }
    disk.flush().expect("flush");
    drop(disk);
    (read_file(&base), read_file(&child))
}

/// Convert (`merge_to` false) or merge-to of the child, cancelled at many points.
fn new_file_cancelled_at_many_points(merge_to: bool, target: Target, step: usize) {
    let root = tempfile::tempdir().expect("tempdir");
    let tpl = root.path().join("template");
    std::fs::create_dir(&tpl).expect("mkdir");
    let (_, content) = chain_template(&tpl);
    let files = ["base.vhd", "child.vhd"];
    let start = |src: &Path, dst: &Path, verify: bool| {
        if merge_to {
            ops::merge_to_task(src, dst, target, &opts(verify)).expect("starts")
        } else {
            ops::convert_task(src, dst, target, &opts(verify)).expect("starts")
        }
    };
    let d = fresh_copy(root.path(), &tpl, 1000, &files);
    let task = start(&d.join("child.vhd"), &d.join("out"), true);
    let events = task.subscribe().iter().filter(|e| !e.is_final).count();
    task.join().expect("uncancelled run");

    let mut tally = Tally::default();
    let pts = points(events, step);
    for (i, &k) in pts.iter().enumerate() {
        let d = fresh_copy(root.path(), &tpl, i, &files);
        let before: Vec<Vec<u8>> = files
            .iter()
            .map(|n| std::fs::read(d.join(n)).expect("read"))
            .collect();
        let dst = d.join("out");
        let task = start(&d.join("child.vhd"), &dst, i % 3 != 1);

        let ending = run_cancelling_after(task, k);
        tally.add(&ending);

        if ending.result == VMTaskResult::Cancelled {
            assert!(
                !dst.exists(),
                "cancelled after {k} events: a destination is left"
            );
            assert_eq!(
                dir_names(&d),
                vec!["base.vhd".to_string(), "child.vhd".to_string()],
                "cancelled after {k} events: something is left behind"
            );
        } else {
            let got = match target {
                Target::Raw => std::fs::read(&dst).expect("read"),
                _ => read_file(&dst),
            };
            assert_bytes_eq("the finished result", &got, &content);
            assert_eq!(dir_names(&d).len(), 3, "{:?}", dir_names(&d));
        }
        for (n, b) in files.iter().zip(&before) {
            assert!(std::fs::read(d.join(n)).expect("read") == *b, "{n} changed");
        }
        std::fs::remove_dir_all(&d).expect("clean up");
    }
    tally.report(
        &format!(
            "{} to {}",
            if merge_to { "merge-to" } else { "convert" },
            target.name()
        ),
        pts.len(),
        tally.by_phase.values().sum(),
    );
    assert!(
        tally.cancelled >= pts.len() / 2,
        "too few runs were cancelled"
    );
    assert!(
        tally.by_phase.contains_key("copy"),
        "no cancel landed while copying"
    );
}

#[test]
fn convert_to_dynamic_cancelled_at_many_points_leaves_no_destination() {
    new_file_cancelled_at_many_points(false, Target::Dynamic, 4);
}

#[test]
fn convert_to_raw_cancelled_at_many_points_leaves_no_destination() {
    new_file_cancelled_at_many_points(false, Target::Raw, 1);
}

#[test]
fn merge_to_dynamic_cancelled_at_many_points_leaves_no_destination() {
    new_file_cancelled_at_many_points(true, Target::Dynamic, 4);
}

#[test]
fn merge_to_fixed_cancelled_at_many_points_leaves_no_destination() {
    new_file_cancelled_at_many_points(true, Target::Fixed, 1);
}

// ---------------------------------------------------------------------------------------
// Merge
// ---------------------------------------------------------------------------------------

#[test]
fn merge_cancelled_at_many_points_keeps_the_child_view_and_rerun_completes() {
    let root = tempfile::tempdir().expect("tempdir");
    let tpl = root.path().join("template");
    std::fs::create_dir(&tpl).expect("mkdir");
    let (parent_before, content) = chain_template(&tpl);
    let files = ["base.vhd", "child.vhd"];
    let d = fresh_copy(root.path(), &tpl, 1000, &files);
    let task = ops::merge_task(d.join("child.vhd"), &opts(false)).expect("starts");
    let events = task.subscribe().iter().filter(|e| !e.is_final).count();
    task.join().expect("uncancelled merge");
    let merged_len = file_len(&d.join("base.vhd"));
    assert_bytes_eq(
        "uncancelled merge",
        &read_file(&d.join("base.vhd")),
        &content,
    );

    let mut tally = Tally::default();
    let mut mid_way = 0;
    let pts = points(events, 3);
    for (i, &k) in pts.iter().enumerate() {
        let d = fresh_copy(root.path(), &tpl, i, &files);
        let (parent, child) = (d.join("base.vhd"), d.join("child.vhd"));
        let task = ops::merge_task(&child, &opts(false)).expect("starts");

        let ending = run_cancelling_after(task, k);
        tally.add(&ending);

        assert_bytes_eq(
            &format!("child view after cancel at {k}"),
            &read_file(&child),
            &content,
        );
        assert_clean(&parent);
        // A merge records the parent's new time in the child last: stopped after writing
        // into the parent, the child's record is older, which check warns about (and
        // the rerun records it).
        assert_clean_but_parent_time(&child);
        if ending.result == VMTaskResult::Cancelled {
            let now = read_file(&parent);
            if now != parent_before && now != content {
                mid_way += 1;
            }
            let task = ops::merge_task(&child, &opts(false)).expect("rerun starts");
            task.join().expect("the rerun completes");
            assert_bytes_eq("child view after the rerun", &read_file(&child), &content);
            assert_clean(&child);
        }
        assert_bytes_eq("parent view after the merge", &read_file(&parent), &content);
        assert_eq!(file_len(&parent), merged_len);
        assert_clean(&parent);
        std::fs::remove_dir_all(&d).expect("clean up");
    }
    tally.report("merge", pts.len(), mid_way);
    assert!(
        tally.cancelled >= pts.len() / 2,
        "too few runs were cancelled"
    );
    assert!(mid_way > 0, "no cancel landed part-way through the writes");
}
