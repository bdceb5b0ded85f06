//! Fault injection: every write and every sync of each operation fails in turn (ENOSPC
//! for writes, EIO for syncs), and each time the operation reports the right HRESULT and
//! leaves exactly what it promises: no destination for new files, an unchanged view for
//! in-place operations, and a rerun that completes.

mod common;

use std::path::{Path, PathBuf};

use vhdkit_format::image::backend::faults::{arm, FaultOp, FaultPlan};
use vhdkit_format::ops::{self, OpsOptions, Target};
use vhdkit_format::spec::Severity;
use vhdkit_format::{CreateOptions, Disk, DiskKind, Error};
use vhdkit_task::{CancelToken, HResult, Progress};

use common::{pattern, read_file, restore_parent_time, MIB};
use vhdx_build::{build, Content};

#[path = "common/vhdx_build.rs"]
mod vhdx_build;

const ENOSPC: i32 = 28;
const EIO: i32 = 5;

/// A dynamic base with data, a differencing child with data, and zeroed blocks in both.
fn make_chain(dir: &Path) -> (PathBuf, PathBuf) {
    let base = dir.join("base.vhd");
    Disk::create(
        &base,
        &CreateOptions::new(DiskKind::Dynamic, 8 * MIB).block_size(512 * 1024),
    )
    .expect("create base");
    {
        let d = Disk::open_rw(&base).expect("open base");
        d.write_at(&pattern(1, 3 * MIB as usize), 0).expect("w");
        d.write_at(&vec![0u8; MIB as usize], MIB).expect("zeros");
        d.write_at(&pattern(2, 5000), 6 * MIB + 77).expect("w");
        d.flush().expect("flush");
    }
    let child = dir.join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size(512 * 1024),
    )
    .expect("create child");
    {
        let d = Disk::open_rw(&child).expect("open child");
        d.write_at(&pattern(3, 700_000), 2 * MIB + 1234).expect("w");
        d.write_at(&vec![0u8; 4096], 5 * MIB)
            .expect("zeros over parent");
        d.flush().expect("flush");
    }
    (base, child)
}

fn progress() -> Progress {
    Progress::detached(CancelToken::new())
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".vhdkit-tmp"))
        .collect()
}

/// Runs `op` once counting writes and syncs under a fresh directory.
fn count_faults(setup: &dyn Fn(&Path), op: &dyn Fn(&Path) -> Result<(), Error>) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tmp");
    setup(dir.path());
    let guard = arm(FaultPlan {
        dir: dir.path().to_owned(),
        op: FaultOp::Write,
        nth: 0,
        errno: ENOSPC,
    });
    op(dir.path()).expect("clean run succeeds");
    guard.counts()
}

/// For every write (ENOSPC) and every sync (EIO) of `op`, fails it and calls `verify`.
/// Returns the number of fault points exercised.
fn every_fault(
    setup: &dyn Fn(&Path),
    op: &dyn Fn(&Path) -> Result<(), Error>,
    verify: &dyn Fn(&Path, &Error),
) -> u64 {
    let (writes, syncs) = count_faults(setup, op);
    assert!(writes + syncs > 0, "the operation writes or syncs");
    let mut points = 0;
    for (fault, total, errno, hresult) in [
        (FaultOp::Write, writes, ENOSPC, HResult::E_DISK_FULL),
        (FaultOp::Sync, syncs, EIO, HResult::VM_E_HD_IMAGE_ACCESS),
    ] {
        for nth in 1..=total {
            let dir = tempfile::tempdir().expect("tmp");
            setup(dir.path());
            let result = {
                let _guard = arm(FaultPlan {
                    dir: dir.path().to_owned(),
                    op: fault,
                    nth,
                    errno,
                });
                op(dir.path())
            };
            let err = result.expect_err("an injected fault makes the operation fail");
            assert_eq!(err.hresult(), hresult, "{fault:?} #{nth}: {err}");
            verify(dir.path(), &err);
            points += 1;
        }
    }
    points
}

