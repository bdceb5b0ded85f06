//! The CLI contract: exit codes (0 ok, 1 compare differs / check found problems, 2 usage,
//! 3 failure with one `vhdkit:` line on stderr), `compare` of VHDs and raw images,
//! `map --json` extents, `check --json`, `read`/`write` ranges.

mod common;

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn disk_with(dir: &Path, name: &str, kind: &str, writes: &[(u64, Vec<u8>)]) -> PathBuf {
    let p = dir.join(name);
    create(&p, &["--type", kind, "--size", "5000704"]);
    for (off, data) in writes {
        write_at(&p, *off, data, &[]);
    }
    p
}

fn some_writes(seed: u64) -> Vec<(u64, Vec<u8>)> {
    random_writes(&mut Rng::new(seed), 5_000_704, 12)
}

fn model_of(writes: &[(u64, Vec<u8>)]) -> Model {
    let mut m = Model::new(5_000_704);
    for (off, d) in writes {
        m.write(*off, d);
    }
    m
}

fn compare(a: &Path, b: &Path) -> Run {
    let r = vhdkit([OsStr::new("compare"), a.as_os_str(), b.as_os_str()]);
    assert_no_panic(&r);
    r
}

// --- compare --------------------------------------------------------------------------

#[test]
fn compare_fixed_and_dynamic_with_same_content_exits_0() {
    let dir = tempdir();
    let w = some_writes(401);
    let a = disk_with(dir.path(), "a.vhd", "fixed", &w);
    let b = disk_with(dir.path(), "b.vhd", "dynamic", &w);
    let r = compare(&a, &b);
    assert_eq!(r.code, EXIT_OK, "{}{}", r.stdout_str(), r.stderr);
}

#[test]
fn compare_one_byte_difference_exits_1_naming_the_offset() {
    let dir = tempdir();
    let w = some_writes(402);
    let a = disk_with(dir.path(), "a.vhd", "dynamic", &w);
    let b = disk_with(dir.path(), "b.vhd", "dynamic", &w);
    let at = 4_321_001u64;
    let old = read_range(&b, at, 1)[0];
    write_at(&b, at, &[old ^ 0x40], &[]);
    let r = compare(&a, &b);
    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stderr);
    // As qemu-img compare: the start of the first differing 512-byte sector.
    let sector = at / 512 * 512;
    assert_eq!(
        r.stdout_str().trim(),
        format!("Content mismatch at offset {sector}"),
        "names the first differing sector of byte {at}"
    );
}

#[test]
fn compare_different_sizes_exits_0_over_a_zero_tail_and_1_with_strict() {
    let dir = tempdir();
    let a = disk_with(dir.path(), "a.vhd", "dynamic", &[]);
    let b = dir.path().join("b.vhd");
    create(&b, &["--type", "dynamic", "--size", "5001216"]);
    let r = compare(&a, &b);
    assert_eq!(r.code, EXIT_OK, "as qemu-img compare: {}", r.stderr);
    assert!(r.stdout_str().starts_with("Warning: image size mismatch"));
    let strict = vhdkit([
        "compare".as_ref(),
        a.as_os_str(),
        b.as_os_str(),
        "--strict".as_ref(),
    ]);
    assert_eq!(strict.code, EXIT_DIFFERENT, "{}", strict.stderr);
}

#[test]
fn compare_vhd_with_equal_raw_image_exits_0() {
    let dir = tempdir();
    let w = some_writes(403);
    let a = disk_with(dir.path(), "a.vhd", "dynamic", &w);
    let raw = dir.path().join("a.raw");
    std::fs::write(&raw, model_of(&w).0).expect("raw");
    assert_eq!(compare(&a, &raw).code, EXIT_OK);
    assert_eq!(compare(&raw, &a).code, EXIT_OK, "either order");
}

#[test]
fn compare_vhd_with_different_raw_image_exits_1() {
    let dir = tempdir();
    let w = some_writes(404);
    let a = disk_with(dir.path(), "a.vhd", "fixed", &w);
    let mut m = model_of(&w);
    m.0[5_000_703] ^= 1;
    let raw = dir.path().join("a.raw");
    std::fs::write(&raw, &m.0).expect("raw");
    let r = compare(&a, &raw);
    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stderr);
    // Byte 5000703 differs: qemu-img (and vhdkit) name its sector, 5000192.
    assert!(r.stdout_str().contains("5000192"), "{}", r.stdout_str());
}

