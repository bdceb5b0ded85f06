//! Helpers shared by the integration tests: running the `vhdkit` binary, the external
//! readers (qemu-img, vhdiinfo, libvhdi's Python binding pyvhdi), fixtures, byte models.
//!
//! External readers: when one is missing the test that needs it is skipped with a note on
//! stderr — except in CI (`CI` set to anything but `""`, `0` or `false`), where a missing
//! reader fails the test.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// Exit codes of the CLI contract.
pub const EXIT_OK: i32 = 0;
pub const EXIT_DIFFERENT: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_FAILED: i32 = 3;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;

/// The interpreter that has libvhdi's binding (the `python3` on PATH may not).
pub const PYTHON: &str = "/usr/bin/python3";

// ---------------------------------------------------------------------------------------
// Running vhdkit
// ---------------------------------------------------------------------------------------

/// What a finished command produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn from_output(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts exit code 0 and returns self.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            EXIT_OK,
            "expected success; stderr: {}; stdout: {}",
            self.stderr,
            self.stdout_str()
        );
        assert_no_panic(&self);
        self
    }

    /// Stdout parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout_str(),
                self.stderr
            )
        })
    }
}

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vhdkit")
}

/// Runs `vhdkit ARGS` with empty stdin.
pub fn vhdkit<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let o = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running vhdkit");
    Run::from_output(o)
}

/// Runs `vhdkit ARGS` in directory `dir`.
pub fn vhdkit_in<I, S>(dir: &Path, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let o = Command::new(bin())
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running vhdkit");
    Run::from_output(o)
}

/// Runs `vhdkit ARGS` feeding `input` on stdin.
pub fn vhdkit_stdin<I, S>(args: I, input: &[u8]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    use std::io::Write;
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running vhdkit");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let data = input.to_vec();
    let feeder = std::thread::spawn(move || {
        // The child may exit early (e.g. refusing the write): ignore a broken pipe.
        let _ = stdin.write_all(&data);
    });
    let o = child.wait_with_output().expect("waiting for vhdkit");
    feeder.join().expect("stdin feeder");
    Run::from_output(o)
}

/// Asserts the run did not panic (a panic is never an acceptable way to fail).
pub fn assert_no_panic(r: &Run) {
    assert!(
        !r.stderr.contains("panicked") && r.code != 101,
        "vhdkit panicked (exit {}): {}",
        r.code,
        r.stderr
    );
}

/// Asserts the failure contract: exit 3 and exactly one stderr line starting `vhdkit:`.
/// Returns that line.
pub fn assert_failed_one_line(r: &Run) -> String {
    assert_no_panic(r);
    assert_eq!(
        r.code,
        EXIT_FAILED,
        "expected exit 3; stderr: {}; stdout: {}",
        r.stderr,
        r.stdout_str()
    );
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one stderr line, got: {:?}",
        r.stderr
    );
    assert!(
        lines[0].starts_with("vhdkit:"),
        "stderr line must start with `vhdkit:`: {:?}",
        lines[0]
    );
    lines[0].to_owned()
}

/// Asserts the failure contract of a command run with `--json`: exit `code` and stderr
/// exactly one line, a JSON object with the fields of docs/json.md ("Errors"). Returns
/// the object.
#[track_caller]
pub fn assert_failed_json(r: &Run, code: i32) -> Value {
    assert_no_panic(r);
    assert_eq!(
        r.code,
        code,
        "expected exit {code}; stderr: {}; stdout: {}",
        r.stderr,
        r.stdout_str()
    );
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line: {:?}", r.stderr);
    let v: Value = serde_json::from_str(lines[0])
        .unwrap_or_else(|e| panic!("the error is not JSON ({e}): {:?}", lines[0]));
    assert_eq!(v["schema"], 1, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["kind"].as_str().is_some_and(|k| !k.is_empty()), "{v}");
    let hex = v["hresult"].as_str().expect("hresult is a string");
    let value = v["hresult_value"]
        .as_u64()
        .expect("hresult_value is a number");
    assert_eq!(hex, format!("0x{value:08X}"), "{v}");
    assert_eq!(v["exit_code"], code, "{v}");
    v
}