#[test]
fn convert_with_any_failed_write_or_sync_leaves_no_destination() {
    for target in [Target::Dynamic, Target::Fixed, Target::Raw] {
        let setup = |d: &Path| {
            make_chain(d);
        };
        let op = |d: &Path| -> Result<(), Error> {
            let disk = Disk::open(d.join("child.vhd"))?;
            // Small chunks and background syncs every 1 MiB: the flusher thread's syncs
            // are fault points too.
            let opts = OpsOptions {
                verify: true,
                block_size: 512 * 1024,
                chunk_bytes: 1 << 20,
                sync_bytes: 1 << 20,
                ..OpsOptions::default()
            };
            ops::convert::convert_disk(
                &disk,
                d.join("out"),
                target,
                &opts,
                &progress(),
                vhdkit_format::ops::Operation::Convert,
            )
            .map(|_| ())
        };
        let points = every_fault(&setup, &op, &|d, _| {
            assert!(!d.join("out").exists(), "no destination after a failure");
            assert!(
                leftovers(d).is_empty(),
                "no temporary file left: {:?}",
                leftovers(d)
            );
        });
        eprintln!("convert to {target:?}: {points} fault points");
    }
}

#[test]
fn create_with_any_failed_write_or_sync_leaves_no_file() {
    for kind in [DiskKind::Fixed, DiskKind::Dynamic] {
        let op = |d: &Path| -> Result<(), Error> {
            Disk::create(d.join("new.vhd"), &CreateOptions::new(kind, 8 * MIB))
        };
        let points = every_fault(&|_| {}, &op, &|d, _| {
            assert!(!d.join("new.vhd").exists());
            assert!(leftovers(d).is_empty());
        });
        eprintln!("create {kind}: {points} fault points");
    }
}

#[test]
fn compact_with_any_failed_write_or_sync_keeps_content_and_reruns() {
    for which in ["base.vhd", "child.vhd"] {
        let setup = |d: &Path| {
            make_chain(d);
        };
        let before = {
            let dir = tempfile::tempdir().expect("tmp");
            make_chain(dir.path());
            read_file(&dir.path().join(which))
        };
        let op = |d: &Path| -> Result<(), Error> {
            let opts = OpsOptions {
                chunk_bytes: 512 * 1024,
                // The child's deduplication has its own test below.
                dedupe: false,
                ..OpsOptions::default()
            };
            ops::compact::compact(d.join(which), &opts, &progress()).map(|_| ())
        };
        if which == "child.vhd" {
            // Without deduplication the child has nothing to release (its blocks all
            // hold data): a compaction with nothing to do writes nothing at all.
            assert_eq!(count_faults(&setup, &op), (0, 0));
            continue;
        }
        let points = every_fault(&setup, &op, &|d, _| {
            let path = d.join(which);
            assert_eq!(
                read_file(&path),
                before,
                "content unchanged after a failed compact"
            );
            op(d).expect("a rerun completes");
            assert_eq!(
                read_file(&path),
                before,
                "content unchanged after the rerun"
            );
            let report = vhdkit_format::check::check(&path, &Default::default()).expect("check");
            assert!(report.is_clean(), "{:?}", report.files);
        });
        eprintln!("compact {which}: {points} fault points");
    }
}

/// A dynamic base with data in every block, and a child holding copies of the parent's
/// data in blocks 0, 1, 2 and 4 (written back unchanged, as a guest rewriting its files
/// does), a one-byte change in block 3, and the same bytes as a hole of the parent
/// (zeros) in block 6: blocks 0, 1, 2, 4 and 6 are deduplicated, block 3 stays.
fn make_copying_child(dir: &Path) {
    let base = dir.join("base.vhd");
    Disk::create(
        &base,
        &CreateOptions::new(DiskKind::Dynamic, 8 * MIB).block_size(512 * 1024),
    )
    .expect("create base");
    {
        let d = Disk::open_rw(&base).expect("open base");
        d.write_at(&pattern(11, 3 * MIB as usize), 0).expect("w");
        d.flush().expect("flush");
    }
    let parent = read_file(&base);
    let child = dir.join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size(512 * 1024),
    )
    .expect("create child");
    let d = Disk::open_rw(&child).expect("open child");
    let half = (MIB / 2) as usize;
    for b in [0usize, 1, 2, 4, 6] {
        d.write_at(&parent[b * half..(b + 1) * half], (b * half) as u64)
            .expect("copy");
    }
    let mut changed = parent[3 * half..4 * half].to_vec();
    changed[1000] ^= 0x55;
    d.write_at(&changed, (3 * half) as u64).expect("w");
    d.flush().expect("flush");
}

