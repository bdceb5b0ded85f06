//! Damaged images (fixtures/malformed, made by fixtures/make-fixtures.sh): `check` names
//! the specific problem and exits 1; `info`/`read`/`map`/`write` either fail with exit 3
//! and one `vhdkit:` line on stderr, or — where a good footer copy or a lenient checksum
//! policy lets the disk be read — succeed with a warning. Nothing ever panics.

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;

use common::*;

/// How the non-check commands treat a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// Refused: exit 3, one line containing the text.
    Fails(&'static str),
    /// Opened with a warning; reads the intact content.
    Warns,
    /// A broken differencing chain: `info` works (parent.found false), `read` fails with
    /// one line containing the text.
    ChainBroken(&'static str),
}

struct Case {
    file: &'static str,
    /// `check --json` must list a problem in this structure...
    structure: &'static str,
    /// ...whose field or message contains this.
    says: &'static str,
    open: Open,
}

const CASES: &[Case] = &[
    Case {
        file: "bad-footer-checksum-end.vhd",
        structure: "footer",
        says: "checksum",
        open: Open::Warns,
    },
    Case {
        file: "bad-footer-checksum-both.vhd",
        structure: "footer",
        says: "checksum",
        open: Open::Warns,
    },
    Case {
        file: "truncated-mid-block.vhd",
        structure: "BAT",
        says: "past",
        open: Open::Fails("block 40"),
    },
    Case {
        file: "footer-missing.vhd",
        structure: "footer",
        says: "no footer at the end",
        open: Open::Warns,
    },
    Case {
        file: "bat-entry-past-eof.vhd",
        structure: "BAT",
        says: "past",
        open: Open::Fails("BAT"),
    },
    Case {
        file: "bat-entries-overlap.vhd",
        structure: "BAT",
        says: "overlap",
        open: Open::Fails("overlap"),
    },
    Case {
        file: "block-size-not-power-of-two.vhd",
        structure: "dynamic header",
        says: "power of two",
        open: Open::Fails("block size"),
    },
    Case {
        file: "header-cookie-wrong.vhd",
        structure: "dynamic header",
        says: "cookie",
        open: Open::Fails("cookie"),
    },
    Case {
        file: "zero-100-bytes.vhd",
        structure: "file",
        says: "too short",
        open: Open::Fails("too short"),
    },
    Case {
        file: "parent-missing/child.vhd",
        structure: "chain",
        says: "not found",
        open: Open::ChainBroken("gone.vhd"),
    },
    Case {
        file: "parent-wrong-id/child.vhd",
        structure: "chain",
        says: "unique id",
        open: Open::ChainBroken("unique id"),
    },
    Case {
        file: "loop/self.vhd",
        structure: "chain",
        says: "loop",
        open: Open::ChainBroken("loop"),
    },
];

fn path(c: &Case) -> PathBuf {
    fixture(&format!("malformed/{}", c.file))
}

fn case(file: &str) -> &'static Case {
    CASES.iter().find(|c| c.file == file).expect("known case")
}

/// What `good()` in make-fixtures.sh writes into each 4 MiB sample.
fn good_model() -> Model {
    let mut m = Model::new(4 * MIB);
    m.write(0, &pattern(21, 70_000));
    m.write(2_621_440, &pattern(22, 1000));
    m
}

fn assert_check_reports(c: &Case) {
    let p = path(c);
    let text = vhdkit(["check".as_ref(), p.as_os_str()]);
    assert_no_panic(&text);
    assert_eq!(
        text.code,
        EXIT_DIFFERENT,
        "check {}: {}{}",
        c.file,
        text.stdout_str(),
        text.stderr
    );
    assert!(
        text.stdout_str()
            .to_lowercase()
            .contains(&c.says.to_lowercase()),
        "check {} should say {:?}: {}",
        c.file,
        c.says,
        text.stdout_str()
    );
    let r = vhdkit(["check".as_ref(), p.as_os_str(), "--json".as_ref()]);
    assert_eq!(r.code, EXIT_DIFFERENT);
    let v = r.json();
    assert_eq!(v["clean"], false, "{}", c.file);
    assert!(v["problem_count"].as_u64().unwrap_or(0) >= 1);
    let found = v["files"]
        .as_array()
        .expect("files")
        .iter()
        .flat_map(|f| f["problems"].as_array().cloned().unwrap_or_default())
        .any(|p| {
            p["structure"] == c.structure
                && format!("{} {}", p["field"], p["message"])
                    .to_lowercase()
                    .contains(&c.says.to_lowercase())
        });
    assert!(
        found,
        "check --json of {} has no {:?} problem saying {:?}: {v}",
        c.file, c.structure, c.says
    );
}

