//! Disks that depend on each other, through the command line: `merge` (and `--into`),
//! `compact --fs-aware` and `resize` refuse before writing when a disk outside their own
//! chain names a disk they change as its parent, naming each one in text and JSON
//! (`--also-check DIR` looks in more folders, `--force` proceeds); `check` reports a
//! child whose parent has another size, or changed after the child recorded it; a
//! child's link to its parent survives a resize (its locator in the BAT's padding) and
//! `set-parent` names a loop as a loop. Resized images are judged by libvhdi and qemu-img.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// base ← mid ← {top, sib} in `dir`, each with data of its own: the reproduction of
/// the issue. The parents' times are set back a minute, so that any later change to
/// them is seen by `check` whatever the clock's second.
fn forked(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let base = dir.join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "8M"]);
    write_at(&base, 0, &pattern(1, 3 << 20), &[]);
    age(&base);
    let mid = dir.join("mid.vhd");
    create(&mid, &["--type", "differencing", "--parent", p(&base)]);
    write_at(&mid, 1 << 20, &pattern(2, 2 << 20), &[]);
    age(&mid);
    let top = dir.join("top.vhd");
    create(&top, &["--type", "differencing", "--parent", p(&mid)]);
    write_at(&top, (2 << 20) + 1, &pattern(3, 1 << 20), &[]);
    let sib = dir.join("sib.vhd");
    create(&sib, &["--type", "differencing", "--parent", p(&mid)]);
    write_at(&sib, 2 << 20, &pattern(4, 4096), &[]);
    (base, mid, top, sib)
}

/// Sets the modification time of `disk` a minute back.
fn age(disk: &Path) {
    let t = std::fs::metadata(disk)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::File::open(disk)
        .and_then(|f| f.set_modified(t - std::time::Duration::from_secs(60)))
        .expect("set the time");
}

fn run(args: &[&str]) -> Run {
    vhdkit(args)
}

#[test]
fn merge_into_a_parent_another_disk_reads_is_refused_naming_it() {
    let dir = tempdir();
    let (_, mid, top, sib) = forked(dir.path());
    let (mid_bytes, sib_view) = (std::fs::read(&mid).expect("read"), read_all(&sib));

    let r = run(&["merge", p(&top)]);

    let line = assert_failed_one_line(&r);
    assert!(
        line.contains("sib.vhd") && line.contains("mid.vhd") && line.contains("--force"),
        "{line}"
    );
    assert!(line.contains("would read different bytes"), "{line}");
    assert_eq!(
        std::fs::read(&mid).expect("read"),
        mid_bytes,
        "nothing written"
    );
    assert_bytes_eq("the sibling", &read_all(&sib), &sib_view);
    // JSON: the kind, and each disk by name.
    let r = run(&["merge", p(&top), "--json"]);
    let v = assert_failed_json(&r, EXIT_FAILED);
    assert_eq!(v["kind"], "has_children", "{v}");
    assert_eq!(v["hresult"], "0x80070020", "E_SHARING_VIOLATION: {v}");
    assert_eq!(v["path"], p(&top), "{v}");
    assert_eq!(v["children"], serde_json::json!([p(&sib)]), "{v}");
}

#[test]
fn merge_with_force_changes_the_sibling_and_check_then_warns_about_it() {
    let dir = tempdir();
    let (_, mid, top, sib) = forked(dir.path());
    let (top_view, sib_view) = (read_all(&top), read_all(&sib));
    let r = run(&["check", p(&sib)]);
    assert_eq!(r.code, EXIT_OK, "clean before: {}", r.stdout_str());

    run(&["merge", p(&top), "--force"]).ok();

    assert_bytes_eq("the parent now", &read_all(&mid), &top_view);
    assert_ne!(read_all(&sib), sib_view, "what the refusal said");
    // The sibling's record of its parent's time is older than the parent now.
    let r = run(&["check", p(&sib)]);
    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stdout_str());
    let out = r.stdout_str();
    assert!(
        out.contains("warning: dynamic header parent time stamp") && out.contains("modified later"),
        "{out}"
    );
    let r = run(&["check", p(&sib), "--json"]);
    let v = r.json();
    let stamp = v["files"][0]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .find(|p| p["field"] == "parent time stamp")
        .cloned()
        .expect("the time stamp problem");
    assert_eq!(stamp["severity"], "warning", "{v}");
    // The merged child itself records the parent's new time: clean.
    assert_eq!(run(&["check", p(&top)]).code, EXIT_OK);
}

