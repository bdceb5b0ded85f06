//! Copy offload: on file systems that share extents between files (XFS with reflink,
//! btrfs), a conversion clones the data of its sources instead of copying it. Each test
//! makes the file system on a loop device, builds a base disk, a differencing child and
//! a fixed copy inside it, converts them, and proves that every output reads exactly as
//! the disk it came from (vhdkit and qemu-img), that the report counts the cloned bytes,
//! that the outputs took less than 10% of their data in new space, and that writing into
//! an output leaves its source as it was. Needs root (loop mounts), mkfs.xfs (xfsprogs)
//! and mkfs.btrfs (btrfs-progs): a missing one fails the test. The fallback of hole
//! punching is tested on a ramfs (no `fallocate`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use vhdkit_testkit::disks::ImageFs;

const MIB: u64 = 1 << 20;
/// Virtual size of the test disks.
const SIZE: u64 = 64 * MIB;

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (install it: .ci/run does)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The disks of a test, inside the mounted file system: `base.vhd` (dynamic), `child.vhd`
/// over it, `fixed.vhd` (a fixed copy of the base) and what each reads as.
struct Disks {
    base: PathBuf,
    child: PathBuf,
    fixed: PathBuf,
    base_raw: Vec<u8>,
    chain_raw: Vec<u8>,
    /// Non-zero bytes of the chain.
    chain_data: u64,
}

fn disks(fs: &ImageFs) -> Disks {
    let base = fs.path("base.vhd");
    let child = fs.path("child.vhd");
    let fixed = fs.path("fixed.vhd");
    create(&base, &["--type", "dynamic", "--size", "64M"]);
    let mut rng = Rng::new(0x00ff_10ad);
    let mut model = Model::new(SIZE);
    // Whole blocks, a partly written block, and a lone page; holes between them.
    for (offset, len) in [(0, 24 * MIB), (30 * MIB, 6 * MIB), (40 * MIB + 8192, 4096)] {
        write_both(&base, &mut model, offset, &rng.bytes(len as usize));
    }
    let base_raw = model.0.clone();
    create(&child, &["--type", "differencing", "--parent", p(&base)]);
    // A whole block over the parent's data, a page inside another (a block the result
    // composes from both layers), and data over a hole.
    for (offset, len) in [(4 * MIB, 2 * MIB), (MIB + 4096, 4096), (50 * MIB, 4 * MIB)] {
        write_both(&child, &mut model, offset, &rng.bytes(len as usize));
    }
    let chain_raw = model.0.clone();
    let chain_data = chain_raw
        .chunks(4096)
        .filter(|page| !all_zero(page))
        .count() as u64
        * 4096;
    vhdkit(["convert", p(&base), p(&fixed), "--type", "fixed"]).ok();
    Disks {
        base,
        child,
        fixed,
        base_raw,
        chain_raw,
        chain_data,
    }
}

/// Converts `src` to `dst` (`--type kind`, extra args), returning the JSON report and the
/// bytes of new space the output took.
fn convert(
    fs: &ImageFs,
    src: &Path,
    dst: &Path,
    kind: &str,
    extra: &[&str],
) -> (serde_json::Value, u64) {
    let before = fs.used();
    let mut args = vec!["convert", p(src), p(dst), "--type", kind, "--json"];
    args.extend_from_slice(extra);
    let report = vhdkit(args).ok().json();
    let grew = fs.used().saturating_sub(before);
    (report, grew)
}

/// The output reads as `want` in vhdkit and in qemu-img.
fn assert_reads(what: &str, out: &Path, format: &str, want: &[u8]) {
    let got = if format == "raw" {
        std::fs::read(out).expect("reading the raw output")
    } else {
        read_all(out)
    };
    assert_bytes_eq(&format!("{what}: vhdkit's reading"), &got, want);
    let expect = out.with_extension("expect");
    std::fs::write(&expect, want).expect("writing the expected image");
    let q = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", format])
        .arg(&expect)
        .arg(out)
        .status()
        .expect("running qemu-img");
    std::fs::remove_file(&expect).expect("rm");
    assert!(q.success(), "{what}: qemu-img reads something else");
}

