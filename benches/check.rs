//! `check` and open (what `info` does) of a sparse 2040 GiB dynamic disk: a 4 MiB BAT of
//! 1M entries, a few allocated blocks. Throughput is the file's length, i.e. the
//! metadata read.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vhdkit::format::check::{check, check_file};
use vhdkit::format::image::FileBackend;
use vhdkit::format::{CreateOptions, Disk, DiskKind, OpenOptions};

mod common;

fn check_big(c: &mut Criterion) {
    let dir = common::temp_dir();
    let path = dir.path().join("big.vhd");
    Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 2040 << 30))
        .expect("creating the 2040 GiB disk");
    {
        // A few allocated blocks spread over the disk, so the layout check has work.
        let disk = Disk::open_rw(&path).expect("opening");
        let mut rng = common::layout::generator(7);
        let data = vec![0xA5u8; 64 << 10];
        for _ in 0..64 {
            let at = rng.below((2040u64 << 30) / (2 << 20)) * (2 << 20);
            disk.write_at(&data, at).expect("writing");
        }
        disk.flush().expect("flushing");
    }
    let len = std::fs::metadata(&path).expect("stat").len();

    let mut g = c.benchmark_group("check_2040g_sparse");
    g.throughput(Throughput::Bytes(len));
    g.bench_function("check_file", |b| {
        b.iter(|| {
            let f = std::fs::File::open(&path).expect("opening");
            let problems = check_file(&FileBackend::new(f)).expect("check_file");
            assert!(problems.is_empty(), "{problems:?}");
            black_box(problems)
        })
    });
    g.bench_function("check", |b| {
        b.iter(|| black_box(check(&path, &OpenOptions::default()).expect("check")))
    });
    g.bench_function("open", |b| {
        b.iter(|| black_box(Disk::open(&path).expect("open").virtual_size()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = check_big
}
criterion_main!(benches);
