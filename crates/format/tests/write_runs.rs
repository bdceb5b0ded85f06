//! `Disk::write_runs`: many runs under one write order, including runs that share a
//! sector or a differencing granule, read back exactly like the same writes one by one.

mod common;

use common::{read_all, MIB};
use vhdkit_format::{CreateOptions, Disk, DiskKind};

#[test]
fn write_runs_sharing_granules_in_a_differencing_disk_match_a_model() {
    let dir = tempfile::tempdir().expect("tmp");
    let base = dir.path().join("base.vhd");
    Disk::create(
        &base,
        &CreateOptions::new(DiskKind::Dynamic, 4 * MIB).block_size(64 * 1024),
    )
    .expect("create");
    let parent_data: Vec<u8> = (0..4 * MIB).map(|i| (i % 253) as u8 + 1).collect();
    {
        let d = Disk::open_rw(&base).expect("open");
        d.write_at(&parent_data, 0).expect("fill");
        d.flush().expect("flush");
    }
    let child = dir.path().join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size(64 * 1024),
    )
    .expect("child");
    let d = Disk::open_rw(&child).expect("open");
    let mut model = parent_data.clone();
    // Two runs inside one granule, one in the next granule, one unaligned across a block
    // boundary, one overlapping an earlier run (the later run wins), and an aligned one.
    let runs: Vec<(u64, Vec<u8>)> = vec![
        (512, vec![0xA1; 512]),
        (1536, vec![0xA2; 700]),
        (4096 + 100, vec![0xA3; 10]),
        (65536 - 300, vec![0xA4; 1000]),
        (65536 - 100, vec![0xA5; 50]),
        (2 * MIB, vec![0; 8192]),
    ];
    for (off, data) in &runs {
        model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    let refs: Vec<(u64, &[u8])> = runs.iter().map(|(o, d)| (*o, d.as_slice())).collect();
    d.write_runs(&refs).expect("write runs");
    d.flush().expect("flush");
    assert_eq!(read_all(&d), model);
    drop(d);
    let reopened = Disk::open(&child).expect("reopen");
    assert_eq!(read_all(&reopened), model);
    assert_eq!(
        read_all(&Disk::open(&base).expect("base")),
        parent_data,
        "parent untouched"
    );
}

#[test]
fn write_runs_into_a_dynamic_disk_allocate_once_per_block() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("d.vhd");
    Disk::create(
        &p,
        &CreateOptions::new(DiskKind::Dynamic, 8 * MIB).block_size(512 * 1024),
    )
    .expect("create");
    let d = Disk::open_rw(&p).expect("open");
    let runs: Vec<(u64, Vec<u8>)> = (0..16u64)
        .map(|i| (i * 300_000 + 7, vec![i as u8 + 1; 5000]))
        .collect();
    let mut model = vec![0u8; 8 * MIB as usize];
    for (off, data) in &runs {
        model[*off as usize..*off as usize + data.len()].copy_from_slice(data);
    }
    let refs: Vec<(u64, &[u8])> = runs.iter().map(|(o, d)| (*o, d.as_slice())).collect();
    d.write_runs(&refs).expect("write runs");
    d.flush().expect("flush");
    assert_eq!(read_all(&d), model);
    let blocks_touched: std::collections::BTreeSet<u64> = runs
        .iter()
        .flat_map(|(o, data)| (o / (512 * 1024))..=((o + data.len() as u64 - 1) / (512 * 1024)))
        .collect();
    assert_eq!(d.top().allocated_blocks(), blocks_touched.len() as u64);
    drop(d);
    let report = vhdkit_format::check::check(&p, &Default::default()).expect("check");
    assert!(report.is_clean(), "{:?}", report.files);
}
