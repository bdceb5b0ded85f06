//! The four disk operations end to end, judged by other readers where the format allows:
//! convert (every source kind to every target kind), compact (dynamic and differencing),
//! merge and merge-to of a three-level chain, and the HRESULTs of the refusals.
//!
//! qemu-img reads fixed and dynamic VHDs; libvhdi (pyvhdi under /usr/bin/python3) reads
//! differencing chains. A missing reader skips its check with a note, except in CI
//! (`CI` set), where it fails the test.

use std::path::{Path, PathBuf};

use vhdkit_format::check::check;
use vhdkit_format::ops::{self, OpsOptions, Report, Target};
use vhdkit_format::{CreateOptions, Disk, DiskKind, HostDrives, OpenOptions, VhdFile};
use vhdkit_task::{HResult, VMTaskResult};

use support::*;

mod support {
    //! Helpers of this file: deterministic content, disks built from a byte model, the
    //! external readers.

    #![allow(dead_code)]

    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;

    use vhdkit_format::{CreateOptions, Disk, DiskKind, VhdFile};

    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * KIB;
    pub const PYTHON: &str = "/usr/bin/python3";

    /// xorshift64*: deterministic pseudo-random numbers.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        pub fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// A number in `lo..hi`.
        pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.next_u64() % (hi - lo)
        }

        /// `n` random bytes, none of them forced to be non-zero.
        pub fn bytes(&mut self, n: usize) -> Vec<u8> {
            let mut out = Vec::with_capacity(n + 8);
            while out.len() < n {
                out.extend_from_slice(&self.next_u64().to_le_bytes());
            }
            out.truncate(n);
            out
        }
    }

    /// The writes that build a disk's content, and the bytes they leave.
    pub struct Model {
        pub bytes: Vec<u8>,
        pub writes: Vec<(u64, Vec<u8>)>,
    }

    impl Model {
        pub fn new(size: u64) -> Model {
            Model {
                bytes: vec![0; size as usize],
                writes: Vec::new(),
            }
        }

        pub fn write(&mut self, offset: u64, data: Vec<u8>) {
            self.bytes[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
            self.writes.push((offset, data));
        }

        /// A mix per `unit`-sized block: full random blocks, holes, partly written
        /// blocks (at offsets that are not sector-aligned), blocks written with zeros only,
        /// zeros and data in one block, and writes that straddle two blocks.
        pub fn mixed(size: u64, unit: u64, seed: u64) -> Model {
            let mut m = Model::new(size);
            m.add_mixed(unit, seed);
            m
        }

        /// Adds the mix of [`Model::mixed`] on top of what the model holds (a child over
        /// a parent: zero writes then hide the parent's data).
        pub fn add_mixed(&mut self, unit: u64, seed: u64) {
            let size = self.bytes.len() as u64;
            let mut rng = Rng::new(seed);
            let blocks = size.div_ceil(unit);
            for b in 0..blocks {
                let start = b * unit;
                let len = unit.min(size - start);
                match (b + seed) % 7 {
                    0 => {
                        let d = rng.bytes(len as usize);
                        self.write(start, d);
                    }
                    1 | 4 => {} // hole
                    2 => {
                        let off = rng.range(0, len / 2);
                        let n = rng.range(1, len / 2);
                        let d = rng.bytes(n as usize);
                        self.write(start + off, d);
                    }
                    3 => self.write(start, vec![0; len as usize]),
                    5 => {
                        let half = len / 2;
                        self.write(start, vec![0; half as usize]);
                        let n = rng.range(1, len - half);
                        let d = rng.bytes(n as usize);
                        self.write(start + half + rng.range(0, len - half - n + 1), d);
                    }
                    _ => {
                        // Straddles the boundary with the next block.
                        let n = rng.range(SECTOR, unit);
                        let at = (start + len).saturating_sub(n / 2);
                        let n = n.min(size - at);
                        let d = rng.bytes(n as usize);
                        self.write(at, d);
                    }
                }
            }
        }

        /// Applies every write to the disk at `path` (one open, one flush).
        pub fn apply(&self, path: &Path) {
            let disk = Disk::open_rw(path).expect("open for writing");
            for (off, data) in &self.writes {
                disk.write_at(data, *off).expect("write");
            }
            disk.flush().expect("flush");
        }
    }

    pub const SECTOR: u64 = 512;

    pub fn create(path: &Path, kind: DiskKind, size: u64, block_size: u32) {
        Disk::create(path, &CreateOptions::new(kind, size).block_size(block_size))
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    }

    pub fn create_child(path: &Path, parent: &Path, block_size: u32) {
        Disk::create(
            path,
            &CreateOptions::differencing(parent).block_size(block_size),
        )
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    }

    /// Every virtual byte of the disk at `path` as vhdkit reads it (chain resolved).
    pub fn view(path: &Path) -> Vec<u8> {
        let disk = Disk::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let mut buf = vec![0u8; disk.virtual_size() as usize];
        disk.read_at(&mut buf, 0).expect("read the whole disk");
        buf
    }

    /// Allocated blocks of a dynamic or differencing file.
    pub fn allocated(path: &Path) -> u64 {
        VhdFile::open(path, &Default::default())
            .expect("open")
            .allocated_blocks()
    }

    pub fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len()
    }

    /// Panics with the first differing offset.
    pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        if got == want {
            return; // memcmp: fast even in a debug build
        }
        if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
            panic!(
                "{what}: first difference at byte {i} (sector {}): got {:#04x}, want {:#04x}",
                i / 512,
                got[i],
                want[i]
            );
        }
    }

    /// Names in `dir`, sorted.
    pub fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Temporary files an operation could have left in `dir`.
    pub fn temp_files(dir: &Path) -> Vec<String> {
        names(dir)
            .into_iter()
            .filter(|n| n.ends_with(".vhdkit-tmp"))
            .collect()
    }

    fn probe(c: &mut Command) -> bool {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Whether a reader is there; a missing one fails the test (`.ci/run` installs them).
    fn have(name: &str, cell: &OnceLock<bool>, c: fn() -> Command) -> bool {
        let present = *cell.get_or_init(|| probe(&mut c()));
        assert!(
            present,
            "{name} is required by this test but is missing (.ci/run installs it)"
        );
        present
    }

    pub fn have_qemu() -> bool {
        static CELL: OnceLock<bool> = OnceLock::new();
        have("qemu-img", &CELL, || {
            let mut c = Command::new("qemu-img");
            c.arg("--version");
            c
        })
    }

    pub fn have_pyvhdi() -> bool {
        static CELL: OnceLock<bool> = OnceLock::new();
        have("pyvhdi under /usr/bin/python3", &CELL, || {
            let mut c = Command::new(PYTHON);
            c.args(["-c", "import pyvhdi"]);
            c
        })
    }

    fn run(c: &mut Command) -> (i32, String) {
        let o = c
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {c:?}: {e}"));
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// The whole fixed or dynamic disk as qemu-img reads it; `None` when qemu-img is
    /// missing (outside CI).
    pub fn qemu_read(path: &Path) -> Option<Vec<u8>> {
        if !have_qemu() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("qemu.raw");
        let (code, err) = run(Command::new("qemu-img")
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(path)
            .arg(&out));
        assert_eq!(code, 0, "qemu-img convert {}: {err}", path.display());
        Some(std::fs::read(&out).expect("qemu's output"))
    }

    /// `qemu-img compare -f vpc -F raw IMG RAW`: exit code (0 identical).
    pub fn qemu_compare_raw(img: &Path, raw: &Path) -> Option<i32> {
        if !have_qemu() {
            return None;
        }
        let (code, err) = run(Command::new("qemu-img")
            .args(["compare", "-f", "vpc", "-F", "raw"])
            .arg(img)
            .arg(raw));
        assert!(code == 0 || code == 1, "qemu-img compare failed: {err}");
        Some(code)
    }

    /// Reads in 64 KiB requests, which never cross a block boundary of the chains
    /// built here: libvhdi 20210425 answers a request that runs from a parent-backed
    /// tail of one differencing block into the next block from the parent for the
    /// whole rest of the request (a reader quirk, seen with vhdkit and not vhdkit's
    /// layout: the same bytes read block by block are right).
    const PYVHDI_READ: &str = r#"
import sys, pyvhdi
out = sys.argv[1]
files = []
for p in sys.argv[2:]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for i in reversed(range(len(files) - 1)):
    files[i].set_parent(files[i + 1])
f = files[0]
size = f.get_media_size()
with open(out, "wb") as o:
    pos = 0
    while pos < size:
        n = min(64 << 10, size - pos)
        b = f.read_buffer_at_offset(n, pos)
        if len(b) != n:
            sys.exit("short read at %d" % pos)
        o.write(b)
        pos += n
"#;

    /// The whole disk `chain[0]` as libvhdi reads it with `chain[1..]` as its parents;
    /// `None` when pyvhdi is missing (outside CI).
    pub fn pyvhdi_read(chain: &[&Path]) -> Option<Vec<u8>> {
        if !have_pyvhdi() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("pyvhdi.raw");
        let (code, err) = run(Command::new(PYTHON)
            .args(["-c", PYVHDI_READ])
            .arg(&out)
            .args(chain));
        assert_eq!(code, 0, "pyvhdi read of {chain:?}: {err}");
        Some(std::fs::read(&out).expect("pyvhdi's output"))
    }

    /// A base dynamic disk, a differencing child over it and a grandchild, each with its
    /// own mix of writes; returns (top, mid, base) and the model of the top's view.
    pub fn three_level_chain(
        dir: &Path,
        size: u64,
        seed: u64,
    ) -> (PathBuf, PathBuf, PathBuf, Model) {
        let base = dir.join("base.vhd");
        let mid = dir.join("mid.vhd");
        let top = dir.join("top.vhd");
        create(&base, DiskKind::Dynamic, size, (512 * KIB) as u32);
        let mut m = Model::mixed(size, 512 * KIB, seed);
        m.apply(&base);
        create_child(&mid, &base, (256 * KIB) as u32);
        let writes_before = m.writes.len();
        m.add_mixed(256 * KIB, seed + 1);
        Model {
            bytes: Vec::new(),
            writes: m.writes[writes_before..].to_vec(),
        }
        .apply(&mid);
        create_child(&top, &mid, (512 * KIB) as u32);
        let writes_before = m.writes.len();
        m.add_mixed(512 * KIB, seed + 2);
        Model {
            bytes: Vec::new(),
            writes: m.writes[writes_before..].to_vec(),
        }
        .apply(&top);
        (top, mid, base, m)
    }
}

/// A disk size that is not a multiple of any block size used: the last block is short.
const SIZE: u64 = 8 * MIB + 300 * KIB;

fn opts() -> OpsOptions {
    OpsOptions {
        verify: true,
        // The host-drive sources' "device" is a regular file.
        open: OpenOptions::new().host_drives(HostDrives::BlockDevicesAndFiles),
        ..OpsOptions::default()
    }
}

fn hr(e: vhdkit_format::Error) -> HResult {
    e.hresult()
}

/// Runs a task to the end and returns its report, asserting the IVMTask2 members of a
/// successful task.
fn finish(task: ops::OpTask) -> Report {
    assert!(task.wait_for_completion(Some(std::time::Duration::from_secs(120))));
    assert_eq!(
        task.result(),
        Some(VMTaskResult::Success),
        "{}",
        task.error_description()
    );
    assert_eq!(task.error(), HResult::S_OK);
    assert_eq!(task.percent_completed(), 100);
    task.join().expect("the operation succeeded")
}

// ---------------------------------------------------------------------------------------
// Convert: every source kind to every target kind
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Source {
    Fixed,
    Dynamic,
    Chain,
    HostDrive,
    Raw,
}

/// Builds a source of `kind` in `dir`: (path to convert, model of its view, files that
/// must stay untouched).
fn make_source(dir: &Path, kind: Source, seed: u64) -> (PathBuf, Vec<u8>, Vec<PathBuf>) {
    let unit = 512 * KIB;
    match kind {
        Source::Fixed | Source::Dynamic => {
            let p = dir.join("src.vhd");
            let k = if matches!(kind, Source::Fixed) {
                DiskKind::Fixed
            } else {
                DiskKind::Dynamic
            };
            create(&p, k, SIZE, unit as u32);
            let m = Model::mixed(SIZE, unit, seed);
            m.apply(&p);
            // The judge of the source itself.
            if let Some(q) = qemu_read(&p) {
                assert_same("qemu-img read of the source", &q, &m.bytes);
            }
            (p.clone(), m.bytes, vec![p])
        }
        Source::Chain => {
            let (top, mid, base, m) = three_level_chain(dir, SIZE, seed);
            if let Some(v) = pyvhdi_read(&[&top, &mid, &base]) {
                assert_same("libvhdi read of the source chain", &v, &m.bytes);
            }
            (top.clone(), m.bytes, vec![top, mid, base])
        }
        Source::HostDrive | Source::Raw => {
            let dev = dir.join(if matches!(kind, Source::Raw) {
                "src.img"
            } else {
                "drive.img"
            });
            let m = Model::mixed(SIZE, unit, seed);
            {
                use std::os::unix::fs::FileExt;
                let f = std::fs::File::create(&dev).expect("create the device file");
                f.set_len(SIZE).expect("size the device file");
                for (off, data) in &m.writes {
                    f.write_all_at(data, *off).expect("write the device file");
                }
            }
            if matches!(kind, Source::Raw) {
                return (dev.clone(), m.bytes, vec![dev]);
            }
            let stub = dir.join("drive.vhd");
            Disk::create(&stub, &CreateOptions::host_drive(&dev, false))
                .expect("create the host-drive stub");
            assert_eq!(
                Disk::open_with(&stub, &opts().open)
                    .expect("open the stub")
                    .kind(),
                DiskKind::HostDrive
            );
            (stub.clone(), m.bytes, vec![stub, dev])
        }
    }
}

fn convert_pair(kind: Source, target: Target, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, want, inputs) = make_source(dir.path(), kind, seed);
    let before: Vec<Vec<u8>> = inputs
        .iter()
        .map(|p| std::fs::read(p).expect("read input"))
        .collect();
    let dst = dir.path().join(format!("dst.{}", target.name()));
    // A dynamic target with a block size other than the source's.
    let o = OpsOptions {
        block_size: MIB as u32,
        ..opts()
    };

    let report = finish(ops::convert_task(&src, &dst, target, &o).expect("convert starts"));

    // The report.
    let unit = if target == Target::Dynamic {
        MIB
    } else {
        2 * MIB
    };
    assert_eq!(report.operation, ops::Operation::Convert);
    assert_eq!(report.path, dst);
    assert_eq!(report.blocks_total, SIZE.div_ceil(unit));
    assert_eq!(
        report.blocks_copied + report.blocks_zero,
        report.blocks_total
    );
    let nonzero = want
        .chunks(unit as usize)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64;
    assert_eq!(report.blocks_copied, nonzero, "blocks with data");
    assert!(report.verified);
    assert_eq!(report.file_size_after, file_len(&dst));
    // Every byte, judged by another reader where one reads the result.
    match target {
        Target::Raw => {
            assert_eq!(file_len(&dst), SIZE);
            assert_same("raw result", &std::fs::read(&dst).expect("read"), &want);
        }
        Target::Fixed | Target::Dynamic => {
            if let Some(q) = qemu_read(&dst) {
                assert_same("qemu-img read of the result", &q, &want);
            }
            if let Some(v) = pyvhdi_read(&[&dst]) {
                assert_same("libvhdi read of the result", &v, &want);
            }
            assert_same("vhdkit read of the result", &view(&dst), &want);
            let kind = Disk::open(&dst).expect("open").kind();
            if target == Target::Fixed {
                assert_eq!(kind, DiskKind::Fixed);
                assert_eq!(file_len(&dst), SIZE + 512);
            } else {
                assert_eq!(kind, DiskKind::Dynamic);
                // Zero blocks are holes: only blocks with data are allocated.
                assert_eq!(allocated(&dst), nonzero);
            }
            let r = check(&dst, &OpenOptions::new()).expect("check");
            assert!(r.is_clean(), "{r:?}");
        }
    }
    // The source is untouched, and nothing else is left behind.
    for (p, b) in inputs.iter().zip(&before) {
        assert!(
            std::fs::read(p).expect("read input") == *b,
            "{} changed",
            p.display()
        );
    }
    assert!(temp_files(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[test]
fn convert_fixed_to_fixed_preserves_every_byte() {
    convert_pair(Source::Fixed, Target::Fixed, 11);
}

#[test]
fn convert_fixed_to_dynamic_preserves_every_byte() {
    convert_pair(Source::Fixed, Target::Dynamic, 12);
}

#[test]
fn convert_fixed_to_raw_preserves_every_byte() {
    convert_pair(Source::Fixed, Target::Raw, 13);
}

#[test]
fn convert_dynamic_to_fixed_preserves_every_byte() {
    convert_pair(Source::Dynamic, Target::Fixed, 21);
}

#[test]
fn convert_dynamic_to_dynamic_preserves_every_byte() {
    convert_pair(Source::Dynamic, Target::Dynamic, 22);
}

#[test]
fn convert_dynamic_to_raw_preserves_every_byte() {
    convert_pair(Source::Dynamic, Target::Raw, 23);
}

#[test]
fn convert_chain_to_fixed_flattens_every_byte() {
    convert_pair(Source::Chain, Target::Fixed, 31);
}

#[test]
fn convert_chain_to_dynamic_flattens_every_byte() {
    convert_pair(Source::Chain, Target::Dynamic, 32);
}

#[test]
fn convert_chain_to_raw_flattens_every_byte() {
    convert_pair(Source::Chain, Target::Raw, 33);
}

#[test]
fn convert_host_drive_to_fixed_preserves_every_byte() {
    convert_pair(Source::HostDrive, Target::Fixed, 41);
}

#[test]
fn convert_host_drive_to_dynamic_preserves_every_byte() {
    convert_pair(Source::HostDrive, Target::Dynamic, 42);
}

#[test]
fn convert_host_drive_to_raw_preserves_every_byte() {
    convert_pair(Source::HostDrive, Target::Raw, 43);
}

#[test]
fn convert_raw_to_fixed_preserves_every_byte() {
    convert_pair(Source::Raw, Target::Fixed, 51);
}

#[test]
fn convert_raw_to_dynamic_preserves_every_byte() {
    convert_pair(Source::Raw, Target::Dynamic, 52);
}

#[test]
fn convert_raw_to_raw_preserves_every_byte() {
    convert_pair(Source::Raw, Target::Raw, 53);
}

// ---------------------------------------------------------------------------------------
// Compact
// ---------------------------------------------------------------------------------------

/// Where vhdkit puts the blocks of a dynamic disk with `entries` BAT entries and no
/// locators: footer copy (512) · header (1024) · BAT (whole sectors) · blocks whose data
/// starts on a 4 KiB boundary, bitmap just before. Returns the file size with `live`
/// blocks packed at the front, worked out by hand from the format, not from vhdkit.
fn packed_dynamic_size(entries: u64, block_size: u64, live: u64) -> u64 {
    let bitmap = (block_size / 512).div_ceil(8).div_ceil(512) * 512;
    let metadata_end = 512 + 1024 + (entries * 4).div_ceil(512) * 512;
    if live == 0 {
        return metadata_end + 512;
    }
    let align = |free: u64| (free + bitmap).div_ceil(4096) * 4096 - bitmap;
    let mut at = align(metadata_end);
    for _ in 1..live {
        at = align(at + bitmap + block_size);
    }
    at + bitmap + block_size + 512
}

#[test]
fn compact_dynamic_with_zeroed_blocks_shrinks_to_live_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    let bs = 512 * KIB;
    let size = 16 * MIB;
    create(&p, DiskKind::Dynamic, size, bs as u32);
    // Every block written, in index order; then every third block and block 30 zeroed
    // whole, block 4 zeroed but for one sector (it must stay).
    let mut m = Model::new(size);
    let mut rng = Rng::new(7);
    for b in 0..size / bs {
        m.write(b * bs, rng.bytes(bs as usize));
    }
    for b in (0..size / bs).filter(|b| b % 3 == 1 || *b == 30) {
        m.write(b * bs, vec![0; bs as usize]);
    }
    m.write(4 * bs, vec![0; (bs - 512) as usize]);
    m.apply(&p);
    let released = (0..size / bs).filter(|b| b % 3 == 1 || *b == 30).count() as u64;
    let live = size / bs - released;
    let pre_raw = dir.path().join("pre.raw");
    std::fs::write(&pre_raw, view(&p)).expect("save the content");
    assert_eq!(
        qemu_compare_raw(&p, &pre_raw).unwrap_or(0),
        0,
        "qemu reads the model"
    );
    let size_before = file_len(&p);
    assert_eq!(size_before, packed_dynamic_size(32, bs, 32));

    let report = finish(ops::compact_task(&p, &opts()).expect("compact starts"));

    let expected = packed_dynamic_size(32, bs, live);
    assert_eq!(file_len(&p), expected, "metadata + live blocks + footer");
    assert_eq!(report.operation, ops::Operation::Compact);
    assert_eq!(report.blocks_total, 32);
    assert_eq!(report.blocks_released, released);
    assert!(report.blocks_moved > 0);
    assert_eq!(report.file_size_before, size_before);
    assert_eq!(report.file_size_after, expected);
    assert!(report.verified);
    assert_eq!(allocated(&p), live);
    assert_eq!(
        qemu_compare_raw(&p, &pre_raw).unwrap_or(0),
        0,
        "qemu-img compare"
    );
    assert_same("vhdkit read after compact", &view(&p), &m.bytes);
    let r = check(&p, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{r:?}");
    // A fresh convert of the same content is exactly as large.
    let fresh = dir.path().join("fresh.vhd");
    let o = OpsOptions {
        block_size: bs as u32,
        ..OpsOptions::default()
    };
    finish(ops::convert_task(&pre_raw, &fresh, Target::Dynamic, &o).expect("convert starts"));
    assert_eq!(file_len(&fresh), file_len(&p));
}

#[test]
fn compact_dynamic_twice_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    create(&p, DiskKind::Dynamic, 8 * MIB, (512 * KIB) as u32);
    Model::mixed(8 * MIB, 512 * KIB, 3).apply(&p);
    finish(ops::compact_task(&p, &OpsOptions::default()).expect("compact starts"));
    let bytes = std::fs::read(&p).expect("read");

    let report = finish(ops::compact_task(&p, &OpsOptions::default()).expect("compact starts"));

    assert_eq!(report.blocks_released, 0);
    assert_eq!(report.blocks_moved, 0);
    assert!(
        std::fs::read(&p).expect("read") == bytes,
        "the file changed"
    );
}

#[test]
fn compact_dynamic_of_only_zero_blocks_leaves_only_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    create(&p, DiskKind::Dynamic, 8 * MIB, (512 * KIB) as u32);
    let disk = Disk::open_rw(&p).expect("open");
    disk.write_at(&vec![0; (3 * MIB) as usize], 1000)
        .expect("write zeros");
    disk.flush().expect("flush");
    drop(disk);
    assert!(allocated(&p) > 0);

    finish(ops::compact_task(&p, &OpsOptions::default()).expect("compact starts"));

    assert_eq!(allocated(&p), 0);
    assert_eq!(file_len(&p), packed_dynamic_size(16, 512 * KIB, 0));
    assert!(view(&p).iter().all(|&b| b == 0));
    if let Some(q) = qemu_read(&p) {
        assert!(q.iter().all(|&b| b == 0));
    }
}

/// Clears the sector bitmap of allocated `block` of the differencing disk at `path` by
/// writing into the file: the block stays allocated but holds nothing of its own.
fn clear_bitmap(path: &Path, block: u64) {
    use std::os::unix::fs::FileExt;
    let f = VhdFile::open(path, &OpenOptions::new()).expect("open");
    let at = f
        .bat()
        .expect("a BAT")
        .block_offset(block)
        .expect("allocated");
    let n = f.bitmap_size().expect("a bitmap") as usize;
    drop(f);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    file.write_all_at(&vec![0; n], at).expect("clear bitmap");
    file.sync_all().expect("sync");
}

#[test]
fn compact_differencing_releases_only_blocks_with_empty_bitmaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    let bs = 512 * KIB;
    let size = 16 * MIB;
    create(&base, DiskKind::Dynamic, size, bs as u32);
    let mut rng = Rng::new(5);
    let mut m = Model::new(size);
    m.write(0, rng.bytes(size as usize));
    m.apply(&base);
    create_child(&child, &base, bs as u32);
    // Child: data in blocks 0, 3, 6, …; zeros (bits set: they hide the parent) in 1 and
    // 7; data in 2, 8, 11 whose bitmaps are then cleared (they read from the parent).
    let mut cm = Model::new(size);
    for b in (0..32).filter(|b| b % 3 == 0) {
        cm.write(b * bs + 4096, rng.bytes((bs - 8192) as usize));
    }
    for b in [1, 7] {
        cm.write(b * bs, vec![0; bs as usize]);
    }
    for b in [2, 8, 11] {
        cm.write(b * bs, rng.bytes(bs as usize));
    }
    cm.apply(&child);
    for b in [2, 8, 11] {
        clear_bitmap(&child, b);
    }
    let want = view(&child);
    for b in [1u64, 7] {
        assert!(want[(b * bs) as usize..((b + 1) * bs) as usize]
            .iter()
            .all(|&x| x == 0));
    }
    if let Some(v) = pyvhdi_read(&[&child, &base]) {
        assert_same("libvhdi read of the chain before", &v, &want);
    }
    let allocated_before = allocated(&child);
    let size_before = file_len(&child);
    let base_bytes = std::fs::read(&base).expect("read base");

    let report = finish(ops::compact_task(&child, &opts()).expect("compact starts"));

    assert_eq!(report.blocks_released, 3);
    assert_eq!(allocated(&child), allocated_before - 3);
    let f = VhdFile::open(&child, &OpenOptions::new()).expect("open");
    let bat = f.bat().expect("a BAT");
    for b in [1u64, 7] {
        assert!(
            bat.block_offset(b).is_some(),
            "zero block {b} with bits set was released"
        );
    }
    for b in [2u64, 8, 11] {
        assert!(bat.block_offset(b).is_none(), "empty block {b} was kept");
    }
    drop(f);
    let pitch = 512 * KIB + 4096;
    assert_eq!(file_len(&child), size_before - 3 * pitch);
    if let Some(v) = pyvhdi_read(&[&child, &base]) {
        assert_same("libvhdi read of the chain after", &v, &want);
    }
    assert_same("vhdkit read after compact", &view(&child), &want);
    assert!(
        std::fs::read(&base).expect("read base") == base_bytes,
        "base changed"
    );
    let r = check(&child, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Merge and merge-to
// ---------------------------------------------------------------------------------------

#[test]
fn merge_three_level_chain_parent_reads_the_child_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (top, mid, base, m) = three_level_chain(dir.path(), SIZE, 61);
    let want = m.bytes;
    assert_same("vhdkit view of the chain", &view(&top), &want);
    if let Some(v) = pyvhdi_read(&[&top, &mid, &base]) {
        assert_same("libvhdi read of the chain before", &v, &want);
    }
    let base_bytes = std::fs::read(&base).expect("read base");

    let report = finish(ops::merge_task(&top, &OpsOptions::default()).expect("merge starts"));

    assert_eq!(report.operation, ops::Operation::Merge);
    assert_eq!(report.path, mid);
    assert_eq!(report.blocks_total, report.blocks_copied);
    assert!(report.bytes_written > 0);
    assert!(top.exists(), "the child is kept");
    if let Some(v) = pyvhdi_read(&[&mid, &base]) {
        assert_same("libvhdi read of the parent after", &v, &want);
    }
    if let Some(v) = pyvhdi_read(&[&top, &mid, &base]) {
        assert_same("libvhdi read of the child after", &v, &want);
    }
    assert_same("vhdkit read of the parent", &view(&mid), &want);
    assert_same("vhdkit read of the child", &view(&top), &want);
    assert!(
        std::fs::read(&base).expect("read") == base_bytes,
        "the grandparent changed"
    );
    for p in [&top, &mid] {
        let r = check(p, &OpenOptions::new()).expect("check");
        assert!(r.is_clean(), "{}: {r:?}", p.display());
    }
}

fn merge_into_base(kind: DiskKind, delete_child: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    create(&base, kind, SIZE, (512 * KIB) as u32);
    let mut m = Model::mixed(SIZE, 512 * KIB, 71);
    m.apply(&base);
    create_child(&child, &base, (2 * MIB) as u32);
    let n = m.writes.len();
    m.add_mixed(256 * KIB, 72);
    Model {
        bytes: Vec::new(),
        writes: m.writes[n..].to_vec(),
    }
    .apply(&child);
    assert_same("vhdkit view of the chain", &view(&child), &m.bytes);
    let o = OpsOptions {
        delete_child,
        ..OpsOptions::default()
    };

    finish(ops::merge_task(&child, &o).expect("merge starts"));

    if let Some(q) = qemu_read(&base) {
        assert_same("qemu-img read of the parent", &q, &m.bytes);
    }
    assert_same("vhdkit read of the parent", &view(&base), &m.bytes);
    assert_eq!(child.exists(), !delete_child);
    if !delete_child {
        assert_same("vhdkit read of the child", &view(&child), &m.bytes);
    }
    let r = check(&base, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{r:?}");
}

#[test]
fn merge_into_dynamic_parent_qemu_reads_the_child_view() {
    merge_into_base(DiskKind::Dynamic, false);
}

#[test]
fn merge_into_fixed_parent_qemu_reads_the_child_view() {
    merge_into_base(DiskKind::Fixed, false);
}

#[test]
fn merge_with_delete_child_deletes_the_child() {
    merge_into_base(DiskKind::Dynamic, true);
}

fn merge_to(target: Target) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (top, mid, base, m) = three_level_chain(dir.path(), SIZE, 81);
    let chain: Vec<Vec<u8>> = [&top, &mid, &base]
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let dst = dir.path().join("flat.vhd");

    let report = finish(ops::merge_to_task(&top, &dst, target, &opts()).expect("merge-to starts"));

    assert_eq!(report.operation, ops::Operation::MergeTo);
    assert!(report.verified);
    if let Some(q) = qemu_read(&dst) {
        assert_same("qemu-img read of the result", &q, &m.bytes);
    }
    assert_same("vhdkit read of the result", &view(&dst), &m.bytes);
    let kind = Disk::open(&dst).expect("open").kind();
    assert_eq!(
        kind,
        if target == Target::Fixed {
            DiskKind::Fixed
        } else {
            DiskKind::Dynamic
        }
    );
    for (p, b) in [&top, &mid, &base].iter().zip(&chain) {
        assert!(
            std::fs::read(p).expect("read") == *b,
            "{} changed",
            p.display()
        );
    }
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn merge_to_fixed_of_three_level_chain_equals_the_view() {
    merge_to(Target::Fixed);
}

#[test]
fn merge_to_dynamic_of_three_level_chain_equals_the_view() {
    merge_to(Target::Dynamic);
}

// ---------------------------------------------------------------------------------------
// Refusals and their HRESULTs
// ---------------------------------------------------------------------------------------

fn small_chain(dir: &Path) -> (PathBuf, PathBuf) {
    let base = dir.join("base.vhd");
    let child = dir.join("child.vhd");
    create(&base, DiskKind::Dynamic, 4 * MIB, (512 * KIB) as u32);
    Model::mixed(4 * MIB, 512 * KIB, 1).apply(&base);
    create_child(&child, &base, (512 * KIB) as u32);
    Model::mixed(4 * MIB, 512 * KIB, 2).apply(&child);
    (child, base)
}

#[test]
fn compact_of_fixed_disk_is_wrong_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("f.vhd");
    create(&p, DiskKind::Fixed, 4 * MIB, 0);
    let bytes = std::fs::read(&p).expect("read");

    let e = ops::compact_task(&p, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_WRONG_HD_IMAGE_TYPE);
    assert!(std::fs::read(&p).expect("read") == bytes);
}

#[test]
fn merge_of_dynamic_disk_is_wrong_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    create(&p, DiskKind::Dynamic, 4 * MIB, (512 * KIB) as u32);

    let e = ops::merge_task(&p, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_WRONG_HD_IMAGE_TYPE);
}

