//! `vhdkit resize`: grow and shrink of fixed, dynamic (BAT in place and relocated) and
//! differencing disks keep every byte they should, judged by qemu-img (convert -f vpc,
//! info) and libvhdi (pyvhdi, vhdiinfo) besides vhdkit; new space reads as zeros; the
//! refusals (shrink without --allow-shrink, over a partition; a differencing disk alone;
//! a disk other disks name as parent) happen before anything is written; `--align`
//! rounds up; `check` takes the states an interrupted resize leaves as information.

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;
use serde_json::Value;

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `vhdkit resize PATH ARGS… --json`, asserted to succeed; the report.
fn resize(path: &Path, args: &[&str]) -> Value {
    let mut a = vec!["resize", p(path)];
    a.extend_from_slice(args);
    a.push("--json");
    vhdkit(a).ok().json()
}

/// `vhdkit resize PATH ARGS…`, whatever happens.
fn try_resize(path: &Path, args: &[&str]) -> Run {
    let mut a = vec!["resize", p(path)];
    a.extend_from_slice(args);
    vhdkit(a)
}

fn check_clean(path: &Path) {
    let r = vhdkit(["check", p(path)]);
    assert_eq!(
        r.code,
        EXIT_OK,
        "check {}: {}",
        path.display(),
        r.stdout_str()
    );
}

/// A disk of `size` bytes, kind `kind` (block size `block` when dynamic), holding
/// random writes; returns its content.
fn disk_with_data(path: &Path, kind: &str, size: u64, block: Option<&str>, seed: u64) -> Vec<u8> {
    let s = size.to_string();
    let mut args = vec!["--type", kind, "--size", &s];
    if let Some(b) = block {
        args.extend(["--block-size", b]);
    }
    create(path, &args);
    let mut model = Model::new(size);
    let mut rng = Rng::new(seed);
    for (off, data) in random_writes(&mut rng, size, 10) {
        write_both(path, &mut model, off, &data);
    }
    // The last sector holds data: what a shrink cuts and a grow keeps.
    write_both(path, &mut model, size - 4096, &pattern(seed + 1, 4096));
    model.0
}

/// Every reader sees `want`: vhdkit, qemu-img (whole disk) and pyvhdi, and each reports
/// its size.
fn assert_everyone_reads(path: &Path, want: &[u8]) {
    let size = want.len() as u64;
    assert_eq!(vhdkit_size(path), size, "vhdkit's size");
    assert_bytes_eq("vhdkit read", &read_all(path), want);
    if have(Tool::QemuImg) {
        assert_eq!(qemu_size(path), size, "qemu-img's size");
        assert_bytes_eq("qemu-img convert", &qemu_read_all(path), want);
    }
    if have(Tool::Pyvhdi) {
        assert_eq!(pyvhdi_size(path), size, "libvhdi's size");
        assert_bytes_eq("pyvhdi read", &pyvhdi_read_all(&[path]), want);
    }
    if have(Tool::Vhdiinfo) {
        assert_eq!(vhdiinfo_size(path), size, "vhdiinfo's media size");
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("metadata").len()
}

fn resized(mut data: Vec<u8>, size: u64) -> Vec<u8> {
    data.resize(size as usize, 0);
    data
}

fn nonzero(data: &[u8]) -> u64 {
    data.iter().filter(|&&b| b != 0).count() as u64
}

// --- dynamic ------------------------------------------------------------------------------

#[test]
fn dynamic_grow_inside_the_bat_padding_keeps_every_byte() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    // 64 MiB of 2 MiB blocks: 32 entries in a sector that holds 128.
    let before = disk_with_data(&d, "dynamic", 64 * MIB, None, 1);
    let r = resize(&d, &["--size", "200M"]);
    assert_eq!(r["operation"], "resize");
    assert_eq!(r["bat"], "in-place", "{r}");
    assert_eq!(r["size_before"], 64 * MIB);
    assert_eq!(r["size_after"], 200 * MIB);
    assert_eq!(r["nonzero_bytes_cut"], 0);
    check_clean(&d);
    assert_everyone_reads(&d, &resized(before, 200 * MIB));
    assert_eq!(info(&d)["max_table_entries"], 100, "{}", info(&d));
}

