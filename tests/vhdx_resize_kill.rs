//! `resize` of a VHDX cut short at every step: a BAT moved to the end of the file (a
//! dynamic disk grown past its BAT region), a fixed disk grown (new blocks) and a fixed
//! disk shrunk.
//!
//! A kill -9 leaves in the file exactly the writes (and length changes) the process
//! completed before it died — the page cache keeps them — so the states a kill can leave
//! are the prefixes of the sequence of writes a resize makes. The resize runs once
//! through the library over a backend that records that sequence; then every prefix is
//! laid over the original bytes, and each state is judged: it opens in vhdkit (its log
//! replayed in memory) at the old size with the old bytes or at the new size with the
//! old bytes and zeros after (sampled in a 130 GiB disk: the old disk whole, the MiB
//! after, the middle and the last MiB); `check` reports nothing worse than a log not yet
//! applied; and once `qemu-img check -r all` has replayed that log, qemu-img reads the
//! same size and bytes and `qemu-img check` finds nothing. The BAT move is also run as
//! a process killed with SIGKILL at points spread over its run, each file left judged
//! the same way.

// qemu-img: Linux CI only.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vhdkit_format::image::{Backend, FsResolver, MemBackend};
use vhdkit_format::ops::{self, OpsOptions, ResizeOptions};
use vhdkit_format::task::{CancelToken, Progress};
use vhdkit_format::{Disk, OpenOptions, VhdFile};

/// One change the resize made to the file.
#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

/// A file in memory that records every change made to it.
#[derive(Debug)]
struct Recorder {
    inner: MemBackend,
    ops: Mutex<Vec<Op>>,
}