/// `vhdkit create` with the given extra arguments; asserts success.
pub fn create(path: &Path, args: &[&str]) {
    let mut a: Vec<&OsStr> = vec![OsStr::new("create"), path.as_os_str()];
    a.extend(args.iter().map(OsStr::new));
    vhdkit(a).ok();
}

/// Writes `data` at `offset` with `vhdkit write --input FILE` (extra args appended).
pub fn write_at(disk: &Path, offset: u64, data: &[u8], extra: &[&str]) {
    let r = try_write_at(disk, offset, data, extra);
    assert_eq!(
        r.code,
        EXIT_OK,
        "vhdkit write {} at {offset} ({} bytes) failed: {}",
        disk.display(),
        data.len(),
        r.stderr
    );
}

/// Like [`write_at`], returning the run instead of asserting.
pub fn try_write_at(disk: &Path, offset: u64, data: &[u8], extra: &[&str]) -> Run {
    let input = tempfile::NamedTempFile::new().expect("temp input");
    std::fs::write(input.path(), data).expect("writing the input");
    let off = offset.to_string();
    let mut a: Vec<&OsStr> = vec![
        OsStr::new("write"),
        disk.as_os_str(),
        OsStr::new("--offset"),
        OsStr::new(&off),
        OsStr::new("--input"),
        input.path().as_os_str(),
    ];
    a.extend(extra.iter().map(OsStr::new));
    vhdkit(a)
}

/// The whole virtual disk through `vhdkit read` (to stdout).
pub fn read_all(disk: &Path) -> Vec<u8> {
    vhdkit(["read".as_ref(), disk.as_os_str()]).ok().stdout
}

/// `vhdkit read --offset --length` to stdout.
pub fn read_range(disk: &Path, offset: u64, len: u64) -> Vec<u8> {
    let (o, l) = (offset.to_string(), len.to_string());
    vhdkit([
        "read".as_ref(),
        disk.as_os_str(),
        "--offset".as_ref(),
        o.as_ref(),
        "--length".as_ref(),
        OsStr::new(&l),
    ])
    .ok()
    .stdout
}

/// `vhdkit info --json`.
pub fn info(disk: &Path) -> Value {
    vhdkit(["info".as_ref(), disk.as_os_str(), "--json".as_ref()])
        .ok()
        .json()
}

/// `vhdkit info --json` virtual_size.
pub fn vhdkit_size(disk: &Path) -> u64 {
    info(disk)["virtual_size"]
        .as_u64()
        .expect("virtual_size is a number")
}

// ---------------------------------------------------------------------------------------
// Files and fixtures
// ---------------------------------------------------------------------------------------

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("fixtures")
}

pub fn fixture(rel: &str) -> PathBuf {
    let p = fixtures().join(rel);
    assert!(
        p.exists(),
        "fixture {} is missing (run fixtures/make-fixtures.sh)",
        p.display()
    );
    p
}

/// `../shared/realworld` beside the workspace, if present (it is in CI).
pub fn realworld() -> Option<PathBuf> {
    let p = root().join("../shared/realworld");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "note: {} is absent; skipping the real-world image test",
            p.display()
        );
        None
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Whether every byte is zero (compared a block at a time: fast in a debug build).
pub fn all_zero(data: &[u8]) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    data.chunks(4096).all(|c| c == &ZEROS[..c.len()])
}

/// Asserts two byte strings are equal, naming the first differing offset.
#[track_caller]
pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} differs from the expected {}",
        got.len(),
        want.len()
    );
    if got == want {
        return;
    }
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let end = (i + 16).min(got.len());
        panic!(
            "{what}: first difference at byte {i}: got {:02x?}, expected {:02x?}",
            &got[i..end],
            &want[i..end]
        );
    }
}

// ---------------------------------------------------------------------------------------
// Content: the fixture pattern, a seeded generator, a byte model
// ---------------------------------------------------------------------------------------

