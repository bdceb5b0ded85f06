//! Running programs: their results, the presence of the external tools, and streaming
//! comparisons of two programs' output.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::libvhdi::PYTHON;

/// What a finished program produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Everything it wrote on stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote on stderr (lossy UTF-8).
    pub stderr: String,
}

impl Run {
    /// The run of a finished [`Output`].
    pub fn from_output(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Stdout as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Asserts exit code 0 and no panic ([`assert_no_panic`]); returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code,
            0,
            "expected success; stderr: {}; stdout: {}",
            self.stderr,
            self.stdout_str()
        );
        assert_no_panic(&self);
        self
    }

    /// Stdout parsed as JSON.
    #[track_caller]
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

/// Asserts the run did not panic (for vhdkit, a panic is never an acceptable way to
/// fail).
#[track_caller]
pub fn assert_no_panic(r: &Run) {
    assert!(
        !r.stderr.contains("panicked") && r.code != 101,
        "vhdkit panicked (exit {}): {}",
        r.code,
        r.stderr
    );
}

/// Runs `c` with empty stdin to its end.
pub fn run_cmd(c: &mut Command) -> Run {
    let o = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    Run::from_output(o)
}

/// Whether `program ARGS` runs and exits 0 (its output discarded).
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails the test unless `program` runs; `args` is a harmless invocation of it, e.g.
/// `--version`.
#[track_caller]
pub fn need(program: &str, args: &[&str]) {
    assert!(
        runs(program, args),
        "{program} is required by this test and is missing (.ci/run installs it)"
    );
}

/// The external tools the suites use by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `qemu-img` (qemu-utils).
    QemuImg,
    /// `vhdiinfo` (libvhdi-utils).
    Vhdiinfo,
    /// libvhdi's Python binding, under [`PYTHON`] (python3-libvhdi).
    Pyvhdi,
    /// `bzip2`: optional, Python's bz2 module replaces it.
    Bzip2,
}

impl Tool {
    const ALL: [Tool; 4] = [Tool::QemuImg, Tool::Vhdiinfo, Tool::Pyvhdi, Tool::Bzip2];

    fn present(self) -> bool {
        match self {
            Tool::QemuImg => runs("qemu-img", &["--version"]),
            Tool::Vhdiinfo => runs("vhdiinfo", &["-V"]),
            Tool::Pyvhdi => runs(PYTHON, &["-c", "import pyvhdi"]),
            Tool::Bzip2 => runs("bzip2", &["--help"]),
        }
    }
}

/// Whether `tool` can be used. A missing reader (qemu-img, vhdiinfo, pyvhdi) fails the
/// test — `.ci/run` installs them all — so for those this returns `true` or panics;
/// only [`Tool::Bzip2`] may be absent. Probed once per test binary.
#[track_caller]
pub fn have(tool: Tool) -> bool {
    static PRESENT: OnceLock<[bool; 4]> = OnceLock::new();
    let present = PRESENT.get_or_init(|| Tool::ALL.map(Tool::present))[tool as usize];
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

/// Runs both commands and compares their stdout streams chunk by chunk (nothing is
/// stored: real-world images are hundreds of MiB). Both must exit 0.
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

/// Reads until `buf` is full or the stream ends; returns the count.
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