impl Backend for Recorder {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.ops
            .lock()
            .expect("ops")
            .push(Op::Write(offset, buf.to_vec()));
        self.inner.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.ops.lock().expect("ops").push(Op::SetLen(len));
        self.inner.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// The changes `vhdkit resize` to `new` (with `allow_shrink`) makes to the file at
/// `path`, in order; the file itself is left as it was.
fn record(path: &Path, new: u64) -> Vec<Op> {
    let rec = Arc::new(Recorder {
        inner: MemBackend::new(fs::read(path).unwrap()),
        ops: Mutex::new(Vec::new()),
    });
    let opts = OpenOptions::new().writable(true);
    let top = VhdFile::from_backend(path, rec.clone(), &opts).expect("open");
    let disk = Disk::resolve(top, &opts, &FsResolver).expect("resolve");
    let resize = ResizeOptions {
        size: Some(new),
        allow_shrink: true,
        ..ResizeOptions::default()
    };
    let o = OpsOptions::default();
    let prepared = ops::resize::prepare(disk, &resize, &o).expect("prepare");
    ops::resize::run(prepared, &o, &Progress::detached(CancelToken::new())).expect("resize");
    let ops = rec.ops.lock().expect("ops").clone();
    ops
}

/// `orig` with `ops` applied, written to `out`.
fn lay(orig: &[u8], ops: &[Op], out: &Path) {
    let mut b = orig.to_vec();
    for op in ops {
        match op {
            Op::Write(at, d) => {
                let end = *at as usize + d.len();
                if b.len() < end {
                    b.resize(end, 0);
                }
                b[*at as usize..end].copy_from_slice(d);
            }
            Op::SetLen(n) => b.resize(*n as usize, 0),
        }
    }
    fs::write(out, b).unwrap();
}

/// The ranges a state is read in, for a disk of `size` bytes whose first `old` bytes
/// were there before.
fn samples(size: u64, old: u64) -> Vec<(u64, u64)> {
    let mut r = vec![(0, old.min(size))];
    if size > old {
        r.push((old, (size - old).min(MIB)));
        r.push((old + (size - old) / 2 / MIB * MIB, MIB.min(size - old)));
        r.push((size - MIB.min(size - old), MIB.min(size - old)));
    }
    r
}

/// The bytes of `samples(size, …)` the disk should read: `old_bytes`, zeros after.
fn expected(size: u64, old_bytes: &[u8]) -> Vec<u8> {
    samples(size, old_bytes.len() as u64)
        .into_iter()
        .flat_map(|(a, n)| (a..a + n).map(|i| old_bytes.get(i as usize).copied().unwrap_or(0)))
        .collect()
}

fn qemu(args: &[&str]) -> Run {
    have(Tool::QemuImg);
    run_cmd(Command::new("qemu-img").args(args))
}

/// `len` bytes at `at` as qemu-img reads the VHDX.
fn qemu_range(disk: &Path, at: u64, len: u64) -> Vec<u8> {
    let dir = tempdir();
    let out = dir.path().join("range.raw");
    let spec = format!(
        "driver=raw,offset={at},size={len},file.driver=vhdx,file.file.filename={}",
        disk.display()
    );
    let r = qemu(&["convert", "--image-opts", &spec, "-O", "raw", p(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    fs::read(&out).unwrap()
}

/// Judges the file at `state` that a resize of a disk of `old` bytes reading
/// `old_bytes` to `new` left (see the module's documentation; `what` names it in a
/// failure). Returns whether it reads as resized.
fn judge(state: &Path, old_bytes: &[u8], new: u64, what: &str) -> bool {
    let old = old_bytes.len() as u64;
    // vhdkit, a pending log replayed in memory.
    let d = Disk::open(state).unwrap_or_else(|e| panic!("{what}: {e}"));
    let size = d.virtual_size();
    assert!(size == old || size == new, "{what}: size {size}");
    let got: Vec<u8> = samples(size, old)
        .into_iter()
        .flat_map(|(a, n)| {
            let mut b = vec![0u8; n as usize];
            d.read_at(&mut b, a)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            b
        })
        .collect();
    drop(d);
    assert!(
        got == expected(size, old_bytes),
        "{what}: vhdkit reads other bytes"
    );
    let r = vhdkit(["check", "--json", p(state)]);
    assert!(
        r.code == EXIT_OK || r.code == EXIT_DIFFERENT,
        "{what}: {}",
        r.stderr
    );
    for f in r.json()["files"].as_array().unwrap() {
        for pr in f["problems"].as_array().unwrap() {
            assert_eq!(pr["structure"], "VHDX log", "{what}: {pr}");
            assert_eq!(pr["severity"], "warning", "{what}: {pr}");
        }
    }
    // qemu-img, once it has replayed the log.
    let r = qemu(&["check", "-q", "-r", "all", "-f", "vhdx", p(state)]);
    assert_eq!(r.code, 0, "{what}: qemu-img check -r all: {}", r.stderr);
    let r = qemu(&["check", "-f", "vhdx", p(state)]);
    assert_eq!(
        r.code,
        0,
        "{what}: qemu-img check: {}{}",
        r.stdout_str(),
        r.stderr
    );
    let r = qemu(&["info", "--output=json", "-f", "vhdx", p(state)]);
    assert_eq!(r.code, 0, "{what}: {}", r.stderr);
    assert_eq!(r.json()["virtual-size"], size, "{what}: qemu-img's size");
    let got: Vec<u8> = samples(size, old)
        .into_iter()
        .flat_map(|(a, n)| qemu_range(state, a, n))
        .collect();
    assert!(
        got == expected(size, old_bytes),
        "{what}: qemu-img reads other bytes"
    );
    size == new
}

/// Judges every state a kill can leave in a resize of `disk` to `new`.
fn every_step(disk: &Path, new: u64) {
    let old_bytes = read_all(disk);
    assert_eq!(old_bytes.len() as u64, vhdkit_size(disk));
    let orig = fs::read(disk).unwrap();
    let ops = record(disk, new);
    assert!(ops.len() > 4, "{} changes", ops.len());
    let dir = tempdir();
    let state = dir.path().join("state.vhdx");
    let (mut before, mut after) = (0, 0);
    for k in 0..=ops.len() {
        lay(&orig, &ops[..k], &state);
        let what = format!("{} after {k} of {} changes", disk.display(), ops.len());
        if judge(&state, &old_bytes, new, &what) {
            after += 1;
        } else {
            before += 1;
        }
    }
    eprintln!(
        "{}: {} states, {before} as before, {after} as resized",
        disk.display(),
        ops.len() + 1
    );
    assert!(before > 0 && after > 0, "{before} {after}");
}

/// A dynamic VHDX of 24 MiB in 1 MiB blocks with data, made by qemu-img.
fn qemu_dynamic(dir: &Path) -> std::path::PathBuf {
    let disk = dir.join("dynamic.vhdx");
    let r = qemu(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "subformat=dynamic,block_size=1M",
        p(&disk),
        "24M",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    write_at(
        &disk,
        20 * MIB + 4096,
        &pattern(1, 3 * MIB as usize - 4096),
        &[],
    );
    write_at(&disk, 512, &pattern(2, 1000), &[]);
    disk
}

#[test]
fn a_resize_moving_the_bat_killed_at_every_step_reads_old_or_new() {
    let dir = tempdir();
    // 130 GiB in 1 MiB blocks: a table longer than the 1 MiB region.
    every_step(&qemu_dynamic(dir.path()), 130 * GIB);
}

/// The same with the process itself killed (SIGKILL) at points spread over its run.
#[test]
fn a_resize_moving_the_bat_killed_by_sigkill_reads_old_or_new() {
    const KILLS: usize = 8;
    let dir = tempdir();
    let fresh = qemu_dynamic(dir.path());
    let old_bytes = read_all(&fresh);
    let disk = dir.path().join("disk.vhdx");
    let args = ["resize", p(&disk), "--size", "130G", "--progress", "json"];
    // The shortest of three runs spreads the kill points.
    let mut total = Duration::MAX;
    for _ in 0..3 {
        fs::copy(&fresh, &disk).unwrap();
        let t = Instant::now();
        vhdkit(args).ok();
        total = total.min(t.elapsed());
    }
    let mut rng = Rng::xorshift_star(0x7265_7369);
    let (mut landed, mut after) = (0, 0);
    let mut scale = 0.95;
    for i in 0..4 * KILLS {
        if landed == KILLS {
            break;
        }
        fs::copy(&fresh, &disk).unwrap();
        let frac = (landed as f64 + rng.unit()) / KILLS as f64 * scale;
        let delay = Duration::from_secs_f64(total.as_secs_f64() * frac);
        if !run_and_kill(Path::new(bin()), &args, KillAt { after: None, delay }) {
            scale *= 0.7;
            continue;
        }
        landed += 1;
        after += usize::from(judge(
            &disk,
            &old_bytes,
            130 * GIB,
            &format!("kill {i} ({delay:?})"),
        ));
    }
    eprintln!("{landed} kills landed, {after} left the disk resized");
    assert!(
        landed >= KILLS / 2,
        "only {landed} kills landed during the run"
    );
}

#[test]
fn a_fixed_vhdx_resize_killed_at_every_step_reads_old_or_new() {
    let dir = tempdir();
    let disk = dir.path().join("fixed.vhdx");
    create(
        &disk,
        &["--type", "fixed", "--size", "20M", "--block-size", "8M"],
    );
    write_at(&disk, 3 * MIB, &pattern(3, 700_000), &[]);
    write_at(&disk, 19 * MIB, &pattern(4, MIB as usize), &[]);
    // Grown: two new blocks; then shrunk, cutting them and the data of the old end.
    every_step(&disk, 45 * MIB);
    vhdkit(["resize", p(&disk), "--size", "45M"]).ok();
    write_at(&disk, 40 * MIB, &pattern(5, 5 * MIB as usize), &[]);
    every_step(&disk, 18 * MIB);
}
