//! Compact of a VHDX file cancelled at every progress event: the file is left valid
//! (its log closed, `check` clean, no unreferenced tail), it reads exactly as before,
//! and a rerun ends at the length of an uncancelled compaction. With a chunk of one
//! block a batch of moves holds four blocks, so the moves take several batches and a
//! cancel lands between them.

use std::path::Path;
use std::time::Duration;

use vhdkit_format::check::check;
use vhdkit_format::ops::{self, OpsOptions};
use vhdkit_format::vhdx::{DiskType, NewVhdx, MIB};
use vhdkit_format::{Disk, OpenOptions};
use vhdkit_task::{CancelToken, Progress, VMTaskResult};
use vhdkit_testkit::tempdir;

#[path = "common/vhdx_build.rs"]
mod vhdx_build;

use vhdx_build::{build, model, Content};

const SIZE: u64 = 24 * MIB;

fn opts() -> OpsOptions {
    OpsOptions {
        chunk_bytes: MIB,
        ..OpsOptions::default()
    }
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

fn read(path: &Path) -> Vec<u8> {
    let disk = Disk::open(path).expect("open");
    let mut buf = vec![0u8; SIZE as usize];
    disk.read_at(&mut buf, 0).expect("read");
    buf
}

/// 12 zero-filled blocks stored first, then 12 data blocks (1 MiB blocks): compact
/// releases the first and moves every data block, in 3 batches.
fn template(path: &Path) -> Vec<u8> {
    let mut n = NewVhdx::new(DiskType::Dynamic, SIZE);
    n.block_size = MIB as u32;
    let mut blocks: Vec<(u64, Content)> = (0..12).map(|b| (2 * b, Content::Full(0))).collect();
    blocks.extend((0..12).map(|b| (2 * b + 1, Content::Full(0x80 | b as u8))));
    build(path, &n, None, &blocks);
    model(SIZE, &n, &[&blocks])
}

#[test]
fn vhdx_compact_cancelled_at_every_event_stays_valid_and_a_rerun_completes() {
    let dir = tempdir();
    let tpl = dir.path().join("template.vhdx");
    let want = template(&tpl);
    let disk = dir.path().join("disk.vhdx");
    std::fs::copy(&tpl, &disk).expect("copy");
    let task = ops::compact_task(&disk, &opts()).expect("starts");
    let events = task.subscribe().iter().filter(|e| !e.is_final).count();
    let report = task.join().expect("compact");
    assert_eq!(report.blocks_moved, 12, "{report:?}");
    let done = len(&disk);
    assert_eq!(done, 4 * MIB + 12 * MIB);
    let (mut cancelled, mut mid_way) = (0, 0);
    for k in 0..=events + 1 {
        std::fs::copy(&tpl, &disk).expect("copy");
        let task = ops::compact_task(&disk, &opts()).expect("starts");
        let rx = task.subscribe();
        if k == 0 {
            task.cancel().expect("cancelable");
        }
        for (seen, e) in rx.iter().enumerate() {
            if e.is_final {
                break;
            }
            if seen + 1 == k {
                task.cancel().expect("cancelable");
            }
        }
        assert!(task.wait_for_completion(Some(Duration::from_secs(60))));
        let result = task.result().expect("complete");
        assert!(
            matches!(result, VMTaskResult::Cancelled | VMTaskResult::Success),
            "cancel after {k} events: {result:?}: {}",
            task.error_description()
        );
        drop(task);
        if result == VMTaskResult::Cancelled {
            cancelled += 1;
            let l = len(&disk);
            if l < len(&tpl) && l > done {
                mid_way += 1;
            }
        }
        let r = check(&disk, &OpenOptions::new()).expect("check");
        assert!(r.is_clean(), "cancel after {k} events: {r:?}");
        assert!(read(&disk) == want, "cancel after {k} events: other bytes");
        let progress = Progress::detached(CancelToken::new());
        let report = ops::compact::compact(&disk, &opts(), &progress).expect("the rerun");
        assert_eq!(
            len(&disk),
            done,
            "cancel after {k} events, rerun: {report:?}"
        );
        assert!(
            read(&disk) == want,
            "cancel after {k} events: the rerun's bytes"
        );
    }
    eprintln!("{events} events: {cancelled} cancelled, {mid_way} with moves half done");
    assert!(
        cancelled > 0 && mid_way > 0,
        "{cancelled} cancelled, {mid_way} mid-way"
    );
}
