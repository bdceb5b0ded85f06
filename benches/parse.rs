//! Decoding the on-disk structures: footer, dynamic header, and a BAT of 1M entries
//! (the BAT of a 2 TiB disk of 2 MiB blocks), each decoded and checked as `open` does.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vhdkit::format::spec::{Bat, DiskType, DynamicHeader, Footer, FOOTER_SIZE, HEADER_SIZE};

mod common;

/// Entries in the benched BAT.
const BAT_ENTRIES: u32 = 1 << 20;

fn parse(c: &mut Criterion) {
    let size = 2040u64 << 30;
    let footer = Footer::new(DiskType::Dynamic, size).encode();
    let header = DynamicHeader::new(1536, BAT_ENTRIES, 2 << 20).encode();
    // A BAT with every 3rd entry allocated, in increasing order.
    let mut bat = Bat::new_unused(BAT_ENTRIES);
    let mut next = 1536 / 512 + u64::from(BAT_ENTRIES) * 4 / 512;
    for i in (0..u64::from(BAT_ENTRIES)).step_by(3) {
        bat.set(i, next as u32);
        next += (2 << 20) / 512 + 1;
    }
    let bat_bytes = bat.encode();

    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(FOOTER_SIZE as u64));
    g.bench_function("footer", |b| {
        b.iter(|| {
            let f = Footer::decode(black_box(&footer)).expect("512 bytes");
            black_box((f.checksum_ok(), f.validate(Some(size / 1000))))
        })
    });
    g.throughput(Throughput::Bytes(HEADER_SIZE as u64));
    g.bench_function("header", |b| {
        b.iter(|| {
            let h = DynamicHeader::decode(black_box(&header)).expect("1024 bytes");
            black_box((h.checksum_ok(), h.validate(size, Some(size / 1000), false)))
        })
    });
    g.throughput(Throughput::Bytes(bat_bytes.len() as u64));
    g.bench_function("bat_1m_entries", |b| {
        b.iter(|| {
            let bat = Bat::decode(black_box(&bat_bytes));
            black_box(bat.allocated_count())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = parse
}
criterion_main!(benches);