/// The content pattern of fixtures/make-fixtures.sh: seed 0 is zeros, otherwise byte j is
/// `((j*7 + (j>>8)*3 + seed*13) % 251) + 1` (never zero).
pub fn pattern(seed: u64, n: usize) -> Vec<u8> {
    if seed == 0 {
        return vec![0; n];
    }
    (0..n as u64)
        .map(|j| ((j * 7 + (j >> 8) * 3 + seed * 13) % 251 + 1) as u8)
        .collect()
}

/// A small seeded generator (splitmix64), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// A flat model of a virtual disk.
#[derive(Clone)]
pub struct Model(pub Vec<u8>);

impl Model {
    pub fn new(size: u64) -> Model {
        Model(vec![0; size as usize])
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let o = offset as usize;
        self.0[o..o + data.len()].copy_from_slice(data);
    }
}

/// Writes `data` at `offset` both into the disk (vhdkit write) and into the model.
pub fn write_both(disk: &Path, model: &mut Model, offset: u64, data: &[u8]) {
    write_at(disk, offset, data, &[]);
    model.write(offset, data);
}

/// A list of writes a test makes: random unaligned ones, single sectors, sub-granule
/// pieces and zero runs, all inside `size`.
pub fn random_writes(rng: &mut Rng, size: u64, count: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (offset, data) = match i % 5 {
            // Unaligned, up to ~300 KiB, may cross block boundaries.
            0 | 1 => {
                let len = rng.range(1, 300_000).min(size);
                (rng.range(0, size - len + 1), rng.bytes(len as usize))
            }
            // One aligned sector.
            2 => {
                let sector = rng.range(0, size / 512);
                (sector * 512, rng.bytes(512))
            }
            // A few bytes inside a 4 KiB granule.
            3 => {
                let len = rng.range(1, 700);
                let at = rng.range(0, size - len);
                (at, rng.bytes(len as usize))
            }
            // Zeros.
            _ => {
                let len = rng.range(1, 20_000).min(size);
                (rng.range(0, size - len + 1), vec![0; len as usize])
            }
        };
        out.push((offset, data));
    }
    out
}

// ---------------------------------------------------------------------------------------
// External readers
// ---------------------------------------------------------------------------------------

/// The external readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    QemuImg,
    Vhdiinfo,
    Pyvhdi,
    Bzip2,
}

fn probe(tool: Tool) -> bool {
    let ok = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    match tool {
        Tool::QemuImg => ok(Command::new("qemu-img").arg("--version")),
        Tool::Vhdiinfo => ok(Command::new("vhdiinfo").arg("-V")),
        Tool::Pyvhdi => ok(Command::new(PYTHON).args(["-c", "import pyvhdi"])),
        Tool::Bzip2 => ok(Command::new("bzip2").arg("--help")),
    }
}

/// Whether `tool` can be used. A missing reader fails the test (`.ci/run` installs them
/// all); bzip2 is optional: Python's bz2 module replaces it.
pub fn have(tool: Tool) -> bool {
    static CACHE: OnceLock<[bool; 4]> = OnceLock::new();
    let all = CACHE.get_or_init(|| {
        [
            probe(Tool::QemuImg),
            probe(Tool::Vhdiinfo),
            probe(Tool::Pyvhdi),
            probe(Tool::Bzip2),
        ]
    });
    let present = all[tool as usize];
    if !present && tool != Tool::Bzip2 {
        let what = match tool {
            Tool::QemuImg => "qemu-img",
            Tool::Vhdiinfo => "vhdiinfo (libvhdi-utils)",
            Tool::Pyvhdi => "pyvhdi under /usr/bin/python3 (python3-libvhdi)",
            Tool::Bzip2 => unreachable!(),
        };
        panic!("{what} is required by this test but is missing (.ci/run installs it)");
    }
    present
}

/// Runs a command and returns its run.
pub fn run_cmd(c: &mut Command) -> Run {
    let o = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    Run::from_output(o)
}

