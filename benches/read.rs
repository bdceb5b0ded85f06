//! Virtual reads through a three-level chain (dynamic base, two differencing layers):
//! sequential and random, 4 KiB and 1 MiB, by `Disk::read_at` (pread) and
//! `Disk::read_mapped` (the operations' mmap path).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vhdkit::format::Disk;

mod common;

use common::layout::generator;

/// Bytes read per iteration by the 4 KiB cases.
const SMALL_SPAN: u64 = 32 << 20;

fn offsets(size: u64, io: u64, random: bool) -> Vec<u64> {
    let span = if io < (1 << 20) { SMALL_SPAN } else { size };
    let n = span / io;
    if random {
        let mut rng = generator(11);
        (0..n).map(|_| rng.below(size / io) * io).collect()
    } else {
        // Sequential from the middle of the disk (the first blocks are no more typical).
        let start = (size / 2 / io) * io;
        (0..n).map(|i| (start + i * io) % size).collect()
    }
}

fn read(c: &mut Criterion) {
    let images = common::Images::build(common::bench_size());
    let disk = Disk::open(&images.top).expect("opening the chain");
    assert_eq!(disk.layers().len(), 3);

    let mut g = c.benchmark_group("read_chain3");
    // The mmap path at 4 KiB takes ~65 ms an iteration: room for ten samples.
    g.measurement_time(Duration::from_secs(3));
    for (io, io_name) in [(4u64 << 10, "4k"), (1 << 20, "1m")] {
        for random in [false, true] {
            let offs = offsets(images.size, io, random);
            let pattern = if random { "random" } else { "seq" };
            g.throughput(Throughput::Bytes(offs.len() as u64 * io));
            let mut buf = vec![0u8; io as usize];
            g.bench_function(
                BenchmarkId::new("read_at", format!("{pattern}_{io_name}")),
                |b| {
                    b.iter(|| {
                        for &o in &offs {
                            disk.read_at(&mut buf, o).expect("read_at");
                        }
                        black_box(buf[0])
                    })
                },
            );
            g.bench_function(
                BenchmarkId::new("read_mapped", format!("{pattern}_{io_name}")),
                |b| {
                    b.iter(|| {
                        for &o in &offs {
                            disk.read_mapped(&mut buf, o).expect("read_mapped");
                        }
                        black_box(buf[0])
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = read
}
criterion_main!(benches);
