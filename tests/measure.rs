//! `vhdkit measure`: the size it reports is the length of the file `convert` (and
//! `merge-to`, for a chain) then writes — judged by the file system — for fixed,
//! dynamic and raw results, from raw, fixed, dynamic and differencing-chain sources, mostly
//! empty and full, several block sizes, sizes that are not a whole number of blocks,
//! with and without `--align`.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A size that is a whole number of sectors but not of any block size (9767 sectors).
const ODD: u64 = 5_000_704;

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `measure SRC ARGS --json`, parsed; asserts success and the document's shape.
fn measure(src: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["measure", p(src), "--json", "--progress", "none"];
    a.extend_from_slice(args);
    let v = vhdkit(&a).ok().json();
    assert_eq!(v["schema"], 1, "{v}");
    assert_eq!(v["path"], p(src), "{v}");
    for field in ["source_size", "virtual_size", "required_bytes"] {
        assert!(v[field].is_u64(), "{field}: {v}");
    }
    v
}

/// Runs `convert` (or `merge-to`) with `args` into `dst` and returns its report.
fn convert(op: &str, src: &Path, dst: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec![op, p(src), p(dst), "--json", "--progress", "none"];
    a.extend_from_slice(args);
    vhdkit(&a).ok().json()
}

/// The sources of the matrix: (name, path, the chain's files for merge-to or empty).
struct Source {
    name: String,
    path: PathBuf,
    chain: bool,
}

fn raw_source(dir: &Path, name: &str, size: u64, fill: impl Fn(&mut Vec<u8>)) -> Source {
    let path = dir.join(format!("{name}.raw"));
    let mut data = vec![0u8; size as usize];
    fill(&mut data);
    std::fs::write(&path, &data).expect("write raw");
    Source {
        name: name.into(),
        path,
        chain: false,
    }
}

fn vhd_source(dir: &Path, name: &str, create_args: &[&str], writes: &[(u64, Vec<u8>)]) -> Source {
    let path = dir.join(format!("{name}.vhd"));
    create(&path, create_args);
    for (at, data) in writes {
        write_at(&path, *at, data, &[]);
    }
    Source {
        name: name.into(),
        path,
        chain: false,
    }
}

/// Mostly empty: a few small writes, one straddling a block boundary, one in the last
/// (short) block.
fn sparse_writes(size: u64) -> Vec<(u64, Vec<u8>)> {
    vec![
        (0, pattern(1, 700)),
        ((1 << 20) - 300, pattern(2, 600)),
        (size - 4096, pattern(3, 4096)),
    ]
}

