//! The command-line contract of the operations: `--json` reports, `--progress json`
//! event lines on stderr ending with the final event, `--verify`, and Ctrl-C (SIGINT)
//! as a cancel with exit code 130 and the operation's guarantee kept.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, file_len, interrupt_with, p, vhdkit_output, Rng, KIB, MIB};
use serde_json::Value;
use vhdkit_format::{CreateOptions, Disk, DiskKind};

/// Runs and asserts exit 0; returns stdout parsed as JSON.
fn json_of(args: &[&str]) -> Value {
    let o = vhdkit_output(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

/// An 8 MiB dynamic disk (block 512 KiB): data in blocks 0–5 and 10–15, blocks 6–9
/// written with zeros (released by compact).
fn dynamic_disk(path: &Path) {
    let bs = 512 * KIB;
    Disk::create(
        path,
        &CreateOptions::new(DiskKind::Dynamic, 8 * MIB).block_size(bs as u32),
    )
    .expect("create");
    let mut data = Rng::xorshift_star(1).bytes((8 * MIB) as usize);
    data[(6 * bs) as usize..(10 * bs) as usize].fill(0);
    let d = Disk::open_rw(path).expect("open");
    d.write_at(&data, 0).expect("write");
    d.flush().expect("flush");
}

/// `dir/base.vhd` (dynamic, data) and `dir/child.vhd` over it (data in half of it).
fn chain(dir: &Path) -> std::path::PathBuf {
    let base = dir.join("base.vhd");
    dynamic_disk(&base);
    let child = dir.join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size((512 * KIB) as u32),
    )
    .expect("create child");
    let d = Disk::open_rw(&child).expect("open");
    d.write_at(
        &Rng::xorshift_star(2).bytes((4 * MIB) as usize),
        2 * MIB + 512,
    )
    .expect("write");
    d.flush().expect("flush");
    child
}

/// The fields every report carries, with the types the contract gives them.
fn assert_report_shape(r: &Value, operation: &str, path: &Path) {
    assert_eq!(r["schema"], 1, "{r}");
    assert_eq!(r["operation"], operation, "{r}");
    assert_eq!(r["path"], p(path), "{r}");
    for k in [
        "blocks_total",
        "blocks_copied",
        "blocks_zero",
        "blocks_released",
        "blocks_moved",
        "bytes_written",
        "file_size_before",
        "file_size_after",
    ] {
        assert!(r[k].is_u64(), "{k} missing or not a count: {r}");
    }
    assert!(r["verified"].is_boolean(), "{r}");
    assert!(r["elapsed"].as_f64().is_some_and(|s| s >= 0.0), "{r}");
    assert!(r["phases"].is_array(), "{r}");
}

/// The report's phases are exactly `names`, in that order (the order they ran), in
/// seconds that add up to at most the whole run.
fn assert_phases(r: &Value, names: &[&str]) {
    let phases = r["phases"].as_array().expect("phases");
    let got: Vec<&str> = phases
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(got, names, "{r}");
    let sum: f64 = phases
        .iter()
        .map(|p| {
            p["seconds"]
                .as_f64()
                .filter(|s| *s >= 0.0)
                .expect("seconds")
        })
        .sum();
    assert!(sum <= r["elapsed"].as_f64().expect("elapsed") + 1e-6, "{r}");
}

fn same_content(a: &Path, b: &Path) -> bool {
    vhdkit_output(["compare", p(a), p(b)]).status.code() == Some(0)
}

#[test]
fn convert_json_report_has_operation_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.vhd");
    dynamic_disk(&src);
    let dst = dir.path().join("dst.vhd");

    let r = json_of(&[
        "convert",
        p(&src),
        p(&dst),
        "--type",
        "dynamic",
        "--json",
        "--progress",
        "none",
    ]);

    assert_report_shape(&r, "convert", &dst);
    // 8 MiB in 2 MiB blocks, each holding some data.
    assert_eq!(r["blocks_total"], 4);
    assert_eq!(r["blocks_copied"], 4);
    assert_eq!(r["blocks_zero"], 0);
    assert_eq!(r["bytes_written"], 8 * MIB);
    assert_eq!(r["file_size_after"], file_len(&dst));
    assert_eq!(r["verified"], false);
    assert!(same_content(&src, &dst));
}

