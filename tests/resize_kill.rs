//! SIGKILL in the middle of a big `vhdkit resize` (the harness of `tests/ops_kill.rs`, from `vhdkit-testkit`).
//!
//! A 64 MiB dynamic disk of 64 KiB blocks (1024 entries in its table) grows to 256 GiB:
//! a 16 MiB table is written at the end of the file, so a run lasts long enough to be
//! hit while it writes. An uninterrupted run is timed first (and when its `flush` phase,
//! the table's writing, began); then runs on fresh copies are killed (SIGKILL) at points
//! from a fixed pseudo-random sequence, half spread over the whole run, half over the
//! part that writes. After each kill:
//!
//! - `vhdkit check` exits 0 (information, such as unreferenced space or a footer copy
//!   left by an interrupted resize, is allowed);
//! - the disk reads either as before (64 MiB, the same bytes) or as resized (256 GiB, the
//!   same first 64 MiB, zeros after: sampled at the old end, in the middle and in the
//!   last MiB);
//! - rerunning the same command completes: 256 GiB, `check` without a trace of the
//!   interruption, the same bytes.
//!
//! The counts of kills that landed mid-operation, of runs that finished first, and of
//! the states found are printed (`--nocapture`).

// Linux tools and signals: not on Windows.
#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{bin, kill_points, p, run_and_kill, timed, vhdkit, Rng, MIB};

const KILLS: usize = 10;
const OLD: u64 = 64 * MIB;
const NEW: u64 = 256 << 30;

/// `vhdkit check --json`: exit 0 required; returns whether a problem (information)
/// mentions an interrupted resize.
fn check_ok(disk: &Path) -> Result<bool, String> {
    let o = vhdkit(["check", "--json", p(disk)]);
    let text = o.stdout_str();
    if o.code != 0 {
        return Err(format!("check exited {}: {text}{}", o.code, o.stderr));
    }
    Ok(text.contains("interrupted resize"))
}

/// The disk reads as before or as resized; returns which. (Through the library: one
/// open, where each `vhdkit read` would read the 16 MiB table again.)
fn state(disk: &Path, content: &[u8]) -> &'static str {
    let d = vhdkit_format::Disk::open(disk).expect("the disk opens");
    let read = |at: u64, len: u64| {
        let mut buf = vec![0u8; len as usize];
        d.read_at(&mut buf, at).expect("read");
        buf
    };
    assert!(read(0, OLD) == content, "the first 64 MiB");
    match d.virtual_size() {
        OLD => "as before",
        NEW => {
            for at in [OLD, NEW / 2, NEW - MIB] {
                assert!(
                    read(at, MIB).iter().all(|&b| b == 0),
                    "new space at {at} reads as zeros"
                );
            }
            "as resized"
        }
        other => panic!("size {other}: neither as before nor as resized"),
    }
}

#[test]
fn resize_killed_at_random_points_reads_as_before_or_as_resized_and_rerun_completes() {
    let root = tempfile::tempdir().expect("tempdir");
    let tpl = root.path().join("template.vhd");
    vhdkit([
        "create",
        p(&tpl),
        "--type",
        "dynamic",
        "--size",
        "64M",
        "--block-size",
        "64K",
    ])
    .ok();
    let content = Rng::new(5).bytes(OLD as usize);
    let input = root.path().join("content.raw");
    std::fs::write(&input, &content).expect("write");
    vhdkit(["write", p(&tpl), "--offset", "0", "--input", p(&input)]).ok();
    let work = root.path().join("work.vhd");
    std::fs::copy(&tpl, &work).expect("copy");
    let args = ["resize", p(&work), "--size", "256G", "--progress", "json"];
    let timing = timed(Path::new(bin()), &args);
    let (total, began) = (timing.total, timing.began("flush"));
    assert_eq!(state(&work, &content), "as resized");

    let (mut killed, mut finished) = (0, 0);
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for at in kill_points(&timing, "flush", KILLS, Rng::new(12)) {
        std::fs::copy(&tpl, &work).expect("copy");

        let landed = run_and_kill(Path::new(bin()), &args, at);

        if landed {
            killed += 1;
        } else {
            finished += 1;
        }
        let interrupted =
            check_ok(&work).unwrap_or_else(|e| panic!("check after a kill at {at:?}: {e}"));
        let s = state(&work, &content);
        let key = format!(
            "{s}{}",
            if interrupted {
                ", footer copy stale"
            } else {
                ""
            }
        );
        *states.entry(key).or_default() += 1;
        if landed {
            let o = vhdkit(["resize", p(&work), "--size", "256G", "--progress", "none"]);
            assert_eq!(o.code, 0, "rerun: {}", o.stderr);
            assert_eq!(check_ok(&work), Ok(false), "check after the rerun");
            assert_eq!(state(&work, &content), "as resized");
        }
    }
    eprintln!(
        "resize 64 MiB -> 256 GiB: uninterrupted run {} ms (table written from {} ms); {} kills: {killed} landed mid-operation (SIGKILL status), {finished} finished first; states after the kill: {states:?}",
        total.as_millis(),
        began.as_millis(),
        killed + finished
    );
    assert!(killed >= KILLS / 3, "too few kills landed mid-operation");
}
