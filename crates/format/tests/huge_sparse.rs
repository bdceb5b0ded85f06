//! Cost follows the data: a 2040 GiB dynamic disk holding a few MiB converts, merges,
//! measures and verifies with work bounded by its data, not its virtual size. The tests
//! count the blocks handed to the pipeline (the report's `blocks_composed`, measure's
//! `blocks_scanned`, the progress counters of each phase), never seconds.

// Counts allocated blocks (st_blocks): Unix only.
#![cfg(unix)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use vhdkit_format::ops::{self, OpTask, OpsOptions, Report, Target};
use vhdkit_format::{CreateOptions, Disk, DiskKind, OpenOptions, VhdFile};
use vhdkit_task::{Phase, ProgressEvent};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The largest dynamic disk: 1,044,480 blocks of 2 MiB.
const SIZE: u64 = 2040 * GIB;
const BLOCK: u64 = 2 * MIB;
const BLOCKS: u64 = SIZE / BLOCK;

/// Where the base holds data: whole blocks spread over the disk (the last one at its
/// very end), 32 MiB in all.
const BASE_AT: [u64; 16] = [
    0,
    BLOCK,
    7 * GIB,
    100 * GIB,
    100 * GIB + BLOCK,
    333 * GIB,
    500 * GIB,
    777 * GIB,
    1000 * GIB,
    1024 * GIB,
    1400 * GIB,
    1500 * GIB,
    1800 * GIB,
    2000 * GIB,
    2039 * GIB,
    SIZE - BLOCK,
];
/// A block of the base written with zeros: allocated, composed, left out.
const ZERO_AT: u64 = 1200 * GIB;

fn opts(verify: bool) -> OpsOptions {
    OpsOptions {
        verify,
        event_capacity: 1 << 20,
        ..OpsOptions::default()
    }
}

/// The base: 2040 GiB, 16 blocks of data and one of zeros.
fn base(dir: &Path) -> PathBuf {
    let path = dir.join("base.vhd");
    Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, SIZE)).expect("create");
    let disk = Disk::open_rw(&path).expect("open");
    for (i, &at) in BASE_AT.iter().enumerate() {
        disk.write_at(&pattern(i as u64 + 1, BLOCK as usize), at)
            .expect("write");
    }
    disk.write_at(&vec![0u8; BLOCK as usize], ZERO_AT)
        .expect("write zeros");
    disk.flush().expect("flush");
    path
}

/// A child of `base` holding 8 MiB: a block over the base's data, a page inside
/// another of the base's blocks (a block composed from both levels), data over holes.
fn child(dir: &Path, base: &Path) -> (PathBuf, Vec<(u64, Vec<u8>)>) {
    let path = dir.join("child.vhd");
    Disk::create(&path, &CreateOptions::differencing(base)).expect("create child");
    let writes = vec![
        (100 * GIB, pattern(101, BLOCK as usize)),
        (7 * GIB + 4096, pattern(102, 4096)),
        (50 * GIB, pattern(103, (2 * BLOCK) as usize)),
        (SIZE - 2 * BLOCK, pattern(104, (BLOCK - 4096) as usize)),
    ];
    let disk = Disk::open_rw(&path).expect("open child");
    for (at, data) in &writes {
        disk.write_at(data, *at).expect("write child");
    }
    disk.flush().expect("flush");
    (path, writes)
}

/// Runs an operation as a task that starts only once subscribed to, collecting every
/// progress event (a task subscribed to after it started shows only its latest state).
fn run(
    work: impl FnOnce(&vhdkit_task::Progress) -> vhdkit_format::Result<Report> + Send + 'static,
) -> (Report, Vec<ProgressEvent>) {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let task = OpTask::from(
        vhdkit_task::TaskBuilder::new("counted")
            .cancelable(true)
            .event_capacity(1 << 20)
            .spawn(move |p| {
                wait.recv().expect("started");
                work(p)
            }),
    );
    let sub = task.subscribe();
    go.send(()).expect("start");
    let events: Vec<ProgressEvent> = sub.iter().collect();
    let report = task.join().expect("the operation succeeds");
    assert!(events.iter().all(|e| e.lost == 0), "no event was lost");
    (report, events)
}

/// Converts (or, with `Operation::MergeTo`, flattens) `src` into `out` as a task.
fn convert(
    src: &Path,
    out: &Path,
    target: Target,
    o: OpsOptions,
    operation: ops::Operation,
) -> (Report, Vec<ProgressEvent>) {
    let disk = Disk::open_any(src, &o.open).expect("open source");
    let out = out.to_owned();
    run(move |p| ops::convert::convert_disk(&disk, &out, target, &o, p, operation))
}

/// The largest block total any event of `phase` announced.
fn phase_blocks(events: &[ProgressEvent], phase: Phase) -> u64 {
    events
        .iter()
        .filter(|e| e.phase == phase)
        .map(|e| e.phase_blocks_total)
        .max()
        .unwrap_or(0)
}

