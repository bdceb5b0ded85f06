//! The JSON contract in machine-readable form: `docs/schema/*.schema.json`, one strict
//! JSON Schema per document type (every object closed, every field that is always
//! present required), against which every document every command prints — each
//! command's result, `--progress json` events, error and refusal documents, `serve`'s
//! lines — is validated here. A field added without its schema, a type changed, a
//! value out of its list fails; and docs/json.md must name every schema and field.

mod common;
mod serve_support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// Every document type, by its file under docs/schema/.
const SCHEMAS: [&str; 14] = [
    "check",
    "check-azure",
    "compare",
    "error",
    "info",
    "map",
    "measure",
    "progress-event",
    "read",
    "report",
    "serve-start",
    "serve-stop",
    "set-parent",
    "write",
];

/// `vhdkit ARGS`, asserted to succeed; its document.
fn doc(args: &[&str]) -> Value {
    vhdkit(args).ok().json()
}

/// `vhdkit ARGS --json --progress none` of an operation; its report, validated.
fn report(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--json", "--progress", "none"]);
    let r = doc(&a);
    assert_schema("report", &r);
    r
}

/// An 8 MiB dynamic disk with data at the start and in its last block.
fn disk(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    create(&d, &["--type", "dynamic", "--size", "8M"]);
    write_at(&d, 4096, &pattern(1, 70_000), &[]);
    write_at(&d, 7 * MIB, &pattern(2, 4096), &[]);
    d
}

/// `base.vhd ← mid.vhd ← top.vhd` in `dir`, 64 MiB, data in each level.
fn chain(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let base = dir.join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "64M"]);
    write_at(&base, 0, &pattern(1, 3 * MIB as usize), &[]);
    let mid = dir.join("mid.vhd");
    create(&mid, &["--type", "differencing", "--parent", "base.vhd"]);
    write_at(&mid, 40 * MIB, &pattern(2, 4096), &[]);
    let top = dir.join("top.vhd");
    create(&top, &["--type", "differencing", "--parent", "mid.vhd"]);
    write_at(&top, 512, &pattern(3, 4096), &[]);
    (base, mid, top)
}

/// A raw image holding a file system from byte 0 (mkfs.ext4), and one with an MBR
/// partition table (sfdisk) whose one partition holds nothing known.
fn volumes(dir: &Path) -> (PathBuf, PathBuf) {
    let fs = dir.join("fs.raw");
    std::fs::write(&fs, vec![0u8; (16 * MIB) as usize]).expect("write");
    need("mkfs.ext4", &["-V"]);
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&fs)
        .status()
        .expect("mkfs.ext4");
    assert!(made.success());
    let table = dir.join("table.raw");
    std::fs::write(&table, vec![0u8; (16 * MIB) as usize]).expect("write");
    sfdisk(&table, "label: dos\n1MiB,8MiB,83\n");
    (fs, table)
}

// --- the schemas themselves ------------------------------------------------------------

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema")
}

#[test]
fn every_schema_file_is_listed_and_is_a_valid_schema() {
    let mut found: Vec<String> = std::fs::read_dir(schema_dir())
        .expect("docs/schema")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();

    let mut listed: Vec<String> = SCHEMAS.iter().map(|n| format!("{n}.schema.json")).collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "docs/schema/ holds exactly the listed schemas"
    );
    for name in SCHEMAS {
        let s = json_schema(name);
        if let Err(e) = jsonschema::meta::validate(&s) {
            panic!("{name}: not valid against its meta-schema: {e}");
        }
        assert_eq!(s["properties"]["schema"]["const"], 1, "{name}: schema 1");
    }
}

