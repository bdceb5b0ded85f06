//! Unused ranges (`OpsOptions::unused_ranges`, what file-system-aware compaction and
//! conversion hand the engine): compact releases exactly the allocated blocks whose
//! every byte is unused, and nothing else changes; a dry run writes nothing and predicts
//! the run; a differencing child's released blocks read from the parent; a cancel at
//! any point leaves a clean disk whose used bytes read as before; convert leaves out
//! exactly the wholly unused blocks (dynamic) and pages (raw: holes), and measure
//! predicts the length. The ranges here are made up: the engine knows no file system
//! (tests/fs_aware.rs runs the real ones).

mod common;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vhdkit_format::check::check;
use vhdkit_format::ops::{self, OpsOptions, Target, Unused, UnusedRanges};
use vhdkit_format::{Disk, DiskKind, Error, OpenOptions, VhdFile};
use vhdkit_task::{CancelToken, Phase, Progress, VMTaskResult};

use common::*;

/// Block size of every disk here.
const BS: u64 = 64 * KIB;
/// 64 blocks.
const SIZE: u64 = 4 * MIB;

/// The unused ranges of every test: blocks 2–5 whole; block 10 partly and 11–12 whole;
/// 100 bytes of block 20; the last block whole; and, for raw results, a range that
/// covers whole and partial 4 KiB pages of block 30.
fn unused() -> Vec<Range<u64>> {
    vec![
        2 * BS..6 * BS,
        10 * BS + 512..13 * BS,
        20 * BS..20 * BS + 100,
        30 * BS + 1000..30 * BS + 5 * 4096 + 10,
        SIZE - BS..SIZE,
    ]
}

/// The blocks of [`unused`] whose every byte is unused.
const WHOLLY_UNUSED: [u64; 7] = [2, 3, 4, 5, 11, 12, 63];

fn opts(ranges: Option<Unused>) -> OpsOptions {
    OpsOptions {
        block_size: BS as u32,
        chunk_bytes: 4 * BS,
        unused_ranges: ranges,
        ..OpsOptions::default()
    }
}

fn progress() -> Progress {
    Progress::detached(CancelToken::new())
}

/// A dynamic disk with every block written: random data, except every ninth block
/// (from block 7) all zeros — block 63, inside the unused ranges, among them.
fn full_dynamic(dir: &Path) -> PathBuf {
    let p = create(dir, "d.vhd", DiskKind::Dynamic, SIZE, BS as u32);
    let mut data = pattern(1, SIZE as usize);
    for b in (0..SIZE / BS).filter(|b| b % 9 == 7) {
        data[(b * BS) as usize..((b + 1) * BS) as usize].fill(0);
    }
    write(&p, &data, 0);
    assert_eq!(allocated(&p), SIZE / BS);
    p
}