#[test]
fn merge_also_checks_the_folders_it_is_given() {
    let dir = tempdir();
    let (_, mid, top, sib) = forked(dir.path());
    let away = dir.path().join("away");
    std::fs::create_dir(&away).expect("mkdir");
    let far = away.join("sib.vhd");
    std::fs::rename(&sib, &far).expect("move the sibling away");
    let mid_bytes = std::fs::read(&mid).expect("read");

    let r = run(&["merge", p(&top), "--also-check", p(&away)]);

    let line = assert_failed_one_line(&r);
    assert!(line.contains(p(&far)), "{line}");
    assert_eq!(std::fs::read(&mid).expect("read"), mid_bytes);
    // A folder that is not there is refused, not taken as empty.
    let r = run(&[
        "merge",
        p(&top),
        "--also-check",
        p(&dir.path().join("typo")),
    ]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("typo") && line.contains("no such"), "{line}");
    assert_eq!(std::fs::read(&mid).expect("read"), mid_bytes);
}

#[test]
fn merge_into_an_ancestor_names_the_other_children_of_each_disk_it_changes() {
    let dir = tempdir();
    let (base, _, top, sib) = forked(dir.path());
    let other = dir.path().join("other.vhd");
    create(&other, &["--type", "differencing", "--parent", p(&base)]);

    let r = run(&["merge", p(&top), "--into", p(&base), "--json"]);

    let v = assert_failed_json(&r, EXIT_FAILED);
    assert_eq!(v["kind"], "has_children", "{v}");
    assert_eq!(
        v["children"],
        serde_json::json!([p(&other), p(&sib)]),
        "{v}"
    );
    let m = v["message"].as_str().expect("message");
    assert!(
        m.contains("orphaned") && m.contains("different bytes"),
        "{m}"
    );
}

#[test]
fn compact_fs_aware_of_a_parent_is_refused_unless_forced() {
    let dir = tempdir();
    let (_, mid, top, sib) = forked(dir.path());
    let before = std::fs::read(&mid).expect("read");

    let r = run(&["compact", p(&mid), "--fs-aware"]);

    let line = assert_failed_one_line(&r);
    assert!(line.contains(p(&sib)) && line.contains(p(&top)), "{line}");
    assert!(
        line.contains("free space") && line.contains("--force"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&mid).expect("read"),
        before,
        "nothing written"
    );
    // Plain compact keeps the parent's view: not refused. A dry run writes nothing.
    run(&["compact", p(&mid), "--fs-aware", "--dry-run"]).ok();
    run(&["compact", p(&mid)]).ok();
    run(&["compact", p(&mid), "--fs-aware", "--force"]).ok();
    // --force means something only with --fs-aware.
    let r = run(&["compact", p(&mid), "--force"]);
    assert_eq!(r.code, EXIT_USAGE, "{}", r.stderr);
}

#[test]
fn check_reports_a_child_whose_parent_has_another_size() {
    let dir = tempdir();
    let (base, mid, _, _) = forked(dir.path());
    run(&["resize", p(&base), "--size", "12M", "--force"]).ok();
    restore_parent_time(&mid, &base);

    let r = run(&["check", p(&mid)]);

    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stdout_str());
    let out = r.stdout_str();
    assert!(
        out.contains("error: footer current size") && out.contains("12582912"),
        "{out}"
    );
    let v = run(&["check", p(&mid), "--json"]).json();
    assert_eq!(v["clean"], false);
    let problems = v["files"][0]["problems"].as_array().expect("problems");
    assert!(
        problems
            .iter()
            .any(|p| p["field"] == "current size" && p["severity"] == "error"),
        "{v}"
    );
}

