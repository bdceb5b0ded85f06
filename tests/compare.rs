//! `vhdkit compare` against `qemu-img compare` (issue 10, item 14): the same verdict and
//! the same offset for differences at the edges of the disk, inside holes of either side,
//! and across vhdkit's task (2 MiB) and window (64 MiB) boundaries; chains against their
//! flattened content; disks of different sizes (the common part, then a zero tail, as
//! qemu-img; `--strict` makes the size itself a mismatch); `--json`.
//!
//! qemu-img is required: a missing qemu-img fails these tests.

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use vhdkit_platform::FileExt;

use common::*;

/// vhdkit's window of virtual bytes compared per step, and its task size.
const WINDOW: u64 = 64 * MIB;
const TASK: u64 = 2 * MIB;

/// What a compare said: `None` identical, `Some(offset)` a content mismatch.
type Verdict = Option<u64>;

/// Runs of bytes at offsets.
type Runs = Vec<(u64, Vec<u8>)>;

fn vhdkit_compare(a: &Path, b: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&OsStr> = vec![OsStr::new("compare"), a.as_os_str(), b.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let r = vhdkit(args);
    assert_no_panic(&r);
    r
}

/// The verdict of a run of either tool (exit 0 identical, exit 1 mismatch at an offset).
fn verdict(tool: &str, r: &Run) -> Verdict {
    let out = r.stdout_str();
    match r.code {
        0 => {
            assert_eq!(out.trim(), "Images are identical.", "{tool}: {}", r.stderr);
            None
        }
        1 => {
            let n = out
                .trim()
                .strip_prefix("Content mismatch at offset ")
                .map(|s| s.trim_end_matches('!'))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{tool}: unexpected output {out:?} ({})", r.stderr));
            Some(n)
        }
        c => panic!("{tool} exited {c}: {out} {}", r.stderr),
    }
}

/// `qemu-img compare EXTRA -f FA -F FB A B`.
fn qemu_img_compare(a: &Path, fa: &str, b: &Path, fb: &str, extra: &[&str]) -> Run {
    assert!(have(Tool::QemuImg));
    run_cmd(
        Command::new("qemu-img")
            .arg("compare")
            .args(extra)
            .args(["-f", fa, "-F", fb])
            .arg(a)
            .arg(b),
    )
}

/// Compares A (format `fa`) with B (format `fb`) with both tools; asserts they agree and
/// that `--json` says the same; returns the verdict.
fn both(a: &Path, fa: &str, b: &Path, fb: &str) -> Verdict {
    let want = verdict("qemu-img", &qemu_img_compare(a, fa, b, fb, &[]));
    let got = verdict("vhdkit", &vhdkit_compare(a, b, &[]));
    assert_eq!(
        got,
        want,
        "vhdkit vs qemu-img on {} and {}",
        a.display(),
        b.display()
    );
    let j = vhdkit_compare(a, b, &["--json"]);
    let v = j.json();
    assert_eq!(j.code, if want.is_some() { 1 } else { 0 }, "{}", j.stderr);
    assert_eq!(v["identical"], want.is_none(), "{v}");
    assert_eq!(v["first_difference"].as_u64(), want, "{v}");
    assert_eq!(v["schema"], 1, "{v}");
    want
}

/// A sparse raw file of `size` bytes holding `runs` (offset, bytes): the rest are holes.
fn sparse_raw(path: &Path, size: u64, runs: &[(u64, Vec<u8>)]) {
    let f = File::create(path).expect("raw");
    f.set_len(size).expect("set_len");
    for (off, data) in runs {
        f.write_all_at(data, *off).expect("write");
    }
}

/// `vhdkit convert RAW --type dynamic` (blocks that read as zeros stay holes), checked to
/// be of the raw file's size for qemu-img too.
fn dynamic_of(raw: &Path, dst: &Path) -> PathBuf {
    vhdkit([
        OsStr::new("convert"),
        raw.as_os_str(),
        dst.as_os_str(),
        OsStr::new("--type"),
        OsStr::new("dynamic"),
        OsStr::new("--progress"),
        OsStr::new("none"),
    ])
    .ok();
    let size = std::fs::metadata(raw).expect("raw").len();
    assert_eq!(qemu_size(dst), size, "qemu-img sees the same size");
    dst.to_owned()
}

/// A copy of `src` with the bytes at `at` replaced by `data`.
fn changed(src: &Path, dst: &Path, at: u64, data: &[u8]) -> PathBuf {
    std::fs::copy(src, dst).expect("copy");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .expect("open");
    f.write_all_at(data, at).expect("write");
    dst.to_owned()
}

/// The base content of these tests, as a sparse raw file and as a dynamic VHD written
/// with `vhdkit write` (so block 1's bitmap covers only its written sectors and block 5
/// is allocated, holding zeros): `size` bytes, data in blocks 0, 1 (partly), 3 and the
/// last, written zeros in block 5, holes elsewhere.
fn base(dir: &Path, size: u64) -> (PathBuf, PathBuf, Runs) {
    let mut rng = Rng::new(1014);
    let runs = vec![
        (0, rng.bytes(2 * MIB as usize)),
        (2 * MIB + 4096, rng.bytes(8192)),
        (6 * MIB, rng.bytes(2 * MIB as usize)),
        (10 * MIB, vec![0; 2 * MIB as usize]),
        (size - 2 * MIB, rng.bytes(2 * MIB as usize)),
    ];
    let raw = dir.join("a.raw");
    sparse_raw(&raw, size, &runs);
    let vhd = dir.join("a.vhd");
    create(&vhd, &["--type", "dynamic", "--size", &size.to_string()]);
    for (off, data) in &runs {
        write_at(&vhd, *off, data, &[]);
    }
    assert_eq!(qemu_size(&vhd), size, "qemu-img sees the same size");
    (raw, vhd, runs)
}

/// The offset qemu-img reports for the first difference of two files read as raw: the
/// start of the first differing 512-byte sector (computed here independently).
fn first_sector_differing(a: &Path, b: &Path) -> Option<u64> {
    let (x, y) = (std::fs::read(a).expect("a"), std::fs::read(b).expect("b"));
    x.iter()
        .zip(&y)
        .position(|(u, v)| u != v)
        .map(|i| i as u64 / 512 * 512)
}

#[test]
fn identical_disks_agree_with_qemu() {
    let dir = tempdir();
    let (raw, vhd, _) = base(dir.path(), 16 * MIB);
    let copy = dynamic_of(&raw, &dir.path().join("copy.vhd"));
    assert_eq!(both(&vhd, "vpc", &raw, "raw"), None);
    assert_eq!(both(&vhd, "vpc", &copy, "vpc"), None);
    assert_eq!(both(&raw, "raw", &vhd, "vpc"), None);
    assert_eq!(both(&raw, "raw", &raw, "raw"), None);
    assert_eq!(both(&vhd, "vpc", &vhd, "vpc"), None);
}

/// A difference in the first byte, and one in the last byte, of the disk: qemu-img names
/// the first differing 512-byte sector (for the last byte: size - 512).
#[test]
fn difference_at_the_first_and_the_last_byte() {
    let dir = tempdir();
    let size = 16 * MIB;
    let (raw, vhd, runs) = base(dir.path(), size);
    let first = changed(&raw, &dir.path().join("first.raw"), 0, &[!runs[0].1[0]]);
    let last_byte = runs[4].1[2 * MIB as usize - 1];
    let last = changed(&raw, &dir.path().join("last.raw"), size - 1, &[!last_byte]);
    assert_eq!(both(&vhd, "vpc", &first, "raw"), Some(0));
    assert_eq!(both(&first, "raw", &raw, "raw"), Some(0));
    assert_eq!(both(&vhd, "vpc", &last, "raw"), Some(size - 512));
    assert_eq!(both(&last, "raw", &vhd, "vpc"), Some(size - 512));
    let last_vhd = dynamic_of(&last, &dir.path().join("last.vhd"));
    assert_eq!(both(&vhd, "vpc", &last_vhd, "vpc"), Some(size - 512));
}

/// One side reads zeros where the other holds a byte: an unallocated VHD block, the
/// unwritten sectors of a partly written block, a hole of a sparse raw file, and an
/// allocated block of written zeros.
#[test]
fn difference_inside_a_hole_of_either_side() {
    let dir = tempdir();
    let size = 16 * MIB;
    let (raw, vhd, _) = base(dir.path(), size);
    let cases = [
        ("unallocated block", 4 * MIB + 777_777),
        (
            "unwritten sectors of a written block",
            2 * MIB + 4096 + 8192 + 1000,
        ),
        ("before the written sectors", 2 * MIB + 100),
        ("written zeros", 10 * MIB + 333_333),
        ("last sector of a hole", 6 * MIB - 1),
    ];
    for (i, (what, at)) in cases.iter().enumerate() {
        let b = changed(&raw, &dir.path().join(format!("h{i}.raw")), *at, &[0x5a]);
        let want = Some(at / 512 * 512);
        assert_eq!(first_sector_differing(&raw, &b), want, "{what}");
        assert_eq!(both(&vhd, "vpc", &b, "raw"), want, "{what}: VHD side zero");
        assert_eq!(both(&b, "raw", &vhd, "vpc"), want, "{what}: either order");
        assert_eq!(both(&raw, "raw", &b, "raw"), want, "{what}: raw hole");
        let bv = dynamic_of(&b, &dir.path().join(format!("h{i}.vhd")));
        assert_eq!(both(&bv, "vpc", &vhd, "vpc"), want, "{what}: VHD vs VHD");
    }
    // The other way round: the VHD holds data where the raw file has a hole.
    let holed = dir.path().join("holed.raw");
    std::fs::copy(&raw, &holed).expect("copy");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&holed)
        .expect("open");
    f.set_len(6 * MIB + 5000).expect("truncate");
    f.set_len(size).expect("extend");
    let want = first_sector_differing(&raw, &holed);
    assert!(want >= Some(6 * MIB + 4608), "{want:?}");
    assert_eq!(both(&vhd, "vpc", &holed, "raw"), want);
    assert_eq!(both(&raw, "raw", &holed, "raw"), want);
}

