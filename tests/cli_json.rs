//! The JSON contract of docs/json.md: with `--json` a failure is one JSON object on
//! stderr (message, kind, hresult, path) with the usual exit code; every document
//! vhdkit prints carries `"schema": 1`; `read` and `write` report in JSON too.

mod common;
mod serve_support;

use std::ffi::OsStr;
use std::path::Path;

use common::*;
use serde_json::Value;

fn os(args: &[&dyn AsRef<OsStr>]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// A 8 MiB dynamic disk with data in its first block.
fn small_disk(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("d.vhd");
    create(&p, &["--type", "dynamic", "--size", "8M"]);
    write_at(&p, 4096, &pattern(1, 70_000), &[]);
    p
}

// --- errors ----------------------------------------------------------------------------

#[test]
fn json_error_of_a_missing_file_names_kind_hresult_and_path() {
    let dir = tempdir();
    let missing = dir.path().join("nope.vhd");

    let r = vhdkit(os(&[&"info", &missing, &"--json"]));

    let e = assert_failed_json(&r, EXIT_FAILED);
    assert_eq!(e["kind"], "not_found", "{e}");
    assert_eq!(e["hresult"], "0x80070002", "{e}");
    assert_eq!(e["hresult_value"], 0x8007_0002u32, "{e}");
    assert_eq!(e["path"], missing.to_str().expect("utf-8"), "{e}");
    assert!(r.stdout.is_empty(), "nothing on stdout");
}

#[test]
fn json_error_of_every_command_is_one_object() {
    let dir = tempdir();
    let missing = dir.path().join("nope.vhd");
    let out = dir.path().join("out.raw");
    let dst = dir.path().join("dst.vhd");
    let cases: Vec<Vec<std::ffi::OsString>> = vec![
        os(&[&"info", &missing, &"--json"]),
        os(&[&"check", &missing, &"--json"]),
        os(&[&"map", &missing, &"--json"]),
        os(&[&"read", &missing, &"--output", &out, &"--json"]),
        os(&[&"write", &missing, &"--offset", &"0", &"--json"]),
        os(&[&"compare", &missing, &missing, &"--json"]),
        os(&[&"convert", &missing, &dst, &"--type", &"dynamic", &"--json"]),
        os(&[&"compact", &missing, &"--json"]),
        os(&[&"merge", &missing, &"--json"]),
        os(&[&"merge-to", &missing, &dst, &"--type", &"fixed", &"--json"]),
        os(&[&"serve", &missing, &"--json"]),
    ];
    for args in cases {
        let r = vhdkit(&args);
        let e = assert_failed_json(&r, EXIT_FAILED);
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("nope.vhd")),
            "{args:?}: {e}"
        );
    }
}

#[test]
fn json_error_of_a_usage_mistake_exits_2_with_kind_usage() {
    let dir = tempdir();
    let disk = dir.path().join("x.vhd");
    // One clap finds (an unknown option), one the command finds (--size missing).
    for args in [
        os(&[&"info", &disk, &"--json", &"--no-such-option"]),
        os(&[&"create", &disk, &"--type", &"fixed", &"--json"]),
        os(&[&"convert", &disk, &"--progress", &"json"]),
    ] {
        let r = vhdkit(&args);

        let e = assert_failed_json(&r, EXIT_USAGE);
        assert_eq!(e["kind"], "usage", "{args:?}: {e}");
        assert_eq!(e["hresult"], "0x80070057", "{args:?}: E_INVALIDARG: {e}");
        assert!(e.get("path").is_none(), "{e}");
        assert!(!disk.exists());
    }
}