#[test]
fn compact_json_report_counts_released_blocks_and_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("d.vhd");
    dynamic_disk(&disk);
    let before = file_len(&disk);

    let r = json_of(&["compact", p(&disk), "--json", "--progress", "none"]);

    assert_report_shape(&r, "compact", &disk);
    assert_eq!(r["blocks_total"], 16);
    assert_eq!(r["blocks_released"], 4);
    assert_eq!(r["file_size_before"], before);
    assert_eq!(r["file_size_after"], file_len(&disk));
    assert!(file_len(&disk) < before);
}

#[test]
fn merge_json_report_names_the_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = chain(dir.path());
    let parent = dir.path().join("base.vhd");

    let r = json_of(&["merge", p(&child), "--json", "--progress", "none"]);

    assert_report_shape(&r, "merge", &parent);
    assert_phases(&r, &["copy", "flush", "child"]);
    assert!(r["blocks_copied"].as_u64().unwrap() > 0);
    assert!(r["bytes_written"].as_u64().unwrap() >= 4 * MIB);
    assert!(same_content(&child, &parent));
}

#[test]
fn merge_with_delete_child_flag_deletes_the_child() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = chain(dir.path());
    let o = vhdkit_output(["merge", p(&child), "--delete-child", "--progress", "none"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!child.exists());
}

#[test]
fn merge_to_json_report_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = chain(dir.path());
    let dst = dir.path().join("flat.vhd");

    let r = json_of(&[
        "merge-to",
        p(&child),
        p(&dst),
        "--type",
        "fixed",
        "--verify",
        "--json",
        "--progress",
        "none",
    ]);

    assert_report_shape(&r, "merge-to", &dst);
    assert_eq!(r["verified"], true);
    assert_eq!(file_len(&dst), 8 * MIB + 512);
    assert!(same_content(&child, &dst));
}

#[test]
fn convert_with_verify_reports_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.vhd");
    dynamic_disk(&src);
    for (kind, name) in [("fixed", "f.vhd"), ("dynamic", "d.vhd"), ("raw", "r.img")] {
        let dst = dir.path().join(name);
        let r = json_of(&[
            "convert",
            p(&src),
            p(&dst),
            "--type",
            kind,
            "--verify",
            "--json",
            "--progress",
            "none",
        ]);
        assert_eq!(r["verified"], true, "{kind}: {r}");
        assert!(same_content(&src, &dst), "{kind}");
        assert_phases(&r, &["copy", "flush", "verify"]);
    }
}

#[test]
fn compact_with_verify_reports_verified_in_text_and_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.vhd");
    dynamic_disk(&a);
    let b = dir.path().join("b.vhd");
    std::fs::copy(&a, &b).expect("copy");

    let r = json_of(&["compact", p(&a), "--verify", "--json", "--progress", "none"]);
    let text = vhdkit_output(["compact", p(&b), "--verify", "--progress", "none"]);

    assert_eq!(r["verified"], true);
    assert_phases(&r, &["scan", "release", "move", "truncate", "verify"]);
    assert_eq!(text.status.code(), Some(0));
    let line = String::from_utf8_lossy(&text.stdout);
    assert!(line.contains("verified"), "{line}");
    assert!(line.contains("released"), "{line}");
}

/// Runs with `--progress json`; returns the stderr lines parsed.
fn progress_lines(args: &[&str]) -> Vec<Value> {
    let o = vhdkit_output(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}")))
        .collect()
}