fn offload_on(kind: &str) {
    let fs = ImageFs::new(kind);
    let d = disks(&fs);
    let base_data = d.base_raw.chunks(4096).filter(|p| !all_zero(p)).count() as u64 * 4096;
    // What, source, output, type, what it reads as, its non-zero bytes.
    type Case<'a> = (&'a str, &'a Path, &'a str, &'a str, &'a [u8], u64);
    let cases: [Case; 5] = [
        (
            "fixed → raw",
            &d.fixed,
            "out-f.raw",
            "raw",
            &d.base_raw,
            base_data,
        ),
        (
            "dynamic → raw",
            &d.base,
            "out-d.raw",
            "raw",
            &d.base_raw,
            base_data,
        ),
        (
            "chain → fixed",
            &d.child,
            "out-c.vhd",
            "fixed",
            &d.chain_raw,
            d.chain_data,
        ),
        (
            "chain → dynamic",
            &d.child,
            "out-cd.vhd",
            "dynamic",
            &d.chain_raw,
            d.chain_data,
        ),
        (
            "fixed → fixed",
            &d.fixed,
            "out-ff.vhd",
            "fixed",
            &d.base_raw,
            base_data,
        ),
    ];
    for (what, src, name, kind, want, data) in cases {
        let out = fs.path(name);
        let (report, grew) = convert(&fs, src, &out, kind, &["--verify"]);
        let format = if kind == "raw" { "raw" } else { "vpc" };
        assert_reads(what, &out, format, want);
        let cloned = report["bytes_cloned"].as_u64().expect("bytes_cloned");
        // The data lies 4 KiB-aligned in every source here, so all of it is cloned: a
        // block composed from both levels of the chain too, run by run.
        assert!(
            cloned >= data,
            "{what}: only {cloned} of {data} bytes cloned: {report}"
        );
        assert!(
            grew * 10 < data,
            "{what}: the output took {grew} bytes of new space for {data} bytes of data"
        );
        if kind != "raw" {
            vhdkit(["check", p(&out)]).ok();
        }
    }

    // The outputs share extents with their sources, never the sources themselves:
    // writing into an output leaves the source as it was.
    let out = fs.path("out-f.raw");
    std::fs::write(&out, vec![0x5a; 4 * MIB as usize]).expect("overwriting the output");
    assert_reads(
        "the source after writing its clone",
        &d.fixed,
        "vpc",
        &d.base_raw,
    );
    write_at(&fs.path("out-c.vhd"), 0, &[0xa5; 65536], &[]);
    assert_bytes_eq(
        "the chain after writing its clone",
        &read_all(&d.child),
        &d.chain_raw,
    );
}

#[test]
fn conversions_on_xfs_clone_their_sources_data() {
    offload_on("xfs");
}

#[test]
fn conversions_on_btrfs_clone_their_sources_data() {
    offload_on("btrfs");
}

/// The bytes of `path` in the page cache (`fincore`).
fn resident(path: &Path) -> u64 {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("running fincore (util-linux)");
    assert!(out.status.success(), "fincore failed");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("fincore prints a byte count")
}

/// Drops `path`'s pages from the page cache (they are clean: the file was synced).
fn evict(path: &Path) {
    run(Command::new("sync").arg(path));
    run(Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=nocache", "count=0", "status=none"]));
    assert!(
        resident(path) < 64 * 1024,
        "{} stays in the page cache",
        path.display()
    );
}

/// Into a raw result (and, unverified, a fixed one), runs that can be cloned are not
/// read at all: a raw or fixed layout needs no zero test. From a cold cache, converting
/// reads the metadata (footer, header, BAT, sector bitmaps) and none of the data.
fn clones_without_reading(kind: &str) {
    let fs = ImageFs::new(kind);
    let d = disks(&fs);
    let base_data = d.base_raw.chunks(4096).filter(|p| !all_zero(p)).count() as u64 * 4096;
    type Case<'a> = (&'a str, &'a Path, &'a str, &'a str, &'a [u8], u64);
    let cases: [Case; 4] = [
        (
            "fixed → raw",
            &d.fixed,
            "f.raw",
            "raw",
            &d.base_raw,
            base_data,
        ),
        (
            "dynamic → raw",
            &d.base,
            "d.raw",
            "raw",
            &d.base_raw,
            base_data,
        ),
        (
            "chain → raw",
            &d.child,
            "c.raw",
            "raw",
            &d.chain_raw,
            d.chain_data,
        ),
        (
            "chain → fixed",
            &d.child,
            "c.vhd",
            "fixed",
            &d.chain_raw,
            d.chain_data,
        ),
    ];
    for (what, src, name, kind, want, data) in cases {
        let out = fs.path(name);
        for f in [&d.base, &d.child, &d.fixed] {
            evict(f);
        }
        let (report, grew) = convert(&fs, src, &out, kind, &[]);
        let read: u64 = [&d.base, &d.child, &d.fixed]
            .iter()
            .map(|f| resident(f))
            .sum();
        assert!(
            read < MIB,
            "{what}: {read} bytes of the sources were read for {data} bytes of data"
        );
        let format = if kind == "raw" { "raw" } else { "vpc" };
        assert_reads(what, &out, format, want);
        let cloned = report["bytes_cloned"].as_u64().expect("bytes_cloned");
        assert!(
            cloned >= data,
            "{what}: {cloned} of {data} bytes cloned: {report}"
        );
        assert!(grew * 10 < data, "{what}: the output took {grew} bytes");
    }
}

