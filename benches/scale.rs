//! CPU scaling of the parallel stages of the block pipeline, on 1 and 2 rayon threads:
//! zero detection (`ops::is_zero` per block, as composing does) and CRC32 of each block
//! (as `--verify` does), over 2 MiB blocks of data already in memory. This isolates
//! the CPU-bound parts; `compare-qemu.sh --only scale` times whole conversions, where the
//! kernel's share (page faults, page-cache copies into the output) does not scale.
//!
//! Compare `…/1` with `…/2` in one run: the target is a speedup of at least 1.6×.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use vhdkit::format::ops::is_zero;

mod common;

/// Bytes scanned per iteration: enough blocks for both threads, small enough to stay
/// in the last-level cache so that the bench measures the CPU, not memory bandwidth.
const LEN: usize = 16 << 20;
const BLOCK: usize = 2 << 20;

fn scale(c: &mut Criterion) {
    let mut random = vec![0u8; LEN];
    common::layout::generator(7).fill(&mut random);
    // Zeros written into real pages (a fresh `vec![0; LEN]` maps the one shared zero
    // page, which would measure the L1 cache).
    let mut zeros = random.clone();
    black_box(&mut zeros[..]).fill(0);
    let pools: Vec<(usize, rayon::ThreadPool)> = [1, 2]
        .into_iter()
        .map(|n| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("a rayon pool");
            (n, pool)
        })
        .collect();

    bench_pools(c, "scale_zero_detection", &pools, &zeros, |block| {
        u32::from(is_zero(block))
    });
    bench_pools(c, "scale_crc32", &pools, &random, crc32fast::hash);
}

/// Runs `per_block` over every 2 MiB block of `data` in parallel, once per pool.
fn bench_pools(
    c: &mut Criterion,
    group: &str,
    pools: &[(usize, rayon::ThreadPool)],
    data: &[u8],
    per_block: fn(&[u8]) -> u32,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (n, pool) in pools {
        g.bench_with_input(BenchmarkId::from_parameter(n), data, |b, data| {
            b.iter(|| {
                pool.install(|| {
                    data.par_chunks(BLOCK)
                        .map(|block| per_block(black_box(block)))
                        .collect::<Vec<u32>>()
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = scale
}
criterion_main!(benches);