#[test]
fn merge_to_of_dynamic_disk_is_wrong_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    create(&p, DiskKind::Dynamic, 4 * MIB, (512 * KIB) as u32);
    let dst = dir.path().join("out.vhd");

    let e =
        ops::merge_to_task(&p, &dst, Target::Fixed, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_WRONG_HD_IMAGE_TYPE);
    assert!(!dst.exists());
}

#[test]
fn convert_to_existing_target_already_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, _) = small_chain(dir.path());
    let dst = dir.path().join("taken.vhd");
    std::fs::write(&dst, b"not to be replaced").expect("write");

    let e = ops::convert_task(&child, &dst, Target::Dynamic, &OpsOptions::default())
        .expect_err("refused");

    assert_eq!(hr(e), HResult::E_ALREADY_EXISTS);
    assert_eq!(std::fs::read(&dst).expect("read"), b"not to be replaced");
}

#[test]
fn merge_to_existing_target_already_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, _) = small_chain(dir.path());
    let dst = dir.path().join("taken.vhd");
    std::fs::write(&dst, b"not to be replaced").expect("write");

    let e = ops::merge_to_task(&child, &dst, Target::Fixed, &OpsOptions::default())
        .expect_err("refused");

    assert_eq!(hr(e), HResult::E_ALREADY_EXISTS);
    assert_eq!(std::fs::read(&dst).expect("read"), b"not to be replaced");
}

