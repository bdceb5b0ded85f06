//! `check`: a fresh image of every kind is clean; each kind of damage is reported, and
//! several kinds of damage at once are all reported, not only the first.

mod common;

use std::path::Path;

use common::{create, create_child, MIB};
use vhdkit_format::check::{check, CheckReport};
use vhdkit_format::spec::{DynamicHeader, Severity, HEADER_SIZE};
use vhdkit_format::{Disk, DiskKind, OpenOptions};

const BS: u32 = 512 * 1024;

fn run(path: &Path) -> CheckReport {
    check(path, &OpenOptions::new()).expect("check runs")
}

fn errors(report: &CheckReport) -> Vec<String> {
    report
        .problems()
        .filter(|(_, p)| p.severity == Severity::Error)
        .map(|(_, p)| p.to_string())
        .collect()
}

/// A 3 MiB dynamic disk with blocks 0 and 2 allocated.
fn dynamic_with_blocks(dir: &Path) -> std::path::PathBuf {
    let path = create(dir, "d.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    common::write(&path, b"block zero", 0);
    common::write(&path, b"block two", 2 * u64::from(BS));
    path
}

fn bat_offset(bytes: &[u8]) -> usize {
    let h = DynamicHeader::decode(&bytes[512..512 + HEADER_SIZE]).expect("header");
    h.table_offset as usize
}

fn set_bat_entry(bytes: &mut [u8], i: usize, value: u32) {
    let at = bat_offset(bytes) + 4 * i;
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn bat_entry(bytes: &[u8], i: usize) -> u32 {
    let at = bat_offset(bytes) + 4 * i;
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Damage: one bit flipped in the stored checksum of the trailing footer.
fn flip_footer_checksum(bytes: &mut [u8]) {
    let at = bytes.len() - 512 + 64;
    bytes[at + 3] ^= 0x01;
}

/// Damage: block 1 points two blocks past the end of the file.
fn point_past_the_end(bytes: &mut [u8]) {
    let past = (bytes.len() as u64 / 512 + 2 * u64::from(BS) / 512) as u32;
    set_bat_entry(bytes, 1, past);
}

/// Damage: block 4 shares block 0's place.
fn overlap_two_blocks(bytes: &mut [u8]) {
    let e0 = bat_entry(bytes, 0);
    set_bat_entry(bytes, 4, e0);
}

#[test]
fn check_of_fresh_images_of_every_kind_is_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixed = create(dir.path(), "f.vhd", DiskKind::Fixed, 3 * MIB, 0);
    let dynamic = create(dir.path(), "e.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let written = dynamic_with_blocks(dir.path());
    let child = create_child(dir.path(), "c.vhd", &written, BS);
    common::write(&child, b"child", 12345);
    for path in [&fixed, &dynamic, &written, &child] {
        let report = run(path);
        let all: Vec<String> = report.problems().map(|(_, p)| p.to_string()).collect();
        assert!(report.is_clean(), "{}: {all:#?}", path.display());
    }
    assert_eq!(run(&child).files.len(), 2, "the parent is checked too");
}

#[test]
fn check_of_a_footer_with_a_flipped_checksum_bit_reports_the_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in [
        create(dir.path(), "f.vhd", DiskKind::Fixed, 3 * MIB, 0),
        dynamic_with_blocks(dir.path()),
    ] {
        let mut bytes = std::fs::read(&path).expect("read");
        flip_footer_checksum(&mut bytes);
        std::fs::write(&path, &bytes).expect("write");

        let report = run(&path);

        assert!(!report.is_clean());
        assert!(
            report
                .problems()
                .any(|(_, p)| p.structure == "footer" && p.field == "checksum"),
            "{}: {:#?}",
            path.display(),
            errors(&report)
        );
    }
}

#[test]
fn check_of_a_bat_entry_past_the_end_reports_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dynamic_with_blocks(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    point_past_the_end(&mut bytes);
    std::fs::write(&path, &bytes).expect("write");

    let report = run(&path);

    let errs = errors(&report);
    assert!(
        errs.iter()
            .any(|e| e.contains("block 1 ") && e.contains("past")),
        "{errs:#?}"
    );
    assert_eq!(
        Disk::open(&path).unwrap_err().kind(),
        vhdkit_format::ErrorKind::Corrupt
    );
}

#[test]
fn check_of_two_overlapping_bat_entries_reports_the_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dynamic_with_blocks(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    overlap_two_blocks(&mut bytes);
    std::fs::write(&path, &bytes).expect("write");

    let report = run(&path);

    let errs = errors(&report);
    assert!(errs.iter().any(|e| e.contains("overlaps")), "{errs:#?}");
}

#[test]
fn check_of_several_kinds_of_damage_reports_every_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dynamic_with_blocks(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    flip_footer_checksum(&mut bytes);
    point_past_the_end(&mut bytes);
    overlap_two_blocks(&mut bytes);
    std::fs::write(&path, &bytes).expect("write");

    let report = run(&path);

    let errs = errors(&report);
    assert!(
        report
            .problems()
            .any(|(_, p)| p.structure == "footer" && p.field == "checksum"),
        "checksum missing: {errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("block 1 ") && e.contains("past")),
        "past-the-end missing: {errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e.contains("overlaps")),
        "overlap missing: {errs:#?}"
    );
}

#[test]
fn check_of_a_child_with_a_missing_parent_reports_the_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let child = create_child(dir.path(), "c.vhd", &parent, BS);
    std::fs::remove_file(&parent).expect("rm");

    let report = run(&child);

    assert!(
        report
            .problems()
            .any(|(_, p)| p.field == "parent" && p.severity == Severity::Error),
        "{:#?}",
        errors(&report)
    );
}

/// The problems of `report` of this structure and field, rendered.
fn found(report: &CheckReport, structure: &str, field: &str) -> Vec<String> {
    report
        .problems()
        .filter(|(_, p)| p.structure == structure && p.field == field)
        .map(|(_, p)| p.to_string())
        .collect()
}

/// A parent whose modification time is `secs` seconds from the time its child records.
fn shift_parent_time(child: &Path, parent: &Path, secs: i64) {
    common::restore_parent_time(child, parent);
    let t = std::fs::metadata(parent)
        .and_then(|m| m.modified())
        .expect("mtime");
    let d = std::time::Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 { t + d } else { t - d };
    std::fs::File::open(parent)
        .and_then(|f| f.set_modified(t))
        .expect("set the time");
}

#[test]
fn check_of_a_child_whose_parent_has_another_size_reports_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let child = create_child(dir.path(), "c.vhd", &parent, BS);
    let opts = vhdkit_format::ops::OpsOptions {
        force: true,
        ..Default::default()
    };
    let grow = vhdkit_format::ops::ResizeOptions {
        size: Some(4 * MIB),
        ..Default::default()
    };
    vhdkit_format::ops::resize::resize(&parent, &grow, &opts, &detached()).expect("resize");
    common::restore_parent_time(&child, &parent);

    let report = run(&child);

    let sizes = found(&report, "footer", "current size");
    assert_eq!(sizes.len(), 1, "{:#?}", report.files);
    assert!(sizes[0].starts_with("error"), "{sizes:?}");
    assert!(
        sizes[0].contains(&format!("{}", 3 * MIB)) && sizes[0].contains(&format!("{}", 4 * MIB)),
        "{sizes:?}"
    );
    assert_eq!(report.problem_count(), 1, "{:#?}", report.files);
}

