//! Chains whose sector bitmaps are fragmented (random, and alternating sector by sector
//! as Windows writes them): every read path — positional reads, mapped reads, the
//! extent map — gives each sector from the top-most level whose bitmap holds it, as a
//! model built from the bitmaps alone says. The walk resolves a level's parent pieces
//! a window at a time and gathers nearby pieces into one read; this pins what it reads.

mod common;

use std::path::Path;

use common::{create, create_child, pattern, write, MIB};
use vhdkit_format::image::Extent;
use vhdkit_format::{Disk, DiskKind};

const BS: u32 = 512 * 1024;
const SIZE: u64 = 6 * MIB;

/// The file offsets of `path`'s allocated blocks, by block index (a dynamic or
/// differencing VHD: footer copy at 0, header at its data offset, then the BAT).
fn blocks(path: &Path) -> Vec<Option<u64>> {
    let f = std::fs::read(path).expect("read");
    let be64 = |at: usize| u64::from_be_bytes(f[at..at + 8].try_into().expect("8 bytes"));
    let be32 = |at: usize| u32::from_be_bytes(f[at..at + 4].try_into().expect("4 bytes"));
    let header = be64(16) as usize;
    let (table, entries) = (be64(header + 16) as usize, be32(header + 28) as usize);
    (0..entries)
        .map(|i| match be32(table + 4 * i) {
            u32::MAX => None,
            sector => Some(u64::from(sector) * 512),
        })
        .collect()
}

/// Overwrites the sector bitmap of every allocated block of `path` with
/// `bitmap(block)` (its first BS/512/8 bytes used).
fn set_bitmaps(path: &Path, bitmap: impl Fn(usize) -> Vec<u8>) {
    use vhdkit_platform::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    for (b, at) in blocks(path).into_iter().enumerate() {
        if let Some(at) = at {
            f.write_all_at(&bitmap(b)[..(BS / 512 / 8) as usize], at)
                .expect("bitmap");
        }
    }
}

/// What the chain `levels` (top first, each wholly written with `data[level]`) reads
/// once its bitmaps are `bitmaps[level](block)`: each sector from the first level whose
/// bit (most significant first) is set, zeros where none is.
fn model(data: &[Vec<u8>], bitmaps: &[&dyn Fn(usize) -> Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0u8; SIZE as usize];
    for s in 0..(SIZE / 512) as usize {
        let (block, i) = (s / (BS as usize / 512), s % (BS as usize / 512));
        let from = (0..data.len()).find(|&l| bitmaps[l](block)[i / 8] & (0x80 >> (i % 8)) != 0);
        if let Some(l) = from {
            out[s * 512..(s + 1) * 512].copy_from_slice(&data[l][s * 512..(s + 1) * 512]);
        }
    }
    out
}

fn random_bitmap(seed: u64) -> impl Fn(usize) -> Vec<u8> {
    move |block| pattern(seed * 1000 + block as u64, (BS / 512 / 8) as usize)
}

/// Three levels, every block of each written, then bitmaps replaced: `top` alternating
/// or random, the middle random, the base full.
fn chain(dir: &Path, top: &dyn Fn(usize) -> Vec<u8>) -> (Disk, Vec<u8>) {
    let base = create(dir, "base.vhd", DiskKind::Dynamic, SIZE, BS);
    let mid = create_child(dir, "mid.vhd", &base, BS);
    let child = create_child(dir, "top.vhd", &mid, BS);
    let data: Vec<Vec<u8>> = (1..=3).map(|s| pattern(s, SIZE as usize)).collect();
    for (path, d) in [(&child, &data[0]), (&mid, &data[1]), (&base, &data[2])] {
        write(path, d, 0);
    }
    let middle = random_bitmap(7);
    let full = |_| vec![0xFF; (BS / 512 / 8) as usize];
    set_bitmaps(&child, top);
    set_bitmaps(&mid, &middle);
    let expect = model(&data, &[top, &middle, &full]);
    (Disk::open(&child).expect("open"), expect)
}

