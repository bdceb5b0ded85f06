//! SIGKILL in the middle of `vhdkit compact` (of a dynamic disk, and of a differencing
//! disk that deduplicates against its parent), `vhdkit merge` and `vhdkit convert` (to a
//! VHD, and to a VHDX).
//!
//! Each test first times an uninterrupted run (and when each of its phases began, from
//! its `--progress json` events), then starts the binary again and again on a fresh copy
//! of the same image and kills it (SIGKILL: `Child::kill` on Unix) at points from a
//! fixed pseudo-random sequence: half spread over the whole run from the spawn, half
//! spread over the part that changes the image, counted from the moment the run being
//! killed reports that phase. After each kill:
//!
//! - compact, merge: the image opens; `vhdkit check` exits 0 — or reports nothing but
//!   unreferenced space after the last block (a leak, which the crash-safety design
//!   allows after a crash: the space is not referenced, the content is unchanged); the
//!   content read with `vhdkit read` is the content before; and a rerun completes, after
//!   which `check` exits 0 and the content is still the same.
//! - convert: the destination either does not exist or is complete and right (a
//!   temporary file, which a killed process cannot remove, may stay; it is never the
//!   destination's name); a VHDX destination is read by qemu-img.
//!
//! The counts of kills that landed mid-operation and of runs that finished first are
//! printed (see `--nocapture`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{
    assert_bytes_eq, bin, copy_keeping_time, p, vhdkit_output, KillAt, Rng, Timing, KIB, MIB,
};
use vhdkit_format::{CreateOptions, Disk, DiskKind, OpenOptions, VhdFile};
use vhdkit_testkit as testkit;

/// Kills per operation.
const KILLS: usize = 14;
/// Image size and block size: many small blocks, so a run lasts long enough to be hit.
const SIZE: u64 = 32 * MIB;
const BS: u64 = 16 * KIB;

/// Runs `vhdkit args…` (which ask for `--progress json`) to the end, timing its phases.
fn timed(args: &[&str]) -> Timing {
    testkit::timed(Path::new(bin()), args)
}

/// Starts `vhdkit args…` (which ask for `--progress json`) and SIGKILLs it at `at`
/// unless it finished first. Returns whether the kill landed.
fn run_and_kill(args: &[&str], at: KillAt) -> bool {
    testkit::run_and_kill(Path::new(bin()), args, at)
}

/// `n` kill points from the fixed pseudo-random sequence `seed` ([`testkit::kill_points`]).
fn kill_points(timing: &Timing, phase: &'static str, n: usize, seed: u64) -> Vec<KillAt> {
    testkit::kill_points(timing, phase, n, Rng::xorshift_star(seed))
}

