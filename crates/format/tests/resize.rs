//! `ops::resize` as a library: the task cancels only where its crash-safety table says
//! a stop is harmless (the disk reads as before or as resized, checks clean, a rerun
//! completes); refusals come before the first write (the caller's shrink guard included);
//! the report says what happened.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vhdkit_format::check::check;
use vhdkit_format::ops::resize::BatChange;
use vhdkit_format::ops::{self, OpsOptions, ResizeOptions};
use vhdkit_format::{CreateOptions, Disk, DiskKind, Error, OpenOptions, VhdFile};
use vhdkit_task::VMTaskResult;
use vhdkit_testkit::{clear_locator, move_locator_payload, pattern, restore_parent_time};

const MIB: u64 = 1 << 20;

fn content(path: &Path) -> Vec<u8> {
    let disk = Disk::open(path).expect("open");
    let mut buf = vec![0u8; disk.virtual_size() as usize];
    disk.read_at(&mut buf, 0).expect("read");
    buf
}

fn dynamic(path: &Path, size: u64, block: u32) -> Vec<u8> {
    Disk::create(
        path,
        &CreateOptions::new(DiskKind::Dynamic, size).block_size(block),
    )
    .expect("create");
    let d = Disk::open_rw(path).expect("open");
    d.write_at(&pattern(3, MIB as usize), 0).expect("write");
    d.write_at(&pattern(4, 100_000), size - 100_000)
        .expect("write");
    d.flush().expect("flush");
    drop(d);
    content(path)
}

fn to(size: u64) -> ResizeOptions {
    ResizeOptions {
        size: Some(size),
        allow_shrink: true,
        ..ResizeOptions::default()
    }
}

fn assert_clean(path: &Path) {
    let r = check(path, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{:?}", r.files);
}

/// The first `keep` bytes of `before`, zeros to `size`.
fn as_resized(before: &[u8], size: u64) -> Vec<u8> {
    let mut v = before[..before.len().min(size as usize)].to_vec();
    v.resize(size as usize, 0);
    v
}

#[test]
fn resize_cancelled_while_the_bat_moves_reads_as_before_and_a_rerun_completes() {
    let root = tempfile::tempdir().expect("tmp");
    let tpl = root.path().join("tpl.vhd");
    // 64 KiB blocks growing to 64 GiB: a 4 MiB table, written 1 MiB at a time.
    let before = dynamic(&tpl, 8 * MIB, 64 * 1024);
    let new = 64 << 30;
    let (mut cancelled, mut finished) = (0, 0);
    for k in 0..10 {
        let path = root.path().join(format!("run{k}.vhd"));
        std::fs::copy(&tpl, &path).expect("copy");
        let task = ops::resize_task(&path, &to(new), &OpsOptions::default()).expect("task");
        let rx = task.subscribe();
        if k == 0 {
            task.cancel().expect("cancelable");
        }
        let mut seen = 0;
        for e in rx.iter() {
            if e.is_final {
                break;
            }
            seen += 1;
            if seen == k {
                task.cancel().expect("cancelable");
            }
        }
        assert!(task.wait_for_completion(Some(Duration::from_secs(60))));
        match task.result() {
            Some(VMTaskResult::Cancelled) => {
                cancelled += 1;
                assert_eq!(content(&path), before, "cancelled after {k} events");
                assert_clean(&path);
                ops::resize::resize(&path, &to(new), &OpsOptions::default(), &detached())
                    .expect("a rerun completes");
            }
            Some(VMTaskResult::Success) => finished += 1,
            other => panic!("{other:?}: {}", task.error_description()),
        }
        assert_clean(&path);
        let d = Disk::open(&path).expect("open");
        assert_eq!(d.virtual_size(), new);
        let mut head = vec![0u8; before.len()];
        d.read_at(&mut head, 0).expect("read");
        assert_eq!(head, before);
        let mut tail = vec![0u8; MIB as usize];
        d.read_at(&mut tail, new - MIB).expect("read");
        assert!(tail.iter().all(|&b| b == 0));
    }
    eprintln!("resize: {cancelled} cancelled, {finished} finished before the cancel");
    assert!(cancelled >= 2, "cancels landed while the table was written");
}

fn detached() -> vhdkit_task::Progress {
    vhdkit_task::Progress::detached(vhdkit_task::CancelToken::new())
}

#[test]
fn a_shrink_guard_refusal_comes_before_any_write() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("d.vhd");
    dynamic(&path, 16 * MIB, 2 << 20);
    let bytes = std::fs::read(&path).expect("read");
    let asked = Arc::new(AtomicU64::new(0));
    let seen = asked.clone();
    let ro = ResizeOptions {
        shrink_guard: Some(Arc::new(move |disk: &Disk, new: u64| {
            seen.store(new, Ordering::SeqCst);
            assert_eq!(
                disk.virtual_size(),
                16 * MIB,
                "the guard sees the disk as it is"
            );
            Err("a partition ends at 12 MiB".into())
        })),
        ..to(8 * MIB)
    };
    let err = ops::resize_task(&path, &ro, &OpsOptions::default()).expect_err("refused");
    assert!(matches!(err, Error::NotAllowed { .. }), "{err}");
    assert!(err.to_string().contains("partition ends"), "{err}");
    assert_eq!(asked.load(Ordering::SeqCst), 8 * MIB);
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    // A grow does not ask.
    let ro = ResizeOptions {
        shrink_guard: Some(Arc::new(|_: &Disk, _| Err("never".into()))),
        ..to(32 * MIB)
    };
    ops::resize::resize(&path, &ro, &OpsOptions::default(), &detached()).expect("a grow");
}

