//! Zero detection (`ops::is_zero`) over one 2 MiB block: all zeros (the full scan every
//! hole and zero block costs), the last byte set (full scan, then false), and random
//! data (false at once).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vhdkit::format::ops::is_zero;

mod common;

fn zero(c: &mut Criterion) {
    let len = 2 << 20;
    let zeros = vec![0u8; len];
    let mut last = vec![0u8; len];
    last[len - 1] = 1;
    let mut random = vec![0u8; len];
    common::layout::generator(5).fill(&mut random);

    let mut g = c.benchmark_group("is_zero_2m");
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("zeros", |b| b.iter(|| is_zero(black_box(&zeros))));
    g.bench_function("last_byte_set", |b| b.iter(|| is_zero(black_box(&last))));
    g.bench_function("random", |b| b.iter(|| is_zero(black_box(&random))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = zero
}
criterion_main!(benches);