/// Differences around vhdkit's task and window boundaries, and several differences in
/// one window (compared in parallel): the lowest is reported.
#[test]
fn difference_across_task_and_window_boundaries() {
    let dir = tempdir();
    let size = 2 * WINDOW + 32 * MIB;
    let mut rng = Rng::new(10_14);
    // Data all around both window boundaries, and a hole in the middle.
    let runs = vec![
        (WINDOW - 8 * MIB, rng.bytes(16 * MIB as usize)),
        (2 * WINDOW - 4 * MIB, rng.bytes(8 * MIB as usize)),
    ];
    let raw = dir.path().join("a.raw");
    sparse_raw(&raw, size, &runs);
    let vhd = dynamic_of(&raw, &dir.path().join("a.vhd"));
    let flip = |at: u64, n: usize| -> Vec<u8> {
        let mut v = vec![0u8; n];
        File::open(&raw)
            .expect("raw")
            .read_exact_at(&mut v, at)
            .expect("read");
        v.iter().map(|b| !b).collect()
    };
    let cases: Vec<(&str, Runs, u64)> = vec![
        (
            "a run across the first window boundary",
            vec![(WINDOW - 3, flip(WINDOW - 3, 4096))],
            WINDOW - 512,
        ),
        (
            "the first byte of the second window",
            vec![(WINDOW, flip(WINDOW, 1))],
            WINDOW,
        ),
        (
            "a run across a task boundary",
            vec![(WINDOW - TASK - 1, flip(WINDOW - TASK - 1, 2))],
            WINDOW - TASK - 512,
        ),
        (
            "three differences in one window, the lowest last written",
            vec![
                (2 * WINDOW - 1000, flip(2 * WINDOW - 1000, 1)),
                (
                    WINDOW + 5 * MIB + 12_345,
                    flip(WINDOW + 5 * MIB + 12_345, 1),
                ),
                (WINDOW + 3 * MIB + 7, flip(WINDOW + 3 * MIB + 7, 1)),
            ],
            WINDOW + 3 * MIB,
        ),
        (
            "in a hole of the third window",
            vec![(2 * WINDOW + 20 * MIB + 1, vec![1])],
            2 * WINDOW + 20 * MIB,
        ),
    ];
    for (i, (what, writes, want)) in cases.into_iter().enumerate() {
        let b = dir.path().join(format!("w{i}.raw"));
        std::fs::copy(&raw, &b).expect("copy");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&b)
            .expect("open");
        for (at, data) in &writes {
            f.write_all_at(data, *at).expect("write");
        }
        assert_eq!(both(&vhd, "vpc", &b, "raw"), Some(want), "{what}");
        assert_eq!(both(&raw, "raw", &b, "raw"), Some(want), "{what}: raw");
    }
}