/// Reads `len` bytes at `at` of the disk (or raw image) at `path`.
fn read(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let disk = Disk::open_any(path, &OpenOptions::default()).expect("open result");
    let mut buf = vec![0u8; len];
    disk.read_at(&mut buf, at).expect("read");
    buf
}

/// The base's content at its data blocks, at the zero block, and in the holes around.
fn assert_reads_as_base(what: &str, out: &Path) {
    for (i, &at) in BASE_AT.iter().enumerate() {
        assert_bytes_eq(
            &format!("{what}: block at {at}"),
            &read(out, at, BLOCK as usize),
            &pattern(i as u64 + 1, BLOCK as usize),
        );
    }
    for at in [ZERO_AT, 2 * BLOCK, 1999 * GIB, SIZE - 2 * BLOCK] {
        assert!(
            all_zero(&read(out, at, BLOCK as usize)),
            "{what}: {at} reads as zeros"
        );
    }
}

#[test]
fn a_2040_gib_disk_converts_to_dynamic_composing_only_its_allocated_blocks() {
    let dir = tempdir();
    let src = base(dir.path());
    let out = dir.path().join("out.vhd");
    let (r, events) = convert(
        &src,
        &out,
        Target::Dynamic,
        opts(true),
        ops::Operation::Convert,
    );
    assert_eq!(r.blocks_total, BLOCKS);
    assert_eq!(
        r.blocks_composed, 17,
        "the allocated blocks, and only those"
    );
    assert_eq!(r.blocks_copied, 16);
    assert_eq!(r.blocks_zero, BLOCKS - 16);
    assert!(r.verified);
    assert_eq!(
        phase_blocks(&events, Phase::Copy),
        17,
        "progress counts the data"
    );
    assert!(
        phase_blocks(&events, Phase::Verify) <= 17,
        "the verification reads what was written, not the holes"
    );
    let f = VhdFile::open(&out, &OpenOptions::default()).expect("open result");
    assert_eq!(f.allocated_blocks(), 16);
    assert_reads_as_base("dynamic result", &out);
    qemu_compare_vpc_sample(&src, &out);
}

#[test]
fn a_2040_gib_disk_converts_to_raw_composing_only_its_allocated_blocks() {
    let dir = tempdir();
    let src = base(dir.path());
    let out = dir.path().join("out.raw");
    let (r, events) = convert(&src, &out, Target::Raw, opts(true), ops::Operation::Convert);
    // A raw result is composed in pieces of 2 MiB: here the base's blocks.
    assert_eq!(r.blocks_total, BLOCKS);
    assert_eq!(r.blocks_composed, 17);
    assert_eq!(r.blocks_copied, 16);
    assert!(r.verified);
    assert_eq!(phase_blocks(&events, Phase::Copy), 17);
    assert!(phase_blocks(&events, Phase::Verify) <= 17);
    let meta = std::fs::metadata(&out).expect("stat");
    assert_eq!(meta.len(), SIZE);
    assert!(
        meta.blocks() * 512 <= 40 * MIB,
        "holes stay holes: {} bytes allocated",
        meta.blocks() * 512
    );
    assert_reads_as_base("raw result", &out);
}

#[test]
fn a_2040_gib_raw_image_converts_composing_only_its_stored_extents() {
    // A raw (or fixed) source: its holes are found with SEEK_DATA, so only the pieces
    // that meet stored extents are read.
    let dir = tempdir();
    let raw = dir.path().join("src.raw");
    let f = std::fs::File::create(&raw).expect("create");
    f.set_len(SIZE).expect("set_len");
    for (i, &at) in BASE_AT.iter().enumerate() {
        vhdkit_platform::FileExt::write_all_at(&f, &pattern(i as u64 + 1, BLOCK as usize), at)
            .expect("write");
    }
    f.sync_all().expect("sync");
    drop(f);
    let out = dir.path().join("out.vhd");
    let (r, _) = convert(
        &raw,
        &out,
        Target::Dynamic,
        opts(true),
        ops::Operation::Convert,
    );
    // File systems that report no holes would make this the whole disk; ext4, XFS,
    // btrfs and tmpfs all report them.
    assert_eq!(r.blocks_composed, 16, "{r:?}");
    assert_eq!(r.blocks_copied, 16);
    assert_reads_as_base("dynamic from raw", &out);
}

