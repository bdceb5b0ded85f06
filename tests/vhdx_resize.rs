//! `vhdkit resize` of VHDX files beyond what fits in place: a fixed file grown (its new
//! blocks allocated, every block fully present) and shrunk (the data past the new end
//! cut, the file shortened), and dynamic, fixed and differencing files grown past their
//! BAT region (the table moved to the end of the file, the region tables switched
//! through the log). Judged by vhdkit, qemu-img (`-f vhdx`, `check`), libvhdi-python and
//! dissect.hypervisor. A disk grown past a 1 MiB BAT region is over 128 GiB: the
//! readers that cannot skip what a disk does not store read sampled ranges (the start,
//! the middle, the last MiB and every range written with a MiB around it; qemu-img's
//! VHDX driver reports every extent as data, so its map cannot show more), and
//! vhdkit compares the whole disk with a sparse image of the expected bytes (a big
//! fixed disk, all data, in the samples too).

// qemu-img and the venv readers: Linux CI only.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

fn qemu(args: &[&str]) -> Run {
    have(Tool::QemuImg);
    run_cmd(Command::new("qemu-img").args(args))
}

/// A sparse model of a disk: its size and the ranges written (later ones win).
#[derive(Clone)]
struct Model {
    size: u64,
    writes: Vec<(u64, Vec<u8>)>,
}

impl Model {
    fn new(size: u64) -> Model {
        Model {
            size,
            writes: Vec::new(),
        }
    }

    fn write(&mut self, disk: &Path, at: u64, data: Vec<u8>) {
        write_at(disk, at, &data, &[]);
        self.writes.push((at, data));
    }

    /// Cuts (or extends with zeros) to `size`.
    fn resize(&mut self, size: u64) {
        self.size = size;
        for (at, d) in &mut self.writes {
            d.truncate(size.saturating_sub(*at) as usize);
        }
    }

    fn read(&self, at: u64, len: u64) -> Vec<u8> {
        let mut b = vec![0u8; len as usize];
        for (w, d) in &self.writes {
            let (s, e) = ((*w).max(at), (w + d.len() as u64).min(at + len));
            if s < e {
                b[(s - at) as usize..(e - at) as usize]
                    .copy_from_slice(&d[(s - w) as usize..(e - w) as usize]);
            }
        }
        b
    }

    /// The ranges a big disk is judged by: the start, the written ranges (with 1 MiB
    /// around them), the middle, the last MiB.
    fn samples(&self) -> Vec<(u64, u64)> {
        let s = self.size;
        let mut r = vec![(0, MIB.min(s)), (s / 2 / MIB * MIB, MIB), (s - MIB, MIB)];
        for (w, d) in self.writes.iter().filter(|(w, d)| !d.is_empty() && *w < s) {
            let a = w.saturating_sub(MIB) / 512 * 512;
            let e = (w + d.len() as u64 + MIB).min(s).div_ceil(512) * 512;
            r.push((a, e.min(s) - a));
        }
        r
    }

    fn sampled(&self) -> Vec<u8> {
        self.samples()
            .into_iter()
            .flat_map(|(a, n)| self.read(a, n))
            .collect()
    }
}

