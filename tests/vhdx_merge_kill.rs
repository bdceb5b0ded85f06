//! `vhdkit merge` of a checkpoint (`.avhdx`) into its VHDX parent killed with SIGKILL at
//! points spread over the run: the child always reads exactly as before (vhdkit, its
//! log replayed in memory if the kill left one); the parent alone reads each sector
//! as it was or as the merge makes it, alike in vhdkit and in qemu-img (once `qemu-img
//! check -r all` has replayed a log left); running the merge again completes it.

// Signals and kill -9, qemu-img: Linux CI only.
#![cfg(target_os = "linux")]

mod common;

#[path = "../crates/format/tests/common/vhdx_build.rs"]
mod vhdx_build;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use vhdkit_format::vhdx::{DiskType, NewVhdx, ParentLocator, MIB};
use vhdkit_testkit as testkit;
use vhdx_build::{build, model, Content};

const KILLS: usize = 10;
const SIZE: u64 = 96 * MIB;

fn qemu_raw(path: &Path) -> Vec<u8> {
    let out = path.with_extension("q.raw");
    let r = run_cmd(Command::new("qemu-img").args([
        "convert",
        "-f",
        "vhdx",
        "-O",
        "raw",
        p(path),
        p(&out),
    ]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let b = fs::read(&out).unwrap();
    fs::remove_file(&out).unwrap();
    b
}

/// Blocks of each level of the chain, base first (1 MiB blocks).
fn level_blocks(level: usize) -> Vec<(u64, Content)> {
    let blocks = 0..SIZE / MIB;
    match level {
        0 => blocks
            .filter(|b| b % 3 == 0)
            .map(|b| (b, Content::Full(b as u8)))
            .collect(),
        1 => blocks
            .filter(|b| b % 5 != 1)
            .map(|b| match b % 4 {
                0 => (b, Content::Partial(0x80 | b as u8, b * 3, 700)),
                1 => (b, Content::Zero),
                _ => (b, Content::Full(0x40 | b as u8)),
            })
            .collect(),
        _ => blocks
            .filter(|b| b % 7 == 2)
            .map(|b| (b, Content::Partial(0x20 | b as u8, 40, 900)))
            .collect(),
    }
}

/// Builds the chain `names` (base first) in `dir`; returns what the top reads and what
/// the base alone reads.
fn build_chain(dir: &Path, names: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let mut n = NewVhdx::new(DiskType::Dynamic, SIZE);
    n.block_size = MIB as u32;
    let mut id = None;
    for (level, name) in names.iter().enumerate() {
        let loc = id.map(|id| {
            ParentLocator::new(id, Some(&format!(".\\{}", names[level - 1])), None, None)
        });
        if level > 0 {
            n.disk_type = DiskType::Differencing;
        }
        id = Some(build(&dir.join(name), &n, loc, &level_blocks(level)).1);
    }
    let levels: Vec<Vec<(u64, Content)>> = (0..names.len()).rev().map(level_blocks).collect();
    let refs: Vec<&[(u64, Content)]> = levels.iter().map(Vec::as_slice).collect();
    let want = model(SIZE, &n, &refs);
    let mut d = NewVhdx::new(DiskType::Dynamic, SIZE);
    d.block_size = MIB as u32;
    (want, model(SIZE, &d, &[&level_blocks(0)]))
}

/// Kills `vhdkit merge CHILD extra…` at spread points over fresh copies of the chain
/// `names` and judges each leftover (see the module's documentation); a rerun is the
/// same command while the child still has the levels it merges.
fn kill_merges(names: &[&str], extra: &[&str], seed: u64) {
    have(Tool::QemuImg);
    let dir = tempdir();
    let fresh = dir.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    let (want, base_old) = build_chain(&fresh, names);
    let work = dir.path().join("work");
    let reset = || {
        let _ = fs::remove_dir_all(&work);
        fs::create_dir(&work).unwrap();
        for f in names {
            fs::copy(fresh.join(f), work.join(f)).unwrap();
        }
    };
    let base = work.join(names[0]);
    let child = work.join(names[names.len() - 1]);
    let mut args = vec!["merge", p(&child)];
    args.extend_from_slice(extra);
    let timed_args: Vec<&str> = args.iter().copied().chain(["--progress", "json"]).collect();
    reset();
    let timing = testkit::timed(Path::new(bin()), &timed_args);
    assert!(read_all(&base) == want, "an uninterrupted merge");
    let (mut landed, mut tried) = (0, 0);
    for at in testkit::kill_points(&timing, "copy", 3 * KILLS, Rng::xorshift_star(seed)) {
        if landed == KILLS {
            break;
        }
        tried += 1;
        reset();
        if !testkit::run_and_kill(Path::new(bin()), &timed_args, at) {
            continue;
        }
        landed += 1;
        assert!(
            read_all(&child) == want,
            "{at:?}: the child reads as before"
        );
        let got = read_all(&base);
        for (s, ((g, o), w)) in got
            .chunks(512)
            .zip(base_old.chunks(512))
            .zip(want.chunks(512))
            .enumerate()
        {
            assert!(
                g == o || g == w,
                "{at:?}: sector {s} of the base is neither: got {:?}, old {:?}, new {:?}",
                &g[..16],
                &o[..16],
                &w[..16]
            );
        }
        let copy = dir.path().join("copy.vhdx");
        fs::copy(&base, &copy).unwrap();
        let r = run_cmd(Command::new("qemu-img").args([
            "check",
            "-q",
            "-r",
            "all",
            "-f",
            "vhdx",
            p(&copy),
        ]));
        assert_eq!(r.code, 0, "{at:?}: qemu-img check -r all: {}", r.stderr);
        assert!(qemu_raw(&copy) == got, "{at:?}: qemu-img reads other bytes");
        // Run again while the child still stands on the levels merged: complete.
        let levels = vhdkit(["info", "--json", p(&child)]).json()["chain"]
            .as_array()
            .map_or(0, Vec::len);
        if levels == names.len() || levels == 0 {
            vhdkit(&args).ok();
        }
        assert!(read_all(&base) == want, "{at:?}: the merge completed");
        assert!(read_all(&child) == want, "{at:?}: the child after it");
        vhdkit(["check", p(&child)]).ok();
    }
    eprintln!("{landed} of {tried} kills landed");
    assert!(
        landed >= KILLS / 2,
        "only {landed} kills landed during the run"
    );
}

#[test]
fn killed_merges_of_a_checkpoint_leave_the_child_intact_and_complete_when_run_again() {
    kill_merges(&["disk.vhdx", "disk_X.avhdx"], &[], 0x6d72_6765);
}

#[test]
fn killed_merges_along_a_checkpoint_chain_leave_the_child_intact_and_complete_when_run_again() {
    kill_merges(
        &["disk.vhdx", "disk_A.avhdx", "disk_B.avhdx"],
        &["--depth", "2"],
        0x6465_7074,
    );
}