fn sources(dir: &Path) -> Vec<Source> {
    let mut rng = Rng::new(7);
    let full = rng.bytes(ODD as usize);
    let mut out = vec![
        raw_source(dir, "raw-sparse", ODD, |d| {
            for (at, w) in sparse_writes(ODD) {
                d[at as usize..at as usize + w.len()].copy_from_slice(&w);
            }
        }),
        raw_source(dir, "raw-full", ODD, |d| d.copy_from_slice(&full)),
        raw_source(dir, "raw-empty", 8 * MIB, |_| {}),
        vhd_source(
            dir,
            "fixed-sparse",
            &["--type", "fixed", "--size", &ODD.to_string()],
            &sparse_writes(ODD),
        ),
        vhd_source(
            dir,
            "fixed-full",
            &["--type", "fixed", "--size", &ODD.to_string()],
            &[(0, full.clone())],
        ),
        vhd_source(
            dir,
            "dynamic-empty",
            &["--type", "dynamic", "--size", "64M"],
            &[],
        ),
        vhd_source(
            dir,
            "dynamic-sparse",
            &[
                "--type",
                "dynamic",
                "--size",
                &ODD.to_string(),
                "--block-size",
                "512K",
            ],
            &sparse_writes(ODD),
        ),
        vhd_source(
            dir,
            "dynamic-full",
            &["--type", "dynamic", "--size", &ODD.to_string()],
            &[(0, full.clone())],
        ),
    ];
    // A chain: base with data, a middle level, a child that writes more and overwrites
    // one of the base's blocks with zeros (the flattened view reads zeros there).
    let base = dir.join("chain-base.vhd");
    create(
        &base,
        &["--type", "dynamic", "--size", "12M", "--block-size", "1M"],
    );
    write_at(&base, 0, &pattern(4, (3 * MIB) as usize), &[]);
    write_at(&base, 9 * MIB, &pattern(5, 4096), &[]);
    let mid = dir.join("chain-mid.vhd");
    create(&mid, &["--type", "differencing", "--parent", p(&base)]);
    write_at(&mid, 5 * MIB + 17, &pattern(6, 3000), &[]);
    let child = dir.join("chain-child.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&mid)]);
    write_at(&child, MIB, &vec![0u8; MIB as usize], &[]);
    write_at(&child, 11 * MIB, &pattern(7, 512), &[]);
    out.push(Source {
        name: "chain".into(),
        path: child,
        chain: true,
    });
    out
}

/// For each source, target, block size and alignment: measure, then convert (and
/// merge-to for the chain), and compare with the file's length.
#[test]
fn measure_equals_the_converted_file_length() {
    let dir = tempdir();
    let mut n = 0;
    for src in sources(dir.path()) {
        let mut cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["--type", "fixed"], "fixed"),
            (vec!["--type", "raw"], "raw"),
        ];
        for bs in ["64K", "512K", "2M"] {
            cases.push((vec!["--type", "dynamic", "--block-size", bs], "dynamic"));
        }
        for (args, kind) in cases {
            for align in [None, Some("1M")] {
                let mut args = args.clone();
                if let Some(a) = align {
                    args.extend_from_slice(&["--align", a]);
                }
                let what = format!("{} {args:?}", src.name);
                let m = measure(&src.path, &args);
                assert_eq!(m["target"], kind, "{what}");
                let mut ops = vec!["convert"];
                if src.chain {
                    ops.push("merge-to");
                }
                for op in ops {
                    n += 1;
                    let ext = if kind == "raw" { "raw" } else { "vhd" };
                    let dst = dir.path().join(format!("out-{n}.{ext}"));
                    let report = convert(op, &src.path, &dst, &args);
                    let len = std::fs::metadata(&dst).expect("stat").len();
                    assert_eq!(m["required_bytes"], len, "{what} {op}: measure vs the file");
                    assert_eq!(report["file_size_after"], len, "{what} {op}");
                    if kind == "raw" {
                        assert_eq!(
                            m["virtual_size"], len,
                            "{what} {op}: a raw file is its bytes"
                        );
                        assert!(m["block_size"].is_null(), "{what}");
                        let same = vhdkit(["compare", p(&src.path), p(&dst)]);
                        assert_eq!(same.code, EXIT_OK, "{what} {op}: {}", same.stdout_str());
                        std::fs::remove_file(&dst).expect("rm");
                        continue;
                    }
                    let info = vhdkit(["info", p(&dst), "--json"]).ok().json();
                    assert_eq!(m["virtual_size"], info["virtual_size"], "{what} {op}");
                    if kind == "dynamic" {
                        assert_eq!(
                            m["allocated_blocks"], info["allocated_blocks"],
                            "{what} {op}"
                        );
                        assert_eq!(
                            m["allocated_blocks"], report["blocks_copied"],
                            "{what} {op}"
                        );
                        assert_eq!(m["blocks_total"], report["blocks_total"], "{what} {op}");
                        assert_eq!(m["block_size"], info["block_size"], "{what} {op}");
                    } else {
                        assert!(m["allocated_blocks"].is_null(), "{what}");
                        assert!(m["block_size"].is_null(), "{what}");
                        assert_eq!(len, m["virtual_size"].as_u64().expect("size") + 512);
                    }
                    std::fs::remove_file(&dst).expect("rm");
                }
            }
        }
    }
}

