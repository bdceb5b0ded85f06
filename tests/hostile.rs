//! Hostile input: a generated corpus of malformed images — absurd sizes, bad block sizes,
//! absurd table sizes, BAT entries past the end, into metadata or overlapping, locators
//! past the end or with huge lengths, parent loops, mismatched footer copies — each run
//! through `info`, `check`, `read`, `convert` and `compact` under a 1 GiB address-space
//! limit and a time limit. Every run ends with a specific error (one `vhdkit:` line, exit
//! 3), a check report (exit 1) or a correct success: never a panic, a hang, or an
//! allocation the file's length does not justify.

use std::path::{Path, PathBuf};
use std::process::Command;

use vhdkit_format::spec::{DynamicHeader, Footer, FOOTER_SIZE};
use vhdkit_format::{CreateOptions, Disk, DiskKind};

const BIN: &str = env!("CARGO_BIN_EXE_vhdkit");
const MIB: u64 = 1 << 20;

/// Address-space limit for every run, in KiB.
const VMEM_KIB: u64 = 1 << 20;

fn base_image(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    Disk::create(
        &p,
        &CreateOptions::new(DiskKind::Dynamic, 4 * MIB).block_size(512 * 1024),
    )
    .expect("create");
    let d = Disk::open_rw(&p).expect("open");
    d.write_at(&vec![0x5A; 700_000], 100_000).expect("write");
    d.flush().expect("flush");
    p
}

fn child_image(dir: &Path) -> (PathBuf, PathBuf) {
    let parent = base_image(dir, "parent.vhd");
    let child = dir.join("child.vhd");
    Disk::create(
        &child,
        &CreateOptions::differencing(&parent).block_size(512 * 1024),
    )
    .expect("child");
    let d = Disk::open_rw(&child).expect("open");
    d.write_at(&[7u8; 5000], 2 * MIB).expect("write");
    d.flush().expect("flush");
    (parent, child)
}

fn patch_footer(path: &Path, edit: impl Fn(&mut Footer)) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = bytes.len() - FOOTER_SIZE;
    let mut f = Footer::decode(&bytes[at..]).expect("footer");
    edit(&mut f);
    let enc = f.encode();
    bytes[at..].copy_from_slice(&enc);
    if f.disk_type.is_sparse() {
        bytes[..FOOTER_SIZE].copy_from_slice(&enc);
    }
    std::fs::write(path, bytes).expect("write");
}

fn patch_header(path: &Path, edit: impl Fn(&mut DynamicHeader)) {
    let mut bytes = std::fs::read(path).expect("read");
    let mut h = DynamicHeader::decode(&bytes[512..1536]).expect("header");
    edit(&mut h);
    bytes[512..1536].copy_from_slice(&h.encode());
    std::fs::write(path, bytes).expect("write");
}

fn set_bat(path: &Path, index: usize, value: u32) {
    let mut bytes = std::fs::read(path).expect("read");
    let at = 1536 + index * 4;
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
    std::fs::write(path, bytes).expect("write");
}

