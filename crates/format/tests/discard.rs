//! `Disk::discard`: the blocks of a dynamic disk that a range covers entirely are
//! released and read as zeros (the file shortened when they were its last), partial
//! blocks are left alone, a fixed disk has a hole punched over the range (its footer
//! kept), and nothing is released in differencing or read-only disks.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use vhdkit_format::check::check;
use vhdkit_format::{Disk, DiskKind, ErrorKind, OpenOptions};

const KIB: u64 = 1024;
const BS: u64 = 512 * KIB;

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

fn assert_clean(path: &Path) {
    let r = check(path, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{}: {r:?}", path.display());
}

/// A 4 MiB dynamic disk with every one of its eight 512 KiB blocks written.
fn full_dynamic(dir: &Path) -> (PathBuf, Vec<u8>) {
    let p = create(dir, "d.vhd", DiskKind::Dynamic, 4 * MIB, BS as u32);
    let data = pattern(8, 4 * MIB as usize);
    write(&p, &data, 0);
    (p, data)
}

#[test]
fn discard_releases_the_blocks_a_range_covers_entirely() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, mut want) = full_dynamic(dir.path());
    let d = Disk::open_rw(&p).expect("open");
    // From the middle of block 1 to the middle of block 4: blocks 2 and 3 whole.
    let released = d.discard(BS + 100, 3 * BS).expect("discard");
    assert_eq!(released, 2 * BS);
    assert_eq!(d.top().allocated_blocks(), 6);
    want[(2 * BS) as usize..(4 * BS) as usize].fill(0);
    assert_bytes_eq("after the discard", &read_all(&d), &want);
    // Nothing more to release there; a range inside one block releases nothing.
    assert_eq!(d.discard(BS + 100, 3 * BS).expect("again"), 0);
    assert_eq!(d.discard(5 * BS + 1, BS - 2).expect("inside"), 0);
    // A write after a discard allocates anew and reads back.
    d.write_at(&[9u8; 4096], 2 * BS).expect("write");
    want[(2 * BS) as usize..(2 * BS) as usize + 4096].fill(9);
    d.flush().expect("flush");
    drop(d);
    assert_bytes_eq("after reopening", &read_file(&p), &want);
    assert_clean(&p);
}

#[test]
fn discard_of_the_last_blocks_shortens_the_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let (p, mut want) = full_dynamic(dir.path());
    let before = len(&p);
    let d = Disk::open_rw(&p).expect("open");
    assert_eq!(d.discard(6 * BS, 2 * BS).expect("discard"), 2 * BS);
    drop(d);
    let shortened = len(&p);
    assert!(
        shortened <= before - 2 * (BS + 512),
        "{before} -> {shortened}"
    );
    want[(6 * BS) as usize..].fill(0);
    assert_bytes_eq("after the discard", &read_file(&p), &want);
    assert_clean(&p);
    // The space is reused by the next allocation.
    let d = Disk::open_rw(&p).expect("open");
    d.write_at(&[1u8; 512], 7 * BS).expect("write");
    d.flush().expect("flush");
    drop(d);
    let regrown = len(&p);
    assert!(
        regrown > shortened && regrown < before,
        "{before} -> {shortened} -> {regrown}"
    );
    assert_clean(&p);
}

#[test]
fn discard_counts_a_short_last_block_when_the_range_reaches_the_end() {
    let dir = tempfile::tempdir().expect("tmp");
    // 3.25 MiB: six whole blocks and a last block of 256 KiB.
    let size = 6 * BS + BS / 2;
    let p = create(dir.path(), "d.vhd", DiskKind::Dynamic, size, BS as u32);
    write(&p, &pattern(9, size as usize), 0);
    let d = Disk::open_rw(&p).expect("open");
    assert_eq!(d.discard(6 * BS, BS / 2).expect("discard"), BS / 2);
    assert_eq!(d.top().allocated_blocks(), 6);
    assert!(read_range(&d, 6 * BS, (BS / 2) as usize)
        .iter()
        .all(|&b| b == 0));
    assert!(
        d.discard(6 * BS, BS).is_err(),
        "a range past the end is refused"
    );
}

#[test]
fn discard_releases_nothing_in_differencing_or_read_only_disks() {
    let dir = tempfile::tempdir().expect("tmp");
    let (base, _) = full_dynamic(dir.path());
    let child = create_child(dir.path(), "child.vhd", &base, BS as u32);
    write(&child, &pattern(11, 3 * MIB as usize), MIB / 2);
    let view = read_file(&child);
    let d = Disk::open_rw(&child).expect("open");
    assert_eq!(d.discard(0, 4 * MIB).expect("discard"), 0);
    assert_eq!(d.top().allocated_blocks(), 6);
    drop(d);
    assert_bytes_eq("the child's view", &read_file(&child), &view);

    let d = Disk::open(&base).expect("open read-only");
    let err = d.discard(0, 2 * MIB).expect_err("read-only");
    assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
}

#[test]
fn discard_punches_a_hole_in_a_fixed_disk_and_keeps_its_footer() {
    let dir = tempfile::tempdir().expect("tmp");
    let fixed = create(dir.path(), "f.vhd", DiskKind::Fixed, 4 * MIB, BS as u32);
    let mut want = pattern(10, 4 * MIB as usize);
    write(&fixed, &want, 0);
    let len = std::fs::metadata(&fixed).expect("len").len();
    let d = Disk::open_rw(&fixed).expect("open");
    assert_eq!(d.discard(MIB, 2 * MIB).expect("discard"), 2 * MIB);
    want[MIB as usize..(3 * MIB) as usize].fill(0);
    assert_bytes_eq("fixed", &read_all(&d), &want);
    d.flush().expect("flush");
    drop(d);
    assert_eq!(std::fs::metadata(&fixed).expect("len").len(), len);
    let r = check(&fixed, &Default::default()).expect("check");
    assert!(r.is_clean(), "{r:?}");
}

#[test]
fn discard_waits_for_concurrent_writes() {
    // Writes and discards from several threads at once: every block ends either
    // written (by the last write to it) or zero, and the image checks clean.
    let dir = tempfile::tempdir().expect("tmp");
    let p = create(
        dir.path(),
        "d.vhd",
        DiskKind::Dynamic,
        8 * MIB,
        64 * KIB as u32,
    );
    let d = Disk::open_rw(&p).expect("open");
    let bs = 64 * KIB;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let d = &d;
            s.spawn(move || {
                for i in 0..40u64 {
                    let block = (t * 31 + i * 7) % 128;
                    if i % 3 == 2 {
                        d.discard(block * bs, bs).expect("discard");
                    } else {
                        d.write_at(&vec![(t + 1) as u8; bs as usize], block * bs)
                            .expect("write");
                    }
                }
            });
        }
    });
    d.flush().expect("flush");
    let all = read_all(&d);
    for (b, chunk) in all.chunks(bs as usize).enumerate() {
        assert!(chunk.iter().all(|&x| x == chunk[0]), "block {b} is mixed");
    }
    drop(d);
    assert_clean(&p);
}
