//! `vhdkit merge` of a checkpoint (`.avhdx`) into its VHDX parent killed with SIGKILL at
//! points spread over the run: the child always reads exactly as before (vhdkit, its
//! log replayed in memory if the kill left one); the parent alone reads each sector
//! as it was or as the merge makes it, alike in vhdkit and in qemu-img (once `qemu-img
//! check -r all` has replayed a log left); running the merge again completes it.

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

#[test]
fn killed_merges_of_a_checkpoint_leave_the_child_intact_and_complete_when_run_again() {
    have(Tool::QemuImg);
    let dir = tempdir();
    let fresh = dir.path().join("fresh");
    fs::create_dir(&fresh).unwrap();
    let mut n = NewVhdx::new(DiskType::Dynamic, SIZE);
    n.block_size = MIB as u32;
    let base_blocks: Vec<(u64, Content)> = (0..SIZE / MIB)
        .filter(|b| b % 3 == 0)
        .map(|b| (b, Content::Full(b as u8)))
        .collect();
    let (_, id) = build(&fresh.join("disk.vhdx"), &n, None, &base_blocks);
    n.disk_type = DiskType::Differencing;
    let child_blocks: Vec<(u64, Content)> = (0..SIZE / MIB)
        .filter(|b| b % 5 != 1)
        .map(|b| match b % 4 {
            0 => (b, Content::Partial(0x80 | b as u8, b * 3, 700)),
            1 => (b, Content::Zero),
            _ => (b, Content::Full(0x40 | b as u8)),
        })
        .collect();
    let loc = ParentLocator::new(id, Some(r".\disk.vhdx"), None, None);
    build(&fresh.join("disk_X.avhdx"), &n, Some(loc), &child_blocks);
    let want = model(SIZE, &n, &[&child_blocks, &base_blocks]);
    let base_old = {
        let mut d = NewVhdx::new(DiskType::Dynamic, SIZE);
        d.block_size = MIB as u32;
        model(SIZE, &d, &[&base_blocks])
    };
    let work = dir.path().join("work");
    let reset = || {
        let _ = fs::remove_dir_all(&work);
        fs::create_dir(&work).unwrap();
        for f in ["disk.vhdx", "disk_X.avhdx"] {
            fs::copy(fresh.join(f), work.join(f)).unwrap();
        }
    };
    let (base, child) = (work.join("disk.vhdx"), work.join("disk_X.avhdx"));
    let args = ["merge", p(&child), "--progress", "json"];
    reset();
    let timing = testkit::timed(Path::new(bin()), &args);
    assert!(read_all(&base) == want, "an uninterrupted merge");
    let (mut landed, mut tried) = (0, 0);
    for at in testkit::kill_points(&timing, "copy", 3 * KILLS, Rng::xorshift_star(0x6d72_6765)) {
        if landed == KILLS {
            break;
        }
        tried += 1;
        reset();
        if !testkit::run_and_kill(Path::new(bin()), &args, at) {
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
                "{at:?}: sector {s} of the parent is neither"
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
        // Run again: complete.
        vhdkit(["merge", p(&child)]).ok();
        assert!(
            read_all(&base) == want,
            "{at:?}: the rerun completes the merge"
        );
        assert!(
            read_all(&child) == want,
            "{at:?}: the child after the rerun"
        );
        vhdkit(["check", p(&child)]).ok();
    }
    eprintln!("{landed} of {tried} kills landed");
    assert!(
        landed >= KILLS / 2,
        "only {landed} kills landed during the run"
    );
}