fn assert_open_behaviour(c: &Case) {
    let p = path(c);
    let info = vhdkit(["info".as_ref(), p.as_os_str(), "--json".as_ref()]);
    let read = vhdkit(["read".as_ref(), p.as_os_str()]);
    let map = vhdkit(["map".as_ref(), p.as_os_str()]);
    for r in [&info, &read, &map] {
        assert_no_panic(r);
    }
    match c.open {
        Open::Fails(text) => {
            let err = assert_failed_json(&info, EXIT_FAILED);
            let message = err["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(text),
                "info --json {}: should say {text:?}: {err}",
                c.file
            );
            assert!(info.stdout.is_empty(), "info {}: no output", c.file);
            for (cmd, r) in [("read", &read), ("map", &map)] {
                let line = assert_failed_one_line(r);
                assert!(
                    line.contains(text),
                    "{cmd} {}: should say {text:?}: {line}",
                    c.file
                );
                assert!(
                    r.stdout.is_empty(),
                    "{cmd} {}: no output on failure",
                    c.file
                );
            }
        }
        Open::Warns => {
            assert_eq!(info.code, EXIT_OK, "info {}: {}", c.file, info.stderr);
            let warnings = info.json()["warnings"].clone();
            assert!(
                warnings.as_array().is_some_and(|w| !w.is_empty()),
                "info {} should carry a warning: {warnings}",
                c.file
            );
            assert_eq!(read.code, EXIT_OK, "read {}: {}", c.file, read.stderr);
            assert_bytes_eq(c.file, &read.stdout, &good_model().0);
        }
        Open::ChainBroken(text) => {
            assert_eq!(info.code, EXIT_OK, "info {}: {}", c.file, info.stderr);
            let v = info.json();
            assert_eq!(v["disk_type"], "differencing");
            assert_eq!(v["parent"]["found"], false, "{}: {v}", c.file);
            assert!(
                v["parent"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(text)),
                "info {} parent.error should say {text:?}: {v}",
                c.file
            );
            for (cmd, r) in [("read", &read), ("map", &map)] {
                let line = assert_failed_one_line(r);
                assert!(
                    line.contains(text),
                    "{cmd} {}: should say {text:?}: {line}",
                    c.file
                );
            }
        }
    }
}

macro_rules! malformed_tests {
    ($($check:ident, $open:ident: $file:literal;)*) => {$(
        #[test]
        fn $check() {
            assert_check_reports(case($file));
        }

        #[test]
        fn $open() {
            assert_open_behaviour(case($file));
        }
    )*};
}

malformed_tests! {
    check_bad_footer_checksum_end_reports_checksum,
        open_bad_footer_checksum_end_uses_copy_with_warning: "bad-footer-checksum-end.vhd";
    check_bad_footer_checksum_both_reports_checksum,
        open_bad_footer_checksum_both_reads_with_warning: "bad-footer-checksum-both.vhd";
    check_truncated_mid_block_reports_block_past_end,
        open_truncated_mid_block_fails_with_one_line: "truncated-mid-block.vhd";
    check_footer_missing_reports_missing_footer,
        open_footer_missing_uses_copy_with_warning: "footer-missing.vhd";
    check_bat_entry_past_eof_reports_it,
        open_bat_entry_past_eof_fails_with_one_line: "bat-entry-past-eof.vhd";
    check_bat_entries_overlap_reports_overlap,
        open_bat_entries_overlap_fails_with_one_line: "bat-entries-overlap.vhd";
    check_block_size_not_power_of_two_reports_it,
        open_block_size_not_power_of_two_fails_with_one_line: "block-size-not-power-of-two.vhd";
    check_header_cookie_wrong_reports_cookie,
        open_header_cookie_wrong_fails_with_one_line: "header-cookie-wrong.vhd";
    check_zero_100_bytes_reports_too_short,
        open_zero_100_bytes_fails_with_one_line: "zero-100-bytes.vhd";
    check_parent_missing_reports_parent_not_found,
        open_parent_missing_info_works_read_fails: "parent-missing/child.vhd";
    check_parent_wrong_id_reports_id_mismatch,
        open_parent_wrong_id_info_works_read_fails: "parent-wrong-id/child.vhd";
    check_own_parent_loop_reports_loop,
        open_own_parent_loop_info_works_read_fails: "loop/self.vhd";
}