/// What `vhdkit check` says: `Ok(false)` clean, `Ok(true)` only what a kill may leave
/// by design — unreferenced space (a leak), or a parent modified after the time its
/// child records (a merge writes the parent first and records its new time in the
/// child last) — `Err` anything else.
fn check_state(disk: &Path) -> Result<bool, String> {
    let o = vhdkit_output(["check", "--json", p(disk)]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    match o.status.code() {
        Some(0) => Ok(false),
        Some(1) => {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let problems: Vec<&serde_json::Value> = v["files"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|f| f["problems"].as_array().into_iter().flatten())
                .filter(|p| p["severity"] != "info" && p["severity"] != "Info")
                .collect();
            let leak_only = !problems.is_empty()
                && problems.iter().all(|p| {
                    let leak = p["field"] == "length"
                        && p["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("unreferenced space"));
                    leak || (p["field"] == "parent time stamp" && p["severity"] == "warning")
                });
            if leak_only {
                Ok(true)
            } else {
                Err(text)
            }
        }
        _ => Err(format!(
            "check exited {:?}: {text}{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
    }
}

/// `vhdkit read DISK` into a file; returns the bytes.
fn read(disk: &Path, scratch: &Path) -> Vec<u8> {
    let out = scratch.join("read.raw");
    let _ = std::fs::remove_file(&out);
    let o = vhdkit_output(["read", p(disk), "--output", p(&out)]);
    assert!(
        o.status.success(),
        "read {}: {}",
        disk.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(&out).expect("read output")
}

fn bat(path: &Path) -> Vec<u32> {
    VhdFile::open(path, &OpenOptions::new())
        .expect("the image opens")
        .bat()
        .expect("a BAT")
        .entries()
        .to_vec()
}

fn report(
    what: &str,
    timing: &Timing,
    killed: usize,
    finished: usize,
    extra: &BTreeMap<&str, usize>,
) {
    let phases: Vec<String> = timing
        .phases
        .iter()
        .map(|(k, v)| format!("{k} at {} ms", v.as_millis()))
        .collect();
    eprintln!(
        "{what}: uninterrupted run {} ms ({}); {} kills: {killed} landed mid-operation (SIGKILL status), {finished} finished first; {extra:?}",
        timing.total.as_millis(),
        phases.join(", "),
        killed + finished
    );
}

/// A dynamic disk with random data in every block but every third, which holds zeros:
/// a third of the blocks to release and many to move.
fn compact_image(path: &Path) -> Vec<u8> {
    Disk::create(
        path,
        &CreateOptions::new(DiskKind::Dynamic, SIZE).block_size(BS as u32),
    )
    .expect("create");
    let mut data = Rng::xorshift_star(77).bytes(SIZE as usize);
    for b in (0..SIZE / BS).filter(|b| b % 3 == 1) {
        data[(b * BS) as usize..((b + 1) * BS) as usize].fill(0);
    }
    let disk = Disk::open_rw(path).expect("open");
    disk.write_at(&data, 0).expect("write");
    disk.flush().expect("flush");
    data
}

#[test]
fn compact_killed_at_random_points_stays_valid_and_rerun_completes() {
    let root = tempfile::tempdir().expect("tempdir");
    let tpl = root.path().join("template.vhd");
    let content = compact_image(&tpl);
    let original = bat(&tpl);
    let work = root.path().join("work.vhd");
    std::fs::copy(&tpl, &work).expect("copy");
    let args = ["compact", p(&work), "--progress", "json"];
    let timing = timed(&args);
    let final_len = std::fs::metadata(&work).expect("metadata").len();
    let final_bat = bat(&work);
    assert!(final_len < std::fs::metadata(&tpl).expect("metadata").len());

    let (mut killed, mut finished) = (0, 0);
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for at in kill_points(&timing, "move", KILLS, 1) {
        std::fs::copy(&tpl, &work).expect("copy");

        let landed = run_and_kill(&args, at);

        if landed {
            killed += 1;
            let now = bat(&work);
            let state = if now == original {
                "untouched"
            } else if now == final_bat {
                "BAT final"
            } else {
                "part-way"
            };
            *states.entry(state).or_default() += 1;
        } else {
            finished += 1;
        }
        let leak =
            check_state(&work).unwrap_or_else(|e| panic!("check after a kill at {at:?}: {e}"));
        if leak {
            *states.entry("check: leak only").or_default() += 1;
        }
        assert_bytes_eq(
            &format!("content after a kill at {at:?}"),
            &read(&work, root.path()),
            &content,
        );
        if landed {
            let o = vhdkit_output(["compact", p(&work), "--progress", "none"]);
            assert!(
                o.status.success(),
                "rerun: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(check_state(&work), Ok(false), "check after the rerun");
            assert_bytes_eq(
                "content after the rerun",
                &read(&work, root.path()),
                &content,
            );
        }
        assert_eq!(
            std::fs::metadata(&work).expect("metadata").len(),
            final_len,
            "size once compacted (kill at {at:?})"
        );
    }
    report("compact", &timing, killed, finished, &states);
    assert!(killed >= KILLS / 3, "too few kills landed mid-operation");
    assert!(
        states.get("part-way").copied().unwrap_or(0) > 0,
        "no kill landed while the BAT was changing"
    );
}

/// A dynamic base with random data in every block (`dir/base.vhd`) and a child
/// (`dir/child.vhd`) that wrote the parent's bytes back into every block, one byte
/// changed in every fourth: three blocks in four deduplicate, the rest move down.
/// Returns the child's view.
fn dedupe_chain(dir: &Path) -> Vec<u8> {
    let base = dir.join("base.vhd");
    Disk::create(
        &base,
        &CreateOptions::new(DiskKind::Dynamic, SIZE).block_size(BS as u32),
    )
    .expect("create");
    let mut data = Rng::new(79).bytes(SIZE as usize);
    let disk = Disk::open_rw(&base).expect("open");
    disk.write_at(&data, 0).expect("write");
    disk.flush().expect("flush");
    drop(disk);
    let child = dir.join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size(BS as u32),
    )
    .expect("create child");
    for b in (0..SIZE / BS).filter(|b| b % 4 == 3) {
        data[(b * BS + 7) as usize] ^= 0x5A;
    }
    let disk = Disk::open_rw(&child).expect("open");
    disk.write_at(&data, 0).expect("write");
    disk.flush().expect("flush");
    data
}

#[test]
fn dedupe_compact_killed_at_random_points_keeps_the_child_view_and_rerun_completes() {
    let root = tempfile::tempdir().expect("tempdir");
    let tpl = root.path().join("template");
    std::fs::create_dir(&tpl).expect("mkdir");
    let content = dedupe_chain(&tpl);
    let original = bat(&tpl.join("child.vhd"));
    let original_len = std::fs::metadata(tpl.join("child.vhd"))
        .expect("metadata")
        .len();
    let parent_bytes = std::fs::read(tpl.join("base.vhd")).expect("parent");
    let work = root.path().join("work");
    copy_chain(&tpl, &work);
    let child = work.join("child.vhd");
    let args = ["compact", p(&child), "--progress", "json"];
    let timing = timed(&args);
    let final_len = std::fs::metadata(&child).expect("metadata").len();
    let final_bat = bat(&child);
    assert_eq!(
        final_bat.iter().filter(|&&e| e != u32::MAX).count() as u64,
        SIZE / BS / 4,
        "only the changed blocks stay"
    );
    eprintln!("dedupe compact: child {original_len} -> {final_len} bytes");

    let (mut killed, mut finished) = (0, 0);
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    // The BAT changes only while blocks move, a few tens of milliseconds of the run: a
    // loaded machine can shift every kill of a round out of that window. Up to three
    // rounds (each timed afresh, with other kill points) until one lands there; every
    // kill of every round is judged.
    let mut timing = timing;
    for round in 0..3u64 {
        if round > 0 {
            if states.get("part-way").copied().unwrap_or(0) > 0 && killed >= KILLS / 3 {
                break;
            }
            copy_chain(&tpl, &work);
            timing = timed(&args);
        }
        for at in kill_points(&timing, "move", KILLS, 4 + round) {
            copy_chain(&tpl, &work);

            let landed = run_and_kill(&args, at);

            if landed {
                killed += 1;
                let now = bat(&child);
                let state = if now == original {
                    "untouched"
                } else if now == final_bat {
                    "BAT final"
                } else {
                    "part-way"
                };
                *states.entry(state).or_default() += 1;
            } else {
                finished += 1;
            }
            let leak =
                check_state(&child).unwrap_or_else(|e| panic!("check after a kill at {at:?}: {e}"));
            if leak {
                *states.entry("check: leak only").or_default() += 1;
            }
            assert_bytes_eq(
                &format!("child's view after a kill at {at:?}"),
                &read(&child, root.path()),
                &content,
            );
            assert!(
                std::fs::read(work.join("base.vhd")).expect("parent") == parent_bytes,
                "the parent is never written"
            );
            if landed {
                let o = vhdkit_output(["compact", p(&child), "--progress", "none"]);
                assert!(
                    o.status.success(),
                    "rerun: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                assert_eq!(check_state(&child), Ok(false), "check after the rerun");
                assert_bytes_eq(
                    "child's view after the rerun",
                    &read(&child, root.path()),
                    &content,
                );
            }
            assert_eq!(
                std::fs::metadata(&child).expect("metadata").len(),
                final_len,
                "size once compacted (kill at {at:?})"
            );
        }
    }
    report("dedupe compact", &timing, killed, finished, &states);
    assert!(killed >= KILLS / 3, "too few kills landed mid-operation");
    assert!(
        states.get("part-way").copied().unwrap_or(0) > 0,
        "no kill landed while the BAT was changing"
    );
}

/// A dynamic base with data in most blocks and a differencing child with data over
/// most of it, some writes not on granule boundaries.
fn merge_chain(dir: &Path) -> Vec<u8> {
    let base = dir.join("base.vhd");
    Disk::create(
        &base,
        &CreateOptions::new(DiskKind::Dynamic, SIZE).block_size(BS as u32),
    )
    .expect("create");
    let mut rng = Rng::xorshift_star(78);
    let disk = Disk::open_rw(&base).expect("open");
    disk.write_at(&rng.bytes((SIZE / 2) as usize), SIZE / 4)
        .expect("write");
    disk.flush().expect("flush");
    drop(disk);
    let child = dir.join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size(BS as u32),
    )
    .expect("create child");
    let disk = Disk::open_rw(&child).expect("open");
    let len = SIZE - SIZE / 8 - 1536;
    disk.write_at(&rng.bytes(len as usize), SIZE / 16 + 512)
        .expect("write");
    disk.write_at(&vec![0; (SIZE / 16) as usize], SIZE / 2)
        .expect("write zeros");
    disk.flush().expect("flush");
    drop(disk);
    let d = Disk::open(&child).expect("open");
    let mut buf = vec![0u8; SIZE as usize];
    d.read_at(&mut buf, 0).expect("read");
    buf
}

fn copy_chain(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir(to).expect("mkdir");
    for n in ["base.vhd", "child.vhd"] {
        copy_keeping_time(&from.join(n), &to.join(n));
    }
}

#[test]
fn merge_killed_at_random_points_keeps_the_child_view_and_rerun_completes() {
    let root = tempfile::tempdir().expect("tempdir");
    let tpl = root.path().join("template");
    std::fs::create_dir(&tpl).expect("mkdir");
    let content = merge_chain(&tpl);
    let parent_before = read(&tpl.join("base.vhd"), root.path());
    let work = root.path().join("work");
    copy_chain(&tpl, &work);
    let child = work.join("child.vhd");
    let parent = work.join("base.vhd");
    let args = ["merge", p(&child), "--progress", "json"];
    let timing = timed(&args);
    assert_bytes_eq(
        "parent after a merge",
        &read(&parent, root.path()),
        &content,
    );

    let (mut killed, mut finished) = (0, 0);
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for at in kill_points(&timing, "copy", KILLS, 2) {
        copy_chain(&tpl, &work);

        let landed = run_and_kill(&args, at);

        if landed {
            killed += 1;
        } else {
            finished += 1;
        }
        let leak =
            check_state(&child).unwrap_or_else(|e| panic!("check after a kill at {at:?}: {e}"));
        if leak {
            *states.entry("check: leak only").or_default() += 1;
        }
        assert_bytes_eq(
            &format!("child after a kill at {at:?}"),
            &read(&child, root.path()),
            &content,
        );
        if landed {
            let parent_now = read(&parent, root.path());
            let state = if parent_now == parent_before {
                "parent untouched"
            } else if parent_now == content {
                "parent merged"
            } else {
                "parent part-way"
            };
            *states.entry(state).or_default() += 1;
            let o = vhdkit_output(["merge", p(&child), "--progress", "none"]);
            assert!(
                o.status.success(),
                "rerun: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(check_state(&child), Ok(false), "check after the rerun");
            assert_bytes_eq(
                "child after the rerun",
                &read(&child, root.path()),
                &content,
            );
        }
        assert_bytes_eq("parent once merged", &read(&parent, root.path()), &content);
    }
    report("merge", &timing, killed, finished, &states);
    assert!(killed >= KILLS / 3, "too few kills landed mid-operation");
}

#[test]
fn convert_killed_at_random_points_never_leaves_a_partial_destination() {
    convert_killed_at_random_points("dst.vhd");
}

#[test]
fn convert_to_vhdx_killed_at_random_points_never_leaves_a_partial_destination() {
    convert_killed_at_random_points("dst.vhdx");
}

/// The bytes qemu-img reads from the VHDX at `path` (its check clean first).
fn qemu_vhdx_read(path: &Path, scratch: &Path) -> Vec<u8> {
    let raw = scratch.join("qemu.raw");
    for args in [
        vec!["check", "-f", "vhdx", p(path)],
        vec!["convert", "-f", "vhdx", "-O", "raw", p(path), p(&raw)],
    ] {
        let r = testkit::run_cmd(std::process::Command::new("qemu-img").args(&args));
        assert_eq!(
            r.code,
            0,
            "qemu-img {args:?}: {}{}",
            r.stderr,
            r.stdout_str()
        );
    }
    let b = std::fs::read(&raw).expect("read");
    std::fs::remove_file(&raw).expect("remove");
    b
}

/// `convert` to `name` (a VHD or, by its extension, a VHDX) killed at random points.
fn convert_killed_at_random_points(name: &str) {
    let vhdx = name.ends_with(".vhdx");
    let root = tempfile::tempdir().expect("tempdir");
    let src = root.path().join("src.vhd");
    let content = compact_image(&src);
    let out = root.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let dst = out.join(name);
    let args = |dst: &Path| -> Vec<String> {
        let mut a = vec![
            "convert",
            p(&src),
            p(dst),
            "--type",
            "dynamic",
            "--progress",
            "json",
        ];
        if vhdx {
            // A VHDX's smallest blocks.
            a.extend(["--block-size", "1M"]);
        }
        a.iter().map(|s| s.to_string()).collect()
    };
    let a = args(&dst);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let timing = timed(&a);

    let (mut killed, mut finished, mut temps_left) = (0, 0, 0);
    for at in kill_points(&timing, "copy", KILLS / 2, 3) {
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir(&out).expect("mkdir");

        let landed = run_and_kill(&a, at);

        if landed {
            killed += 1;
        } else {
            finished += 1;
        }
        let names: Vec<String> = std::fs::read_dir(&out)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        for n in &names {
            assert!(
                n == name || (n.starts_with(&format!(".{name}.")) && n.ends_with(".vhdkit-tmp")),
                "unexpected file {n}"
            );
        }
        temps_left += names.iter().filter(|n| n.ends_with(".vhdkit-tmp")).count();
        if dst.exists() && vhdx {
            let got = qemu_vhdx_read(&dst, root.path());
            assert_bytes_eq("a destination that exists", &got, &content);
        } else if dst.exists() {
            assert_eq!(check_state(&dst), Ok(false));
            assert_bytes_eq(
                "a destination that exists",
                &read(&dst, root.path()),
                &content,
            );
        } else {
            assert!(landed, "the run finished but left no destination");
        }
    }
    let mut extra = BTreeMap::new();
    extra.insert("temporary files left by a kill", temps_left);
    report(
        &format!("convert to {name}"),
        &timing,
        killed,
        finished,
        &extra,
    );
    assert!(killed >= 1, "no kill landed mid-operation");
}

/// base ← mid ← child, each level holding data of its own: the chain `merge --into`
/// flattens into base.
fn three_level_chain(dir: &Path) -> Vec<u8> {
    merge_chain(dir);
    std::fs::rename(dir.join("child.vhd"), dir.join("mid.vhd")).expect("rename");
    let child = dir.join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(dir.join("mid.vhd")).block_size(BS as u32),
    )
    .expect("create child");
    let mut rng = Rng::xorshift_star(79);
    let disk = Disk::open_rw(&child).expect("open");
    disk.write_at(&rng.bytes((SIZE / 4) as usize), SIZE / 3)
        .expect("write");
    disk.flush().expect("flush");
    drop(disk);
    let d = Disk::open(&child).expect("open");
    let mut buf = vec![0u8; SIZE as usize];
    d.read_at(&mut buf, 0).expect("read");
    buf
}

fn copy_files(from: &Path, to: &Path, names: &[&str]) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir(to).expect("mkdir");
    for n in names {
        copy_keeping_time(&from.join(n), &to.join(n));
    }
}

#[test]
fn merge_into_killed_at_random_points_keeps_the_child_view_and_rerun_completes() {
    let root = tempfile::tempdir().expect("tempdir");
    let tpl = root.path().join("template");
    std::fs::create_dir(&tpl).expect("mkdir");
    let content = three_level_chain(&tpl);
    let names = ["base.vhd", "mid.vhd", "child.vhd"];
    let work = root.path().join("work");
    copy_files(&tpl, &work, &names);
    let child = work.join("child.vhd");
    let base = work.join("base.vhd");
    let args = ["merge", p(&child), "--into", p(&base), "--progress", "json"];
    let timing = timed(&args);
    assert_bytes_eq("base after the merge", &read(&base, root.path()), &content);
    assert!(
        !work.join("mid.vhd").exists(),
        "the intermediate is removed"
    );

    let (mut killed, mut finished) = (0, 0);
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for at in kill_points(&timing, "copy", KILLS, 3) {
        copy_files(&tpl, &work, &names);

        let landed = run_and_kill(&args, at);

        if landed {
            killed += 1;
        } else {
            finished += 1;
        }
        let leak =
            check_state(&child).unwrap_or_else(|e| panic!("check after a kill at {at:?}: {e}"));
        if leak {
            *states.entry("check: leak only").or_default() += 1;
        }
        assert_bytes_eq(
            &format!("child after a kill at {at:?}"),
            &read(&child, root.path()),
            &content,
        );
        let on_base = Disk::open(&child).expect("open").layers().len() == 2;
        *states
            .entry(if on_base {
                "child on base"
            } else {
                "child on mid"
            })
            .or_default() += 1;
        if landed {
            let o = vhdkit_output(["merge", p(&child), "--into", p(&base), "--progress", "none"]);
            assert!(
                o.status.success(),
                "rerun: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(check_state(&child), Ok(false), "check after the rerun");
            assert_bytes_eq(
                "child after the rerun",
                &read(&child, root.path()),
                &content,
            );
        }
        assert_bytes_eq("base once merged", &read(&base, root.path()), &content);
    }
    report("merge --into", &timing, killed, finished, &states);
    assert!(killed >= KILLS / 3, "too few kills landed mid-operation");
}
