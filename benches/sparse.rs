//! Cost follows the data: every operation on a 2040 GiB dynamic disk holding 32 MiB (16
//! blocks of 2 MiB spread over it) and a differencing child holding 8 MiB. Throughput is
//! the data (40 MiB), not the virtual size: the engine's cost per byte of data whatever
//! the disk's size. In `VHDKIT_BENCH_DIR` (default `/dev/shm`: the engine, not the
//! device). `benches/compare-qemu.sh --only big` times the same jobs end to end against
//! qemu-img.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vhdkit::format::ops::{self, OpsOptions, Target};
use vhdkit::format::{CreateOptions, Disk, DiskKind};

mod common;

const GIB: u64 = 1 << 30;
const BLOCK: u64 = 2 << 20;

fn write_blocks(path: &Path, at_gib: &[u64], seed: u8) {
    let disk = Disk::open_rw(path).expect("opening");
    for (i, &g) in at_gib.iter().enumerate() {
        let data = vec![seed.wrapping_add(i as u8) | 1; BLOCK as usize];
        disk.write_at(&data, g * GIB).expect("writing");
    }
    disk.flush().expect("flushing");
}

fn sparse_2040g(c: &mut Criterion) {
    let dir = common::temp_dir();
    let base = dir.path().join("big.vhd");
    let child = dir.path().join("child.vhd");
    Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 2040 * GIB))
        .expect("creating the 2040 GiB disk");
    write_blocks(
        &base,
        &[
            0, 7, 100, 333, 500, 777, 1000, 1024, 1200, 1400, 1500, 1700, 1800, 2000, 2030, 2038,
        ],
        1,
    );
    Disk::create(&child, &CreateOptions::differencing(&base)).expect("creating the child");
    write_blocks(&child, &[3, 100, 700, 1900], 101);
    let out = dir.path().join("out");
    let opts = OpsOptions::default();
    let run = |src: &Path, target: Target, merge: bool, verify: bool| {
        let _ = std::fs::remove_file(&out);
        let o = OpsOptions {
            verify,
            ..opts.clone()
        };
        let task = if merge {
            ops::merge_to_task(src, &out, target, &o)
        } else {
            ops::convert_task(src, &out, target, &o)
        };
        let report = task.expect("start").join().expect("the operation");
        assert!(report.blocks_composed <= 24, "{report:?}");
        black_box(report)
    };

    let mut g = c.benchmark_group("sparse_2040g");
    g.throughput(Throughput::Bytes(40 << 20));
    g.bench_function("convert_to_dynamic", |b| {
        b.iter(|| run(&base, Target::Dynamic, false, false))
    });
    g.bench_function("convert_to_dynamic_verify", |b| {
        b.iter(|| run(&base, Target::Dynamic, false, true))
    });
    g.bench_function("convert_to_raw", |b| {
        b.iter(|| run(&base, Target::Raw, false, false))
    });
    g.bench_function("merge_to_dynamic", |b| {
        b.iter(|| run(&child, Target::Dynamic, true, false))
    });
    g.bench_function("measure_chain", |b| {
        b.iter(|| black_box(ops::measure(&child, Target::Dynamic, &opts).expect("measure")))
    });
    g.bench_function("extents_chain", |b| {
        b.iter(|| {
            let disk = Disk::open(&child).expect("open");
            black_box(disk.extents(0, disk.virtual_size()).expect("extents").len())
        })
    });
    g.bench_function("stored_ranges_chain", |b| {
        b.iter(|| black_box(Disk::open(&child).expect("open").stored_ranges()))
    });
    g.finish();
    let _ = std::fs::remove_file(&out);
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = sparse_2040g
}
criterion_main!(benches);
