//! DiskExport's default `BlockRelease` (DiscardBlocks): trim and write zeroes release
//! the whole blocks of a dynamic disk, write zeros over partial ones, and never release
//! a block of a differencing disk.

use vhdkit_format::{CreateOptions, Disk, DiskKind};
use vhdkit_serve::{DiskExport, Export, KeepBlocks};
use vhdkit_testkit::{pattern, tempdir};

const BS: u64 = 512 * 1024;
const SIZE: u64 = 8 << 20;

/// An 8 MiB dynamic disk (512 KiB blocks), every block written.
fn full(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let p = dir.join("d.vhd");
    Disk::create(
        &p,
        &CreateOptions::new(DiskKind::Dynamic, SIZE).block_size(BS as u32),
    )
    .expect("create");
    let data = pattern(1, SIZE as usize);
    let d = Disk::open_rw(&p).expect("open");
    d.write_at(&data, 0).expect("write");
    d.flush().expect("flush");
    (p, data)
}

fn read(e: &DiskExport) -> Vec<u8> {
    let mut b = vec![0u8; e.size() as usize];
    e.disk().read_at(&mut b, 0).expect("read");
    b
}

#[test]
fn trim_releases_whole_blocks_and_zeros_partial_ones() {
    let dir = tempdir();
    let (p, mut want) = full(dir.path());
    let e = DiskExport::new(Disk::open_rw(&p).expect("open"));
    assert_eq!(e.disk().top().allocated_blocks(), 16);
    // 100 KiB into block 2 to 100 KiB into block 6: blocks 3, 4, 5 whole.
    let (at, len) = (2 * BS + 100 * 1024, 4 * BS);
    e.trim(at, len).expect("trim");
    assert_eq!(e.disk().top().allocated_blocks(), 13);
    // Trim may leave anything; DiskExport zeros the partial pieces of the file's data.
    want[at as usize..(at + len) as usize].fill(0);
    assert!(read(&e) == want, "the disk reads other bytes");
    e.flush().expect("flush");
}

#[test]
fn write_zeroes_releases_whole_blocks_unless_no_hole() {
    let dir = tempdir();
    let (p, mut want) = full(dir.path());
    let size_before = std::fs::metadata(&p).expect("len").len();
    let e = DiskExport::new(Disk::open_rw(&p).expect("open"));
    // NO_HOLE (may_release = false): zeros written, blocks kept.
    e.write_zeroes(0, 2 * BS, false).expect("zero");
    assert_eq!(e.disk().top().allocated_blocks(), 16);
    want[..(2 * BS) as usize].fill(0);
    // The last three blocks and a bit of the one before: three released, and the file
    // is shorter (they were the last in it).
    e.write_zeroes(SIZE - 3 * BS - 4096, 3 * BS + 4096, true)
        .expect("zero");
    assert_eq!(e.disk().top().allocated_blocks(), 13);
    want[(SIZE - 3 * BS - 4096) as usize..].fill(0);
    assert!(read(&e) == want, "the disk reads other bytes");
    e.flush().expect("flush");
    drop(e);
    let size_after = std::fs::metadata(&p).expect("len").len();
    assert!(
        size_after <= size_before - 3 * BS,
        "{size_before} -> {size_after}"
    );
    let r = vhdkit_format::check::check(&p, &Default::default()).expect("check");
    assert!(r.is_clean(), "{r:?}");
}

#[test]
fn keep_blocks_releases_nothing() {
    let dir = tempdir();
    let (p, _) = full(dir.path());
    let e =
        DiskExport::new(Disk::open_rw(&p).expect("open")).with_block_release(Box::new(KeepBlocks));
    e.trim(0, SIZE).expect("trim");
    e.write_zeroes(0, SIZE, true).expect("zero");
    assert_eq!(e.disk().top().allocated_blocks(), 16);
    assert!(read(&e).iter().all(|&b| b == 0));
}

#[test]
fn a_differencing_export_never_releases_a_block() {
    let dir = tempdir();
    let (base, parent) = full(dir.path());
    let child = dir.path().join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size(BS as u32),
    )
    .expect("child");
    let e = DiskExport::new(Disk::open_rw(&child).expect("open child"));
    let mine = pattern(2, (4 * BS) as usize);
    e.write_runs(&[(0, &mine[..])]).expect("write");
    assert_eq!(e.disk().top().allocated_blocks(), 4);
    // Trim of the child's own blocks: zeroed, not released (released, they would show
    // the parent's bytes).
    e.trim(0, 2 * BS).expect("trim");
    assert_eq!(e.disk().top().allocated_blocks(), 4);
    let now = read(&e);
    assert!(now[..(2 * BS) as usize].iter().all(|&b| b == 0));
    assert!(now[(2 * BS) as usize..(4 * BS) as usize] == mine[(2 * BS) as usize..]);
    assert!(now[(4 * BS) as usize..] == parent[(4 * BS) as usize..]);
    // Write zeroes over the parent's data: zeros, in blocks of the child.
    e.write_zeroes(2 * BS, 4 * BS, true).expect("zero");
    assert_eq!(e.disk().top().allocated_blocks(), 6);
    let now = read(&e);
    assert!(now[..(6 * BS) as usize].iter().all(|&b| b == 0));
    assert!(now[(6 * BS) as usize..] == parent[(6 * BS) as usize..]);
}

/// A raw image and a fixed disk: trim and write zeroes punch holes in the file (on
/// Windows `FSCTL_SET_ZERO_DATA`, or zeros written where the system cannot), the
/// ranges read as zeros, the rest and the file's length as before; NO_HOLE zeros.
#[test]
fn flat_exports_punch_holes_and_read_zeros() {
    for kind in [DiskKind::Raw, DiskKind::Fixed] {
        let dir = tempdir();
        let p = dir.path().join("d.img");
        let mut want = pattern(3, SIZE as usize);
        let opts = if kind == DiskKind::Raw {
            std::fs::write(&p, &want).expect("write");
            vhdkit_format::OpenOptions {
                force_raw: true,
                ..vhdkit_format::OpenOptions::new().writable(true)
            }
        } else {
            Disk::create(&p, &CreateOptions::new(DiskKind::Fixed, SIZE)).expect("create");
            let d = Disk::open_rw(&p).expect("open");
            d.write_at(&want, 0).expect("write");
            d.flush().expect("flush");
            vhdkit_format::OpenOptions::new().writable(true)
        };
        let len = std::fs::metadata(&p).expect("len").len();
        let e = DiskExport::new(Disk::open_any(&p, &opts).expect("open"));
        assert_eq!(e.disk().kind(), kind);
        e.trim(100_000, 3 << 20).expect("trim");
        e.write_zeroes(5 << 20, 1 << 20, false)
            .expect("zero, NO_HOLE");
        e.write_zeroes(SIZE - 4096, 4096, true).expect("zero");
        e.flush().expect("flush");
        want[100_000..100_000 + (3 << 20)].fill(0);
        want[5 << 20..6 << 20].fill(0);
        want[(SIZE - 4096) as usize..].fill(0);
        assert!(read(&e) == want, "{kind:?}: the disk reads other bytes");
        drop(e);
        assert_eq!(std::fs::metadata(&p).expect("len").len(), len);
        if kind == DiskKind::Fixed {
            let r = vhdkit_format::check::check(&p, &Default::default()).expect("check");
            assert!(r.is_clean(), "{r:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let blocks = std::fs::metadata(&p).expect("meta").blocks();
            assert!(
                blocks * 512 <= len - (3 << 20) + 8192,
                "{kind:?}: {blocks} blocks of 512 bytes for {len} bytes"
            );
        }
    }
}