#[test]
fn dedupe_compact_with_any_failed_write_or_sync_keeps_the_view_and_reruns() {
    let setup = |d: &Path| make_copying_child(d);
    let (view, size_before) = {
        let dir = tempfile::tempdir().expect("tmp");
        make_copying_child(dir.path());
        let p = dir.path().join("child.vhd");
        (read_file(&p), std::fs::metadata(&p).expect("len").len())
    };
    let op = |d: &Path| -> Result<(), Error> {
        let opts = OpsOptions {
            chunk_bytes: 512 * 1024,
            verify: true,
            ..OpsOptions::default()
        };
        let r = ops::compact::compact(d.join("child.vhd"), &opts, &progress())?;
        assert_eq!(
            (r.blocks_deduplicated, r.blocks_zero, r.blocks_released),
            (5, 0, 5)
        );
        Ok(())
    };
    let rerun = |d: &Path| -> Result<(), Error> {
        let opts = OpsOptions {
            chunk_bytes: 512 * 1024,
            verify: true,
            ..OpsOptions::default()
        };
        ops::compact::compact(d.join("child.vhd"), &opts, &progress()).map(|_| ())
    };
    let points = every_fault(&setup, &op, &|d, _| {
        let path = d.join("child.vhd");
        assert_eq!(
            read_file(&path),
            view,
            "the child's view unchanged after a failure"
        );
        rerun(d).expect("a rerun completes");
        assert_eq!(
            read_file(&path),
            view,
            "the child's view unchanged after the rerun"
        );
        let report = vhdkit_format::check::check(&path, &Default::default()).expect("check");
        assert!(report.is_clean(), "{:?}", report.files);
        let top =
            vhdkit_format::VhdFile::open(&path, &vhdkit_format::OpenOptions::new()).expect("open");
        assert_eq!(top.allocated_blocks(), 1, "only the changed block stays");
        assert!(std::fs::metadata(&path).expect("len").len() < size_before);
    });
    eprintln!("dedupe compact child.vhd: {points} fault points");
}

#[test]
fn discard_with_any_failed_write_or_sync_reads_old_data_or_zeros() {
    // base.vhd's blocks 2..6 (512 KiB each) hold data; discard 1.5 MiB..6.5 MiB:
    // blocks 3..13 whole, of which 3, 4, 5 and 12 are allocated (12 last in the
    // file: the discard shortens it too).
    let before = {
        let dir = tempfile::tempdir().expect("tmp");
        make_chain(dir.path());
        read_file(&dir.path().join("base.vhd"))
    };
    let (at, len) = (3 * MIB / 2, 5 * MIB);
    let discard = |d: &Path| -> Result<u64, Error> {
        let disk = Disk::open_rw(d.join("base.vhd"))?;
        disk.discard(at, len)
    };
    let op = |d: &Path| -> Result<(), Error> {
        assert_eq!(discard(d)?, 4 * MIB / 2);
        Ok(())
    };
    let points = every_fault(
        &|d| {
            make_chain(d);
        },
        &op,
        &|d, _| {
            let path = d.join("base.vhd");
            let now = read_file(&path);
            let block = (MIB / 2) as usize;
            for (b, (got, old)) in now.chunks(block).zip(before.chunks(block)).enumerate() {
                let inside = (3..13).contains(&b);
                assert!(
                    got == old || (inside && got.iter().all(|&x| x == 0)),
                    "block {b} reads neither as before nor (discarded) as zeros"
                );
            }
            let report = vhdkit_format::check::check(&path, &Default::default()).expect("check");
            assert!(report.is_clean(), "{:?}", report.files);
            discard(d).expect("a rerun completes");
            let mut want = before.clone();
            want[3 * block..13 * block].fill(0);
            assert_eq!(read_file(&path), want, "after the rerun");
            let report = vhdkit_format::check::check(&path, &Default::default()).expect("check");
            assert!(report.is_clean(), "{:?}", report.files);
        },
    );
    eprintln!("discard: {points} fault points");
}