/// A differencing disk over `parents/base.vhd` (64 MiB, 2 MiB blocks: 32 BAT entries in
/// a sector that holds 128) whose only parent locator lies in the unused tail of its
/// BAT's sector, 200 bytes past the entries: the parent is found through it alone.
fn child_with_locator_in_bat_padding(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir(dir.join("parents")).expect("mkdir");
    let base = dir.join("parents/base.vhd");
    create(&base, &["--type", "dynamic", "--size", "64M"]);
    write_at(&base, 0, &pattern(5, 1 << 20), &[]);
    let child = dir.join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&base)]);
    write_at(&child, 3 << 20, &pattern(6, 300_000), &[]);
    // The table is at 1536 (vhdkit's layout): entries 0..32 end at 1664.
    clear_locator(&child, 0);
    move_locator_payload(&child, 1, 1664 + 200);
    restore_parent_time(&child, &base);
    (base, child)
}

#[test]
fn resize_keeps_a_locator_that_lies_in_the_bat_padding() {
    let dir = tempdir();
    let (base, child) = child_with_locator_in_bat_padding(dir.path());
    let view = read_all(&child);
    let r = run(&["check", p(&child)]);
    assert!(
        r.stdout_str()
            .contains("warning: parent locator data offset"),
        "check reports it: {}",
        r.stdout_str()
    );
    run(&["resize", p(&base), "--size", "200M", "--force"]).ok();
    restore_parent_time(&child, &base);

    let r = run(&["resize", p(&child), "--size", "200M", "--json"]);

    let v = r.ok().json();
    assert_eq!(v["bat"], "relocated", "{v}");
    let mut want = view;
    want.resize(200 << 20, 0);
    assert_bytes_eq("vhdkit finds the parent", &read_all(&child), &want);
    assert_eq!(run(&["check", p(&child)]).code, EXIT_OK);
    assert_bytes_eq(
        "libvhdi reads the chain",
        &pyvhdi_read_all(&[&child, &base]),
        &want,
    );
    assert_eq!(
        qemu_size(&child),
        200 << 20,
        "qemu-img reads the resized child"
    );
    assert_eq!(vhdiinfo_size(&child), 200 << 20);
}

#[test]
fn set_parent_to_its_own_child_or_itself_says_loop() {
    let dir = tempdir();
    let (_, mid, top, _) = forked(dir.path());
    let before = std::fs::read(&mid).expect("read");

    for parent in [&top, &mid] {
        let r = run(&["set-parent", p(&mid), p(parent), "--ignore-parent-id"]);

        let line = assert_failed_one_line(&r);
        assert!(line.contains("loops") && !line.contains("in use"), "{line}");
    }
    let r = run(&["set-parent", p(&mid), p(&top), "--json"]);
    assert_eq!(assert_failed_json(&r, EXIT_FAILED)["kind"], "chain_loop");
    assert_eq!(
        std::fs::read(&mid).expect("read"),
        before,
        "nothing written"
    );
}

#[test]
fn set_parent_search_counts_every_entry_toward_its_cap() {
    // In memory where there is /dev/shm: 100 000 files are made and listed.
    let dir = fast_tempdir();
    let base = dir.path().join("base.vhd");
    create(&base, &["--type", "dynamic", "--size", "4M"]);
    let child = dir.path().join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&base)]);
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("mkdir");
    std::fs::rename(&base, store.join("base.vhd")).expect("move the parent");
    // 100 000 entries that are not VHDs, besides the parent.
    for i in 0..100_000 {
        std::fs::File::create(store.join(format!("n{i}"))).expect("create");
    }

    let r = run(&["set-parent", p(&child), "--search", p(&store)]);

    let line = assert_failed_one_line(&r);
    assert!(line.contains("more than 100000 entries"), "{line}");
}