fn assert_clean(path: &Path) {
    let r = check(path, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{}: {r:?}", path.display());
}

/// Asserts that `after` equals `before` except in the blocks `released`, which read as
/// `expected_there` (zeros, or the parent's bytes).
fn assert_released(before: &[u8], after: &[u8], released: &[u64], expected_there: &[u8]) {
    for b in 0..SIZE / BS {
        let r = (b * BS) as usize..((b + 1) * BS) as usize;
        let want = if released.contains(&b) {
            &expected_there[r.clone()]
        } else {
            &before[r.clone()]
        };
        assert!(after[r.clone()] == *want, "block {b} reads wrong");
    }
}

#[test]
fn compact_releases_exactly_the_blocks_wholly_unused() {
    let dir = tempdir();
    let p = full_dynamic(dir.path());
    let before = read_file(&p);
    let len_before = file_len(&p);

    let r = ops::compact::compact(&p, &opts(Some(Unused::ranges(unused()))), &progress())
        .expect("compact");

    assert_eq!(r.blocks_unused, WHOLLY_UNUSED.len() as u64);
    assert_eq!(r.bytes_unused, WHOLLY_UNUSED.len() as u64 * BS);
    assert_eq!(
        r.unused_released,
        vec![2 * BS..6 * BS, 11 * BS..13 * BS, SIZE - BS..SIZE]
    );
    // Blocks 7, 16, 25, 34, 43, 52, 61 are zero; 63 (zero too) counts as unused.
    assert_eq!(r.blocks_zero, 7);
    assert_eq!(r.blocks_released, r.blocks_zero + r.blocks_unused);
    assert_eq!(allocated(&p), SIZE / BS - r.blocks_released);
    assert!(file_len(&p) < len_before);
    assert_clean(&p);
    assert_released(
        &before,
        &read_file(&p),
        &WHOLLY_UNUSED,
        &vec![0u8; SIZE as usize],
    );
}

#[test]
fn compact_without_unused_ranges_reports_none() {
    let dir = tempdir();
    let p = full_dynamic(dir.path());
    let r = ops::compact::compact(&p, &opts(None), &progress()).expect("compact");
    assert_eq!((r.blocks_unused, r.bytes_unused), (0, 0));
    assert!(r.unused_released.is_empty());
    assert_eq!(r.blocks_released, 7);
}

#[test]
fn compact_dry_run_writes_nothing_and_predicts_the_run() {
    let dir = tempdir();
    let p = full_dynamic(dir.path());
    let bytes = std::fs::read(&p).expect("read");
    let dry = OpsOptions {
        dry_run: true,
        ..opts(Some(Unused::ranges(unused())))
    };

    let predicted = ops::compact::compact(&p, &dry, &progress()).expect("dry run");

    assert!(predicted.dry_run);
    assert!(
        std::fs::read(&p).expect("read") == bytes,
        "the file changed"
    );
    let done = ops::compact::compact(&p, &opts(Some(Unused::ranges(unused()))), &progress())
        .expect("compact");
    assert!(!done.dry_run);
    assert_eq!(
        (
            predicted.blocks_released,
            predicted.blocks_unused,
            predicted.blocks_zero,
            predicted.blocks_moved,
            predicted.bytes_unused,
            &predicted.unused_released,
            predicted.file_size_after,
        ),
        (
            done.blocks_released,
            done.blocks_unused,
            done.blocks_zero,
            done.blocks_moved,
            done.bytes_unused,
            &done.unused_released,
            done.file_size_after,
        )
    );
}

#[test]
fn compact_dry_run_opens_the_disk_read_only() {
    let dir = tempdir();
    let p = full_dynamic(dir.path());
    // Another reader holds a shared lock: a writer would be refused, a dry run is not.
    let reader = Disk::open(&p).expect("open");
    let dry = OpsOptions {
        dry_run: true,
        ..opts(Some(Unused::ranges(unused())))
    };
    let r = ops::compact::compact(&p, &dry, &progress()).expect("dry run beside a reader");
    assert_eq!(r.blocks_unused, WHOLLY_UNUSED.len() as u64);
    drop(reader);
}

#[test]
fn compact_verify_checks_the_blocks_still_in_use() {
    let dir = tempdir();
    let p = full_dynamic(dir.path());
    let o = OpsOptions {
        verify: true,
        ..opts(Some(Unused::ranges(unused())))
    };
    let r = ops::compact::compact(&p, &o, &progress()).expect("compact --verify");
    assert!(r.verified);
    assert!(r.blocks_moved > 0, "the verification covered moved blocks");
}

/// A base with random data and a child that rewrote every block with other data.
fn chain(dir: &Path) -> (PathBuf, PathBuf) {
    let base = create(dir, "base.vhd", DiskKind::Dynamic, SIZE, BS as u32);
    write(&base, &pattern(2, SIZE as usize), 0);
    let child = create_child(dir, "child.vhd", &base, BS as u32);
    write(&child, &pattern(3, SIZE as usize), 0);
    (base, child)
}

#[test]
fn compact_of_a_child_releases_unused_blocks_which_then_read_from_the_parent() {
    let dir = tempdir();
    let (base, child) = chain(dir.path());
    let before = read_file(&child);
    let parent = read_file(&base);
    // The scan runs on the disk compact opened: the child with its whole chain (the
    // virtual view), even without dedupe, which alone needs no parent.
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let want = before.clone();
    let scan = Unused::Scan(Arc::new(move |disk: &Disk, _: &Progress| {
        seen.fetch_add(1, Ordering::Relaxed);
        assert_eq!(disk.layers().len(), 2, "the chain is resolved");
        let mut head = vec![0u8; 4096];
        disk.read_at(&mut head, 0).map_err(std::io::Error::other)?;
        assert!(head == want[..4096], "the scan sees the child's view");
        Ok(UnusedRanges::new(unused()))
    }));
    let o = OpsOptions {
        dedupe: false,
        verify: true,
        ..opts(Some(scan))
    };

    let r = ops::compact_task(&child, &o)
        .expect("starts")
        .join()
        .expect("compact");

    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(r.blocks_unused, WHOLLY_UNUSED.len() as u64);
    assert_eq!(r.blocks_released, WHOLLY_UNUSED.len() as u64);
    assert!(r.phases.first().is_some_and(|(n, _)| n == "volumes"));
    assert_clean(&child);
    assert_released(&before, &read_file(&child), &WHOLLY_UNUSED, &parent);
    assert!(read_file(&base) == parent, "the parent is never written");
}

#[test]
fn a_failing_scan_fails_the_compaction_before_any_write() {
    let dir = tempdir();
    let p = full_dynamic(dir.path());
    let bytes = std::fs::read(&p).expect("read");
    let scan = Unused::Scan(Arc::new(|_: &Disk, _: &Progress| {
        Err(std::io::Error::other(
            "reading ext4 block bitmap at disk offset 4096: EIO",
        ))
    }));
    let e = ops::compact::compact(&p, &opts(Some(scan)), &progress()).expect_err("fails");
    let msg = e.to_string();
    assert!(
        matches!(e, Error::File { .. }) && msg.contains("d.vhd") && msg.contains("offset 4096"),
        "{msg}"
    );
    assert!(std::fs::read(&p).expect("read") == bytes);
}

/// Listens to `task` and cancels it after `k` events of `phase` (at once for 0); its
/// result. Counting within one phase keeps the cancel points stable when the listener
/// subscribes after the task has already sent some events of an earlier phase.
fn cancel_after(task: ops::OpTask, phase: Phase, k: usize) -> VMTaskResult {
    let rx = task.subscribe();
    if k == 0 {
        task.cancel().expect("cancelable");
    }
    let mut seen = 0;
    for e in rx.iter() {
        if e.is_final {
            break;
        }
        if e.phase == phase {
            seen += 1;
            if seen == k {
                task.cancel().expect("cancelable");
            }
        }
    }
    assert!(task.wait_for_completion(Some(Duration::from_secs(60))));
    task.result().expect("complete")
}

/// Cancelled at every event of its run, a compaction with unused ranges leaves a disk
/// that checks clean and whose every block reads as before — or, for a block released
/// as unused, as zeros — and a rerun ends where an uncancelled run does.
#[test]
fn compact_with_unused_ranges_cancelled_anywhere_keeps_every_used_byte() {
    let root = tempdir();
    let tpl = root.path().join("tpl");
    std::fs::create_dir(&tpl).expect("mkdir");
    let p = full_dynamic(&tpl);
    let before = read_file(&p);
    // One block per chunk (a cancellation point each), and room for every event (a
    // listener that lost some would cancel later than it counts).
    let o = || OpsOptions {
        chunk_bytes: BS,
        event_capacity: 1 << 16,
        ..opts(Some(Unused::ranges(unused())))
    };
    let copy = |i: usize| {
        let d = root.path().join(format!("run{i}"));
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::copy(&p, d.join("d.vhd")).expect("copy");
        d.join("d.vhd")
    };
    let full = copy(1000);
    let task = ops::compact_task(&full, &o()).expect("starts");
    let count = |phase: Phase, events: &[Phase]| events.iter().filter(|&&p| p == phase).count();
    let events: Vec<Phase> = task
        .subscribe()
        .iter()
        .filter(|e| !e.is_final)
        .map(|e| e.phase)
        .collect();
    task.join().expect("compact");
    let final_len = file_len(&full);

    // Every scan event, then every move event (one past the last of each: a cancel
    // that comes too late).
    let points: Vec<(Phase, usize)> = (0..=count(Phase::Scan, &events) + 1)
        .map(|k| (Phase::Scan, k))
        .chain((1..=count(Phase::Move, &events) + 1).map(|k| (Phase::Move, k)))
        .collect();
    let (mut cancelled, mut partial) = (0, 0);
    for (i, &(phase, k)) in points.iter().enumerate() {
        let d = copy(i);
        let result = cancel_after(ops::compact_task(&d, &o()).expect("starts"), phase, k);
        assert_clean(&d);
        let after = read_file(&d);
        for b in 0..SIZE / BS {
            let r = (b * BS) as usize..((b + 1) * BS) as usize;
            let zeros = after[r.clone()].iter().all(|&x| x == 0);
            assert!(
                after[r.clone()] == before[r.clone()] || (WHOLLY_UNUSED.contains(&b) && zeros),
                "cancel after {k} {phase:?} events: block {b} reads wrong"
            );
        }
        if result == VMTaskResult::Cancelled {
            cancelled += 1;
            if file_len(&d) != file_len(&p) {
                partial += 1;
            }
        }
        // A rerun completes the compaction.
        ops::compact::compact(&d, &o(), &progress()).expect("rerun");
        assert_eq!(
            file_len(&d),
            final_len,
            "cancel after {k} {phase:?} events, rerun"
        );
        assert_released(
            &before,
            &read_file(&d),
            &WHOLLY_UNUSED,
            &vec![0; SIZE as usize],
        );
    }
    eprintln!(
        "{} cancel points: {cancelled} cancelled, {partial} of them with partial work on disk",
        points.len()
    );
    assert!(cancelled > 2 && partial > 0, "the loop cancelled mid-way");
}

#[test]
fn convert_to_dynamic_leaves_out_wholly_unused_blocks_and_measure_agrees() {
    let dir = tempdir();
    let src = full_dynamic(dir.path());
    let before = read_file(&src);
    for block in [BS, 128 * KIB] {
        let o = OpsOptions {
            block_size: block as u32,
            ..opts(Some(Unused::ranges(unused())))
        };
        let dst = dir.path().join(format!("out-{block}.vhd"));
        let m = ops::measure(&src, Target::Dynamic, &o).expect("measure");

        let r = ops::convert_task(&src, &dst, Target::Dynamic, &o)
            .expect("starts")
            .join()
            .expect("convert");

        let wholly: Vec<u64> = (0..SIZE / block)
            .filter(|&b| UnusedRanges::new(unused()).covers(&(b * block..(b + 1) * block)))
            .collect();
        assert_eq!(r.blocks_unused, wholly.len() as u64, "block size {block}");
        assert_eq!(r.bytes_unused, wholly.len() as u64 * block);
        assert_eq!(r.blocks_copied + r.blocks_zero, r.blocks_total);
        assert_eq!(
            m.required_bytes,
            file_len(&dst),
            "measure, block size {block}"
        );
        assert_eq!(m.allocated_blocks, Some(allocated(&dst)));
        let after = read_file(&dst);
        for b in 0..SIZE / block {
            let r = (b * block) as usize..((b + 1) * block) as usize;
            if wholly.contains(&b) {
                assert!(after[r].iter().all(|&x| x == 0), "block {b} left out");
            } else {
                assert!(after[r.clone()] == before[r], "block {b} copied as it is");
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn convert_to_raw_makes_holes_of_wholly_unused_pages_only() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempdir();
    let src = full_dynamic(dir.path());
    let before = read_file(&src);
    let plain = dir.path().join("plain.raw");
    ops::convert_task(&src, &plain, Target::Raw, &opts(None))
        .expect("starts")
        .join()
        .expect("convert");
    let dst = dir.path().join("out.raw");
    let o = OpsOptions {
        verify: true,
        ..opts(Some(Unused::ranges(unused())))
    };

    let r = ops::convert_task(&src, &dst, Target::Raw, &o)
        .expect("starts")
        .join()
        .expect("convert");

    assert!(r.verified);
    let u = UnusedRanges::new(unused());
    let pages: Vec<u64> = (0..SIZE / 4096)
        .filter(|&p| u.covers(&(p * 4096..(p + 1) * 4096)))
        .collect();
    assert_eq!(r.bytes_unused, pages.len() as u64 * 4096);
    let after = std::fs::read(&dst).expect("read raw");
    assert_eq!(after.len() as u64, SIZE);
    for p in 0..SIZE / 4096 {
        let range = (p * 4096) as usize..((p + 1) * 4096) as usize;
        if pages.contains(&p) {
            assert!(after[range].iter().all(|&x| x == 0), "page {p} left out");
        } else {
            assert!(after[range.clone()] == before[range], "page {p} kept");
        }
    }
    // The pages left out are holes: the file stores that much less than the plain one
    // (whose zero pages are holes already).
    let stored = |p: &Path| std::fs::metadata(p).expect("stat").blocks() * 512;
    let zero_pages_left_out = pages
        .iter()
        .filter(|&&p| before[(p * 4096) as usize..((p + 1) * 4096) as usize] != [0u8; 4096])
        .count() as u64;
    assert_eq!(stored(&plain) - stored(&dst), zero_pages_left_out * 4096);
}

#[test]
fn convert_to_fixed_with_unused_ranges_is_refused() {
    let dir = tempdir();
    let src = full_dynamic(dir.path());
    let dst = dir.path().join("out.vhd");
    let e = ops::convert_task(
        &src,
        &dst,
        Target::Fixed,
        &opts(Some(Unused::ranges(unused()))),
    )
    .expect_err("refused");
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(!dst.exists());
}

#[test]
fn merge_to_dynamic_leaves_out_wholly_unused_blocks() {
    let dir = tempdir();
    let (_, child) = chain(dir.path());
    let before = read_file(&child);
    let dst = dir.path().join("flat.vhd");
    let r = ops::merge_to_task(
        &child,
        &dst,
        Target::Dynamic,
        &opts(Some(Unused::ranges(unused()))),
    )
    .expect("starts")
    .join()
    .expect("merge-to");
    assert_eq!(r.blocks_unused, WHOLLY_UNUSED.len() as u64);
    assert_eq!(allocated(&dst), SIZE / BS - WHOLLY_UNUSED.len() as u64);
    assert_released(
        &before,
        &read_file(&dst),
        &WHOLLY_UNUSED,
        &vec![0; SIZE as usize],
    );
    let _ = VhdFile::open(&dst, &OpenOptions::new()).expect("opens");
}

/// Free or zero: a block whose every byte is either unused or zero — free space beside
/// a file system's zero-filled metadata, say — holds nothing worth keeping. The disk:
/// random data everywhere but block 3 (zeros in its first half, the used one), block 5
/// (zeros in its second half, the used one) and block 8 (zeros in its used first half
/// but for one byte). Each of those blocks is half unused; its unused half is random.
fn free_or_zero_disk(dir: &Path) -> (PathBuf, Vec<Range<u64>>) {
    let p = create(dir, "fz.vhd", DiskKind::Dynamic, SIZE, BS as u32);
    let mut data = pattern(4, SIZE as usize);
    let half = (BS / 2) as usize;
    let at = |b: u64| (b * BS) as usize;
    data[at(3)..at(3) + half].fill(0);
    data[at(5) + half..at(6)].fill(0);
    data[at(8)..at(8) + half].fill(0);
    data[at(8) + 700] = 1;
    write(&p, &data, 0);
    let unused = vec![
        3 * BS + BS / 2..4 * BS,
        5 * BS..5 * BS + BS / 2,
        8 * BS + BS / 2..9 * BS,
    ];
    (p, unused)
}

#[test]
fn compact_releases_blocks_whose_every_byte_is_free_or_zero() {
    let dir = tempdir();
    let (p, unused) = free_or_zero_disk(dir.path());
    let before = read_file(&p);

    let r = ops::compact::compact(&p, &opts(Some(Unused::ranges(unused))), &progress())
        .expect("compact");

    assert_eq!(
        r.blocks_unused, 2,
        "blocks 3 and 5; block 8 holds a used byte"
    );
    assert_eq!(r.blocks_released, 2);
    // What was released as unused: the free halves of blocks 3 and 5.
    assert_eq!(r.bytes_unused, BS);
    assert_eq!(
        r.unused_released,
        vec![3 * BS + BS / 2..4 * BS, 5 * BS..5 * BS + BS / 2]
    );
    assert_eq!(allocated(&p), SIZE / BS - 2);
    assert_clean(&p);
    assert_released(&before, &read_file(&p), &[3, 5], &vec![0u8; SIZE as usize]);
}

#[test]
fn convert_to_dynamic_leaves_out_blocks_free_or_zero_and_measure_agrees() {
    let dir = tempdir();
    let (src, unused) = free_or_zero_disk(dir.path());
    let before = read_file(&src);
    let o = opts(Some(Unused::ranges(unused)));
    let dst = dir.path().join("out.vhd");
    let m = ops::measure(&src, Target::Dynamic, &o).expect("measure");

    ops::convert_task(&src, &dst, Target::Dynamic, &o)
        .expect("starts")
        .join()
        .expect("convert");

    assert_eq!(allocated(&dst), SIZE / BS - 2);
    assert_eq!(m.allocated_blocks, Some(SIZE / BS - 2));
    assert_eq!(m.required_bytes, file_len(&dst));
    assert_released(
        &before,
        &read_file(&dst),
        &[3, 5],
        &vec![0u8; SIZE as usize],
    );
}

#[cfg(unix)]
#[test]
fn convert_to_raw_makes_holes_of_pages_free_or_zero() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempdir();
    let p = create(dir.path(), "pages.vhd", DiskKind::Dynamic, SIZE, BS as u32);
    // Block 0: page 0 zero where used (its first 1 KiB) and random where unused; page 1
    // the same but with a non-zero used byte; page 2 random where used.
    let mut data = pattern(5, BS as usize);
    data[..1024].fill(0);
    data[4096..4096 + 1024].fill(0);
    data[4096 + 10] = 7;
    write(&p, &data, 0);
    let unused: Vec<Range<u64>> = (0..3)
        .map(|page| page * 4096 + 1024..(page + 1) * 4096)
        .collect();
    let dst = dir.path().join("out.raw");

    ops::convert_task(&p, &dst, Target::Raw, &opts(Some(Unused::ranges(unused))))
        .expect("starts")
        .join()
        .expect("convert");

    let after = std::fs::read(&dst).expect("read raw");
    assert!(
        after[..4096].iter().all(|&x| x == 0),
        "page 0 is free or zero"
    );
    assert!(
        after[4096..BS as usize] == data[4096..],
        "the other pages are kept"
    );
    // Page 0 is a hole: only the other pages of the block are stored.
    let stored = std::fs::metadata(&dst).expect("stat").blocks() * 512;
    assert_eq!(stored, BS - 4096);
}

#[test]
fn compact_of_a_child_releases_blocks_free_or_as_the_parent_reads() {
    let dir = tempdir();
    let (base, child) = chain(dir.path());
    // Block 4 of the child: its first half rewritten with the parent's bytes, its
    // second half (other data) unused.
    let parent = read_file(&base);
    let half = (BS / 2) as usize;
    write(
        &child,
        &parent[(4 * BS) as usize..(4 * BS) as usize + half],
        4 * BS,
    );
    let before = read_file(&child);
    #[allow(clippy::single_range_in_vec_init)] // one range, as meant
    let unused = vec![4 * BS + BS / 2..5 * BS];

    let kept = dir.path().join("kept.vhd");
    std::fs::copy(&child, &kept).expect("copy");
    // Without dedupe nothing is compared with the parent: the block stays.
    let o = OpsOptions {
        dedupe: false,
        ..opts(Some(Unused::ranges(unused.clone())))
    };
    let r = ops::compact::compact(&kept, &o, &progress()).expect("compact without dedupe");
    assert_eq!(r.blocks_released, 0);
    assert_eq!(allocated(&kept), SIZE / BS);

    let r = ops::compact::compact(&child, &opts(Some(Unused::ranges(unused))), &progress())
        .expect("compact");

    assert_eq!(r.blocks_unused, 1);
    assert_eq!(r.blocks_deduplicated, 0);
    assert_eq!(allocated(&child), SIZE / BS - 1);
    assert_clean(&child);
    assert_released(&before, &read_file(&child), &[4], &parent);
}