fn assert_progress_stream(lines: &[Value]) {
    assert!(lines.len() >= 2, "{lines:?}");
    for l in lines {
        assert_eq!(l["schema"], 1, "{l}");
        for k in [
            "task_id",
            "phase_blocks_done",
            "phase_blocks_total",
            "phase_bytes_done",
            "phase_bytes_total",
            "percent",
            "lost",
        ] {
            assert!(l[k].is_u64(), "{k}: {l}");
        }
        // `blocks_total` means one thing, the report's: phase counters are named so.
        assert!(l.get("blocks_total").is_none(), "{l}");
        assert!(l["phase"].is_string(), "{l}");
        assert!(l["final"].is_boolean(), "{l}");
        assert!(l["percent"].as_u64().unwrap() <= 100);
        assert!(l["phase_percent"].as_u64().unwrap() <= 100, "{l}");
    }
    // The task's percent never goes down, across phases too.
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["percent"].as_u64() <= w[1]["percent"].as_u64()),
        "{lines:?}"
    );
    let (last, rest) = lines.split_last().expect("lines");
    assert!(
        rest.iter().all(|l| l["final"] == false),
        "one final event, last"
    );
    assert_eq!(last["final"], true);
    assert_eq!(last["result"], "success");
    assert!(rest.iter().all(|l| l["result"].is_null()), "{rest:?}");
    assert_eq!(last["percent"], 100);
    assert_eq!(last["phase"], "finish");
    let id = &lines[0]["task_id"];
    assert!(lines.iter().all(|l| &l["task_id"] == id));
}

#[test]
fn progress_json_prints_event_lines_ending_with_the_final_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.vhd");
    dynamic_disk(&src);
    let child = chain(dir.path());
    let cases: Vec<Vec<String>> = vec![
        vec![
            "convert".into(),
            p(&src).into(),
            p(&dir.path().join("c.vhd")).into(),
            "--type".into(),
            "dynamic".into(),
        ],
        vec!["compact".into(), p(&src).into(), "--verify".into()],
        vec![
            "merge-to".into(),
            p(&child).into(),
            p(&dir.path().join("m.vhd")).into(),
            "--type".into(),
            "dynamic".into(),
        ],
        vec!["merge".into(), p(&child).into()],
    ];
    for case in cases {
        let mut args: Vec<&str> = case.iter().map(String::as_str).collect();
        args.extend(["--progress", "json"]);

        let lines = progress_lines(&args);

        assert_progress_stream(&lines);
        // The bulk phase counts up to its totals.
        let main = if args[0] == "compact" { "scan" } else { "copy" };
        let bulk: Vec<&Value> = lines.iter().filter(|l| l["phase"] == main).collect();
        assert!(!bulk.is_empty(), "{args:?}: no {main} events");
        let last = bulk.last().unwrap();
        assert!(last["phase_blocks_done"].as_u64() <= last["phase_blocks_total"].as_u64());
    }
}

/// A 128 MiB raw image full of data: a convert of it takes a while in any build.
fn big_raw(path: &Path) {
    use std::io::Write;
    let chunk = Rng::xorshift_star(3).bytes(MIB as usize);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for _ in 0..128 {
        f.write_all(&chunk).expect("write");
    }
    f.flush().expect("flush");
}

/// Starts `args` with `--progress json`, waits for its first progress line (so the
/// Ctrl-C handler is installed), sends SIGINT with `kill -INT`, and returns the exit
/// code and the rest of stderr.
fn interrupt(args: &[&str]) -> (Option<i32>, String) {
    interrupt_with("-INT", args)
}