/// A dynamic VHDX of 8 MiB in 1 MiB blocks, blocks 1 to 6 stored (block `b` full of
/// `b`).
fn make_vhdx(dir: &Path) {
    use vhdkit_format::vhdx::{DiskType, NewVhdx};
    let mut n = NewVhdx::new(DiskType::Dynamic, 8 * MIB);
    n.block_size = MIB as u32;
    let blocks: Vec<(u64, Content)> = (1..7).map(|b| (b, Content::Full(b as u8))).collect();
    build(&dir.join("d.vhdx"), &n, None, &blocks);
}

#[test]
fn vhdx_discard_with_any_failed_write_or_sync_reads_old_data_or_zeros() {
    // Discard 1.5 MiB..6 MiB: blocks 2 to 5 whole (released), 1 and 6 partly (kept).
    let before = {
        let dir = tempfile::tempdir().expect("tmp");
        make_vhdx(dir.path());
        read_file(&dir.path().join("d.vhdx"))
    };
    let discard = |d: &Path| -> Result<u64, Error> {
        let disk = Disk::open_rw(d.join("d.vhdx"))?;
        let n = disk.discard(3 * MIB / 2, 9 * MIB / 2)?;
        disk.flush()?;
        Ok(n)
    };
    let op = |d: &Path| -> Result<(), Error> {
        assert_eq!(discard(d)?, 4 * MIB);
        Ok(())
    };
    let block = MIB as usize;
    let points = every_fault(&make_vhdx, &op, &|d, _| {
        let path = d.join("d.vhdx");
        let now = read_file(&path);
        for (b, (got, old)) in now.chunks(block).zip(before.chunks(block)).enumerate() {
            let inside = (2..6).contains(&b);
            assert!(
                got == old || (inside && got.iter().all(|&x| x == 0)),
                "block {b} reads neither as before nor (discarded) as zeros"
            );
        }
        discard(d).expect("a rerun completes");
        let mut want = before.clone();
        want[2 * block..6 * block].fill(0);
        assert_eq!(read_file(&path), want, "after the rerun");
        let report = vhdkit_format::check::check(&path, &Default::default()).expect("check");
        assert!(report.is_clean(), "{:?}", report.files);
    });
    eprintln!("vhdx discard: {points} fault points");
}

#[test]
fn merge_with_any_failed_write_or_sync_keeps_the_child_view_and_reruns() {
    let setup = |d: &Path| {
        make_chain(d);
    };
    let view = {
        let dir = tempfile::tempdir().expect("tmp");
        make_chain(dir.path());
        read_file(&dir.path().join("child.vhd"))
    };
    let op = |d: &Path| -> Result<(), Error> {
        let opts = OpsOptions {
            chunk_bytes: 512 * 1024,
            ..OpsOptions::default()
        };
        ops::merge::merge(d.join("child.vhd"), &opts, &progress()).map(|_| ())
    };
    let points = every_fault(&setup, &op, &|d, _| {
        assert_eq!(
            read_file(&d.join("child.vhd")),
            view,
            "the child's view never changes"
        );
        op(d).expect("a rerun completes");
        assert_eq!(read_file(&d.join("child.vhd")), view);
        assert_eq!(
            read_file(&d.join("base.vhd")),
            view,
            "the parent holds the merged view"
        );
    });
    eprintln!("merge: {points} fault points");
}

