//! Helpers of the `vhdkit serve` tests: running the server, the NBD tools (which must be
//! installed: a missing tool fails the test, through `vhdkit_testkit::need`), and a raw
//! NBD client over a Unix socket.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use vhdkit_platform::net::UnixStream;

use serde_json::Value;
use vhdkit_testkit::{restore_parent_time, Rng};

pub use vhdkit_testkit::need;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vhdkit")
}

/// A running `vhdkit serve --json`.
pub struct Served {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// The JSON start line.
    pub start: Value,
    /// The NBD URI.
    pub uri: String,
    /// `$XDG_RUNTIME_DIR` of the server: its default socket directory lands here, so a
    /// server killed before it could clean up leaves nothing in /tmp.
    _runtime: tempfile::TempDir,
}

/// How a server ended.
#[derive(Debug)]
pub struct Ended {
    pub code: i32,
    /// The JSON summary line (Null if none).
    pub summary: Value,
    pub stderr: String,
}

/// Starts `vhdkit serve ARGS --json` and waits for its start line.
pub fn serve<I, S>(args: I) -> Served
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let runtime = tempfile::tempdir().expect("a runtime directory");
    let mut child = Command::new(bin())
        .arg("serve")
        .args(args)
        .arg("--json")
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting vhdkit serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("reading the start line");
    if line.is_empty() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        panic!("vhdkit serve did not start: {err}");
    }
    let start: Value = serde_json::from_str(&line).expect("the start line is JSON");
    let uri = start["uri"].as_str().expect("uri").to_owned();
    Served {
        child,
        stdout,
        start,
        uri,
        _runtime: runtime,
    }
}

impl Served {
    /// The Unix socket path.
    pub fn socket(&self) -> PathBuf {
        PathBuf::from(self.start["socket"].as_str().expect("a Unix socket"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM") to the server.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} failed");
    }

    /// SIGTERM, then waits (at most 60 s) for the exit and the summary.
    pub fn stop(self) -> Ended {
        self.signal("TERM");
        self.wait()
    }

    /// Waits (at most 60 s) for the server to exit.
    pub fn wait(mut self) -> Ended {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("waiting for vhdkit serve") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("vhdkit serve did not exit within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        let summary = rest
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("the summary line is JSON"))
            .unwrap_or(Value::Null);
        assert!(
            !stderr.contains("panicked"),
            "vhdkit serve panicked: {stderr}"
        );
        Ended {
            code: status.code().unwrap_or(-1),
            summary,
            stderr,
        }
    }
}

impl Drop for Served {
    /// A test that fails half way leaves no server behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Ended {
    /// Asserts a clean stop (exit 0 with a summary) and returns self.
    pub fn clean(self) -> Ended {
        assert_eq!(self.code, 0, "vhdkit serve failed: {}", self.stderr);
        assert_eq!(self.summary["stopped"], true, "no summary: {:?}", self);
        self
    }
}

/// Runs a command, asserting success; returns stdout.
pub fn run(c: &mut Command) -> Vec<u8> {
    let o = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// `vhdkit ARGS`, asserting success; returns stdout.
pub fn vhdkit<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(bin()).args(args))
}

/// The whole disk as `vhdkit read` reads it.
pub fn read_all(disk: &Path) -> Vec<u8> {
    vhdkit(["read".as_ref(), disk.as_os_str()])
}

/// `vhdkit check` passes (exit 0).
pub fn check_clean(disk: &Path) {
    let o = Command::new(bin())
        .arg("check")
        .arg(disk)
        .output()
        .expect("running vhdkit check");
    assert!(
        o.status.success(),
        "vhdkit check {} found problems: {}{}",
        disk.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A copy of the fixture chain (base <- mid <- top, 4 MiB) in `dir`; returns top.vhd.
pub fn chain_copy(dir: &Path) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/chain");
    for f in ["base.vhd", "mid.vhd", "top.vhd"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copying the chain fixture");
    }
    // Each parent's time the one its child records, as the chain was made.
    for (child, parent) in [("top.vhd", "mid.vhd"), ("mid.vhd", "base.vhd")] {
        restore_parent_time(&dir.join(child), &dir.join(parent));
    }
    dir.join("top.vhd")
}

/// The bytes of every file of the chain, to prove they did not change.
pub fn chain_files(dir: &Path) -> Vec<Vec<u8>> {
    ["base.vhd", "mid.vhd", "top.vhd"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("reading a chain file"))
        .collect()
}

/// Deterministic bytes ([`Rng::new`]: splitmix64).
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    Rng::new(seed).bytes(n)
}