#[test]
fn a_shrink_without_allow_shrink_is_an_invalid_argument() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("d.vhd");
    dynamic(&path, 16 * MIB, 2 << 20);
    let ro = ResizeOptions {
        allow_shrink: false,
        ..to(8 * MIB)
    };
    let err = ops::resize_task(&path, &ro, &OpsOptions::default()).expect_err("refused");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn report_says_where_the_bat_went_and_what_a_shrink_cut() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("d.vhd");
    let before = dynamic(&path, 8 * MIB, 2 << 20);
    let run = |size| {
        ops::resize::resize(&path, &to(size), &OpsOptions::default(), &detached()).expect("resize")
    };
    let r = run(64 * MIB);
    let f = r.resize.expect("facts");
    assert_eq!(
        (f.size_before, f.size_after, f.bat),
        (8 * MIB, 64 * MIB, BatChange::InPlace)
    );
    let r = run(4 << 30);
    assert_eq!(r.resize.expect("facts").bat, BatChange::Relocated);
    assert_eq!(r.operation.name(), "resize");
    let r = run(8 * MIB);
    let f = r.resize.expect("facts");
    assert_eq!(f.bat, BatChange::None);
    assert_eq!(f.nonzero_bytes_cut, 0, "only zeros past 8 MiB");
    assert_eq!(content(&path), before);
    let r = run(4 * MIB);
    let cut = before[4 * MIB as usize..]
        .iter()
        .filter(|&&b| b != 0)
        .count() as u64;
    assert_eq!(r.resize.expect("facts").nonzero_bytes_cut, cut);
    assert_eq!(r.blocks_released, 1, "the block at 6 MiB");
    assert_eq!(content(&path), as_resized(&before, 4 * MIB));
    assert_clean(&path);
    // Nothing to do: no phase, nothing written.
    let bytes = std::fs::read(&path).expect("read");
    let r = run(4 * MIB);
    assert!(r.phases.is_empty(), "{:?}", r.phases);
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
}

#[test]
fn a_host_drive_or_raw_file_is_not_resized() {
    let dir = tempfile::tempdir().expect("tmp");
    let raw = dir.path().join("d.raw");
    std::fs::write(&raw, vec![0u8; 4 * MIB as usize]).expect("write");
    assert!(ops::resize_task(&raw, &to(8 * MIB), &OpsOptions::default()).is_err());
    assert_eq!(std::fs::metadata(&raw).expect("meta").len(), 4 * MIB);
}

/// A differencing disk over `parents/base.vhd` (64 MiB, 2 MiB blocks: 32 BAT entries in
/// a sector that holds 128) whose only parent locator, the relative one, lies in the
/// unused tail of its BAT's sector — how a writer that packs metadata tightly may place
/// it. The parent is found through that locator alone (its name is not in the child's
/// folder). Returns (base, child, the child's view, the payload's offset).
fn child_with_locator_in_bat_padding(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>, u64) {
    std::fs::create_dir(dir.join("parents")).expect("mkdir");
    let base = dir.join("parents/base.vhd");
    dynamic(&base, 64 * MIB, 2 << 20);
    let child = dir.join("child.vhd");
    Disk::create(&child, &CreateOptions::differencing(&base)).expect("create child");
    let d = Disk::open_rw(&child).expect("open");
    d.write_at(&pattern(5, 300_000), 5 * MIB + 7)
        .expect("write");
    d.flush().expect("flush");
    drop(d);
    let table = VhdFile::open(&child, &OpenOptions::new().no_parents(true))
        .expect("open")
        .header()
        .expect("header")
        .table_offset;
    // 32 entries take 128 bytes of the sector; the payload goes 200 bytes past them.
    let at = table + 128 + 200;
    clear_locator(&child, 0);
    move_locator_payload(&child, 1, at);
    restore_parent_time(&child, &base);
    (base, child.clone(), content(&child), at)
}

#[test]
fn a_grow_moves_the_table_rather_than_write_over_a_locator_in_its_padding() {
    let dir = tempfile::tempdir().expect("tmp");
    let (base, child, before, at) = child_with_locator_in_bat_padding(dir.path());
    let r = check(&child, &OpenOptions::new()).expect("check");
    let overlap: Vec<String> = r
        .problems()
        .filter(|(_, p)| p.structure == "parent locator" && p.field == "data offset")
        .map(|(_, p)| p.to_string())
        .collect();
    assert_eq!(overlap.len(), 1, "check reports the locator: {:?}", r.files);
    assert!(
        overlap[0].contains("warning") && overlap[0].contains("padding"),
        "{overlap:?}"
    );
    let new = 200 * MIB;
    let forced = OpsOptions {
        force: true,
        ..OpsOptions::default()
    };
    ops::resize::resize(&base, &to(new), &forced, &detached()).expect("the parent first");
    restore_parent_time(&child, &base);

    let report = ops::resize::resize(&child, &to(new), &OpsOptions::default(), &detached())
        .expect("resize the child");

    // 100 entries would reach the locator in place: the table moved instead.
    assert_eq!(report.resize.expect("facts").bat, BatChange::Relocated);
    let f = VhdFile::open(&child, &OpenOptions::new().no_parents(true)).expect("open");
    let l = &f.header().expect("header").locators[1];
    assert_eq!(l.data_offset, at, "the locator stays where it was");
    drop(f);
    assert_eq!(
        content(&child),
        as_resized(&before, new),
        "found its parent, reads on"
    );
    assert_clean(&child);
}