#[test]
fn dynamic_grow_past_the_padding_moves_the_bat_and_keeps_every_byte() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    let before = disk_with_data(&d, "dynamic", 64 * MIB, Some("512K"), 2);
    let len = file_len(&d);
    let r = resize(&d, &["--size", "300M"]);
    assert_eq!(r["bat"], "relocated", "{r}");
    check_clean(&d);
    // The new table (600 entries, 2400 bytes: 5 sectors) follows the blocks; the footer
    // follows it.
    assert_eq!(file_len(&d), len + 5 * 512, "{r}");
    assert_everyone_reads(&d, &resized(before.clone(), 300 * MIB));
    if have(Tool::QemuImg) {
        // qemu-img compare against the expected bytes made into a VHD by qemu-img itself.
        let raw = dir.path().join("want.raw");
        std::fs::write(&raw, resized(before.clone(), 300 * MIB)).expect("write");
        let want = dir.path().join("want.vhd");
        let r = run_cmd(
            std::process::Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "vpc", "-o", "force_size=on"])
                .arg(&raw)
                .arg(&want),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(qemu_compare(&d, &want), 0, "qemu-img compare");
    }
    // And the disk takes writes past its old end, everywhere.
    let mut want = resized(before, 300 * MIB);
    let data = pattern(9, 3 * MIB as usize);
    write_at(&d, 250 * MIB + 7, &data, &[]);
    want[(250 * MIB + 7) as usize..(250 * MIB + 7) as usize + data.len()].copy_from_slice(&data);
    check_clean(&d);
    assert_everyone_reads(&d, &want);
}

#[test]
fn dynamic_disk_of_64_mib_grows_to_20_gib_and_to_2040_gib() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    let before = disk_with_data(&d, "dynamic", 64 * MIB, None, 3);
    for (size, arg) in [(20 * GIB, "20G"), (2040 * GIB, "2040G")] {
        let len = file_len(&d);
        let t = std::time::Instant::now();
        let r = resize(&d, &["--size", arg]);
        eprintln!(
            "64 MiB -> {arg}: {:.3} s wall ({} s in the engine), file {} bytes",
            t.elapsed().as_secs_f64(),
            r["elapsed"],
            file_len(&d)
        );
        assert_eq!(r["size_after"], size);
        assert_eq!(r["bat"], "relocated");
        // The new table follows the blocks (2 MiB blocks: 4 bytes per 2 MiB of disk).
        assert!(file_len(&d) <= len + size / (2 * MIB) * 4 + 512, "{r}");
        check_clean(&d);
        assert_eq!(vhdkit_size(&d), size);
        let last = read_range(&d, size - MIB, MIB);
        assert!(all_zero(&last), "vhdkit: the last MiB reads as zeros");
        assert_eq!(
            read_range(&d, 0, 64 * MIB),
            before,
            "vhdkit: the old 64 MiB"
        );
        if have(Tool::QemuImg) {
            assert_eq!(qemu_size(&d), size);
            assert!(all_zero(&qemu_read_range(&d, size - MIB, MIB)), "qemu");
            assert_eq!(
                qemu_read_range(&d, 0, 64 * MIB),
                before,
                "qemu: the old 64 MiB"
            );
        }
        if have(Tool::Vhdiinfo) {
            assert_eq!(vhdiinfo_size(&d), size);
        }
        if have(Tool::Pyvhdi) {
            assert_eq!(pyvhdi_size(&d), size);
            let r = run_cmd(&mut pyvhdi_read_cmd(&[&d], size - MIB, Some(MIB)));
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert!(
                all_zero(&r.stdout) && r.stdout.len() == MIB as usize,
                "pyvhdi"
            );
            let r = run_cmd(&mut pyvhdi_read_cmd(&[&d], 0, Some(64 * MIB)));
            assert_eq!(r.stdout, before, "pyvhdi: the old 64 MiB");
        }
    }
}