/// Moves the parent away; returns the child.
fn orphan(dir: &Path) -> PathBuf {
    let (child, base) = small_chain(dir);
    std::fs::create_dir(dir.join("elsewhere")).expect("mkdir");
    std::fs::rename(&base, dir.join("elsewhere/base.vhd")).expect("move the parent away");
    child
}

#[test]
fn convert_with_missing_parent_is_parent_path_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = orphan(dir.path());
    let dst = dir.path().join("out.vhd");

    let e = ops::convert_task(&child, &dst, Target::Dynamic, &OpsOptions::default())
        .expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_PARENT_PATH_NOT_FOUND);
    assert!(!dst.exists());
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn merge_with_missing_parent_is_parent_path_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = orphan(dir.path());
    let bytes = std::fs::read(&child).expect("read");

    let e = ops::merge_task(&child, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_PARENT_PATH_NOT_FOUND);
    assert!(std::fs::read(&child).expect("read") == bytes);
}

#[test]
fn merge_to_with_missing_parent_is_parent_path_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = orphan(dir.path());
    let dst = dir.path().join("out.vhd");

    let e = ops::merge_to_task(&child, &dst, Target::Dynamic, &OpsOptions::default())
        .expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_PARENT_PATH_NOT_FOUND);
    assert!(!dst.exists());
}

/// Merge checks the parent's permission bits itself, so the refusal holds even for
/// root, whom the file system would let write.
#[test]
fn merge_into_read_only_parent_is_file_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, base) = small_chain(dir.path());
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let (base_bytes, child_bytes) = (
        std::fs::read(&base).expect("read"),
        std::fs::read(&child).expect("read"),
    );

    let e = ops::merge_task(&child, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_FILE_READ_ONLY);
    assert!(
        std::fs::read(&base).expect("read") == base_bytes,
        "the parent changed"
    );
    assert!(
        std::fs::read(&child).expect("read") == child_bytes,
        "the child changed"
    );
}

#[test]
fn merge_to_raw_target_is_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, _) = small_chain(dir.path());
    let dst = dir.path().join("out.img");

    let e =
        ops::merge_to_task(&child, &dst, Target::Raw, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::E_INVALIDARG);
    assert!(!dst.exists());
}