/// qemu-img's virtual size: the TOP-level "virtual-size" of `info --output=json`.
pub fn qemu_size(disk: &Path) -> u64 {
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json"])
            .arg(disk),
    );
    assert_eq!(r.code, 0, "qemu-img info {}: {}", disk.display(), r.stderr);
    r.json()["virtual-size"]
        .as_u64()
        .expect("top-level virtual-size")
}

/// qemu-img's `info --output=json`, parsed.
pub fn qemu_info(disk: &Path) -> Value {
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json"])
            .arg(disk),
    );
    assert_eq!(r.code, 0, "qemu-img info {}: {}", disk.display(), r.stderr);
    r.json()
}

/// `qemu-img convert -f vpc -O raw DISK OUT`.
pub fn qemu_convert_raw(disk: &Path, out: &Path) {
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(disk)
            .arg(out),
    );
    assert_eq!(
        r.code,
        0,
        "qemu-img convert {}: {}",
        disk.display(),
        r.stderr
    );
}

/// The whole disk as qemu-img reads it.
pub fn qemu_read_all(disk: &Path) -> Vec<u8> {
    let dir = tempdir();
    let out = dir.path().join("qemu.raw");
    qemu_convert_raw(disk, &out);
    std::fs::read(&out).expect("reading qemu's raw output")
}

/// `len` bytes at `offset` as qemu-img reads them (a raw offset/size view over the vpc
/// driver, so a big sparse disk is not converted whole). Offset and length must be
/// multiples of 512.
pub fn qemu_read_range(disk: &Path, offset: u64, len: u64) -> Vec<u8> {
    let dir = tempdir();
    let out = dir.path().join("range.raw");
    let spec = format!(
        "driver=raw,offset={offset},size={len},file.driver=vpc,file.file.filename={}",
        disk.display()
    );
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["convert", "--image-opts", &spec, "-O", "raw"])
            .arg(&out),
    );
    assert_eq!(r.code, 0, "qemu-img convert {spec}: {}", r.stderr);
    std::fs::read(&out).expect("reading qemu's output")
}

/// `qemu-img compare -f vpc -F vpc A B`: its exit code.
pub fn qemu_compare(a: &Path, b: &Path) -> i32 {
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["compare", "-f", "vpc", "-F", "vpc"])
            .arg(a)
            .arg(b),
    );
    r.code
}

/// `vhdiinfo DISK`: the run (stdout is the report).
pub fn vhdiinfo(disk: &Path) -> Run {
    run_cmd(Command::new("vhdiinfo").arg(disk))
}

/// A field of the vhdiinfo report, e.g. `Parent identifier`.
pub fn vhdiinfo_field(disk: &Path, name: &str) -> Option<String> {
    let r = vhdiinfo(disk);
    assert_eq!(r.code, 0, "vhdiinfo {}: {}", disk.display(), r.stderr);
    r.stdout_str().lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_owned())
    })
}

/// vhdiinfo's "Media size", in bytes (the number in parentheses).
pub fn vhdiinfo_size(disk: &Path) -> u64 {
    let v = vhdiinfo_field(disk, "Media size")
        .unwrap_or_else(|| panic!("vhdiinfo {} has no Media size", disk.display()));
    let inner = v
        .rsplit_once('(')
        .and_then(|(_, r)| r.strip_suffix(" bytes)"))
        .unwrap_or_else(|| panic!("unexpected Media size {v:?}"));
    inner.trim().parse().expect("a byte count")
}

const PYVHDI_READ: &str = r#"
import sys, pyvhdi
off, length = int(sys.argv[1]), int(sys.argv[2])
files = []
for p in sys.argv[3:]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
# Attach parents from the bottom of the chain up.
for i in reversed(range(len(files) - 1)):
    files[i].set_parent(files[i + 1])
f = files[0]
if length < 0:
    length = f.get_media_size() - off