// ---------------------------------------------------------------------------------------
// A raw NBD client
// ---------------------------------------------------------------------------------------

pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const OPT_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_MAGIC: u32 = 0x668e_33ef;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const REP_ACK: u32 = 1;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_BLOCK_STATUS: u16 = 7;
pub const EPERM: u32 = 1;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

/// One option reply.
#[derive(Debug)]
pub struct OptReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A reply to a request: error value and, for reads, the data reassembled.
#[derive(Debug)]
pub struct Reply {
    pub cookie: u64,
    pub error: u32,
    pub data: Vec<u8>,
    /// Block status descriptors (length, flags).
    pub status: Vec<(u32, u32)>,
}

/// A minimal NBD client that speaks bytes, for hostile and precise tests.
pub struct Raw {
    pub s: UnixStream,
    pub structured: bool,
    pub size: u64,
    pub flags: u16,
}

impl Raw {
    /// Connects and reads the greeting; sends fixed newstyle + no zeroes.
    pub fn connect(socket: &Path) -> Raw {
        let mut s = UnixStream::connect(socket).expect("connecting to the server");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let mut g = [0u8; 18];
        s.read_exact(&mut g).expect("greeting");
        assert_eq!(u64::from_be_bytes(g[..8].try_into().expect("8")), NBDMAGIC);
        assert_eq!(
            u64::from_be_bytes(g[8..16].try_into().expect("8")),
            IHAVEOPT
        );
        s.write_all(&3u32.to_be_bytes()).expect("client flags");
        Raw {
            s,
            structured: false,
            size: 0,
            flags: 0,
        }
    }

    /// Connects and negotiates structured replies, `base:allocation` and GO.
    pub fn open(socket: &Path) -> Raw {
        let mut c = Raw::connect(socket);
        c.option(OPT_STRUCTURED_REPLY, &[]);
        assert_eq!(c.opt_replies().last().expect("reply").kind, REP_ACK);
        c.structured = true;
        let q = b"base:allocation";
        let mut d = Vec::new();
        d.extend_from_slice(&0u32.to_be_bytes());
        d.extend_from_slice(&1u32.to_be_bytes());
        d.extend_from_slice(&(q.len() as u32).to_be_bytes());
        d.extend_from_slice(q);
        c.option(OPT_SET_META_CONTEXT, &d);
        assert_eq!(c.opt_replies().last().expect("reply").kind, REP_ACK);
        c.go();
        c
    }

    pub fn option(&mut self, option: u32, data: &[u8]) {
        let mut b = Vec::new();
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.s.write_all(&b).expect("sending an option");
    }