/// A differencing chain against its flattened content: identical; the chain's base
/// against it differs where qemu-img (reading the base alone) says it does.
#[test]
fn chain_is_identical_to_its_flattened_raw() {
    let dir = tempdir();
    let size = 8 * MIB;
    let base_vhd = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    create(
        &base_vhd,
        &["--type", "dynamic", "--size", &size.to_string()],
    );
    let mut rng = Rng::new(14);
    let mut model = Model::new(size);
    write_both(&base_vhd, &mut model, 100_000, &rng.bytes(3 * MIB as usize));
    write_both(&base_vhd, &mut model, 6 * MIB, &rng.bytes(5000));
    vhdkit([
        OsStr::new("create"),
        child.as_os_str(),
        OsStr::new("--type"),
        OsStr::new("differencing"),
        OsStr::new("--parent"),
        base_vhd.as_os_str(),
    ])
    .ok();
    let mut flat = model.clone();
    write_both(&child, &mut flat, 2 * MIB + 3, &rng.bytes(70_000));
    write_both(&child, &mut flat, 7 * MIB, &rng.bytes(512));
    let raw = dir.path().join("flat.raw");
    std::fs::write(&raw, &flat.0).expect("raw");
    assert_bytes_eq("vhdkit read of the chain", &read_all(&child), &flat.0);

    let r = vhdkit_compare(&child, &raw, &[]);
    assert_eq!(verdict("vhdkit", &r), None);
    let v = vhdkit_compare(&raw, &child, &["--json"]).json();
    assert_eq!(v["identical"], true, "{v}");
    assert!(v["first_difference"].is_null(), "{v}");
    assert_eq!(v["size_a"], size, "{v}");
    assert_eq!(v["size_b"], size, "{v}");
    // The base alone lacks the child's writes; qemu-img reads the base (a dynamic VHD).
    assert_eq!(
        both(&base_vhd, "vpc", &raw, "raw"),
        Some((2 * MIB + 3) / 512 * 512)
    );
}