/// The chain's flattened view drops the block the child zeroed: the measure counts the
/// blocks that hold data in the view, not the blocks some level stores.
#[test]
fn a_block_zeroed_by_a_child_is_not_counted() {
    let dir = tempdir();
    let base = dir.path().join("b.vhd");
    create(
        &base,
        &["--type", "dynamic", "--size", "4M", "--block-size", "1M"],
    );
    write_at(&base, 0, &pattern(1, (2 * MIB) as usize), &[]);
    let child = dir.path().join("c.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&base)]);
    write_at(&child, MIB, &vec![0u8; MIB as usize], &[]);
    let m = measure(&child, &["--type", "dynamic", "--block-size", "1M"]);
    assert_eq!(m["blocks_total"], 4);
    assert_eq!(m["allocated_blocks"], 1, "{m}");
}

/// A large mostly empty disk is measured from its metadata (the unallocated blocks are
/// not read) and still agrees with the conversion.
#[test]
fn a_large_sparse_disk() {
    let dir = tempdir();
    let src = dir.path().join("big.vhd");
    create(&src, &["--type", "dynamic", "--size", "4G"]);
    write_at(&src, 3 * GIB + 12345, &pattern(9, 100_000), &[]);
    let m = measure(&src, &["--type", "dynamic"]);
    assert_eq!(m["allocated_blocks"], 1);
    let dst = dir.path().join("out.vhd");
    convert("convert", &src, &dst, &["--type", "dynamic"]);
    assert_eq!(
        m["required_bytes"],
        std::fs::metadata(&dst).expect("stat").len()
    );
    let m = measure(&src, &["--type", "fixed"]);
    assert_eq!(m["required_bytes"], 4 * GIB + 512);
}

#[test]
fn text_output_and_usage_errors() {
    let dir = tempdir();
    let src = dir.path().join("d.vhd");
    create(&src, &["--type", "dynamic", "--size", &ODD.to_string()]);
    write_at(&src, 0, &pattern(1, 512), &[]);
    let out = vhdkit(["measure", p(&src), "--type", "dynamic", "--align", "1M"])
        .ok()
        .stdout_str();
    for want in [
        "type:              dynamic",
        "virtual size:      5 MiB (5242880 bytes)",
        "source size:       4.77 MiB (5000704 bytes)",
        "block size:        2 MiB (2097152 bytes)",
        "allocated blocks:  1 of 3 blocks",
        "required size:",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    // --block-size of a fixed result, a bad alignment, an unknown type: usage errors.
    for args in [
        &["--type", "fixed", "--block-size", "1M"][..],
        &["--type", "dynamic", "--align", "1000"][..],
        &["--type", "raw", "--block-size", "1M"][..],
        &["--type", "qcow2"][..],
    ] {
        let mut a = vec!["measure", p(&src)];
        a.extend_from_slice(args);
        let r = vhdkit(&a);
        assert_eq!(r.code, EXIT_USAGE, "{args:?}: {}", r.stderr);
    }
    // A missing source: exit 3, one JSON error with --json.
    let r = vhdkit(["measure", "nope.vhd", "--type", "fixed", "--json"]);
    let e = assert_failed_json(&r, EXIT_FAILED);
    assert_eq!(e["kind"], "not_found");
    // A dynamic result too large for the block size is refused as convert refuses it.
    let big = dir.path().join("big.raw");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(2100 * GIB).expect("sparse 2100 GiB");
    let r = vhdkit(["measure", p(&big), "--type", "dynamic"]);
    assert_failed_one_line(&r);
    assert_eq!(
        vhdkit(["measure", p(&big), "--type", "fixed", "--json"])
            .ok()
            .json()["required_bytes"],
        2100 * GIB + 512
    );
}

/// `--progress json`: one event per line on stderr, a `scan` phase, the last event final
/// and successful; the document on stdout.
#[test]
fn progress_events_end_with_the_final_one() {
    let dir = tempdir();
    let src = dir.path().join("d.vhd");
    create(&src, &["--type", "dynamic", "--size", "16M"]);
    write_at(&src, 5 * MIB, &pattern(2, 4096), &[]);
    let r = vhdkit([
        "measure",
        p(&src),
        "--type",
        "dynamic",
        "--progress",
        "json",
        "--json",
    ])
    .ok();
    let events: Vec<serde_json::Value> = r
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events.iter().any(|e| e["phase"] == "scan"), "{events:?}");
    let last = events.last().expect("events");
    assert_eq!(last["final"], true);
    assert_eq!(last["result"], "success");
    assert_eq!(last["percent"], 100);
    assert_eq!(r.json()["allocated_blocks"], 1);
}

/// `--format vhdx`: for VHD, raw and VHDX sources (a checkpoint chain among them),
/// fixed and dynamic results, several block sizes, with and without `--align`, one with
/// 4096-byte logical sectors: the measure is the length `convert` then writes, and a
/// dynamic result's block counts are the converted file's.
#[test]
fn measure_of_a_vhdx_result_equals_the_converted_file_length() {
    let dir = tempdir();
    let mut srcs: Vec<Source> = sources(dir.path())
        .into_iter()
        .filter(|s| ["raw-full", "dynamic-sparse", "chain"].contains(&s.name.as_str()))
        .collect();
    // A VHDX checkpoint chain: a base with data, a child writing more.
    let base = dir.path().join("x-base.vhdx");
    create(
        &base,
        &["--type", "dynamic", "--size", "40M", "--block-size", "2M"],
    );
    write_at(&base, 0, &pattern(8, (5 * MIB) as usize), &[]);
    write_at(&base, 33 * MIB, &pattern(9, 4096), &[]);
    let child = dir.path().join("x-child.avhdx");
    create(&child, &["--type", "differencing", "--parent", p(&base)]);
    write_at(&child, 17 * MIB + 512, &pattern(10, 3000), &[]);
    write_at(&child, 39 * MIB, &pattern(11, MIB as usize), &[]);
    srcs.push(Source {
        name: "vhdx-chain".into(),
        path: child,
        chain: true,
    });
    let mut n = 0;
    for src in &srcs {
        let mut cases: Vec<Vec<&str>> = vec![vec!["--type", "fixed"]];
        for bs in ["1M", "2M", "8M"] {
            cases.push(vec!["--type", "dynamic", "--block-size", bs]);
        }
        cases.push(vec!["--type", "dynamic"]);
        cases.push(vec!["--type", "fixed", "--block-size", "8M"]);
        cases.push(vec![
            "--type",
            "dynamic",
            "--logical-sector",
            "4096",
            "--align",
            "1M",
        ]);
        for case in cases {
            for align in [None, Some("1M")] {
                let mut args = case.clone();
                args.extend_from_slice(&["--format", "vhdx"]);
                if let (Some(a), false) = (align, args.contains(&"--align")) {
                    args.extend_from_slice(&["--align", a]);
                }
                let what = format!("{} {args:?}", src.name);
                let m = measure(&src.path, &args);
                assert_eq!(m["format"], "vhdx", "{what}");
                n += 1;
                let dst = dir.path().join(format!("vx-{n}.vhdx"));
                convert("convert", &src.path, &dst, &args);
                let len = std::fs::metadata(&dst).expect("stat").len();
                assert_eq!(m["required_bytes"], len, "{what}: measure vs the file");
                let info = vhdkit(["info", "--json", p(&dst)]).ok().json();
                assert_eq!(m["virtual_size"], info["virtual_size"], "{what}");
                if args.contains(&"dynamic") {
                    assert_eq!(
                        m["allocated_blocks"], info["allocated_blocks"],
                        "{what}: {info}"
                    );
                }
                std::fs::remove_file(&dst).expect("rm");
            }
        }
    }
    // The default stays a VHD, and says so.
    let m = measure(&srcs[0].path, &["--type", "fixed"]);
    assert_eq!(m["format"], "vhd");
    let m = measure(&srcs[0].path, &["--type", "raw"]);
    assert!(m["format"].is_null());
    // --logical-sector without a VHDX result, --format of a raw one: usage errors.
    for args in [
        &["--type", "dynamic", "--logical-sector", "4096"][..],
        &["--type", "raw", "--format", "vhdx"][..],
        &[
            "--type",
            "dynamic",
            "--format",
            "vhdx",
            "--block-size",
            "512K",
        ][..],
    ] {
        let mut a = vec!["measure", p(&srcs[0].path)];
        a.extend_from_slice(args);
        let r = vhdkit(&a);
        assert_eq!(r.code, EXIT_USAGE, "{args:?}: {}", r.stderr);
    }
}