#[test]
fn usage_mistake_without_json_keeps_clap_text_and_usage() {
    let dir = tempdir();
    let disk = dir.path().join("x.vhd");

    let r = vhdkit(os(&[&"create", &disk, &"--type", &"fixed"]));

    assert_eq!(r.code, EXIT_USAGE, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(
        r.stderr.contains("Usage: vhdkit create"),
        "the subcommand's usage: {}",
        r.stderr
    );
}

#[test]
fn json_error_of_a_parent_not_found_names_the_child() {
    let child = fixture("malformed/parent-missing/child.vhd");

    let r = vhdkit(os(&[&"map", &child, &"--json"]));

    let e = assert_failed_json(&r, EXIT_FAILED);
    assert_eq!(e["kind"], "parent_not_found", "{e}");
    assert_eq!(e["path"], child.to_str().expect("utf-8"), "{e}");
    let value = e["hresult_value"].as_u64().expect("number");
    assert!(value >= 0x8000_0000, "a failure HRESULT: {e}");
    assert!(r.stdout.is_empty(), "no half document on stdout");
}

#[test]
fn json_error_of_an_operation_whose_parent_is_gone_names_the_child() {
    let dir = tempdir();
    let base = small_disk(dir.path());
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", "d.vhd"]);
    std::fs::rename(&base, dir.path().join("moved.vhd")).expect("rename");

    let r = vhdkit(os(&[&"merge", &child, &"--json", &"--progress", &"none"]));

    let e = assert_failed_json(&r, EXIT_FAILED);
    assert_eq!(e["kind"], "parent_not_found", "{e}");
    assert_eq!(e["path"], child.to_str().expect("utf-8"), "{e}");
}

#[test]
fn progress_json_failure_ends_the_stream_with_a_json_error() {
    let dir = tempdir();
    let src = small_disk(dir.path());
    let dst = dir.path().join("dst.vhd");
    std::fs::write(&dst, b"taken").expect("write");

    let r = vhdkit(os(&[
        &"convert",
        &src,
        &dst,
        &"--type",
        &"dynamic",
        &"--progress",
        &"json",
    ]));

    let e = assert_failed_json(&r, EXIT_FAILED);
    assert_eq!(e["kind"], "already_exists", "{e}");
    assert_eq!(e["path"], dst.to_str().expect("utf-8"), "{e}");
}

// --- schema 1 in every document --------------------------------------------------------

#[test]
fn every_json_document_has_schema_1() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let copy = dir.path().join("copy.vhd");
    let docs: Vec<(&str, Value)> = vec![
        ("info", info(&disk)),
        (
            "check",
            vhdkit(os(&[&"check", &disk, &"--json"])).ok().json(),
        ),
        ("map", vhdkit(os(&[&"map", &disk, &"--json"])).ok().json()),
        (
            "compare",
            vhdkit(os(&[&"compare", &disk, &disk, &"--json"]))
                .ok()
                .json(),
        ),
        (
            "convert",
            vhdkit(os(&[
                &"convert",
                &disk,
                &copy,
                &"--type",
                &"fixed",
                &"--json",
                &"--progress",
                &"none",
            ]))
            .ok()
            .json(),
        ),
        (
            "create",
            vhdkit(os(&[
                &"create",
                &dir.path().join("new.vhd"),
                &"--type",
                &"dynamic",
                &"--size",
                &"4M",
                &"--json",
            ]))
            .ok()
            .json(),
        ),
    ];
    for (what, doc) in &docs {
        assert_eq!(doc["schema"], 1, "{what}: {doc}");
    }
}

#[test]
fn progress_events_have_schema_1_and_lower_case_values() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let dst = dir.path().join("dst.vhd");

    let r = vhdkit(os(&[
        &"convert",
        &disk,
        &dst,
        &"--type",
        &"dynamic",
        &"--progress",
        &"json",
    ]))
    .ok();

    let events: Vec<Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(!events.is_empty());
    for e in &events {
        assert_eq!(e["schema"], 1, "{e}");
        let phase = e["phase"].as_str().expect("phase");
        assert_eq!(phase, phase.to_lowercase(), "{e}");
    }
    assert_eq!(events.last().expect("final")["result"], "success");
}

#[test]
fn map_json_is_one_document_with_rows() {
    let dir = tempdir();
    let disk = small_disk(dir.path());

    let doc = vhdkit(os(&[&"map", &disk, &"--json"])).ok().json();

    let rows = doc["rows"].as_array().expect("rows");
    let total: u64 = rows
        .iter()
        .map(|r| r["length"].as_u64().expect("len"))
        .sum();
    assert_eq!(total, 8 * MIB);
    assert_eq!(rows[0]["kind"], "allocated", "{doc}");
}