#[test]
fn a_2040_gib_chain_merges_to_dynamic_composing_only_the_blocks_some_level_holds() {
    let dir = tempdir();
    let src = base(dir.path());
    let (child, writes) = child(dir.path(), &src);
    let out = dir.path().join("flat.vhd");
    let (r, events) = convert(
        &child,
        &out,
        Target::Dynamic,
        opts(true),
        ops::Operation::MergeTo,
    );
    // The base's 17 blocks and the child's 5 (one over the base's block at 100 GiB,
    // one inside the block at 7 GiB, three over holes): 20 blocks hold data in some
    // level.
    let union = 17 + 3;
    assert_eq!(r.blocks_composed, union, "{r:?}");
    assert_eq!(r.blocks_copied, 16 + 3);
    assert_eq!(phase_blocks(&events, Phase::Copy), union);
    assert!(r.verified);
    // The flattened view: the child's bytes over the base's.
    let chain = Disk::open(&child).expect("open chain");
    for (at, data) in &writes {
        assert_bytes_eq(
            &format!("flattened at {at}"),
            &read(&out, *at, data.len()),
            data,
        );
    }
    for &at in &[0, 7 * GIB, 1800 * GIB, SIZE - BLOCK] {
        let mut want = vec![0u8; BLOCK as usize];
        chain.read_at(&mut want, at).expect("read chain");
        assert_bytes_eq(
            &format!("flattened block at {at}"),
            &read(&out, at, BLOCK as usize),
            &want,
        );
    }

    // Measure walks the same blocks and finds the length merge-to wrote.
    let m = ops::measure(&child, Target::Dynamic, &OpsOptions::default()).expect("measure");
    assert_eq!(m.blocks_scanned, Some(union));
    assert_eq!(m.allocated_blocks, Some(16 + 3));
    assert_eq!(
        m.required_bytes,
        std::fs::metadata(&out).expect("stat").len()
    );
}

#[test]
fn a_2040_gib_child_merges_into_its_parent_block_by_allocated_block() {
    let dir = tempdir();
    let src = base(dir.path());
    let (child, writes) = child(dir.path(), &src);
    let o = opts(false);
    let (r, events) = run(move |p| ops::merge::merge(&child, &o, p));
    assert_eq!(r.blocks_total, 5, "the child's allocated blocks");
    assert_eq!(phase_blocks(&events, Phase::Copy), 5);
    for (at, data) in &writes {
        assert_bytes_eq(
            &format!("parent at {at}"),
            &read(&src, *at, data.len()),
            data,
        );
    }
}

#[test]
fn an_empty_2040_gib_disk_converts_and_measures_with_nothing_to_compose() {
    let dir = tempdir();
    let src = dir.path().join("empty.vhd");
    Disk::create(&src, &CreateOptions::new(DiskKind::Dynamic, SIZE)).expect("create");
    for target in [Target::Dynamic, Target::Raw, Target::Fixed] {
        let out = dir.path().join(format!("out-{}", target.name()));
        let o = OpsOptions {
            sparse: true,
            ..opts(true)
        };
        let (r, events) = convert(&src, &out, target, o, ops::Operation::Convert);
        assert_eq!(r.blocks_composed, 0, "{target:?}");
        assert_eq!(r.blocks_zero, BLOCKS, "{target:?}");
        assert_eq!(phase_blocks(&events, Phase::Copy), 0, "{target:?}");
        let last = events.last().expect("events");
        assert!(last.is_final && last.task_percent == 100, "{target:?}");
        // A few events, not one per block.
        assert!(events.len() < 50, "{target:?}: {} events", events.len());
        std::fs::remove_file(&out).expect("rm");
    }
    let m = ops::measure(&src, Target::Dynamic, &OpsOptions::default()).expect("measure");
    assert_eq!(m.blocks_scanned, Some(0));
    assert_eq!(m.allocated_blocks, Some(0));
}

#[test]
fn stored_ranges_are_the_union_of_every_levels_allocation() {
    let dir = tempdir();
    let src = base(dir.path());
    let (child, _) = child(dir.path(), &src);
    let disk = Disk::open(&child).expect("open");
    let ranges = disk.stored_ranges();
    let blocks: u64 = ranges.iter().map(|r| (r.end - r.start) / BLOCK).sum();
    assert_eq!(blocks, 20);
    assert!(
        ranges.windows(2).all(|w| w[0].end < w[1].start),
        "merged, in order"
    );
    assert_eq!(ranges.first(), Some(&(0..2 * BLOCK)));
    assert_eq!(ranges.last(), Some(&(SIZE - 2 * BLOCK..SIZE)));
    // Every byte outside them reads as zeros; every data extent lies inside them.
    for e in disk
        .extents(0, SIZE)
        .expect("extents")
        .iter()
        .scan(0u64, |pos, e| {
            let at = *pos;
            *pos += e.len();
            Some((at, *e))
        })
    {
        if let (at, vhdkit_format::image::Extent::Data { len, .. }) = e {
            assert!(
                ranges.iter().any(|r| r.start <= at && at + len <= r.end),
                "data at {at} outside the stored ranges"
            );
        }
    }
    // Alone, the child stores its own blocks only.
    let alone = VhdFile::open(&child, &OpenOptions::default()).expect("open child");
    let own: u64 = alone
        .stored_ranges()
        .iter()
        .map(|r| (r.end - r.start) / BLOCK)
        .sum();
    assert_eq!(own, 5);
}

/// qemu-img reads the dynamic result as vhdkit reads the source, at the data blocks
/// (a whole-disk compare of 2 TiB would read the holes too).
fn qemu_compare_vpc_sample(src: &Path, out: &Path) {
    for &at in &[0, 333 * GIB, SIZE - BLOCK] {
        let want = read(src, at, BLOCK as usize);
        let got = qemu_read_range(out, at, BLOCK);
        assert_bytes_eq(&format!("qemu-img at {at}"), &got, &want);
    }
}