/// Every object a schema describes is closed and says which fields it always has.
#[test]
fn every_object_in_every_schema_is_closed() {
    fn walk(v: &Value, at: &str, bad: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if m.get("type") == Some(&Value::from("object")) {
                    if m.get("additionalProperties") != Some(&Value::Bool(false)) {
                        bad.push(format!("{at}: additionalProperties is not false"));
                    }
                    if !m.contains_key("required") {
                        bad.push(format!("{at}: no required list"));
                    }
                }
                for (k, x) in m {
                    walk(x, &format!("{at}/{k}"), bad);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{at}/{i}"), bad);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    for name in SCHEMAS {
        walk(&json_schema(name), name, &mut bad);
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// docs/json.md links every schema and names every field the schemas describe (as a
/// `code span`, alone or as the last step of a path: `files[].problems`).
#[test]
fn docs_json_md_names_every_schema_and_every_field() {
    fn fields(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(props)) = m.get("properties") {
                    out.extend(props.keys().cloned());
                }
                m.values().for_each(|x| fields(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| fields(x, out)),
            _ => {}
        }
    }
    let md = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json.md"))
        .expect("docs/json.md");
    // Every `code span`, and the last step of a path in one (`files[].problems`).
    let named: std::collections::HashSet<&str> = md
        .split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|span| [span, span.rsplit(['.', '…']).next().unwrap_or(span)])
        .collect();
    let mut missing = Vec::new();
    for name in SCHEMAS {
        if !md.contains(&format!("schema/{name}.schema.json")) {
            missing.push(format!("the link to schema/{name}.schema.json"));
        }
        let mut names = Vec::new();
        fields(&json_schema(name), &mut names);
        for f in names {
            if !named.contains(f.as_str()) {
                missing.push(format!("{name}: `{f}`"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/json.md lacks: {missing:#?}");
}

#[test]
fn a_field_no_schema_describes_fails_validation() {
    let dir = tempdir();
    let d = disk(dir.path(), "d.vhd");
    let mut v = doc(&["info", p(&d), "--json"]);
    assert_schema("info", &v);

    v["chain"][0]["surprise"] = Value::from(1);
    let nested = std::panic::catch_unwind(|| assert_schema("info", &v));
    v["chain"][0]
        .as_object_mut()
        .expect("object")
        .remove("surprise");
    v["surprise"] = Value::from(1);
    let top = std::panic::catch_unwind(|| assert_schema("info", &v));
    v.as_object_mut().expect("object").remove("surprise");
    v["virtual_size"] = Value::from("8M");
    let wrong_type = std::panic::catch_unwind(|| assert_schema("info", &v));

    assert!(nested.is_err(), "an undescribed nested field passed");
    assert!(top.is_err(), "an undescribed field passed");
    assert!(wrong_type.is_err(), "a string size passed");
}

// --- every command's documents ----------------------------------------------------------

#[test]
fn info_documents_are_valid() {
    let dir = tempdir();
    let (_, _, top) = chain(dir.path());
    let fixed = dir.path().join("f.vhd");
    create(&fixed, &["--type", "fixed", "--size", "4M"]);
    let device = dir.path().join("device.img");
    std::fs::write(&device, vec![7u8; (4 * MIB) as usize]).expect("device");
    let stub = dir.path().join("stub.vhd");
    create(&stub, &["--type", "host-drive", "--host-drive", p(&device)]);
    let orphan = fixture("malformed/parent-missing/child.vhd");
    let copy = fixture("malformed/footer-missing.vhd");

    for (what, path) in [
        ("differencing", &top),
        ("fixed", &fixed),
        ("host-drive", &stub),
        ("parent missing", &orphan),
        ("footer from its copy", &copy),
    ] {
        let v = doc(&[
            "info",
            p(path),
            "--json",
            "--host-drive",
            "--host-drive-file",
        ]);
        assert_schema("info", &v);
        match what {
            "differencing" => assert_eq!(v["chain"].as_array().map(Vec::len), Some(3)),
            "host-drive" => assert!(v["host_drive"].is_object(), "{v}"),
            "parent missing" => assert!(v["parent"]["error"].is_string(), "{v}"),
            "footer from its copy" => assert_eq!(v["footer_source"], "copy", "{v}"),
            _ => {}
        }
    }
}

#[test]
fn check_documents_are_valid() {
    let dir = tempdir();
    let d = disk(dir.path(), "d.vhd");
    let damaged = fixture("malformed/bat-entries-overlap.vhd");
    let repairable = dir.path().join("r.vhd");
    std::fs::copy(fixture("malformed/footer-missing.vhd"), &repairable).expect("copy");

    let clean = doc(&["check", p(&d), "--json"]);
    let problems = vhdkit(["check", p(&damaged), "--json"]);
    let repaired = doc(&["check", p(&repairable), "--repair", "--json"]);

    assert_schema("check", &clean);
    assert_eq!(problems.code, EXIT_DIFFERENT, "{}", problems.stderr);
    let problems = problems.json();
    assert_schema("check", &problems);
    assert!(problems["problem_count"].as_u64() > Some(0), "{problems}");
    assert_schema("check", &repaired);
    assert!(repaired["repairs"].is_array(), "{repaired}");
}

#[test]
fn check_for_azure_documents_are_valid() {
    let dir = tempdir();
    let fixed = dir.path().join("f.vhd");
    create(&fixed, &["--type", "fixed", "--size", "20M"]);
    let dynamic = disk(dir.path(), "d.vhd");
    let raw = dir.path().join("x.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).expect("raw");

    for (path, conforms) in [(&fixed, true), (&dynamic, false), (&raw, false)] {
        let r = vhdkit(["check", p(path), "--for", "azure", "--json"]);
        let v = r.json();
        assert_schema("check-azure", &v);
        assert_eq!(v["conforms"], conforms, "{v}");
    }
}

#[test]
fn map_compare_read_write_measure_documents_are_valid() {
    let dir = tempdir();
    let (_, _, top) = chain(dir.path());
    let d = disk(dir.path(), "d.vhd");
    let other = disk(dir.path(), "e.vhd");
    write_at(&other, 5000, b"x", &[]);
    let short = dir.path().join("short.raw");
    std::fs::write(&short, vec![0u8; (4 * MIB) as usize]).expect("raw");
    let empty = dir.path().join("empty.vhd");
    create(&empty, &["--type", "dynamic", "--size", "8M"]);
    let out = dir.path().join("part.raw");
    let input = dir.path().join("in.bin");
    std::fs::write(&input, pattern(5, 1000)).expect("input");

    let map = doc(&["map", p(&top), "--json"]);
    let kinds: Vec<&str> = map["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert!(
        ["allocated", "parent", "zero"]
            .iter()
            .all(|k| kinds.contains(k)),
        "{map}"
    );
    assert_schema("map", &map);
    assert_schema("compare", &doc(&["compare", p(&d), p(&d), "--json"]));
    for args in [
        vec!["compare", p(&d), p(&other), "--json"],
        vec!["compare", p(&d), p(&short), "--json", "--strict"],
    ] {
        let r = vhdkit(&args);
        assert_eq!(r.code, EXIT_DIFFERENT, "{args:?}: {}", r.stderr);
        assert_schema("compare", &r.json());
    }
    let longer = doc(&["compare", p(&short), p(&empty), "--json"]);
    assert_schema("compare", &longer);
    assert_eq!(longer["identical"], true, "a zero tail: {longer}");
    assert_schema(
        "read",
        &doc(&[
            "read",
            p(&d),
            "--length",
            "64K",
            "--output",
            p(&out),
            "--json",
        ]),
    );
    assert_schema(
        "write",
        &doc(&[
            "write",
            p(&d),
            "--offset",
            "1M",
            "--input",
            p(&input),
            "--json",
        ]),
    );
    let from_stdin = vhdkit_stdin(["write", p(&d), "--offset", "0", "--json"], b"abc");
    assert_eq!(from_stdin.code, EXIT_OK, "{}", from_stdin.stderr);
    assert_schema("write", &from_stdin.json());
    for kind in ["fixed", "dynamic", "raw"] {
        let m = doc(&["measure", p(&top), "--type", kind, "--json"]);
        assert_schema("measure", &m);
        assert_eq!(m["target"], kind);
    }
}

#[test]
fn operation_reports_are_valid() {
    let dir = tempdir();
    let d = disk(dir.path(), "d.vhd");
    let (fs, table) = volumes(dir.path());
    let out = |n: &str| dir.path().join(n);

    report(&[
        "create",
        p(&out("new.vhd")),
        "--type",
        "fixed",
        "--size",
        "4M",
    ]);
    for (kind, name) in [("fixed", "c.vhd"), ("dynamic", "c2.vhd"), ("raw", "c.raw")] {
        report(&["convert", p(&d), p(&out(name)), "--type", kind, "--verify"]);
    }
    for (src, name) in [(&fs, "fs.vhd"), (&table, "table.vhd")] {
        let r = report(&[
            "convert",
            p(src),
            p(&out(name)),
            "--type",
            "dynamic",
            "--fs-aware",
        ]);
        assert!(r["partitions"].is_array(), "{r}");
        let c = report(&["compact", p(&out(name)), "--fs-aware", "--dry-run"]);
        assert!(c["partition_table"].is_string(), "{c}");
    }
    report(&["compact", p(&d), "--verify"]);
    let grown = report(&["resize", p(&d), "--size", "1G"]);
    assert_eq!(grown["bat"], "relocated", "{grown}");
    report(&["resize", p(&d), "--size", "8M", "--allow-shrink"]);
    let (_, _, top) = chain(dir.path());
    report(&[
        "merge-to",
        p(&top),
        p(&out("flat.vhd")),
        "--type",
        "dynamic",
    ]);
    report(&["merge-to", p(&top), p(&out("flat.raw")), "--type", "raw"]);
    let merged = report(&["merge", p(&top)]);
    assert_eq!(merged["operation"], "merge");
}

/// `merge --into`: operation `merge-into`, its phases, and what a block is there — a
/// stretch of 8 MiB of the virtual disk, copied when a level above the ancestor stores
/// something in it.
#[test]
fn merge_into_report_is_valid_and_counts_stretches_of_8_mib() {
    let dir = tempdir();
    let (base, _, top) = chain(dir.path());

    let r = report(&["merge", p(&top), "--into", p(&base)]);

    assert_eq!(r["operation"], "merge-into", "{r}");
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert_eq!(phases, ["copy", "flush", "child", "intermediates"], "{r}");
    // 64 MiB: 8 stretches; the child's write lies in the first, mid's at 40 MiB in the
    // sixth.
    assert_eq!(r["blocks_total"], 8, "{r}");
    assert_eq!(r["blocks_copied"], 2, "{r}");
    assert_eq!(r["blocks_zero"], 0, "{r}");
}

#[test]
fn set_parent_documents_are_valid() {
    let dir = tempdir();
    let base = disk(dir.path(), "base.vhd");
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "base.vhd"]);
    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).expect("mkdir");
    let new_base = moved.join("base.vhd");
    std::fs::rename(&base, &new_base).expect("move the parent");

    let named = doc(&["set-parent", p(&child), p(&new_base), "--json"]);
    std::fs::rename(&new_base, moved.join("renamed.vhd")).expect("rename");
    let searched = doc(&["set-parent", p(&child), "--search", p(&moved), "--json"]);

    assert_schema("set-parent", &named);
    assert_eq!(named["found_by_search"], false, "{named}");
    assert_schema("set-parent", &searched);
    assert_eq!(searched["found_by_search"], true, "{searched}");
}

#[test]
fn progress_events_and_the_error_ending_a_stream_are_valid() {
    let dir = tempdir();
    let d = disk(dir.path(), "d.vhd");
    let taken = dir.path().join("taken.vhd");
    std::fs::write(&taken, b"x").expect("write");
    let (base, _, top) = chain(dir.path());
    let runs = [
        vec!["convert", p(&d), "c.vhd", "--type", "dynamic", "--verify"],
        vec!["compact", p(&d)],
        vec!["measure", p(&d), "--type", "dynamic"],
        vec!["merge", p(&top), "--into", p(&base)],
        vec!["resize", p(&d), "--size", "12M"],
        vec!["convert", p(&d), p(&taken), "--type", "dynamic"],
    ];
    for args in runs {
        let mut a = args.clone();
        a.extend(["--progress", "json"]);
        let r = vhdkit_in(dir.path(), &a);
        let lines: Vec<Value> = r
            .stderr
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: {e}: {l}")))
            .collect();
        let (last, events) = lines.split_last().expect("lines");
        for e in events {
            assert_schema("progress-event", e);
        }
        if r.code == EXIT_OK {
            assert_schema("progress-event", last);
            assert_eq!(last["final"], true, "{last}");
        } else {
            assert_schema("error", last);
        }
    }
}

#[test]
fn error_documents_are_valid() {
    let dir = tempdir();
    let d = disk(dir.path(), "d.vhd");
    let missing = dir.path().join("nope.vhd");
    let child = dir.path().join("c.vhd");
    create(&child, &["--type", "differencing", "--parent", "d.vhd"]);
    let vol = Tmpfs::new(dir.path(), "small", 2);
    let full = vol.path().join("full.vhd");
    let beyond = dir.path().join("beyond.raw");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["info", p(&missing), "--json"],
            EXIT_FAILED,
            "not_found",
        ),
        (
            vec!["info", p(&d), "--json", "--no-such-option"],
            EXIT_USAGE,
            "usage",
        ),
        (
            vec!["create", p(&missing), "--type", "fixed", "--json"],
            EXIT_USAGE,
            "usage",
        ),
        (
            vec!["resize", p(&d), "--size", "4M", "--json"],
            EXIT_USAGE,
            "usage",
        ),
        (
            vec!["resize", p(&d), "--size", "16M", "--json"],
            EXIT_FAILED,
            "has_children",
        ),
        (
            vec![
                "read",
                p(&d),
                "--offset",
                "9M",
                "--json",
                "--output",
                p(&beyond),
            ],
            EXIT_FAILED,
            "out_of_range",
        ),
        (
            vec![
                "convert",
                p(&d),
                p(&full),
                "--type",
                "fixed",
                "--json",
                "--progress",
                "none",
            ],
            EXIT_FAILED,
            "disk_full",
        ),
    ];
    for (args, code, kind) in cases {
        let r = vhdkit(&args);

        let e = assert_failed_json(&r, code);
        assert_schema("error", &e);
        assert_eq!(e["kind"], kind, "{args:?}: {e}");
    }
}

#[test]
fn serve_start_and_stop_lines_are_valid() {
    let dir = tempdir();
    let d = disk(dir.path(), "d.vhd");
    let undo = dir.path().join("undo.vhd");
    for extra in [vec![], vec!["--read-only"], vec!["--undo", p(&undo)]] {
        let socket = dir.path().join("s.sock");
        let mut args: Vec<&OsStr> = vec![d.as_os_str(), "--socket".as_ref(), socket.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));

        let served = serve_support::serve(&args);
        let start = served.start.clone();
        let ended = served.stop();

        assert_eq!(ended.code, 0, "{extra:?}: {}", ended.stderr);
        assert_schema("serve-start", &start);
        assert_schema("serve-stop", &ended.summary);
        let _ = std::fs::remove_file(&undo);
    }
}