#[test]
fn convert_interrupted_with_sigint_exits_130_and_leaves_no_destination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big.img");
    big_raw(&src);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let dst = out.join("dst.vhd");

    let (code, stderr) = interrupt(&["convert", p(&src), p(&dst), "--type", "dynamic", "--verify"]);

    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("\"final\":true"), "{stderr}");
    // With --progress json the cancel is reported as a JSON error, the stream's last line.
    let last: Value = serde_json::from_str(stderr.lines().last().expect("a line"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    common::assert_schema("error", &last);
    assert_eq!(last["kind"], "cancelled", "{last}");
    assert_eq!(last["exit_code"], 130, "{last}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("cancelled by SIGINT")),
        "{last}"
    );
    assert!(last["state"].is_string(), "what it left: {last}");
    assert!(!dst.exists());
    let left: Vec<_> = std::fs::read_dir(&out).expect("read dir").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn compact_interrupted_with_sigint_exits_130_and_keeps_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("d.vhd");
    let bs = 16 * KIB;
    Disk::create(
        &disk,
        &CreateOptions::new(DiskKind::Dynamic, 64 * MIB).block_size(bs as u32),
    )
    .expect("create");
    let mut data = Rng::xorshift_star(4).bytes((64 * MIB) as usize);
    for b in (0..64 * MIB / bs).filter(|b| b % 3 == 0) {
        data[(b * bs) as usize..((b + 1) * bs) as usize].fill(0);
    }
    let d = Disk::open_rw(&disk).expect("open");
    d.write_at(&data, 0).expect("write");
    d.flush().expect("flush");
    drop(d);
    let before = dir.path().join("before.vhd");
    std::fs::copy(&disk, &before).expect("copy");

    let (code, stderr) = interrupt(&["compact", p(&disk)]);

    assert_eq!(code, Some(130), "{stderr}");
    let check = vhdkit_output(["check", p(&disk)]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert!(same_content(&disk, &before));
}

#[test]
fn convert_terminated_with_sigterm_or_sighup_rolls_back_and_exits_143_or_129() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big.img");
    big_raw(&src);
    for (sig, want) in [("-TERM", 143), ("-HUP", 129)] {
        let out = dir.path().join(format!("out{want}"));
        std::fs::create_dir(&out).expect("mkdir");
        let dst = out.join("dst.vhd");
        let (code, stderr) = interrupt_with(
            sig,
            &["convert", p(&src), p(&dst), "--type", "dynamic", "--verify"],
        );
        assert_eq!(code, Some(want), "{sig}: {stderr}");
        assert!(stderr.contains("cancelled by SIG"), "{stderr}");
        assert!(stderr.contains("no output was left behind"), "{stderr}");
        assert!(!dst.exists());
        assert_eq!(std::fs::read_dir(&out).expect("ls").count(), 0, "{sig}");
    }
}

/// A chain whose merge takes long enough to interrupt: a 64 MiB child over a parent, in
/// 16 KiB blocks.
fn long_merge_chain(dir: &Path) -> (PathBuf, PathBuf) {
    let parent = dir.join("p.vhd");
    let bs = 16 * KIB;
    Disk::create(
        &parent,
        &CreateOptions::new(DiskKind::Dynamic, 64 * MIB).block_size(bs as u32),
    )
    .expect("parent");
    let child = dir.join("c.vhd");
    Disk::create(&child, &CreateOptions::differencing(&parent)).expect("child");
    let d = Disk::open_rw(&child).expect("open");
    d.write_at(&Rng::xorshift_star(9).bytes((64 * MIB) as usize), 0)
        .expect("write");
    d.flush().expect("flush");
    (parent, child)
}

#[test]
fn merge_interrupted_says_what_the_parent_now_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_parent, child) = long_merge_chain(dir.path());
    let view = dir.path().join("view.raw");
    assert!(vhdkit_output(["read", p(&child), "--output", p(&view)])
        .status
        .success());

    let (code, stderr) = interrupt(&["merge", p(&child)]);

    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        stderr.contains("the child reads exactly as before; the parent may hold part of the merge"),
        "{stderr}"
    );
    assert!(!stderr.contains("nothing was lost"), "{stderr}");
    assert!(same_content(&child, &view));
    // Running it again finishes the merge.
    assert!(vhdkit_output(["merge", p(&child)]).status.success());
    assert!(same_content(&child, &view));
}

#[test]
fn merge_refuses_a_child_in_use_before_writing_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (parent, child) = long_merge_chain(dir.path());
    let before = std::fs::read(&parent).expect("parent");
    // Another program holds the child (qemu-io, the child alone, as raw): merge needs it
    // exclusively, and must say so before writing into the parent.
    let mut holder = Command::new("qemu-io")
        .args(["-f", "raw", p(&child)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let out = vhdkit_output(["merge", p(&child)]);
    let took = t.elapsed();
    drop(holder.stdin.take());
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
    assert!(
        took < Duration::from_secs(5),
        "refused up front, not after a copy"
    );
    assert_eq!(std::fs::read(&parent).expect("parent"), before);
}

#[test]
fn merge_delete_child_refuses_to_orphan_a_grandchild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.vhd");
    Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 4 * MIB)).expect("base");
    let mid = dir.path().join("mid.vhd");
    Disk::create(&mid, &CreateOptions::differencing(&base)).expect("mid");
    let top = dir.path().join("top.vhd");
    Disk::create(&top, &CreateOptions::differencing(&mid)).expect("top");

    let out = vhdkit_output(["merge", p(&mid), "--delete-child"]);

    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("top.vhd") && err.contains("--force"), "{err}");
    assert!(mid.exists());
    let out = vhdkit_output(["merge", p(&mid), "--delete-child", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!mid.exists());
}