/// One malformed sample: how to make it, and what `info` must say.
struct Case {
    name: &'static str,
    make: fn(&Path) -> PathBuf,
    /// `None`: info succeeds; `Some(s)`: info fails with a line containing `s`.
    info_error: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "absurd-current-size",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_footer(&p, |f| f.current_size = u64::MAX - 511);
                p
            },
            info_error: Some("max table entries"),
        },
        Case {
            name: "current-size-zero",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_footer(&p, |f| f.current_size = 0);
                p
            },
            info_error: Some("current size"),
        },
        Case {
            name: "current-size-not-sector-multiple",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_footer(&p, |f| f.current_size = 4 * MIB - 100);
                p
            },
            info_error: Some("multiple of 512"),
        },
        Case {
            name: "block-size-zero",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_header(&p, |h| h.block_size = 0);
                p
            },
            info_error: Some("block size"),
        },
        Case {
            name: "block-size-not-power-of-two",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_header(&p, |h| h.block_size = 3 * MIB as u32);
                p
            },
            info_error: Some("block size"),
        },
        Case {
            name: "block-size-2gib",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_header(&p, |h| h.block_size = 1 << 31);
                p
            },
            info_error: Some("block size"),
        },
        Case {
            name: "max-table-entries-zero",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_header(&p, |h| h.max_table_entries = 0);
                p
            },
            info_error: Some("max table entries"),
        },
        Case {
            name: "max-table-entries-all-ones",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_header(&p, |h| h.max_table_entries = u32::MAX);
                p
            },
            info_error: Some("BAT"),
        },
        Case {
            name: "huge-disk-tiny-file",
            make: |d| {
                // 2 TiB of 512-byte blocks claimed by a 6 KiB file: 16 GiB of BAT.
                let p = base_image(d, "x.vhd");
                patch_footer(&p, |f| f.current_size = 2 << 40);
                patch_header(&p, |h| {
                    h.block_size = 512;
                    h.max_table_entries = u32::MAX;
                });
                p
            },
            info_error: Some("BAT"),
        },
        Case {
            name: "table-offset-past-eof",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_header(&p, |h| h.table_offset = 1 << 40);
                p
            },
            info_error: Some("table offset"),
        },
        Case {
            name: "data-offset-past-eof",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_footer(&p, |f| f.data_offset = 1 << 50);
                p
            },
            info_error: Some("data offset"),
        },
        Case {
            name: "data-offset-zero",
            make: |d| {
                let p = base_image(d, "x.vhd");
                patch_footer(&p, |f| f.data_offset = 0);
                p
            },
            info_error: Some("data offset"),
        },
        Case {
            name: "bat-entry-past-eof",
            make: |d| {
                let p = base_image(d, "x.vhd");
                set_bat(&p, 1, 0x7FFF_0000);
                p
            },
            info_error: Some("BAT"),
        },
        Case {
            name: "bat-entry-into-header",
            make: |d| {
                let p = base_image(d, "x.vhd");
                set_bat(&p, 0, 1);
                p
            },
            info_error: Some("BAT"),
        },
        Case {
            name: "bat-entries-overlap",
            make: |d| {
                let p = base_image(d, "x.vhd");
                let bytes = std::fs::read(&p).expect("read");
                let first = u32::from_be_bytes(bytes[1536..1540].try_into().expect("4"));
                set_bat(&p, 3, first + 1);
                p
            },
            info_error: Some("overlaps"),
        },
        Case {
            name: "locator-past-eof",
            make: |d| {
                let (_, c) = child_image(d);
                patch_header(&c, |h| {
                    for l in h.locators.iter_mut().filter(|l| l.is_used()) {
                        l.data_offset = 1 << 45;
                    }
                });
                c
            },
            // The locators are unusable; the parent name next to the child still works.
            info_error: None,
        },
        Case {
            name: "locator-huge-length",
            make: |d| {
                let (_, c) = child_image(d);
                patch_header(&c, |h| {
                    for l in h.locators.iter_mut().filter(|l| l.is_used()) {
                        l.data_length = u32::MAX;
                        l.data_space = u32::MAX;
                    }
                });
                c
            },
            info_error: None,
        },
        Case {
            name: "parent-loop-self",
            make: |d| {
                let (_, c) = child_image(d);
                let id = Disk::open_with(&c, &vhdkit_format::OpenOptions::new().no_parents(true))
                    .expect("open")
                    .top()
                    .footer()
                    .unique_id;
                patch_header(&c, |h| {
                    h.parent_unique_id = id;
                    h.locators = [vhdkit_format::spec::ParentLocator::EMPTY; 8];
                    h.set_parent_name("child.vhd").expect("name");
                });
                c
            },
            info_error: None, // info shows the loop as an unresolved parent
        },
        Case {
            name: "mismatched-footer-copies",
            make: |d| {
                let p = base_image(d, "x.vhd");
                let mut bytes = std::fs::read(&p).expect("read");
                let mut f = Footer::decode(&bytes[..512]).expect("footer");
                f.unique_id = uuid::Uuid::from_u128(42);
                bytes[..512].copy_from_slice(&f.encode());
                std::fs::write(&p, bytes).expect("write");
                p
            },
            info_error: None,
        },
        Case {
            name: "truncated-to-300-bytes",
            make: |d| {
                let p = base_image(d, "x.vhd");
                let bytes = std::fs::read(&p).expect("read");
                std::fs::write(&p, &bytes[..300]).expect("write");
                p
            },
            info_error: Some("too short"),
        },
        Case {
            name: "empty-file",
            make: |d| {
                let p = d.join("x.vhd");
                std::fs::write(&p, b"").expect("write");
                p
            },
            info_error: Some("too short"),
        },
    ]
}