/// qemu-img's virtual size of a VHDX.
fn qemu_size(disk: &Path) -> u64 {
    let r = qemu(&["info", "--output=json", "-f", "vhdx", p(disk)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json()["virtual-size"].as_u64().expect("virtual-size")
}

/// `len` bytes at `at` as qemu-img reads the VHDX (a raw window over it).
fn qemu_range(disk: &Path, at: u64, len: u64) -> Vec<u8> {
    let dir = tempdir();
    let out = dir.path().join("range.raw");
    let spec = format!(
        "driver=raw,offset={at},size={len},file.driver=vhdx,file.file.filename={}",
        disk.display()
    );
    let r = qemu(&["convert", "--image-opts", &spec, "-O", "raw", p(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    fs::read(&out).unwrap()
}

/// Every reader reads `chain[0]` (its parents `chain[1..]`) as `m` says: vhdkit whole
/// (its `compare` with a sparse raw image of the model), qemu-img (alone: a base)
/// checked clean and read in the sampled ranges; libvhdi-python and dissect.hypervisor in the sampled ranges.
fn assert_readers(chain: &[&Path], m: &Model) {
    let disk = chain[0];
    let dir = tempdir();
    let raw = dir.path().join("want.raw");
    let f = fs::File::create(&raw).unwrap();
    f.set_len(m.size).unwrap();
    for (at, d) in &m.writes {
        use std::os::unix::fs::FileExt;
        f.write_all_at(d, *at).unwrap();
    }
    let want = m.sampled();
    if info(disk)["disk_type"] == "fixed" && m.size > GIB {
        // Every block of a big fixed disk is data: vhdkit reads the samples too.
        let got: Vec<u8> = m
            .samples()
            .into_iter()
            .flat_map(|(a, n)| read_range(disk, a, n))
            .collect();
        assert_samples(m, &got, &want, "vhdkit");
    } else {
        let r = vhdkit(["compare", p(disk), p(&raw)]);
        assert_eq!(
            r.code,
            EXIT_OK,
            "vhdkit compare: {}{}",
            r.stdout_str(),
            r.stderr
        );
    }
    assert_eq!(vhdkit_size(disk), m.size);
    if chain.len() == 1 {
        let r = qemu(&["check", "-f", "vhdx", p(disk)]);
        assert_eq!(r.code, 0, "qemu-img check: {}{}", r.stdout_str(), r.stderr);
        assert_eq!(qemu_size(disk), m.size);
        let got: Vec<u8> = m
            .samples()
            .into_iter()
            .flat_map(|(a, n)| qemu_range(disk, a, n))
            .collect();
        assert_samples(m, &got, &want, "qemu-img");
    }
    let (size, got) = libvhdi_python_read_ranges(chain, &m.samples());
    assert_eq!(size, m.size, "libvhdi-python's size");
    assert_samples(m, &got, &want, "libvhdi-python");
    let (size, got) = dissect_read_ranges(disk, &m.samples());
    assert_eq!(size, m.size, "dissect.hypervisor's size");
    assert_samples(m, &got, &want, "dissect.hypervisor");
}

/// `vhdkit resize … --json`: its `resize` facts.
fn resize(disk: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["resize", p(disk), "--json", "--progress", "none"];
    a.extend_from_slice(args);
    vhdkit(&a).ok().json()
}

/// Panics naming the first sampled range where `got` differs from `want`.
fn assert_samples(m: &Model, got: &[u8], want: &[u8], who: &str) {
    assert_eq!(got.len(), want.len(), "{who}: the bytes read");
    let mut pos = 0;
    for (a, n) in m.samples() {
        let n = n as usize;
        if let Some(i) = (0..n).find(|&i| got[pos + i] != want[pos + i]) {
            panic!(
                "{who} reads other bytes at {} (range {a}+{n}): {:#x}, not {:#x}",
                a + i as u64,
                got[pos + i],
                want[pos + i]
            );
        }
        pos += n;
    }
}

fn qemu_create(path: &Path, opts: &str, size: &str) {
    let r = qemu(&["create", "-q", "-f", "vhdx", "-o", opts, p(path), size]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_fixed_vhdx_grows_with_its_new_blocks_allocated_and_shrinks_cutting_its_end() {
    let dir = tempdir();
    // vhdkit's fixed file and qemu-img's (its last block partial, every entry "zero").
    let ours = dir.path().join("ours.vhdx");
    create(
        &ours,
        &["--type", "fixed", "--size", "20M", "--block-size", "8M"],
    );
    let theirs = dir.path().join("theirs.vhdx");
    qemu_create(&theirs, "subformat=fixed,block_size=8M", "20M");
    for disk in [&ours, &theirs] {
        let mut m = Model::new(20 * MIB);
        m.write(disk, 3 * MIB + 512, pattern(1, 700_000));
        m.write(disk, 19 * MIB, pattern(2, MIB as usize));
        let before = fs::read(disk).unwrap();
        // Not without --allow-shrink.
        let r = vhdkit(["resize", p(disk), "--size", "10M"]);
        assert_ne!(r.code, EXIT_OK, "{}", r.stderr);
        assert_eq!(fs::read(disk).unwrap(), before);
        // Grown: every block allocated, the file still fixed.
        let facts = resize(disk, &["--size", "45M"]);
        assert_eq!(facts["size_after"], 45 * MIB);
        m.resize(45 * MIB);
        assert_readers(&[disk], &m);
        let i = info(disk);
        assert_eq!(i["disk_type"], "fixed", "{i}");
        assert!(
            qemu_range(disk, 0, 45 * MIB) == m.read(0, 45 * MIB),
            "qemu-img reads the whole disk"
        );
        let len = fs::metadata(disk).unwrap().len();
        // The new space takes writes in place (no block is added).
        m.write(disk, 44 * MIB, pattern(3, MIB as usize));
        assert_eq!(fs::metadata(disk).unwrap().len(), len, "{}", disk.display());
        assert_readers(&[disk], &m);
        // Shrunk: the data past the end cut, the file shortened.
        let facts = resize(disk, &["--size", "30M", "--allow-shrink"]);
        assert!(facts["nonzero_bytes_cut"].as_u64().unwrap() > 0, "{facts}");
        m.resize(30 * MIB);
        assert_readers(&[disk], &m);
        assert!(fs::metadata(disk).unwrap().len() < len);
        assert_eq!(info(disk)["disk_type"], "fixed");
        // Grown again: what the block held past the old end reads as zeros.
        resize(disk, &["--size", "40M"]);
        m.resize(40 * MIB);
        assert_readers(&[disk], &m);
        assert!(qemu_range(disk, 0, 40 * MIB) == m.read(0, 40 * MIB));
        vhdkit(["check", p(disk)]).ok();
    }
    // Every block of vhdkit's file is allocated (5 blocks of 8 MiB for 40 MiB).
    assert_eq!(info(&ours)["allocated_blocks"], 5);
}

#[test]
fn a_dynamic_vhdx_grows_past_its_bat_region_by_moving_the_table() {
    let dir = tempdir();
    let disk = dir.path().join("disk.vhdx");
    qemu_create(&disk, "subformat=dynamic,block_size=1M", "24M");
    let mut m = Model::new(24 * MIB);
    m.write(&disk, 20 * MIB + 4096, pattern(5, 3 * MIB as usize - 4096));
    m.write(&disk, 512, pattern(6, 1000));
    // 130 GiB in 1 MiB blocks: 133151 entries, more than a 1 MiB region holds.
    let facts = resize(&disk, &["--size", "130G"]);
    assert_eq!(facts["bat"], "relocated", "{facts}");
    m.resize(130 * GIB);
    assert_readers(&[&disk], &m);
    assert_eq!(info(&disk)["vhdx"]["log"], "clean");
    // Blocks go after the moved table, and every reader finds them.
    m.write(&disk, 129 * GIB + 7 * MIB, pattern(7, 2 * MIB as usize));
    assert_readers(&[&disk], &m);
    vhdkit(["check", p(&disk)]).ok();
    // A fixed file too (its new space left sparse).
    let fixed = dir.path().join("fixed.vhdx");
    create(
        &fixed,
        &["--type", "fixed", "--size", "24M", "--block-size", "1M"],
    );
    let mut m = Model::new(24 * MIB);
    m.write(&fixed, 23 * MIB, pattern(8, MIB as usize));
    let facts = resize(&fixed, &["--size", "130G", "--sparse"]);
    assert_eq!(facts["bat"], "relocated", "{facts}");
    m.resize(130 * GIB);
    assert_readers(&[&fixed], &m);
    let i = info(&fixed);
    assert_eq!(i["disk_type"], "fixed", "{i}");
    assert_eq!(i["allocated_blocks"], 130 * 1024, "{i}");
}

#[test]
fn a_checkpoint_chain_grows_past_the_bat_region_with_its_sector_bitmaps_kept() {
    let dir = tempdir();
    let base = dir.path().join("base.vhdx");
    create(
        &base,
        &["--type", "dynamic", "--size", "24M", "--block-size", "1M"],
    );
    let mut m = Model::new(24 * MIB);
    m.write(&base, 2 * MIB, pattern(9, 3 * MIB as usize));
    let child = dir.path().join("base_1.avhdx");
    create(&child, &["--type", "differencing", "--parent", p(&base)]);
    // Partly present blocks (their chunk's sector bitmap in use) and a full one.
    m.write(&child, 2 * MIB + 1024, pattern(10, 5000));
    m.write(&child, 9 * MIB, pattern(11, MIB as usize));
    m.write(&child, 23 * MIB + 512, pattern(12, 512));
    // The base first (its child names it: --force; its data write GUID changes with its
    // size), then the child to the same size (over the changed parent), then the child
    // linked to the grown base again.
    let facts = resize(&base, &["--size", "130G", "--force"]);
    assert_eq!(facts["bat"], "relocated", "{facts}");
    let facts = resize(&child, &["--size", "130G", "--ignore-parent-id"]);
    assert_eq!(facts["bat"], "relocated", "{facts}");
    vhdkit(["set-parent", p(&child), p(&base), "--ignore-parent-id"]).ok();
    m.resize(130 * GIB);
    assert_readers(&[&child, &base], &m);
    // The grown chain takes writes past the old end, partial ones included.
    m.write(&child, 100 * GIB + 3 * 512, pattern(13, 4096));
    assert_readers(&[&child, &base], &m);
    vhdkit(["check", p(&child)]).ok();
}