#[test]
fn write_with_any_failed_write_or_sync_reads_old_or_new_data() {
    for which in ["base.vhd", "child.vhd"] {
        let before = {
            let dir = tempfile::tempdir().expect("tmp");
            make_chain(dir.path());
            read_file(&dir.path().join(which))
        };
        let data = pattern(9, 1_500_000);
        let at = 3 * MIB + 100;
        let op = |d: &Path| -> Result<(), Error> {
            let disk = Disk::open_rw(d.join(which))?;
            disk.write_at(&data, at)?;
            disk.flush()
        };
        let points = every_fault(
            &|d| {
                make_chain(d);
            },
            &op,
            &|d, _| {
                let now = read_file(&d.join(which));
                let r = at as usize..at as usize + data.len();
                assert_eq!(
                    now[..r.start],
                    before[..r.start],
                    "outside the range: unchanged"
                );
                assert_eq!(
                    now[r.end..],
                    before[r.end..],
                    "outside the range: unchanged"
                );
                // Inside, each sector holds the old or the new bytes.
                for s in (r.start / 512)..r.end.div_ceil(512) {
                    let span = (s * 512).max(r.start)..((s + 1) * 512).min(r.end);
                    let got = &now[span.clone()];
                    assert!(
                        got == &before[span.clone()]
                            || got == &data[span.start - r.start..span.end - r.start],
                        "sector {s} is neither old nor new"
                    );
                }
            },
        );
        eprintln!("write into {which}: {points} fault points");
    }
}

/// A three-level chain base ← mid ← top, each level with data of its own.
fn make_three_levels(dir: &Path) {
    let (_, child) = make_chain(dir);
    std::fs::rename(&child, dir.join("mid.vhd")).expect("rename");
    // Relinking is not needed: mid's locators name base.vhd, which stays.
    let top = dir.join("top.vhd");
    Disk::create(
        &top,
        &CreateOptions::differencing(dir.join("mid.vhd")).block_size(256 * 1024),
    )
    .expect("create top");
    let d = Disk::open_rw(&top).expect("open top");
    d.write_at(&pattern(5, 300_000), 4 * MIB - 777).expect("w");
    d.flush().expect("flush");
}

#[test]
fn merge_into_with_any_failed_write_or_sync_keeps_the_child_view_and_reruns() {
    let view = {
        let dir = tempfile::tempdir().expect("tmp");
        make_three_levels(dir.path());
        read_file(&dir.path().join("top.vhd"))
    };
    let op = |d: &Path| -> Result<(), Error> {
        let opts = OpsOptions {
            chunk_bytes: 1 << 20,
            ..OpsOptions::default()
        };
        let anc = ops::merge_into::Ancestor::Path(d.join("base.vhd"));
        ops::merge_into::merge_into(d.join("top.vhd"), &anc, &opts, &progress()).map(|_| ())
    };
    let points = every_fault(&|d| make_three_levels(d), &op, &|d, _| {
        assert_eq!(
            read_file(&d.join("top.vhd")),
            view,
            "the child's view never changes"
        );
        op(d).expect("a rerun completes");
        assert_eq!(read_file(&d.join("top.vhd")), view);
        assert_eq!(
            read_file(&d.join("base.vhd")),
            view,
            "the ancestor holds the view"
        );
        let r = vhdkit_format::check::check(d.join("top.vhd"), &Default::default()).expect("check");
        assert!(r.is_clean(), "{:?}", r.files);
    });
    eprintln!("merge --into: {points} fault points");
}

#[test]
fn set_parent_with_any_failed_write_or_sync_names_a_parent_that_works() {
    // The parent is copied elsewhere; the child is relinked to the copy. Whatever fails,
    // the child names the original or the copy, and reads the same.
    let setup = |d: &Path| {
        make_chain(d);
        std::fs::create_dir(d.join("moved")).expect("mkdir");
        std::fs::copy(d.join("base.vhd"), d.join("moved/base.vhd")).expect("copy");
    };
    let view = {
        let dir = tempfile::tempdir().expect("tmp");
        setup(dir.path());
        read_file(&dir.path().join("child.vhd"))
    };
    let op = |d: &Path| -> Result<(), Error> {
        ops::relink::set_parent(d.join("child.vhd"), d.join("moved/base.vhd"), false).map(|_| ())
    };
    let points = every_fault(&setup, &op, &|d, _| {
        assert_eq!(read_file(&d.join("child.vhd")), view, "a parent that works");
        op(d).expect("a rerun completes");
        let disk = Disk::open(d.join("child.vhd")).expect("open");
        assert!(disk.layers()[1].path().ends_with("moved/base.vhd"));
        assert_eq!(read_file(&d.join("child.vhd")), view);
        let r =
            vhdkit_format::check::check(d.join("child.vhd"), &Default::default()).expect("check");
        assert!(r.is_clean(), "{:?}", r.files);
    });
    eprintln!("set-parent: {points} fault points");
}