#[test]
fn dynamic_shrink_releases_the_blocks_past_the_end_and_counts_the_bytes_cut() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    let before = disk_with_data(&d, "dynamic", 64 * MIB, Some("1M"), 4);
    let new = 20 * MIB + 3 * 512; // inside a block
    let len = file_len(&d);
    let blocks_past: u64 = (new / MIB + 1..64)
        .filter(|b| !all_zero(&before[(b * MIB) as usize..((b + 1) * MIB) as usize]))
        .count() as u64;
    let r = resize(&d, &["--size", &new.to_string(), "--allow-shrink"]);
    assert_eq!(
        r["nonzero_bytes_cut"],
        nonzero(&before[new as usize..]),
        "{r}"
    );
    assert!(
        r["blocks_released"].as_u64().expect("count") >= blocks_past,
        "{r}"
    );
    assert!(file_len(&d) < len, "the file shrinks: {r}");
    assert_eq!(r["file_size_before"], len);
    assert_eq!(r["file_size_after"], file_len(&d));
    check_clean(&d);
    assert_everyone_reads(&d, &before[..new as usize]);
    // Growing back: the cut part reads as zeros, also in the block the end cut through.
    resize(&d, &["--size", "64M"]);
    check_clean(&d);
    assert_everyone_reads(&d, &resized(before[..new as usize].to_vec(), 64 * MIB));
}

// --- fixed --------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn fixed_grow_allocates_the_new_space_and_keeps_every_byte() {
    let dir = tempdir();
    let d = dir.path().join("f.vhd");
    let before = disk_with_data(&d, "fixed", 16 * MIB, None, 5);
    let r = resize(&d, &["--size", "40M"]);
    assert_eq!(r["bat"], "none");
    assert_eq!(
        file_len(&d),
        40 * MIB + 512,
        "a footer right after the data"
    );
    check_clean(&d);
    assert_everyone_reads(&d, &resized(before, 40 * MIB));
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&d).expect("metadata").blocks() * 512;
    assert!(
        allocated >= 40 * MIB,
        "the new space is allocated ({allocated} bytes)"
    );
}

#[cfg(unix)]
#[test]
fn fixed_grow_with_sparse_leaves_the_new_space_a_hole() {
    let dir = tempdir();
    let d = dir.path().join("f.vhd");
    create(&d, &["--type", "fixed", "--size", "4M", "--sparse"]);
    let r = resize(&d, &["--size", "1G", "--sparse"]);
    assert_eq!(r["size_after"], GIB);
    use std::os::unix::fs::MetadataExt;
    let allocated = std::fs::metadata(&d).expect("metadata").blocks() * 512;
    assert!(allocated < 64 * MIB, "{allocated} bytes allocated");
    check_clean(&d);
    assert!(all_zero(&read_range(&d, GIB - MIB, MIB)));
    if have(Tool::QemuImg) {
        assert_eq!(qemu_size(&d), GIB);
    }
    // --sparse on a dynamic disk is a usage mistake.
    let dy = dir.path().join("d.vhd");
    create(&dy, &["--type", "dynamic", "--size", "4M"]);
    assert_eq!(
        try_resize(&dy, &["--size", "8M", "--sparse"]).code,
        EXIT_USAGE
    );
}

#[test]
fn fixed_shrink_cuts_the_data_past_the_new_size_and_truncates() {
    let dir = tempdir();
    let d = dir.path().join("f.vhd");
    let before = disk_with_data(&d, "fixed", 16 * MIB, None, 6);
    let new = 5 * MIB + 512;
    let r = resize(&d, &["--size", &new.to_string(), "--allow-shrink"]);
    assert_eq!(
        r["nonzero_bytes_cut"],
        nonzero(&before[new as usize..]),
        "{r}"
    );
    assert_eq!(file_len(&d), new + 512);
    assert_eq!(r["file_size_after"], new + 512);
    check_clean(&d);
    assert_everyone_reads(&d, &before[..new as usize]);
    // And back: the cut part is zeros now.
    resize(&d, &["--size", "16M"]);
    check_clean(&d);
    assert_everyone_reads(&d, &resized(before[..new as usize].to_vec(), 16 * MIB));
}

// --- differencing -------------------------------------------------------------------------

/// A dynamic base with data, a differencing child with data over part of it.
fn chain(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let base = dir.join("base.vhd");
    let mut view = disk_with_data(&base, "dynamic", 32 * MIB, Some("512K"), 7);
    let child = dir.join("child.vhd");
    create(&child, &["--type", "differencing", "--parent", p(&base)]);
    let mut model = Model(view.clone());
    let mut rng = Rng::new(8);
    for (off, data) in random_writes(&mut rng, 32 * MIB, 8) {
        write_both(&child, &mut model, off, &data);
    }
    view = model.0;
    (base, child, view)
}