#[test]
fn check_of_a_child_whose_parent_changed_after_its_record_warns_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let child = create_child(dir.path(), "c.vhd", &parent, BS);
    shift_parent_time(&child, &parent, 3600);

    let report = run(&child);

    let stamps = found(&report, "dynamic header", "parent time stamp");
    assert_eq!(stamps.len(), 1, "{:#?}", report.files);
    assert!(stamps[0].starts_with("warning"), "{stamps:?}");
    assert!(
        stamps[0].contains("modified later") && stamps[0].contains("set-parent"),
        "the reason and the way out: {stamps:?}"
    );
    assert!(!report.is_clean());
}

#[test]
fn check_of_a_child_whose_parent_is_older_than_its_record_only_informs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let child = create_child(dir.path(), "c.vhd", &parent, BS);
    shift_parent_time(&child, &parent, -3600);

    let report = run(&child);

    let stamps = found(&report, "dynamic header", "parent time stamp");
    assert_eq!(stamps.len(), 1, "{:#?}", report.files);
    assert!(stamps[0].starts_with("info"), "{stamps:?}");
    assert!(report.is_clean(), "{:#?}", report.files);
}

#[test]
fn check_of_a_locator_over_the_bat_entries_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let child = create_child(dir.path(), "c.vhd", &parent, BS);
    // The relative locator's payload over entry 2 of the table at 1536 (6 entries).
    patch_locator_offset(&child, 1, 1536 + 8);

    let report = run(&child);

    let overlaps = found(&report, "parent locator", "data offset");
    assert_eq!(overlaps.len(), 1, "{:#?}", report.files);
    assert!(
        overlaps[0].starts_with("error") && overlaps[0].contains("entries"),
        "{overlaps:?}"
    );
}

#[test]
fn check_of_a_locator_in_the_bat_padding_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, 3 * MIB, BS);
    let child = create_child(dir.path(), "c.vhd", &parent, BS);
    // 6 entries take 24 bytes of the table's sector at 1536; the rest is padding.
    common::move_locator_payload(&child, 1, 1536 + 100);

    let report = run(&child);

    let overlaps = found(&report, "parent locator", "data offset");
    assert_eq!(overlaps.len(), 1, "{:#?}", report.files);
    assert!(
        overlaps[0].starts_with("warning") && overlaps[0].contains("padding"),
        "{overlaps:?}"
    );
    assert!(read_all_ok(&child), "every reader still reads it");
}

/// Points locator `slot` of `path` at `offset` without moving its payload.
fn patch_locator_offset(path: &Path, slot: usize, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read");
    let mut h = DynamicHeader::decode(&bytes[512..512 + HEADER_SIZE]).expect("header");
    h.locators[slot].data_offset = offset;
    bytes[512..512 + HEADER_SIZE].copy_from_slice(&h.encode());
    std::fs::write(path, bytes).expect("write");
}

fn read_all_ok(path: &Path) -> bool {
    Disk::open(path).is_ok_and(|d| {
        let mut buf = vec![0u8; d.virtual_size() as usize];
        d.read_at(&mut buf, 0).is_ok()
    })
}

fn detached() -> vhdkit_task::Progress {
    vhdkit_task::Progress::detached(vhdkit_task::CancelToken::new())
}