/// Both tools on disks of different sizes: the verdict (the last line), and whether
/// the size warning was printed.
fn both_sized(a: &Path, fa: &str, b: &Path, fb: &str) -> (Verdict, bool) {
    let q = qemu_img_compare(a, fa, b, fb, &[]);
    let v = vhdkit_compare(a, b, &[]);
    let last = |r: &Run| {
        let out = r.stdout_str();
        let warned = out.lines().count() == 2
            && out
                .lines()
                .next()
                .is_some_and(|l| l.to_lowercase().starts_with("warning: image size mismatch"));
        let only_last = Run {
            code: r.code,
            stdout: out.lines().last().unwrap_or_default().as_bytes().to_vec(),
            stderr: r.stderr.clone(),
        };
        (only_last, warned)
    };
    let (q_last, q_warned) = last(&q);
    let (v_last, v_warned) = last(&v);
    let want = verdict("qemu-img", &q_last);
    assert_eq!(
        verdict("vhdkit", &v_last),
        want,
        "{} vs {}",
        a.display(),
        b.display()
    );
    assert_eq!(v_warned, q_warned, "the size warning: {}", v.stdout_str());
    let j = vhdkit_compare(a, b, &["--json"]);
    let doc = j.json();
    assert_eq!(j.code, if want.is_some() { 1 } else { 0 }, "{}", j.stderr);
    assert_eq!(doc["identical"], want.is_none(), "{doc}");
    assert_eq!(doc["first_difference"].as_u64(), want, "{doc}");
    (want, v_warned)
}