/// The resize cases of the fault tests: how to build the disk, and the resize.
struct ResizeCase {
    name: &'static str,
    kind: DiskKind,
    old: u64,
    new: u64,
    /// Disturbances other writers leave, which the resize must clean up on the way: the
    /// BAT padding filled with zeros (disk2vhd) and bytes stored past the end of a partly
    /// covered last block.
    disturb: bool,
}

const RESIZE_BLOCK: u64 = 512 * 1024;

/// A disk of `case.old` bytes with data in its first and last MiB and a differencing
/// child (for `DiskKind::Differencing`, whose parent is grown to `case.new` first).
/// Returns the path resized.
fn make_resize_disk(dir: &Path, case: &ResizeCase) -> PathBuf {
    let kind = match case.kind {
        DiskKind::Differencing => DiskKind::Dynamic,
        k => k,
    };
    let base = dir.join("base.vhd");
    Disk::create(
        &base,
        &CreateOptions::new(kind, case.old).block_size(RESIZE_BLOCK as u32),
    )
    .expect("create");
    {
        let d = Disk::open_rw(&base).expect("open");
        d.write_at(&pattern(11, MIB as usize), 0).expect("w");
        d.write_at(&pattern(12, 700_000), case.old - 700_000 - 512)
            .expect("w");
        d.flush().expect("flush");
    }
    if case.disturb {
        disturb(&base, case.old);
    }
    if case.kind != DiskKind::Differencing {
        return base;
    }
    let child = dir.join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size(RESIZE_BLOCK as u32),
    )
    .expect("create child");
    {
        let d = Disk::open_rw(&child).expect("open child");
        d.write_at(&pattern(13, 300_000), case.old - 300_000)
            .expect("w");
        d.flush().expect("flush");
    }
    if case.disturb {
        disturb(&child, case.old);
    }
    let opts = OpsOptions {
        force: true,
        ..OpsOptions::default()
    };
    let grow = ops::ResizeOptions {
        size: Some(case.new),
        allow_shrink: true,
        ..Default::default()
    };
    ops::resize::resize(&base, &grow, &opts, &progress()).expect("resize the parent");
    // The chain as if the parent had not been touched since: `check` warns about a
    // parent modified after its child's record, which is not what this test is about.
    restore_parent_time(&child, &base);
    child
}

/// Zeros over the BAT padding and bytes past the disk's end in its last block.
fn disturb(path: &Path, size: u64) {
    use vhdkit_platform::FileExt;
    let f = vhdkit_format::VhdFile::open(path, &vhdkit_format::OpenOptions::new().no_parents(true))
        .expect("open");
    let h = f.header().expect("sparse").clone();
    let bat = f.bat().expect("bat");
    let last = (size - 1) / RESIZE_BLOCK;
    let tail = bat
        .block_offset(last)
        .map(|o| o + f.bitmap_size().expect("bitmap") + size % RESIZE_BLOCK);
    drop(f);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    let used = size.div_ceil(RESIZE_BLOCK);
    let pad_end = h.bat_size_on_disk() / 4;
    let zeros = vec![0u8; ((pad_end - used) * 4) as usize];
    file.write_all_at(&zeros, h.table_offset + used * 4)
        .expect("zero the padding");
    if let Some(at) = tail.filter(|_| !size.is_multiple_of(RESIZE_BLOCK)) {
        file.write_all_at(&[0xAB; 4096], at)
            .expect("garbage past the end");
    }
}