fn assert_reads(disk: &Disk, expect: &[u8]) {
    let mut got = vec![0u8; expect.len()];
    disk.read_at(&mut got, 0).expect("read_at");
    assert!(got == expect, "read_at differs from the bitmaps' model");
    got.fill(0xEE);
    disk.read_mapped(&mut got, 0).expect("read_mapped");
    assert!(got == expect, "read_mapped differs from the bitmaps' model");
    // Odd ranges: parent pieces cut at both ends, windows straddled.
    for (at, len) in [
        (511u64, 4097usize),
        (BS as u64 - 1000, 3000),
        (4 * MIB - 513, MIB as usize + 1026),
    ] {
        let mut part = vec![0u8; len];
        disk.read_at(&mut part, at).expect("read_at part");
        assert!(
            part == expect[at as usize..at as usize + len],
            "read_at {at}+{len}"
        );
    }
    // The extent map, followed byte by byte, says the same.
    let mut pos = 0usize;
    for e in disk.extents(0, SIZE).expect("extents") {
        let n = e.len() as usize;
        match e {
            Extent::Zero { .. } => assert!(expect[pos..pos + n].iter().all(|&b| b == 0)),
            Extent::Data {
                layer, file_offset, ..
            } => {
                let mut stored = vec![0u8; n];
                disk.layers()[layer]
                    .read_data(&mut stored, file_offset)
                    .expect("data");
                assert!(
                    stored == expect[pos..pos + n],
                    "extent at {pos} (level {layer})"
                );
            }
        }
        pos += n;
    }
    assert_eq!(pos as u64, SIZE);
}

#[test]
fn a_chain_whose_top_bitmaps_alternate_reads_each_sector_from_its_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, expect) = chain(dir.path(), &|_| vec![0x55; (BS / 512 / 8) as usize]);
    assert_reads(&disk, &expect);
}

#[test]
fn a_chain_with_random_bitmaps_reads_each_sector_from_its_level() {
    for seed in [3u64, 11, 29] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, expect) = chain(dir.path(), &random_bitmap(seed));
        assert_reads(&disk, &expect);
    }
}

/// Merging the fragmented top into its parent (a block's bitmap read and written once
/// for all its pieces, the pieces mapped in one window) keeps what the chain reads.
#[test]
fn merging_a_fragmented_child_keeps_what_the_chain_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, expect) = chain(dir.path(), &|_| vec![0x55; (BS / 512 / 8) as usize]);
    drop(disk);
    let task = vhdkit_format::ops::merge_task(dir.path().join("top.vhd"), &Default::default())
        .expect("merge starts");
    task.join().expect("merge");
    let merged = Disk::open(dir.path().join("mid.vhd")).expect("open the parent");
    let mut got = vec![0u8; SIZE as usize];
    merged.read_at(&mut got, 0).expect("read");
    assert!(
        got == expect,
        "the merged parent reads other bytes than the chain did"
    );
}

/// A fragmented child merged into a parent that holds none of its blocks: every piece
/// lands in a block the merge allocates (placed once per block, not searched per
/// piece).
#[test]
fn merging_a_fragmented_child_into_an_empty_parent_keeps_what_it_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = create(dir.path(), "base.vhd", DiskKind::Dynamic, SIZE, BS);
    let child = create_child(dir.path(), "top.vhd", &base, BS);
    let data = pattern(5, SIZE as usize);
    write(&child, &data, 0);
    let random = random_bitmap(13);
    set_bitmaps(&child, &random);
    let expect = model(&[data], &[&random]);
    let task = vhdkit_format::ops::merge_task(&child, &Default::default()).expect("merge starts");
    task.join().expect("merge");
    let merged = Disk::open(&base).expect("open the parent");
    let mut got = vec![0u8; SIZE as usize];
    merged.read_at(&mut got, 0).expect("read");
    assert!(
        got == expect,
        "the merged parent reads other bytes than the child did"
    );
}