#[test]
fn different_sizes_compare_the_common_part_then_a_zero_tail_as_qemu_img_does() {
    let dir = tempdir();
    let short = dir.path().join("short.raw");
    let long = dir.path().join("long.raw");
    let tail = dir.path().join("tail.raw");
    let head = dir.path().join("head.raw");
    sparse_raw(&short, 4 * MIB, &[(0, pattern(1, 4096))]);
    sparse_raw(&long, 8 * MIB, &[(0, pattern(1, 4096))]);
    sparse_raw(
        &tail,
        8 * MIB,
        &[(0, pattern(1, 4096)), (6_000_000, vec![7])],
    );
    sparse_raw(
        &head,
        8 * MIB,
        &[(0, pattern(2, 4096)), (6_000_000, vec![7])],
    );
    // The longer one as a dynamic VHD, its tail stored in a block past the short end.
    let tail_vhd = dynamic_of(&tail, &dir.path().join("tail.vhd"));

    // Identical where both have data, zeros beyond: identical, with a warning.
    assert_eq!(both_sized(&short, "raw", &long, "raw"), (None, true));
    assert_eq!(both_sized(&long, "raw", &short, "raw"), (None, true));
    // A byte in the tail: its sector, either way round, raw or VHD.
    let at = 6_000_000 / 512 * 512;
    assert_eq!(both_sized(&short, "raw", &tail, "raw"), (Some(at), true));
    assert_eq!(both_sized(&tail, "raw", &short, "raw"), (Some(at), true));
    assert_eq!(
        both_sized(&tail_vhd, "vpc", &short, "raw"),
        (Some(at), true)
    );
    // A difference in the common part comes first, without the warning.
    assert_eq!(both_sized(&short, "raw", &head, "raw"), (Some(0), false));
}

#[test]
fn strict_makes_a_size_difference_a_mismatch() {
    let dir = tempdir();
    let a = dir.path().join("a.raw");
    let b = dir.path().join("b.raw");
    sparse_raw(&a, 4 * MIB, &[]);
    sparse_raw(&b, 4 * MIB + 512, &[]);

    let text = vhdkit_compare(&a, &b, &["--strict"]);
    let j = vhdkit_compare(&a, &b, &["--strict", "--json"]);
    let same = vhdkit_compare(&a, &a, &["--strict"]);

    assert_eq!(text.code, EXIT_DIFFERENT, "{}", text.stderr);
    assert!(
        text.stdout_str()
            .starts_with("Strict mode: image size mismatch"),
        "{}",
        text.stdout_str()
    );
    assert_eq!(j.code, EXIT_DIFFERENT, "{}", j.stderr);
    let v = j.json();
    assert_eq!(v["identical"], false, "{v}");
    assert!(v["first_difference"].is_null(), "{v}");
    assert_eq!(v["size_a"], 4 * MIB, "{v}");
    assert_eq!(v["size_b"], 4 * MIB + 512, "{v}");
    assert_eq!(
        same.code, EXIT_OK,
        "equal sizes pass --strict: {}",
        same.stderr
    );
    // qemu-img's -s agrees.
    let q = qemu_img_compare(&a, "raw", &b, "raw", &["-s"]);
    assert_eq!(q.code, EXIT_DIFFERENT, "{}", q.stdout_str());
}

/// A closed stdout ends the command quietly (no panic), with or without --json.
#[test]
fn closed_stdout_does_not_panic() {
    use std::process::Stdio;
    let dir = tempdir();
    let (raw, _, _) = base(dir.path(), 16 * MIB);
    let b = changed(&raw, &dir.path().join("b.raw"), 5, &[1]);
    for extra in [&[][..], &["--json"][..]] {
        let mut c = Command::new(bin());
        c.arg("compare").arg(&raw).arg(&b).args(extra);
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let o = child.wait_with_output().expect("wait");
        let r = Run::from_output(o);
        assert_no_panic(&r);
    }
}