    pub fn opt_reply(&mut self) -> std::io::Result<OptReply> {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h)?;
        assert_eq!(
            u64::from_be_bytes(h[..8].try_into().expect("8")),
            OPT_REPLY_MAGIC
        );
        let len = u32::from_be_bytes(h[16..20].try_into().expect("4"));
        let mut data = vec![0u8; len as usize];
        self.s.read_exact(&mut data)?;
        Ok(OptReply {
            option: u32::from_be_bytes(h[8..12].try_into().expect("4")),
            kind: u32::from_be_bytes(h[12..16].try_into().expect("4")),
            data,
        })
    }

    /// Replies until a final one (ACK or an error).
    pub fn opt_replies(&mut self) -> Vec<OptReply> {
        let mut v = Vec::new();
        loop {
            let r = self.opt_reply().expect("an option reply");
            let last = r.kind == REP_ACK || r.kind & 0x8000_0000 != 0;
            v.push(r);
            if last {
                return v;
            }
        }
    }

    /// NBD_OPT_GO for the default export; records size and flags.
    pub fn go(&mut self) {
        self.option(OPT_GO, &[0, 0, 0, 0, 0, 0]);
        for r in self.opt_replies() {
            if r.kind == 3 && r.data[..2] == [0, 0] {
                self.size = u64::from_be_bytes(r.data[2..10].try_into().expect("8"));
                self.flags = u16::from_be_bytes(r.data[10..12].try_into().expect("2"));
            }
            assert!(r.kind & 0x8000_0000 == 0, "GO failed: {r:?}");
        }
    }

    pub fn request(&mut self, flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) {
        self.try_request(flags, kind, cookie, offset, len)
            .expect("sending a request");
    }

    pub fn try_request(
        &mut self,
        flags: u16,
        kind: u16,
        cookie: u64,
        offset: u64,
        len: u32,
    ) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(28);
        b.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.s.write_all(&b)
    }

    /// Reads one complete reply (all chunks of a structured one). `read_len`: the length
    /// of the read it answers (simple replies carry no length).
    pub fn reply(&mut self, read_len: Option<(u64, u32)>) -> std::io::Result<Reply> {
        let mut out = Reply {
            cookie: 0,
            error: 0,
            data: Vec::new(),
            status: Vec::new(),
        };
        if let Some((_, len)) = read_len {
            out.data = vec![0xEE; len as usize];
        }
        loop {
            let mut m = [0u8; 4];
            self.s.read_exact(&mut m)?;
            let magic = u32::from_be_bytes(m);
            if magic == SIMPLE_MAGIC {
                let mut h = [0u8; 12];
                self.s.read_exact(&mut h)?;
                out.error = u32::from_be_bytes(h[..4].try_into().expect("4"));
                out.cookie = u64::from_be_bytes(h[4..].try_into().expect("8"));
                if out.error == 0 {
                    if let Some((_, len)) = read_len {
                        let mut d = vec![0u8; len as usize];
                        self.s.read_exact(&mut d)?;
                        out.data = d;
                    }
                }
                return Ok(out);
            }
            assert_eq!(magic, STRUCTURED_MAGIC, "bad reply magic");
            let mut h = [0u8; 16];
            self.s.read_exact(&mut h)?;
            let flags = u16::from_be_bytes(h[..2].try_into().expect("2"));
            let kind = u16::from_be_bytes(h[2..4].try_into().expect("2"));
            out.cookie = u64::from_be_bytes(h[4..12].try_into().expect("8"));
            let len = u32::from_be_bytes(h[12..16].try_into().expect("4"));
            let mut p = vec![0u8; len as usize];
            self.s.read_exact(&mut p)?;
            match kind {
                0 => {}
                1 | 2 => {
                    let (base, _) = read_len.expect("a content chunk answers a read");
                    let off = u64::from_be_bytes(p[..8].try_into().expect("8"));
                    let at = (off - base) as usize;
                    if kind == 1 {
                        out.data[at..at + p.len() - 8].copy_from_slice(&p[8..]);
                    } else {
                        let n = u32::from_be_bytes(p[8..12].try_into().expect("4")) as usize;
                        out.data[at..at + n].fill(0);
                    }
                }
                5 => {
                    for d in p[4..].chunks_exact(8) {
                        out.status.push((
                            u32::from_be_bytes(d[..4].try_into().expect("4")),
                            u32::from_be_bytes(d[4..].try_into().expect("4")),
                        ));
                    }
                }
                k if k & 0x8000 != 0 => {
                    out.error = u32::from_be_bytes(p[..4].try_into().expect("4"));
                }
                k => panic!("unexpected chunk type {k}"),
            }
            if flags & 1 != 0 {
                return Ok(out);
            }
        }
    }

    pub fn read(&mut self, offset: u64, len: u32) -> Reply {
        self.request(0, CMD_READ, 7, offset, len);
        self.reply(Some((offset, len))).expect("a read reply")
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Reply {
        self.request(0, CMD_WRITE, 8, offset, data.len() as u32);
        self.s.write_all(data).expect("sending the payload");
        self.reply(None).expect("a write reply")
    }

    pub fn flush(&mut self) -> Reply {
        self.request(0, CMD_FLUSH, 9, 0, 0);
        self.reply(None).expect("a flush reply")
    }

    /// Whether the server closed the connection (a read gets EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

// ---------------------------------------------------------------------------------------
// Load: a fragmented disk, memory of the server
// ---------------------------------------------------------------------------------------

/// A differencing disk of `mib` MiB (2 MiB blocks) over a dynamic parent, both wholly
/// written with distinct random data, whose every sector bitmap alternates (`0x55`:
/// every other 512-byte sector from the child, the rest from the parent — Windows
/// writes such bitmaps). Legal, and as fragmented as a disk gets: a read of it is one
/// piece per sector. Returns the child.
pub fn alternating_disk(dir: &Path, mib: usize) -> PathBuf {
    let base = dir.join("alt-base.vhd");
    let child = dir.join("alt.vhd");
    create_dynamic(&base, &format!("{mib}M"));
    let fill = dir.join("alt-fill.bin");
    std::fs::write(&fill, bytes(1, mib << 20)).expect("writing the fill");
    write_at(&base, 0, &fill);
    create_child(&child, &base);
    std::fs::write(&fill, bytes(2, mib << 20)).expect("writing the fill");
    write_at(&child, 0, &fill);
    std::fs::remove_file(&fill).expect("removing the fill");
    set_bitmaps(&child, 0x55);
    check_clean(&child);
    child
}

/// `vhdkit create PATH --type dynamic --size SIZE`.
pub fn create_dynamic(path: &Path, size: &str) {
    vhdkit([
        "create".as_ref(),
        path.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--size".as_ref(),
        size.as_ref(),
    ]);
}

/// `vhdkit create CHILD --type differencing --parent PARENT`.
pub fn create_child(child: &Path, parent: &Path) {
    vhdkit([
        "create".as_ref(),
        child.as_os_str(),
        "--type".as_ref(),
        "differencing".as_ref(),
        "--parent".as_ref(),
        parent.as_os_str(),
    ]);
}

/// `vhdkit write DISK --offset OFFSET --input INPUT`.
pub fn write_at(disk: &Path, offset: u64, input: &Path) {
    vhdkit([
        "write".as_ref(),
        disk.as_os_str(),
        "--offset".as_ref(),
        offset.to_string().as_ref(),
        "--input".as_ref(),
        input.as_os_str(),
    ]);
}

/// Sets every byte of every allocated block's sector bitmap of a dynamic or
/// differencing disk to `pattern`.
pub fn set_bitmaps(disk: &Path, pattern: u8) {
    use vhdkit_platform::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .expect("opening the disk");
    let be64 = |b: &[u8]| u64::from_be_bytes(b[..8].try_into().expect("8"));
    let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().expect("4"));
    let mut footer = [0u8; 512];
    f.read_exact_at(&mut footer, 0).expect("footer copy");
    let mut header = [0u8; 1024];
    f.read_exact_at(&mut header, be64(&footer[16..]))
        .expect("dynamic header");
    let table = be64(&header[16..]);
    let entries = be32(&header[28..]) as usize;
    let block = u64::from(be32(&header[32..]));
    let mut bat = vec![0u8; entries * 4];
    f.read_exact_at(&mut bat, table).expect("BAT");
    let bitmap = vec![pattern; (block / 512 / 8) as usize];
    for e in bat.chunks_exact(4).map(be32) {
        if e != u32::MAX {
            f.write_all_at(&bitmap, u64::from(e) * 512)
                .expect("writing a bitmap");
        }
    }
    f.sync_all().expect("sync");
}

/// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`: peak).
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc status");
    let line = s
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number of kB");
    kib * 1024
}
