//! The operations end to end on files: convert from every source form (fixed, dynamic,
//! three-level chain, raw) to every target (fixed, dynamic, raw), compact, merge and
//! merge-to. Throughput is the virtual size for convert and merge-to, the file's size
//! for compact, and the child's file size for merge.
//!
//! Outputs are deleted, and the images that compact and merge change are copied afresh,
//! in `iter_batched` setups, outside the timing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use vhdkit::format::ops::{compact, convert, merge, Operation, OpsOptions, Target};
use vhdkit::format::{Disk, OpenOptions};
use vhdkit::task::{CancelToken, Progress};

mod common;

/// Time per bench: room for ten runs of the slowest case (a dense fixed source on tmpfs,
/// ~0.5 s at 256 MiB).
const MEASUREMENT: Duration = Duration::from_secs(8);

fn progress() -> Progress {
    Progress::detached(CancelToken::new())
}

fn run_convert(src: &Disk, dst: &Path, target: Target, operation: Operation) {
    let report = convert::convert_disk(
        src,
        dst,
        target,
        &OpsOptions::default(),
        &progress(),
        operation,
    )
    .unwrap_or_else(|e| panic!("{operation} to {}: {e}", dst.display()));
    assert!(report.blocks_total > 0);
}

/// Copies `names` from `from` into a fresh directory `to` (replacing what was there).
fn fresh_copy(from: &Path, to: &Path, names: &[&str]) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir(to).expect("creating a copy directory");
    for n in names {
        std::fs::copy(from.join(n), to.join(n)).expect("copying an image");
    }
}

fn ops(c: &mut Criterion) {
    let images = common::Images::build(common::bench_size());
    let open = OpenOptions::default();
    let sources: [(&str, &PathBuf); 4] = [
        ("fixed", &images.fixed),
        ("dynamic", &images.dynamic),
        ("chain3", &images.top),
        ("raw", &images.raw),
    ];
    let targets = [
        ("fixed", Target::Fixed),
        ("dynamic", Target::Dynamic),
        ("raw", Target::Raw),
    ];
    let out = images.path("out.img");

    let mut g = c.benchmark_group("convert");
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(MEASUREMENT);
    g.throughput(Throughput::Bytes(images.size));
    for (src_name, src) in sources {
        let disk = Disk::open_any(src, &open).expect("opening a source");
        for (dst_name, target) in targets {
            g.bench_function(format!("{src_name}_to_{dst_name}"), |b| {
                b.iter_batched(
                    || common::remove(&out),
                    |()| run_convert(&disk, &out, target, Operation::Convert),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
    common::remove(&out);

    let mut g = c.benchmark_group("ops");
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(MEASUREMENT);

    let work = images.path("work");
    let dir = images.dir.path();
    let len = |p: &Path| std::fs::metadata(p).expect("stat").len();

    g.throughput(Throughput::Bytes(len(&images.dynamic)));
    g.bench_function("compact_dynamic", |b| {
        b.iter_batched(
            || {
                fresh_copy(dir, &work, &["base.vhd"]);
                work.join("base.vhd")
            },
            |path| {
                let r =
                    compact::compact(&path, &OpsOptions::default(), &progress()).expect("compact");
                assert!(r.blocks_released > 0);
            },
            BatchSize::PerIteration,
        )
    });

    g.throughput(Throughput::Bytes(len(&images.mid)));
    g.bench_function("merge_mid_into_base", |b| {
        b.iter_batched(
            || {
                fresh_copy(dir, &work, &["base.vhd", "mid.vhd"]);
                OpsOptions {
                    open: OpenOptions::default().parent(work.join("base.vhd")),
                    ..OpsOptions::default()
                }
            },
            |opts| {
                let r = merge::merge(work.join("mid.vhd"), &opts, &progress()).expect("merge");
                assert!(r.blocks_copied > 0);
            },
            BatchSize::PerIteration,
        )
    });

    g.throughput(Throughput::Bytes(images.size));
    let chain = Disk::open(&images.top).expect("opening the chain");
    for (name, target) in [("fixed", Target::Fixed), ("dynamic", Target::Dynamic)] {
        g.bench_function(format!("merge_to_chain3_{name}"), |b| {
            b.iter_batched(
                || common::remove(&out),
                |()| run_convert(&chain, &out, target, Operation::MergeTo),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    common::remove(&out);
    let _ = std::fs::remove_dir_all(&work);
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = ops
}
criterion_main!(benches);