#[test]
fn open_bad_footer_checksum_both_strict_fails_with_one_line() {
    let p = path(case("bad-footer-checksum-both.vhd"));
    let r = vhdkit(["read".as_ref(), p.as_os_str(), "--strict".as_ref()]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("checksum"), "{line}");
}

#[test]
fn open_bad_footer_checksum_end_strict_still_uses_good_copy() {
    // The spec's rule: a bad footer at the end falls back to a valid copy at offset 0.
    let p = path(case("bad-footer-checksum-end.vhd"));
    let r = vhdkit(["read".as_ref(), p.as_os_str(), "--strict".as_ref()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert_bytes_eq("strict read", &r.stdout, &good_model().0);
}

#[test]
fn open_parent_wrong_id_with_override_reads_through_parent() {
    let p = path(case("parent-wrong-id/child.vhd"));
    let r = vhdkit([
        "read".as_ref(),
        p.as_os_str(),
        "--ignore-parent-id".as_ref(),
    ]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    let mut m = Model::new(4 * MIB);
    m.write(8192, &pattern(25, 4096)); // the replacement parent
    m.write(512, &pattern(24, 512)); // the child
    assert_bytes_eq("override read", &r.stdout, &m.0);
}

#[test]
fn parent_wrong_id_parent_itself_is_clean() {
    let p = fixture("malformed/parent-wrong-id/parent.vhd");
    let r = vhdkit(["check".as_ref(), p.as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
}

#[test]
fn write_into_unreadable_samples_fails_and_leaves_them_unchanged() {
    for c in CASES.iter().filter(|c| matches!(c.open, Open::Fails(_))) {
        let dir = tempdir();
        let copy = dir.path().join("copy.vhd");
        std::fs::copy(path(c), &copy).expect("copy");
        let before = std::fs::read(&copy).expect("read");
        let r = try_write_at(&copy, 0, b"data", &[]);
        assert_failed_one_line(&r);
        assert_eq!(
            std::fs::read(&copy).expect("read"),
            before,
            "{} changed",
            c.file
        );
    }
}

#[test]
fn compare_with_unreadable_sample_fails_with_one_line() {
    let good = fixture("malformed/parent-wrong-id/parent.vhd");
    for c in CASES.iter().filter(|c| matches!(c.open, Open::Fails(_))) {
        let r = vhdkit([OsStr::new("compare"), good.as_os_str(), path(c).as_os_str()]);
        assert_no_panic(&r);
        // A damaged VHD must not silently be compared as a raw image.
        if c.file != "zero-100-bytes.vhd" {
            assert_failed_one_line(&r);
        } else {
            assert_ne!(r.code, EXIT_OK, "{}", c.file);
        }
    }
}

#[test]
fn info_text_mode_of_every_sample_never_panics() {
    for c in CASES {
        let r = vhdkit(["info".as_ref(), path(c).as_os_str()]);
        assert_no_panic(&r);
        assert!(
            r.code == EXIT_OK || r.code == EXIT_FAILED,
            "info {}: exit {}",
            c.file,
            r.code
        );
        if r.code == EXIT_FAILED {
            assert_failed_one_line(&r);
        }
    }
}

#[test]
fn check_footer_missing_reports_no_block_past_the_end() {
    // Only the footer is gone: every block is whole, so the last block must not be
    // reported as running past the end (a repair that trusted that would cut it).
    let p = path(case("footer-missing.vhd"));
    let r = vhdkit(["check".as_ref(), p.as_os_str(), "--json".as_ref()]);
    let v = r.json();
    let bat_problems: Vec<_> = v["files"][0]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter(|p| p["structure"] == "BAT")
        .cloned()
        .collect();
    assert!(
        bat_problems.is_empty(),
        "spurious BAT problems: {bat_problems:?}"
    );
}

#[test]
fn write_into_footer_missing_copy_restores_a_clean_disk() {
    let dir = tempdir();
    let copy = dir.path().join("copy.vhd");
    std::fs::copy(path(case("footer-missing.vhd")), &copy).expect("copy");
    let mut m = good_model();
    write_both(&copy, &mut m, 3_000_000, b"after the repair");
    assert_bytes_eq("read after write", &read_all(&copy), &m.0);
    let r = vhdkit(["check".as_ref(), copy.as_os_str()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
}