# 64 KiB reads never cross a block boundary (blocks are >= 64 KiB in these tests):
# libvhdi 20210425 returns zeros for the second block of a read that spans two blocks
# when the block size is not 2 MiB and the first block's bitmap is partial.
CHUNK = 64 << 10
out = sys.stdout.buffer
pos = 0
while pos < length:
    n = min(CHUNK, length - pos)
    b = f.read_buffer_at_offset(n, off + pos)
    if len(b) != n:
        sys.exit("short read at %d: %d of %d bytes" % (off + pos, len(b), n))
    out.write(b)
    pos += n
out.flush()
"#;

/// The command that writes `len` bytes at `offset` (len `None`: to the end) of
/// `chain[0]`, read with pyvhdi attaching `chain[1..]` as parents, to stdout.
pub fn pyvhdi_read_cmd(chain: &[&Path], offset: u64, len: Option<u64>) -> Command {
    let len = len.map(|l| l as i64).unwrap_or(-1);
    let mut c = Command::new(PYTHON);
    c.args(["-c", PYVHDI_READ])
        .arg(offset.to_string())
        .arg(len.to_string())
        .args(chain);
    c
}

/// The command `vhdkit read DISK [--offset O --length L]` (to stdout).
pub fn vhdkit_read_cmd(disk: &Path, range: Option<(u64, u64)>) -> Command {
    let mut c = Command::new(bin());
    c.arg("read").arg(disk);
    if let Some((o, l)) = range {
        c.args(["--offset", &o.to_string(), "--length", &l.to_string()]);
    }
    c
}

/// Runs both commands and compares their stdout streams chunk by chunk (nothing is
/// stored: the real-world images are hundreds of MiB). Both must exit 0.
#[track_caller]
pub fn assert_streams_eq(what: &str, mut a: Command, mut b: Command) {
    let spawn = |c: &mut Command| {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: spawning {c:?}: {e}"))
    };
    let mut ca = spawn(&mut a);
    let mut cb = spawn(&mut b);
    let mut oa = ca.stdout.take().expect("piped");
    let mut ob = cb.stdout.take().expect("piped");
    let mut ba = vec![0u8; 1 << 20];
    let mut bb = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let mut mismatch = None;
    loop {
        let n = read_stream(&mut oa, &mut ba);
        let m = read_stream(&mut ob, &mut bb);
        let k = n.min(m);
        // Slice equality is a memcmp even in a debug build; find the byte only on a miss.
        if ba[..k] != bb[..k] {
            let i = ba[..k]
                .iter()
                .zip(&bb[..k])
                .position(|(x, y)| x != y)
                .expect("a difference");
            mismatch = Some(format!("first difference at byte {}", pos + i as u64));
            break;
        }
        if n != m {
            mismatch = Some(format!(
                "lengths differ: one stream ended at {}",
                pos + k as u64
            ));
            break;
        }
        if n == 0 {
            break;
        }
        pos += n as u64;
    }
    drop(oa);
    drop(ob);
    let ra = ca.wait_with_output().expect("wait");
    let rb = cb.wait_with_output().expect("wait");
    if let Some(m) = mismatch {
        panic!("{what}: {m}");
    }
    for (cmd, r) in [(&a, ra), (&b, rb)] {
        assert!(
            r.status.success(),
            "{what}: {cmd:?} failed: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
}

fn read_stream(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading a pipe: {e}"),
        }
    }
    n
}

/// The whole disk (through its chain) as pyvhdi reads it.
pub fn pyvhdi_read_all(chain: &[&Path]) -> Vec<u8> {
    let r = run_cmd(&mut pyvhdi_read_cmd(chain, 0, None));
    assert_eq!(r.code, 0, "pyvhdi read of {chain:?} failed: {}", r.stderr);
    r.stdout
}

/// pyvhdi's `get_media_size()`.
pub fn pyvhdi_size(disk: &Path) -> u64 {
    let r = run_cmd(
        Command::new(PYTHON)
            .args([
                "-c",
                "import sys, pyvhdi\nf = pyvhdi.file()\nf.open(sys.argv[1])\nprint(f.get_media_size())",
            ])
            .arg(disk),
    );
    assert_eq!(r.code, 0, "pyvhdi {}: {}", disk.display(), r.stderr);
    r.stdout_str().trim().parse().expect("a size")
}