#[test]
fn a_fixed_disk_that_fills_its_volume_suggests_sparse() {
    let dir = common::tempdir();
    let child = chain(dir.path());
    let src = dir.path().join("base.vhd");
    let vol = common::Tmpfs::new(dir.path(), "small", 4);
    let out = |name: &str| vol.path().join(name);
    let (c, m, n, d) = (out("c.vhd"), out("m.vhd"), out("n.vhd"), out("d.vhd"));
    let grown = out("grown.vhd");
    common::create(&grown, &["--type", "fixed", "--size", "3M"]);
    let runs = [
        vec!["convert", p(&src), p(&c), "--type", "fixed"],
        vec!["merge-to", p(&child), p(&m), "--type", "fixed"],
        vec!["create", p(&n), "--type", "fixed", "--size", "8M"],
        vec!["resize", p(&grown), "--size", "8M"],
    ];
    for args in runs {
        let text = common::vhdkit(&args);
        let mut with_json = args.clone();
        with_json.extend(["--json", "--progress", "none"]);
        let json = common::vhdkit(&with_json);

        let line = common::assert_failed_one_line(&text);
        assert!(
            line.contains("--sparse allocates only what is written"),
            "{args:?}: {line}"
        );
        let e = common::assert_failed_json(&json, 3);
        assert_eq!(e["kind"], "disk_full", "{e}");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("--sparse")),
            "{e}"
        );
    }
    // The advice holds: with --sparse the mostly-empty disks fit.
    let r = common::vhdkit([
        "create",
        p(&n),
        "--type",
        "fixed",
        "--size",
        "8M",
        "--sparse",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A dynamic destination that fills the volume is not told about --sparse.
    let r = common::vhdkit(["convert", p(&src), p(&d), "--type", "dynamic"]);
    let line = common::assert_failed_one_line(&r);
    assert!(!line.contains("--sparse"), "{line}");
}

/// The progress bar, drawn when stderr is a terminal (`script` gives the command one):
/// its percent is the whole task's, never going back when a phase starts, and the phase
/// is named beside it.
#[test]
fn progress_bar_on_a_terminal_shows_the_whole_tasks_percent_and_the_phase() {
    let dir = common::tempdir();
    let src = dir.path().join("random.raw");
    common::random_file(&src, 96 * MIB);
    let dst = dir.path().join("out.vhd");
    common::need("script", &["--version"]);
    let cmd = format!(
        "'{}' convert '{}' '{}' --type dynamic --verify",
        bin(),
        p(&src),
        p(&dst)
    );

    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script");

    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    // Every drawing of the bar: "[===>   ]  42% copy 40 MiB/96 MiB eta 1s".
    let draws: Vec<(u64, &str)> = screen
        .split(['\r', '\n'])
        .filter_map(|line| {
            let after_bar = line.split("] ").nth(1)?;
            let (percent, rest) = after_bar.trim_start().split_once("% ")?;
            Some((percent.parse().ok()?, rest.split(' ').next()?))
        })
        .collect();
    let percents: Vec<u64> = draws.iter().map(|d| d.0).collect();
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "the percent went back: {percents:?}"
    );
    let phases: Vec<&str> = draws.iter().map(|d| d.1).collect();
    for phase in ["copy", "verify"] {
        assert!(phases.contains(&phase), "{phase} not shown: {phases:?}");
    }
    let verify_starts = draws
        .iter()
        .find(|d| d.1 == "verify")
        .map(|d| d.0)
        .expect("verify drawn");
    assert!(
        verify_starts >= 40,
        "verify starts where copy ended, not at 0: {draws:?}"
    );
}