fn resize_cases() -> Vec<ResizeCase> {
    let odd = 8 * MIB + 100 * 1024; // a partly covered last block
    vec![
        ResizeCase {
            name: "dynamic grow, BAT in place",
            kind: DiskKind::Dynamic,
            old: odd,
            new: 32 * MIB,
            disturb: true,
        },
        ResizeCase {
            name: "dynamic grow, BAT relocated",
            kind: DiskKind::Dynamic,
            old: 8 * MIB,
            new: 128 * MIB,
            disturb: false,
        },
        ResizeCase {
            name: "differencing grow, BAT relocated",
            kind: DiskKind::Differencing,
            old: odd,
            new: 100 * MIB,
            disturb: true,
        },
        ResizeCase {
            name: "fixed grow",
            kind: DiskKind::Fixed,
            old: 8 * MIB,
            new: 12 * MIB,
            disturb: false,
        },
        ResizeCase {
            name: "dynamic shrink",
            kind: DiskKind::Dynamic,
            old: odd,
            new: 4 * MIB + 4096,
            disturb: true,
        },
        ResizeCase {
            name: "fixed shrink",
            kind: DiskKind::Fixed,
            old: 8 * MIB,
            new: 5 * MIB,
            disturb: false,
        },
    ]
}

#[test]
fn resize_with_any_failed_write_or_sync_reads_as_before_or_as_resized_and_reruns() {
    let mut total = 0;
    for case in resize_cases() {
        let which = if case.kind == DiskKind::Differencing {
            "child.vhd"
        } else {
            "base.vhd"
        };
        let before = {
            let dir = tempfile::tempdir().expect("tmp");
            read_file(&make_resize_disk(dir.path(), &case))
        };
        let mut resized = before.clone();
        resized.resize(case.new as usize, 0);
        let ro = ops::ResizeOptions {
            size: Some(case.new),
            allow_shrink: true,
            ..Default::default()
        };
        let op = |d: &Path| -> Result<(), Error> {
            ops::resize::resize(d.join(which), &ro, &OpsOptions::default(), &progress()).map(|_| ())
        };
        let setup = |d: &Path| {
            make_resize_disk(d, &case);
        };
        let (as_before, as_resized) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        let points = every_fault(&setup, &op, &|d, err| {
            let path = d.join(which);
            let now = read_file(&path);
            if now == before {
                as_before.set(as_before.get() + 1);
            } else if now == resized {
                as_resized.set(as_resized.get() + 1);
            }
            assert!(
                now == before || now == resized,
                "{}: after {err}: reads neither as before nor as resized ({} bytes)",
                case.name,
                now.len()
            );
            let report = vhdkit_format::check::check(&path, &Default::default()).expect("check");
            // A child not resized yet differs in size from its resized parent: the one
            // error `check` reports then, which the resize is there to fix.
            let size_mismatch = |p: &vhdkit_format::spec::Problem| {
                case.kind == DiskKind::Differencing
                    && now == before
                    && p.field == "current size"
                    && p.message.contains("its parent")
            };
            assert!(
                report
                    .problems()
                    .all(|(_, p)| p.severity < Severity::Warning || size_mismatch(p)),
                "{}: after {err}: {:?}",
                case.name,
                report.files
            );
            op(d).expect("a rerun completes");
            assert_eq!(read_file(&path), resized, "{}: after the rerun", case.name);
            let report = vhdkit_format::check::check(&path, &Default::default()).expect("check");
            assert!(
                report.is_clean(),
                "{}: after the rerun: {:?}",
                case.name,
                report.files
            );
            assert!(
                !report
                    .problems()
                    .any(|(_, p)| p.message.contains("interrupted resize")),
                "{}: the rerun finishes the resize: {:?}",
                case.name,
                report.files
            );
        });
        eprintln!(
            "resize ({}): {points} fault points; after the fault {} read as before, {} as resized",
            case.name,
            as_before.get(),
            as_resized.get()
        );
        assert_eq!(as_before.get() + as_resized.get(), points);
        total += points;
    }
    eprintln!("resize: {total} fault points in all");
}
