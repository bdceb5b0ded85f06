//! `vhdkit write` into a VHDX file killed with SIGKILL at points spread over the run:
//! every file left opens in vhdkit (its log replayed in memory if the kill left one)
//! and, once `qemu-img check -r all` has replayed that log, in qemu-img with the same
//! bytes; each block reads wholly old (zeros) or wholly new, never a mix; `check` finds
//! nothing worse than a log not yet applied, and `check --repair` leaves a file
//! qemu-img opens read-only and calls clean. `vhdkit compact` killed the same way
//! (during its scan, release, moves and truncation) leaves a file every reader reads
//! exactly as before, and a rerun finishes the compaction.

// Signals and kill -9, qemu-img: Linux CI only.
#![cfg(target_os = "linux")]

mod common;

#[path = "../crates/format/tests/common/vhdx_build.rs"]
mod vhdx_build;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use vhdkit_format::vhdx::{DiskType, NewVhdx};
use vhdx_build::{build, model, Content};

const KILLS: usize = 12;
const SIZE: u64 = 64 * MIB;
const WRITTEN: u64 = 48 * MIB;

fn qemu(args: &[&str]) -> Run {
    run_cmd(Command::new("qemu-img").args(args))
}

fn qemu_raw(path: &Path) -> Vec<u8> {
    let out = path.with_extension("q.raw");
    let r = qemu(&["convert", "-f", "vhdx", "-O", "raw", p(path), p(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let b = fs::read(&out).unwrap();
    fs::remove_file(&out).unwrap();
    b
}

/// Only a pending log may be reported; returns whether it was.
fn assert_check_ok(path: &Path) -> bool {
    let r = vhdkit(["check", "--json", p(path)]);
    assert!(
        r.code == EXIT_OK || r.code == EXIT_DIFFERENT,
        "{}",
        r.stderr
    );
    let v = r.json();
    for f in v["files"].as_array().unwrap() {
        for pr in f["problems"].as_array().unwrap() {
            assert_eq!(pr["structure"], "VHDX log", "{pr}");
            assert_eq!(pr["severity"], "warning", "{pr}");
        }
    }
    r.code == EXIT_DIFFERENT
}

#[test]
fn killed_writes_leave_old_or_new_blocks_that_vhdkit_and_qemu_read_alike() {
    have(Tool::QemuImg);
    let dir = tempdir();
    let fresh = dir.path().join("fresh.vhdx");
    let r = qemu(&[
        "create",
        "-q",
        "-f",
        "vhdx",
        "-o",
        "subformat=dynamic,block_size=1M",
        p(&fresh),
        "64M",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let data = pattern(11, WRITTEN as usize);
    let input = dir.path().join("in.bin");
    fs::write(&input, &data).unwrap();
    let at = 8 * MIB;
    let disk = dir.path().join("disk.vhdx");
    let args_for = |disk: &Path| {
        vec![
            "write".to_owned(),
            p(disk).to_owned(),
            "--offset".to_owned(),
            at.to_string(),
            "--input".to_owned(),
            p(&input).to_owned(),
        ]
    };
    // An uninterrupted run: its length spreads the kill points, its result is "new".
    // The shortest of three runs (the first pays for a cold cache).
    let mut total = Duration::MAX;
    for _ in 0..3 {
        fs::copy(&fresh, &disk).unwrap();
        let t = Instant::now();
        vhdkit(args_for(&disk)).ok();
        total = total.min(t.elapsed());
    }
    let mut new = vec![0u8; SIZE as usize];
    new[at as usize..(at + WRITTEN) as usize].copy_from_slice(&data);
    assert!(read_all(&disk) == new);
    let mut rng = Rng::xorshift_star(0x7668_6478);
    let (mut landed, mut pending) = (0, 0);
    // Kill points spread over the run; when a run outlives none (a loaded machine runs
    // it faster or slower than timed), the spread shrinks.
    let mut scale = 0.95;
    for i in 0..3 * KILLS {
        if landed == KILLS {
            break;
        }
        fs::copy(&fresh, &disk).unwrap();
        let frac = (landed as f64 + rng.unit()) / KILLS as f64 * scale;
        let delay = Duration::from_secs_f64(total.as_secs_f64() * frac);
        let args = args_for(&disk);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if !run_and_kill(Path::new(bin()), &args, KillAt { after: None, delay }) {
            scale *= 0.7;
            continue;
        }
        landed += 1;
        if assert_check_ok(&disk) {
            pending += 1;
        }
        let got = read_all(&disk);
        for (b, (g, n)) in got
            .chunks(MIB as usize)
            .zip(new.chunks(MIB as usize))
            .enumerate()
        {
            assert!(
                g == n || g.iter().all(|&x| x == 0),
                "kill {i} ({delay:?}): block {b} is neither old nor new"
            );
        }
        let copy = dir.path().join("copy.vhdx");
        fs::copy(&disk, &copy).unwrap();
        let r = qemu(&["check", "-q", "-r", "all", "-f", "vhdx", p(&copy)]);
        assert!(r.code == 0, "kill {i}: qemu-img check -r all: {}", r.stderr);
        assert!(
            qemu_raw(&copy) == got,
            "kill {i}: qemu-img reads other bytes"
        );
        vhdkit(["check", "--repair", p(&disk)]).ok();
        let r = qemu(&["check", "-q", "-f", "vhdx", p(&disk)]);
        assert_eq!(r.code, 0, "kill {i}: {}", r.stderr);
        assert!(
            qemu_raw(&disk) == got,
            "kill {i}: the repair changed the bytes"
        );
    }
    eprintln!("{landed} kills landed, {pending} left a log to replay");
    assert!(
        landed >= KILLS / 2,
        "only {landed} kills landed during the run"
    );
}

/// A dynamic VHDX (256 MiB, 1 MiB blocks) whose 128 zero-filled blocks are stored first
/// and its 128 data blocks after them: compact releases the first and moves every data
/// block into their places, in several batches. Returns the bytes it reads as.
fn file_for_compact(path: &Path) -> Vec<u8> {
    let mut n = NewVhdx::new(DiskType::Dynamic, 256 * MIB);
    n.block_size = MIB as u32;
    let mut blocks: Vec<(u64, Content)> = (0..128).map(|b| (2 * b, Content::Full(0))).collect();
    blocks.extend((0..128).map(|b| (2 * b + 1, Content::Full(b as u8 | 1))));
    build(path, &n, None, &blocks);
    model(256 * MIB, &n, &[&blocks])
}

#[test]
fn killed_compactions_leave_files_every_reader_reads_as_before_and_a_rerun_finishes() {
    have(Tool::QemuImg);
    let dir = tempdir();
    let fresh = dir.path().join("fresh.vhdx");
    let want = file_for_compact(&fresh);
    let disk = dir.path().join("disk.vhdx");
    let args = ["compact", p(&disk), "--progress", "json"];
    // The uninterrupted run: its length spreads the kill points, its result is the end.
    // The shortest of three runs (the first pays for a cold cache).
    let mut timing: Option<Timing> = None;
    for _ in 0..3 {
        fs::copy(&fresh, &disk).unwrap();
        let t = timed(Path::new(bin()), &args);
        if timing.as_ref().is_none_or(|best| t.total < best.total) {
            timing = Some(t);
        }
    }
    let timing = timing.expect("three runs");
    let done = fs::metadata(&disk).unwrap().len();
    assert_eq!(done, 4 * MIB + 128 * MIB, "every data block moved");
    assert!(read_all(&disk) == want);
    let points = kill_points(&timing, "move", KILLS, Rng::xorshift_star(0x636f6d70));
    let (mut landed, mut pending) = (0, 0);
    for (i, mut at) in points.into_iter().enumerate() {
        // A point the run outlived (a loaded machine runs it faster than timed) is
        // tried again earlier.
        let mut killed = false;
        for _ in 0..3 {
            fs::copy(&fresh, &disk).unwrap();
            killed = run_and_kill(Path::new(bin()), &args, at);
            if killed {
                break;
            }
            at.delay = at.delay.mul_f64(0.6);
        }
        if !killed {
            continue;
        }
        landed += 1;
        if assert_check_ok(&disk) {
            pending += 1;
        }
        assert!(
            read_all(&disk) == want,
            "kill {i} ({at:?}): vhdkit reads other bytes"
        );
        let copy = dir.path().join("copy.vhdx");
        fs::copy(&disk, &copy).unwrap();
        let r = qemu(&["check", "-q", "-r", "all", "-f", "vhdx", p(&copy)]);
        assert!(r.code == 0, "kill {i}: qemu-img check -r all: {}", r.stderr);
        assert!(
            qemu_raw(&copy) == want,
            "kill {i} ({at:?}): qemu-img reads other bytes"
        );
        fs::remove_file(&copy).unwrap();
        // A rerun finishes the job.
        vhdkit(["compact", p(&disk)]).ok();
        assert_eq!(
            fs::metadata(&disk).unwrap().len(),
            done,
            "kill {i}: the rerun"
        );
        assert!(
            read_all(&disk) == want,
            "kill {i}: the rerun changed the bytes"
        );
        let r = qemu(&["check", "-q", "-f", "vhdx", p(&disk)]);
        assert_eq!(r.code, 0, "kill {i}: {}", r.stderr);
    }
    eprintln!("{landed} kills landed, {pending} left a log to replay");
    assert!(
        landed >= KILLS / 2,
        "only {landed} kills landed during the run"
    );
}