#[test]
fn operation_report_phases_are_an_array_in_execution_order() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let dst = dir.path().join("dst.vhd");

    let r = vhdkit(os(&[
        &"convert",
        &disk,
        &dst,
        &"--type",
        &"dynamic",
        &"--verify",
        &"--json",
        &"--progress",
        &"none",
    ]))
    .ok()
    .json();

    let names: Vec<&str> = r["phases"]
        .as_array()
        .expect("an array")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["copy", "flush", "verify"], "{r}");
    // blocks_total: the destination's blocks, each copied or found zero.
    assert_eq!(r["blocks_total"], 4, "{r}");
    assert_eq!(
        r["blocks_copied"].as_u64().expect("n") + r["blocks_zero"].as_u64().expect("n"),
        4,
        "{r}"
    );
}

#[test]
fn serve_start_and_stop_lines_have_schema_1() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let socket = dir.path().join("s.sock");

    let served = serve_support::serve([disk.as_os_str(), "--socket".as_ref(), socket.as_os_str()]);
    let start = served.start.clone();
    let ended = served.stop();
    let stop = ended.summary;

    assert_eq!(start["schema"], 1, "{start}");
    assert_eq!(start["socket"], socket.to_str().expect("utf-8"), "{start}");
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert_eq!(stop["schema"], 1, "{stop}");
    assert_eq!(stop["stopped"], true, "{stop}");
}

// --- read and write --------------------------------------------------------------------

#[test]
fn read_json_without_output_is_a_usage_error() {
    let dir = tempdir();
    let disk = small_disk(dir.path());

    let r = vhdkit(os(&[&"read", &disk, &"--json"]));

    let e = assert_failed_json(&r, EXIT_USAGE);
    assert_eq!(e["kind"], "usage");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("--output")),
        "{e}"
    );
    assert!(r.stdout.is_empty(), "no data on stdout");
}

#[test]
fn read_json_reports_the_range_and_the_output() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let out = dir.path().join("part.raw");

    let r = vhdkit(os(&[
        &"read",
        &disk,
        &"--offset",
        &"4096",
        &"--length",
        &"65536",
        &"--output",
        &out,
        &"--json",
    ]))
    .ok()
    .json();

    assert_eq!(r["schema"], 1);
    assert_eq!(r["operation"], "read");
    assert_eq!(r["path"], disk.to_str().expect("utf-8"));
    assert_eq!(r["offset"], 4096);
    assert_eq!(r["length"], 65536);
    assert_eq!(r["bytes_read"], 65536);
    assert_eq!(r["output"], out.to_str().expect("utf-8"));
    assert_bytes_eq(
        "read --output",
        &std::fs::read(&out).expect("output"),
        &pattern(1, 65536),
    );
}

#[test]
fn write_json_reports_bytes_written_from_stdin() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let data = pattern(5, 10_000);

    let r = vhdkit_stdin(os(&[&"write", &disk, &"--offset", &"1M", &"--json"]), &data);

    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["operation"], "write");
    assert_eq!(v["offset"], MIB);
    assert_eq!(v["length"], 10_000);
    assert_eq!(v["bytes_written"], 10_000);
    assert_eq!(v["input"], "stdin");
    assert_bytes_eq("written", &read_range(&disk, MIB, 10_000), &data);
}

#[test]
fn write_json_names_the_input_file() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let input = dir.path().join("in.bin");
    std::fs::write(&input, pattern(6, 512)).expect("input");

    let v = vhdkit(os(&[
        &"write",
        &disk,
        &"--offset",
        &"0",
        &"--input",
        &input,
        &"--json",
    ]))
    .ok()
    .json();

    assert_eq!(v["input"], input.to_str().expect("utf-8"));
    assert_eq!(v["bytes_written"], 512);
}

#[test]
fn write_json_with_a_missing_input_names_the_input() {
    let dir = tempdir();
    let disk = small_disk(dir.path());
    let input = dir.path().join("absent.bin");

    let r = vhdkit(os(&[
        &"write",
        &disk,
        &"--offset",
        &"0",
        &"--input",
        &input,
        &"--json",
    ]));

    let e = assert_failed_json(&r, EXIT_FAILED);
    assert_eq!(e["kind"], "io", "{e}");
    assert_eq!(e["hresult"], "0x80070002", "{e}");
    assert_eq!(e["path"], input.to_str().expect("utf-8"), "{e}");
}