#[test]
fn differencing_disk_is_resized_after_its_parent_and_keeps_its_view() {
    let dir = tempdir();
    let (base, child, view) = chain(dir.path());
    let base_bytes = std::fs::read(&base).expect("read");
    let child_bytes = std::fs::read(&child).expect("read");

    // Alone: refused, with the way to do it.
    let r = try_resize(&child, &["--size", "48M"]);
    let line = assert_failed_one_line(&r);
    assert!(
        line.contains("parent") && line.contains("base disk first"),
        "{line}"
    );
    // The parent, while a child names it: refused without --force.
    let r = try_resize(&base, &["--size", "48M"]);
    let line = assert_failed_one_line(&r);
    assert!(
        line.contains("--force") && line.contains("child.vhd"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(&base).expect("read"),
        base_bytes,
        "nothing written"
    );
    assert_eq!(
        std::fs::read(&child).expect("read"),
        child_bytes,
        "nothing written"
    );

    resize(&base, &["--size", "48M", "--force"]);
    // Until the child follows, check says the sizes differ.
    let r = vhdkit(["check", p(&child)]);
    assert_eq!(r.code, EXIT_DIFFERENT, "{}", r.stdout_str());
    assert!(
        r.stdout_str().contains("error: footer current size"),
        "{}",
        r.stdout_str()
    );
    let r = resize(&child, &["--size", "48M"]);
    assert_eq!(r["size_after"], 48 * MIB);
    // The base changed after the child recorded its time: set-parent records it again.
    vhdkit(["set-parent", p(&child), p(&base)]).ok();
    check_clean(&child);
    let want = resized(view.clone(), 48 * MIB);
    assert_eq!(vhdkit_size(&child), 48 * MIB);
    assert_bytes_eq("vhdkit read of the child", &read_all(&child), &want);
    if have(Tool::Pyvhdi) {
        assert_eq!(pyvhdi_size(&child), 48 * MIB);
        assert_bytes_eq("pyvhdi chain", &pyvhdi_read_all(&[&child, &base]), &want);
    }

    // Shrink the same way: the base first, then the child.
    let new = 24 * MIB;
    resize(&base, &["--size", "24M", "--force", "--allow-shrink"]);
    // What the child shows past 24 MiB now: its own sectors (the parent's are gone).
    let between = read_all(&child);
    let r = resize(&child, &["--size", "24M", "--allow-shrink"]);
    assert_eq!(
        r["nonzero_bytes_cut"],
        nonzero(&between[new as usize..]),
        "{r}"
    );
    vhdkit(["set-parent", p(&child), p(&base)]).ok();
    check_clean(&child);
    assert_bytes_eq(
        "vhdkit after the shrink",
        &read_all(&child),
        &view[..new as usize],
    );
    if have(Tool::Pyvhdi) {
        assert_bytes_eq(
            "pyvhdi after the shrink",
            &pyvhdi_read_all(&[&child, &base]),
            &view[..new as usize],
        );
    }
}

// --- refusals -----------------------------------------------------------------------------

#[test]
fn shrink_without_allow_shrink_is_a_usage_error_and_writes_nothing() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    disk_with_data(&d, "dynamic", 16 * MIB, None, 9);
    let bytes = std::fs::read(&d).expect("read");
    let r = try_resize(&d, &["--size", "8M"]);
    assert_eq!(r.code, EXIT_USAGE, "{}", r.stderr);
    assert!(r.stderr.contains("--allow-shrink"), "{}", r.stderr);
    let r = try_resize(&d, &["--size", "8M", "--json"]);
    let v = assert_failed_json(&r, EXIT_USAGE);
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("--allow-shrink")),
        "{v}"
    );
    assert_eq!(std::fs::read(&d).expect("read"), bytes, "nothing written");
}

/// A 64 MiB raw disk with an MBR whose one partition spans 1 MiB .. `end`.
fn raw_with_partition(path: &Path, end: u64) {
    let mut disk = vec![0u8; (64 * MIB) as usize];
    disk[..512].copy_from_slice(&vhdkit_testkit::mbr_with_partition(MIB, end, 0x83));
    disk[(end - 512) as usize..end as usize].fill(0x5A);
    std::fs::write(path, disk).expect("write raw");
}