/// A copy of the fixture chain in `dir`, each parent's time the one its child records
/// (a checkout gives every file the time of the checkout); returns top.vhd.
fn chain_copy(dir: &Path) -> PathBuf {
    for n in ["base.vhd", "mid.vhd", "top.vhd"] {
        std::fs::copy(fixture(&format!("chain/{n}")), dir.join(n)).expect("copy");
    }
    restore_parent_time(&dir.join("top.vhd"), &dir.join("mid.vhd"));
    restore_parent_time(&dir.join("mid.vhd"), &dir.join("base.vhd"));
    dir.join("top.vhd")
}

#[test]
fn compare_differencing_chain_with_raw_of_its_content_exits_0() {
    let dir = tempdir();
    let top = chain_copy(dir.path());
    let raw = dir.path().join("top.raw");
    std::fs::write(&raw, read_all(&top)).expect("raw");
    assert_eq!(compare(&top, &raw).code, EXIT_OK);
    // The parent alone differs from the child.
    assert_eq!(
        compare(&dir.path().join("mid.vhd"), &raw).code,
        EXIT_DIFFERENT
    );
}

#[test]
fn compare_missing_file_fails_with_one_line() {
    let dir = tempdir();
    let a = disk_with(dir.path(), "a.vhd", "dynamic", &[]);
    let r = compare(&a, &dir.path().join("nope.vhd"));
    let line = assert_failed_one_line(&r);
    assert!(line.contains("nope.vhd"), "{line}");
}

// --- map --------------------------------------------------------------------------------

fn map_rows(disk: &Path) -> Vec<serde_json::Value> {
    vhdkit(["map".as_ref(), disk.as_os_str(), "--json".as_ref()])
        .ok()
        .json()["rows"]
        .as_array()
        .expect("map --json has a rows array")
        .clone()
}

#[test]
fn map_json_of_chain_extents_tile_the_virtual_size() {
    let top = fixture("chain/top.vhd");
    let rows = map_rows(&top);
    let mut pos = 0u64;
    let mut kinds = std::collections::BTreeSet::new();
    for r in &rows {
        assert_eq!(
            r["start"].as_u64(),
            Some(pos),
            "extents are contiguous: {r}"
        );
        let len = r["length"].as_u64().expect("length");
        assert!(len > 0, "no empty extents: {r}");
        pos += len;
        kinds.insert(r["kind"].as_str().expect("kind").to_owned());
    }
    assert_eq!(pos, 4 * MIB, "extent lengths sum to the virtual size");
    for k in ["allocated", "parent", "zero"] {
        assert!(
            kinds.contains(k),
            "a 3-level chain map shows {k} extents: {kinds:?}"
        );
    }
}

#[test]
fn map_json_of_chain_agrees_with_content() {
    let top = fixture("chain/top.vhd");
    let data = read_all(&top);
    let layer_paths: Vec<PathBuf> = ["top.vhd", "mid.vhd", "base.vhd"]
        .iter()
        .map(|n| fixture(&format!("chain/{n}")))
        .collect();
    for r in map_rows(&top) {
        let start = r["start"].as_u64().expect("start") as usize;
        let len = r["length"].as_u64().expect("length") as usize;
        match r["kind"].as_str().expect("kind") {
            "zero" => assert!(
                all_zero(&data[start..start + len]),
                "a zero extent reads as zeros: {r}"
            ),
            kind => {
                // Data extents: the bytes are in the named layer's file at file_offset.
                let layer = r["layer"].as_u64().expect("layer") as usize;
                assert_eq!(kind == "allocated", layer == 0, "{r}");
                let file = std::fs::read(&layer_paths[layer]).expect("layer file");
                let off = r["file_offset"].as_u64().expect("file_offset") as usize;
                assert_bytes_eq(
                    &format!("extent {r}"),
                    &file[off..off + len],
                    &data[start..start + len],
                );
            }
        }
    }
}

#[test]
fn map_json_of_new_dynamic_is_one_zero_extent() {
    let dir = tempdir();
    let d = disk_with(dir.path(), "d.vhd", "dynamic", &[]);
    let rows = map_rows(&d);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["kind"], "zero");
    assert_eq!(rows[0]["length"].as_u64(), Some(5_000_704));
}

// --- check and info ---------------------------------------------------------------------

