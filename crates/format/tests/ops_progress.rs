//! The task percentage moves through every phase of every operation, weighted by the
//! work each phase does: it never sits at 99 while most of the work remains, never goes
//! down, and is 100 only in the final event of a success.

use std::path::Path;

use vhdkit_format::ops::{self, OpTask, OpsOptions, Report, Target};
use vhdkit_format::{CreateOptions, Disk, DiskKind};
use vhdkit_task::{Phase, Progress, ProgressEvent, TaskBuilder};

const BS: u64 = 512 * 1024;

fn opts(verify: bool) -> OpsOptions {
    OpsOptions {
        verify,
        chunk_bytes: BS,
        sync_bytes: 0,
        event_capacity: 100_000,
        ..OpsOptions::default()
    }
}

/// Every event of an operation run as a task that starts only once subscribed to (a
/// task subscribed to after it started sees the latest state, not every event).
fn events(
    opts: &OpsOptions,
    work: impl FnOnce(&Progress) -> vhdkit_format::Result<Report> + Send + 'static,
) -> Vec<ProgressEvent> {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let task = OpTask::from(
        TaskBuilder::new("measured")
            .cancelable(true)
            .event_capacity(opts.event_capacity)
            .spawn(move |p| {
                wait.recv().expect("started");
                work(p)
            }),
    );
    let sub = task.subscribe();
    go.send(()).expect("start");
    let all: Vec<ProgressEvent> = sub.iter().collect();
    task.join().expect("the operation succeeds");
    assert!(all.iter().all(|e| e.lost == 0), "no event was lost");
    all
}

/// The percentage goes up through each of `phases` in turn, and the last event before
/// the final one is not stuck near the end while a phase still had work to do.
#[track_caller]
fn assert_moves_through(what: &str, ev: &[ProgressEvent], phases: &[Phase]) {
    let (last, body) = ev.split_last().expect("events");
    assert!(last.is_final && last.task_percent == 100, "{what}: final");
    let mut prev = 0;
    for e in body {
        assert!(e.task_percent >= prev, "{what}: percent went down");
        assert!(e.task_percent < 100, "{what}: 100 before the end");
        prev = e.task_percent;
    }
    for (i, &p) in phases.iter().enumerate() {
        let inside: Vec<u32> = body
            .iter()
            .filter(|e| e.phase == p)
            .map(|e| e.task_percent)
            .collect();
        let (Some(&first), Some(&end)) = (inside.first(), inside.last()) else {
            panic!("{what}: no event in phase {p:?}");
        };
        assert!(
            end > first,
            "{what}: {p:?} did not move the percentage ({first}..{end})"
        );
        if i + 1 < phases.len() {
            assert!(
                end < 95,
                "{what}: {p:?} ended at {end}% with later phases to run"
            );
        }
    }
}

fn dynamic_with_blocks(path: &Path, blocks: u64) {
    Disk::create(
        path,
        &CreateOptions::new(DiskKind::Dynamic, blocks * BS).block_size(BS as u32),
    )
    .expect("create");
    let d = Disk::open_rw(path).expect("open");
    for b in 0..blocks {
        d.write_at(&vec![b as u8 | 1; BS as usize], b * BS)
            .expect("write");
    }
    d.flush().expect("flush");
}

#[test]
fn compact_percent_moves_through_scan_move_and_verify() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("c.vhd");
    dynamic_with_blocks(&p, 32);
    // The first half zeroed: released, and the second half moves into the holes.
    let d = Disk::open_rw(&p).expect("open");
    d.write_at(&vec![0u8; (16 * BS) as usize], 0).expect("zero");
    d.flush().expect("flush");
    drop(d);
    let o = opts(true);
    let ev = events(&o.clone(), move |pr| ops::compact::compact(&p, &o, pr));
    assert_moves_through("compact", &ev, &[Phase::Scan, Phase::Move, Phase::Verify]);
}

#[test]
fn convert_percent_moves_through_copy_and_verify() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("s.vhd");
    dynamic_with_blocks(&src, 16);
    let o = opts(true);
    let dst = dir.path().join("d.vhd");
    let ev = events(&o.clone(), move |pr| {
        let disk = Disk::open(&src)?;
        ops::convert::convert_disk(&disk, &dst, Target::Fixed, &o, pr, ops::Operation::Convert)
    });
    assert_moves_through("convert", &ev, &[Phase::Copy, Phase::Verify]);
}

#[test]
fn merge_percent_moves_through_the_copy() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = dir.path().join("b.vhd");
    dynamic_with_blocks(&base, 8);
    let child = dir.path().join("c.vhd");
    Disk::create(&child, &CreateOptions::differencing(&base)).expect("child");
    let d = Disk::open_rw(&child).expect("open");
    d.write_at(&vec![7u8; (8 * BS) as usize], 0).expect("write");
    d.flush().expect("flush");
    drop(d);
    let o = opts(true);
    let (c, dst) = (child.clone(), dir.path().join("f.vhd"));
    let to = events(&o.clone(), move |pr| {
        let disk = Disk::open(&c)?;
        ops::convert::convert_disk(
            &disk,
            &dst,
            Target::Dynamic,
            &o,
            pr,
            ops::Operation::MergeTo,
        )
    });
    let o = opts(false);
    let ev = events(&o.clone(), move |pr| ops::merge::merge(&child, &o, pr));
    assert_moves_through("merge", &ev, &[Phase::Copy]);
    assert_moves_through("merge-to", &to, &[Phase::Copy, Phase::Verify]);
}