#[test]
fn raw_results_on_xfs_clone_without_reading_the_data() {
    clones_without_reading("xfs");
}

#[test]
fn raw_results_on_btrfs_clone_without_reading_the_data() {
    clones_without_reading("btrfs");
}

/// Across file systems nothing can be cloned: the data is copied, the output is the same,
/// and a fixed output is allocated in full (as everywhere without cloning).
#[test]
fn across_file_systems_the_data_is_copied() {
    let xfs = ImageFs::new("xfs");
    let btrfs = ImageFs::new("btrfs");
    let d = disks(&xfs);
    let out = btrfs.path("out.vhd");
    let (report, grew) = convert(&btrfs, &d.child, &out, "fixed", &[]);
    assert_eq!(report["bytes_cloned"], 0, "{report}");
    assert_reads(
        "chain → fixed across file systems",
        &out,
        "vpc",
        &d.chain_raw,
    );
    assert!(
        grew >= SIZE,
        "a fixed disk made by copying is allocated: grew {grew}"
    );
    let out = btrfs.path("out.raw");
    let (report, _) = convert(&btrfs, &d.fixed, &out, "raw", &[]);
    assert_eq!(report["bytes_cloned"], 0, "{report}");
    assert_reads("fixed → raw across file systems", &out, "raw", &d.base_raw);
}

/// Where the file system has no holes (ramfs: `fallocate` refuses `FALLOC_FL_PUNCH_HOLE`),
/// punching one writes zeros instead: the range reads as zeros, nothing else changes.
#[test]
fn on_a_file_system_without_holes_a_punch_writes_zeros() {
    let fs = ImageFs::ramfs();
    let path = fs.path("d.raw");
    let data = Rng::new(7).bytes(4 * MIB as usize);
    std::fs::write(&path, &data).expect("write");
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let released = vhdkit_platform::punch_hole(&f, MIB + 512, 2 * MIB).expect("punch");
    assert!(!released, "FAT punched a hole");
    drop(f);
    let mut want = data;
    want[(MIB + 512) as usize..(3 * MIB + 512) as usize].fill(0);
    assert_bytes_eq(
        "the file after the punch",
        &std::fs::read(&path).expect("read"),
        &want,
    );
}

/// A conversion whose result is its source's bytes as they are — a fixed disk or a raw
/// image into raw — clones the whole file in one call (`FICLONE`) and cuts the footer
/// off: every byte of the disk is cloned (holes too), `--verify` still reads both and
/// compares, and the result takes no new space for its data.
fn whole_file_clone_on(kind: &str) {
    let fs = ImageFs::new(kind);
    let d = disks(&fs);
    for (name, extra) in [("whole.raw", &[][..]), ("whole-v.raw", &["--verify"][..])] {
        let out = fs.path(name);
        let (report, grew) = convert(&fs, &d.fixed, &out, "raw", extra);
        assert_eq!(
            report["bytes_cloned"], SIZE,
            "fixed → raw {extra:?}: {report}"
        );
        assert_eq!(report["verified"], !extra.is_empty(), "{report}");
        assert_eq!(std::fs::metadata(&out).expect("meta").len(), SIZE);
        assert_reads("fixed → raw, cloned whole", &out, "raw", &d.base_raw);
        assert!(grew < MIB, "fixed → raw: the output took {grew} bytes");
    }
    // A raw image (the result above, with its holes) into raw.
    let out = fs.path("again.raw");
    let (report, grew) = convert(&fs, &fs.path("whole.raw"), &out, "raw", &["--verify"]);
    assert_eq!(report["bytes_cloned"], SIZE, "raw → raw: {report}");
    assert_reads("raw → raw, cloned whole", &out, "raw", &d.base_raw);
    assert!(grew < MIB, "raw → raw: the output took {grew} bytes");
    // Writing into the clone leaves its source as it was.
    std::fs::write(&out, vec![0x5a; MIB as usize]).expect("overwrite");
    assert_reads(
        "the source after writing its clone",
        &d.fixed,
        "vpc",
        &d.base_raw,
    );
}

#[test]
fn fixed_to_raw_on_xfs_clones_the_whole_file() {
    whole_file_clone_on("xfs");
}

#[test]
fn fixed_to_raw_on_btrfs_clones_the_whole_file() {
    whole_file_clone_on("btrfs");
}