#[test]
fn check_json_of_good_chain_is_clean_for_every_file() {
    let dir = tempdir();
    let top = chain_copy(dir.path());
    let r = vhdkit(["check".as_ref(), top.as_os_str(), "--json".as_ref()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    let v = r.json();
    assert_eq!(v["clean"], true);
    assert_eq!(v["problem_count"].as_u64(), Some(0));
    assert_eq!(
        v["files"].as_array().map(Vec::len),
        Some(3),
        "top, mid and base"
    );
}

#[test]
fn check_text_of_good_disk_exits_0() {
    let dir = tempdir();
    let d = disk_with(dir.path(), "d.vhd", "dynamic", &some_writes(405));
    let r = vhdkit(["check".as_ref(), d.as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
}

#[test]
fn info_json_describes_a_dynamic_disk() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    create(
        &d,
        &[
            "--type",
            "dynamic",
            "--size",
            "5000704",
            "--block-size",
            "512K",
        ],
    );
    write_at(&d, 600_000, b"x", &[]);
    let i = info(&d);
    assert_eq!(i["disk_type"], "dynamic");
    assert_eq!(i["virtual_size"].as_u64(), Some(5_000_704));
    assert_eq!(i["block_size"].as_u64(), Some(512 * KIB));
    assert_eq!(i["allocated_blocks"].as_u64(), Some(1));
    assert_eq!(i["max_table_entries"].as_u64(), Some(10));
    assert_eq!(i["creator_app"], "vhdk");
    let id = i["unique_id"].as_str().expect("unique_id");
    assert!(uuid_like(id), "{id}");
    assert_eq!(i["parent"], serde_json::Value::Null);
}

fn uuid_like(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
}

#[test]
fn info_of_missing_file_fails_with_one_line_naming_it() {
    let dir = tempdir();
    let p = dir.path().join("absent.vhd");
    let r = vhdkit(["info".as_ref(), p.as_os_str()]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("absent.vhd"), "{line}");
}

#[test]
fn info_of_raw_file_fails_with_one_line() {
    let dir = tempdir();
    let p = dir.path().join("raw.img");
    std::fs::write(&p, vec![0x55u8; 1 << 20]).expect("raw");
    let r = vhdkit(["info".as_ref(), p.as_os_str()]);
    let line = assert_failed_one_line(&r);
    assert!(
        line.contains("not a VHD") || line.contains("footer"),
        "{line}"
    );
}

// --- read and write ---------------------------------------------------------------------

#[test]
fn read_offset_and_length_return_that_slice() {
    let dir = tempdir();
    let w = some_writes(406);
    let d = disk_with(dir.path(), "d.vhd", "dynamic", &w);
    let m = model_of(&w);
    for (off, len) in [
        (0u64, 1u64),
        (511, 2),
        (1_048_575, 3_000_000),
        (5_000_703, 1),
    ] {
        assert_bytes_eq(
            &format!("read {off}+{len}"),
            &read_range(&d, off, len),
            &m.0[off as usize..(off + len) as usize],
        );
    }
}

#[test]
fn read_output_file_equals_stdout() {
    let dir = tempdir();
    let w = some_writes(407);
    let d = disk_with(dir.path(), "d.vhd", "dynamic", &w);
    let out = dir.path().join("out.raw");
    vhdkit([
        "read".as_ref(),
        d.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ])
    .ok();
    assert_bytes_eq(
        "--output",
        &std::fs::read(&out).expect("out"),
        &model_of(&w).0,
    );
}

#[test]
fn read_past_the_end_fails_with_one_line() {
    let dir = tempdir();
    let d = disk_with(dir.path(), "d.vhd", "dynamic", &[]);
    let r = vhdkit([
        "read".as_ref(),
        d.as_os_str(),
        "--offset".as_ref(),
        "5000000".as_ref(),
        "--length".as_ref(),
        "705".as_ref(),
    ]);
    assert_failed_one_line(&r);
    assert!(r.stdout.is_empty());
}

#[test]
fn write_past_the_end_fails_and_changes_nothing() {
    let dir = tempdir();
    let d = disk_with(dir.path(), "d.vhd", "dynamic", &[]);
    let before = std::fs::read(&d).expect("read");
    let r = try_write_at(&d, 5_000_000, &[1u8; 705], &[]);
    assert_failed_one_line(&r);
    assert_eq!(
        std::fs::read(&d).expect("read"),
        before,
        "the file is untouched"
    );
}

#[test]
fn write_from_stdin_lands_at_offset() {
    let dir = tempdir();
    let d = disk_with(dir.path(), "d.vhd", "fixed", &[]);
    let data = Rng::new(408).bytes(100_000);
    let r = vhdkit_stdin(
        [
            "write".as_ref(),
            d.as_os_str(),
            "--offset".as_ref(),
            OsStr::new("1234567"),
        ],
        &data,
    );
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_bytes_eq("stdin write", &read_range(&d, 1_234_567, 100_000), &data);
}

#[test]
fn read_into_closed_pipe_exits_quietly() {
    let dir = tempdir();
    let d = disk_with(dir.path(), "d.vhd", "fixed", &[]);
    let mut child = Command::new(bin())
        .args(["read".as_ref(), d.as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    out.read_exact(&mut first).expect("some output");
    drop(out); // like `| head -c 16`
    let o = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        o.status.code() == Some(0),
        "a closed pipe is not an error: {:?} {stderr}",
        o.status
    );
}

// --- usage errors (exit 2) --------------------------------------------------------------

fn assert_usage(args: &[&str]) {
    let r = vhdkit(args);
    assert_no_panic(&r);
    assert_eq!(r.code, EXIT_USAGE, "vhdkit {args:?}: {}", r.stderr);
}

#[test]
fn usage_no_subcommand_exits_2() {
    assert_usage(&[]);
}

#[test]
fn usage_unknown_subcommand_exits_2() {
    assert_usage(&["frobnicate", "x.vhd"]);
}

#[test]
fn usage_unknown_option_exits_2() {
    assert_usage(&["info", "x.vhd", "--no-such-option"]);
}

#[test]
fn usage_read_without_path_exits_2() {
    assert_usage(&["read"]);
}

#[test]
fn usage_bad_disk_type_exits_2() {
    assert_usage(&["create", "x.vhd", "--type", "sparse", "--size", "4M"]);
}

#[test]
fn usage_differencing_without_parent_exits_2() {
    let dir = tempdir();
    let p = dir.path().join("c.vhd");
    assert_usage(&[
        "create",
        p.to_str().expect("utf-8"),
        "--type",
        "differencing",
    ]);
    assert!(!p.exists());
}

#[test]
fn usage_differencing_with_size_exits_2() {
    let dir = tempdir();
    let base = disk_with(dir.path(), "b.vhd", "dynamic", &[]);
    let p = dir.path().join("c.vhd");
    assert_usage(&[
        "create",
        p.to_str().expect("utf-8"),
        "--type",
        "differencing",
        "--parent",
        base.to_str().expect("utf-8"),
        "--size",
        "4M",
    ]);
    assert!(!p.exists());
}

#[test]
fn usage_write_without_offset_exits_2() {
    assert_usage(&["write", "x.vhd"]);
}

#[test]
fn version_exits_0() {
    let r = vhdkit(["--version"]);
    assert_eq!(r.code, EXIT_OK);
    assert!(r.stdout_str().contains("vhdkit"));
}

#[test]
fn options_that_do_not_apply_are_usage_errors_with_the_subcommands_usage() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    create(&d, &["--type", "dynamic", "--size", "4M"]);
    let other = dir.path().join("o.vhd");
    create(&other, &["--type", "dynamic", "--size", "4M"]);
    let out = dir.path().join("out.vhd");
    let s = |p: &Path| p.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["info".into(), s(&d), "--with-parent".into(), s(&other)],
            "Usage: vhdkit info",
        ),
        (
            vec!["read".into(), s(&d), "--with-parent".into(), s(&other)],
            "Usage: vhdkit read",
        ),
        (
            vec![
                "convert".into(),
                s(&d),
                s(&out),
                "--type".into(),
                "fixed".into(),
                "--block-size".into(),
                "1M".into(),
            ],
            "Usage: vhdkit convert",
        ),
        (
            vec![
                "convert".into(),
                s(&d),
                s(&out),
                "--type".into(),
                "dynamic".into(),
                "--sparse".into(),
            ],
            "Usage: vhdkit convert",
        ),
        (
            vec![
                "create".into(),
                s(&out),
                "--type".into(),
                "dynamic".into(),
                "--size".into(),
                "4M".into(),
                "--sparse".into(),
            ],
            "Usage: vhdkit create",
        ),
        (
            vec![
                "create".into(),
                s(&out),
                "--type".into(),
                "fixed".into(),
                "--size".into(),
                "0".into(),
            ],
            "Usage: vhdkit create",
        ),
        (
            vec![
                "create".into(),
                s(&out),
                "--type".into(),
                "dynamic".into(),
                "--size".into(),
                "4M".into(),
                "--block-size".into(),
                "3000".into(),
            ],
            "Usage: vhdkit create",
        ),
    ];
    for (args, usage) in cases {
        let r = vhdkit(args.iter().map(OsStr::new));
        assert_eq!(r.code, EXIT_USAGE, "{args:?}: {}", r.stderr);
        // Our own checks print the subcommand's usage; clap's value checks point at it.
        assert!(
            r.stderr.contains(usage) || r.stderr.contains("try '--help'"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(!out.exists());
    }
}