struct Outcome {
    code: i32,
    stderr: String,
}

/// Runs vhdkit under the address-space limit and a time limit.
fn run(args: &[&str]) -> Outcome {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let script = format!(
        "ulimit -v {VMEM_KIB}; exec timeout -s KILL 30 '{BIN}' {} >/dev/null",
        quoted.join(" ")
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("MALLOC_ARENA_MAX", "2")
        .output()
        .expect("run sh");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `cmd` exited 0, 1 or 3, without panic or allocation failure; on 3 with one line on
/// stderr: `vhdkit: …`, or with `--json` one JSON error object.
fn assert_clean_outcome(case: &str, cmd: &str, o: &Outcome) {
    assert!(
        [0, 1, 3].contains(&o.code),
        "{case}: {cmd} exited {} (killed by the time limit, a signal or a panic?): {}",
        o.code,
        o.stderr
    );
    assert!(
        !o.stderr.contains("panicked"),
        "{case}: {cmd} panicked: {}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("memory allocation"),
        "{case}: {cmd} ran out of memory: {}",
        o.stderr
    );
    if o.code == 3 {
        let lines: Vec<&str> = o.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{case}: {cmd}: one line on stderr: {}",
            o.stderr
        );
        let json_error = serde_json::from_str::<serde_json::Value>(lines[0])
            .is_ok_and(|v| v["message"].is_string() && v["kind"].is_string());
        assert!(
            lines[0].starts_with("vhdkit: ") || json_error,
            "{case}: {cmd}: {}",
            o.stderr
        );
    }
}

#[test]
fn hostile_images_give_specific_errors_under_tight_limits() {
    let mut ran = 0;
    for case in cases() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = (case.make)(dir.path());
        let p = path.to_str().expect("utf-8");
        let before = std::fs::read(&path).expect("read");

        let info = run(&["info", "--json", p]);
        assert_clean_outcome(case.name, "info", &info);
        match case.info_error {
            None => assert_eq!(info.code, 0, "{}: info: {}", case.name, info.stderr),
            Some(s) => {
                assert_eq!(info.code, 3, "{}: info should fail", case.name);
                assert!(
                    info.stderr.contains(s),
                    "{}: info error should mention {s:?}: {}",
                    case.name,
                    info.stderr
                );
                assert!(info.stderr.contains(p), "{}: names the file", case.name);
            }
        }
        let check = run(&["check", p]);
        assert_clean_outcome(case.name, "check", &check);
        if case.info_error.is_some() {
            assert_ne!(check.code, 0, "{}: check must report it", case.name);
        }

        let read = run(&["read", p]);
        assert_clean_outcome(case.name, "read", &read);

        let dst = dir.path().join("out.raw");
        let convert = run(&[
            "convert",
            p,
            dst.to_str().expect("utf-8"),
            "--type",
            "raw",
            "--progress",
            "none",
        ]);
        assert_clean_outcome(case.name, "convert", &convert);
        if convert.code != 0 {
            assert!(
                !dst.exists(),
                "{}: a failed convert leaves no output",
                case.name
            );
        }

        let compact = run(&["compact", p, "--progress", "none"]);
        assert_clean_outcome(case.name, "compact", &compact);
        if compact.code != 0 {
            assert_eq!(
                std::fs::read(&path).expect("read"),
                before,
                "{}: a refused compact changes nothing",
                case.name
            );
        }
        ran += 5;
    }
    assert!(ran >= 100, "ran {ran} commands");
}