#[test]
fn shrink_over_a_partition_is_refused_and_beside_it_allowed() {
    let dir = tempdir();
    let raw = dir.path().join("d.raw");
    raw_with_partition(&raw, 40 * MIB);
    for kind in ["fixed", "dynamic"] {
        let d = dir.path().join(format!("{kind}.vhd"));
        vhdkit(["convert", p(&raw), p(&d), "--type", kind]).ok();
        let bytes = std::fs::read(&d).expect("read");
        let r = try_resize(&d, &["--size", "32M", "--allow-shrink"]);
        let line = assert_failed_one_line(&r);
        assert!(line.contains("partition 1"), "{line}");
        assert_eq!(std::fs::read(&d).expect("read"), bytes, "nothing written");
        // Past the partition's end: allowed; nothing non-zero is cut.
        let r = resize(&d, &["--size", "40M", "--allow-shrink"]);
        assert_eq!(r["nonzero_bytes_cut"], 0, "{r}");
        check_clean(&d);
    }
}

#[test]
fn shrink_of_a_gpt_disk_made_by_sfdisk_is_refused_over_its_partition() {
    let dir = tempdir();
    let raw = dir.path().join("g.raw");
    std::fs::write(&raw, vec![0u8; (64 * MIB) as usize]).expect("write");
    sfdisk(&raw, "label: gpt\n1MiB,30MiB,L\n");
    let d = dir.path().join("g.vhd");
    vhdkit(["convert", p(&raw), p(&d), "--type", "dynamic"]).ok();
    let r = try_resize(&d, &["--size", "16M", "--allow-shrink"]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("partition 1"), "{line}");
    let r = try_resize(&d, &["--size", "48M", "--allow-shrink"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert!(
        r.stderr.contains("GPT"),
        "the backup header is mentioned: {}",
        r.stderr
    );
}

#[test]
fn sizes_out_of_range_are_refused() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    create(&d, &["--type", "dynamic", "--size", "8M"]);
    for (size, what) in [("2041G", "2040 GiB"), ("1M", "3 MiB"), ("5000000", "512")] {
        let r = try_resize(&d, &["--size", size, "--allow-shrink"]);
        let line = assert_failed_one_line(&r);
        assert!(line.contains(what), "{size}: {line}");
    }
    assert_eq!(vhdkit_size(&d), 8 * MIB);
}

// --- --align ------------------------------------------------------------------------------

#[test]
fn align_rounds_the_size_up_to_a_whole_multiple() {
    let dir = tempdir();
    let d = dir.path().join("f.vhd");
    // 10000384 bytes: 19532 sectors, not a whole MiB.
    create(&d, &["--type", "fixed", "--size", "10000384"]);
    let r = resize(&d, &["--align", "1M"]);
    assert_eq!(r["size_after"], 10 * MIB, "{r}");
    assert_eq!(file_len(&d), 10 * MIB + 512);
    check_clean(&d);
    // Already aligned: nothing to do, nothing written.
    let bytes = std::fs::read(&d).expect("read");
    let r = resize(&d, &["--align", "1M"]);
    assert_eq!(r["size_before"], r["size_after"]);
    assert_eq!(std::fs::read(&d).expect("read"), bytes);
    // With --size: the size given, rounded up.
    let r = resize(&d, &["--size", "20000000", "--align", "1M"]);
    assert_eq!(r["size_after"], 20 * MIB, "{r}");
    if have(Tool::QemuImg) {
        assert_eq!(qemu_size(&d), 20 * MIB);
    }
    // Neither --size nor --align: a usage error.
    assert_eq!(try_resize(&d, &[]).code, EXIT_USAGE);
}

// --- interrupted states -------------------------------------------------------------------

#[test]
fn a_stale_footer_copy_is_information_and_repair_or_a_rerun_updates_it() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    let before = disk_with_data(&d, "dynamic", 16 * MIB, None, 10);
    let old_copy = std::fs::read(&d).expect("read")[..512].to_vec();
    resize(&d, &["--size", "32M"]);
    // What a kill between the two footer writes leaves: the old copy at offset 0.
    let put_back = || {
        use vhdkit_platform::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&d)
            .expect("open");
        f.write_all_at(&old_copy, 0).expect("write");
    };
    put_back();
    let r = vhdkit(["check", p(&d), "--json"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    assert!(r.stdout_str().contains("interrupted"), "{}", r.stdout_str());
    assert_eq!(read_all(&d), resized(before.clone(), 32 * MIB));
    let r = vhdkit(["check", p(&d), "--repair"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    assert!(!vhdkit(["check", p(&d)])
        .ok()
        .stdout_str()
        .contains("interrupted"));
    put_back();
    resize(&d, &["--size", "32M"]);
    assert!(!vhdkit(["check", p(&d)])
        .ok()
        .stdout_str()
        .contains("interrupted"));
    assert_eq!(
        &std::fs::read(&d).expect("read")[..512],
        &std::fs::read(&d).expect("read")[file_len(&d) as usize - 512..]
    );
}

#[test]
fn a_fixed_disk_with_padding_before_its_footer_checks_clean_and_a_rerun_finishes() {
    let dir = tempdir();
    let d = dir.path().join("f.vhd");
    let before = disk_with_data(&d, "fixed", 8 * MIB, None, 11);
    // What a kill after a fixed grow's first step leaves: the footer copied to the new
    // end, the old one still in place.
    let bytes = std::fs::read(&d).expect("read");
    let footer = bytes[bytes.len() - 512..].to_vec();
    {
        use vhdkit_platform::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&d)
            .expect("open");
        f.write_all_at(&footer, 12 * MIB).expect("write");
    }
    let r = vhdkit(["check", p(&d)]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    assert_eq!(read_all(&d), before, "reads as before");
    resize(&d, &["--size", "12M"]);
    check_clean(&d);
    assert_everyone_reads(&d, &resized(before.clone(), 12 * MIB));
    // A shrink cut short after its first step: the footer says the new size, the cut
    // data is padding. A run at that size finishes it.
    let bytes = std::fs::read(&d).expect("read");
    let mut f6 = vhdkit_format::spec::Footer::decode(&bytes[bytes.len() - 512..]).expect("footer");
    f6.current_size = 6 * MIB;
    f6.original_size = 6 * MIB;
    f6.geometry = vhdkit_format::spec::Geometry::from_total_sectors(6 * MIB / 512);
    {
        use vhdkit_platform::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&d)
            .expect("open");
        f.write_all_at(&f6.encode(), 12 * MIB).expect("write");
    }
    let r = vhdkit(["check", p(&d)]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    resize(&d, &["--size", "6M"]);
    assert_eq!(file_len(&d), 6 * MIB + 512);
    check_clean(&d);
    assert_everyone_reads(&d, &before[..6 * MIB as usize]);
}

#[test]
fn resize_text_report_names_the_sizes() {
    let dir = tempdir();
    let d = dir.path().join("d.vhd");
    create(&d, &["--type", "dynamic", "--size", "8M"]);
    let r = vhdkit([
        OsStr::new("resize"),
        d.as_os_str(),
        OsStr::new("--size"),
        OsStr::new("1G"),
    ])
    .ok();
    let out = r.stdout_str();
    assert!(out.starts_with("resize: "), "{out}");
    assert!(
        out.contains("8 MiB (8388608 bytes) -> 1 GiB (1073741824 bytes)"),
        "{out}"
    );
    assert!(out.contains("BAT relocated"), "{out}");
}

#[test]
fn a_disk_qemu_sizes_by_its_geometry_gets_a_note_when_the_geometry_falls_short() {
    let dir = tempdir();
    let d = dir.path().join("q.vhd");
    std::fs::copy(fixture("qemu/qemu-dynamic-5m-chs.vhd"), &d).expect("copy");
    let before = read_all(&d);
    let r = try_resize(&d, &["--size", "20G"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert!(r.stderr.contains("CHS geometry"), "{}", r.stderr);
    // The geometry of 20 GiB describes 21474754560 bytes; qemu shows that.
    if have(Tool::QemuImg) {
        assert_eq!(qemu_size(&d), 21_474_754_560);
    }
    assert_eq!(vhdkit_size(&d), 20 * GIB);
    assert_eq!(read_range(&d, 0, before.len() as u64), before);
    // A whole geometry: no note, and qemu agrees.
    let g = vhdkit_format::spec::Geometry::from_total_sectors(30 * GIB / 512).capacity();
    let r = try_resize(&d, &["--size", &g.to_string()]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stderr);
    assert!(!r.stderr.contains("CHS"), "{}", r.stderr);
    if have(Tool::QemuImg) {
        assert_eq!(qemu_size(&d), g);
    }
}
