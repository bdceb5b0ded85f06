//! The VHDX readers from PyPI, installed by `.ci/run` into a venv: libvhdi-python (a
//! newer libvhdi than Debian's python3-libvhdi, reading VHDX differencing chains through
//! `set_parent`) and `dissect.hypervisor` (an independent reader in pure Python). The
//! venv is `$VHDKIT_VHDX_VENV`, else `/tmp/vhdkit-vhdx-venv`; a missing one fails the
//! test (as every missing reader does), naming the command that makes it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::run::run_cmd;

/// The variable naming the venv of the VHDX readers.
pub const VHDX_VENV_ENV: &str = "VHDKIT_VHDX_VENV";

/// The venv's Python, after checking once that both readers import.
#[track_caller]
pub fn vhdx_venv_python() -> PathBuf {
    static CHECKED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = CHECKED.get_or_init(|| {
        let venv = std::env::var_os(VHDX_VENV_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/vhdkit-vhdx-venv"));
        let python = venv.join("bin/python");
        let ok = Command::new(&python)
            .args(["-c", "import pyvhdi, dissect.hypervisor"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            Ok(python)
        } else {
            Err(format!(
                "the VHDX readers are required by this test but missing from {}: python3 -m \
                 venv {0} && {0}/bin/pip install libvhdi-python==20260901 dissect.hypervisor \
                 (.ci/run does this; ${VHDX_VENV_ENV} names another venv)",
                venv.display()
            ))
        }
    });
    match r {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Reads a whole disk with libvhdi-python, `chain[1..]` attached as parents in order,
/// in 64 KiB requests (see `pyvhdi_read_cmd` for why), to stdout.
const LIBVHDI_READ: &str = r#"
import sys, pyvhdi
files = []
for p in sys.argv[1:]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for i in reversed(range(len(files) - 1)):
    files[i].set_parent(files[i + 1])
f = files[0]
size = f.get_media_size()
out = sys.stdout.buffer
pos = 0
while pos < size:
    n = min(65536, size - pos)
    b = f.read_buffer_at_offset(n, pos)
    if len(b) != n:
        sys.exit("short read at %d" % pos)
    out.write(b)
    pos += n
"#;

/// Reads a whole VHDX (its parents found through its locator) with dissect.hypervisor,
/// 1 MiB at a time, to stdout.
const DISSECT_READ: &str = r#"
import sys
from pathlib import Path
from dissect.hypervisor.disk.vhdx import VHDX
v = VHDX(Path(sys.argv[1]))
out = sys.stdout.buffer
pos = 0
while pos < v.size:
    n = min(1 << 20, v.size - pos)
    v.seek(pos)
    b = v.read(n)
    if len(b) != n:
        sys.exit("short read at %d" % pos)
    out.write(b)
    pos += n
"#;

/// The whole disk `chain[0]` as libvhdi-python reads it with `chain[1..]` as parents.
#[track_caller]
pub fn libvhdi_python_read_all(chain: &[&Path]) -> Vec<u8> {
    let r = run_cmd(
        Command::new(vhdx_venv_python())
            .args(["-c", LIBVHDI_READ])
            .args(chain),
    );
    assert_eq!(r.code, 0, "libvhdi-python read of {chain:?}: {}", r.stderr);
    r.stdout
}

/// The whole disk at `path` as dissect.hypervisor reads it (a differencing disk's
/// parents found through its locator: `relative_path`, then `absolute_win32_path`).
#[track_caller]
pub fn dissect_read_all(path: &Path) -> Vec<u8> {
    let r = run_cmd(
        Command::new(vhdx_venv_python())
            .args(["-c", DISSECT_READ])
            .arg(path),
    );
    assert_eq!(
        r.code,
        0,
        "dissect.hypervisor read of {}: {}",
        path.display(),
        r.stderr
    );
    r.stdout
}

/// Reads ranges (`offset:length` arguments after the files, a `--` between) of a disk
/// with libvhdi-python, `chain[1..]` attached as parents: its media size on the first
/// line, then the ranges' bytes.
const LIBVHDI_READ_RANGES: &str = r#"
import sys, pyvhdi
i = sys.argv.index("--")
files = []
for p in sys.argv[1:i]:
    f = pyvhdi.file()
    f.open(p)
    files.append(f)
for k in reversed(range(len(files) - 1)):
    files[k].set_parent(files[k + 1])
f = files[0]
out = sys.stdout.buffer
out.write(b"%d\n" % f.get_media_size())
for r in sys.argv[i + 1:]:
    pos, n = map(int, r.split(":"))
    while n > 0:
        k = min(65536, n)
        b = f.read_buffer_at_offset(k, pos)
        if len(b) != k:
            sys.exit("short read at %d" % pos)
        out.write(b)
        pos += k
        n -= k
"#;

/// The same with dissect.hypervisor (parents through the locator), one block at a
/// time: dissect.hypervisor 3.x returns zeros for a present block when one read starts
/// inside an absent block before it (measured: a read at 19 MiB + 4 KiB over a block
/// written from 20 MiB + 4 KiB), so no read crosses a block boundary.
const DISSECT_READ_RANGES: &str = r#"
import sys
from pathlib import Path
from dissect.hypervisor.disk.vhdx import VHDX
v = VHDX(Path(sys.argv[1]))
out = sys.stdout.buffer
out.write(b"%d\n" % v.size)
for r in sys.argv[2:]:
    pos, n = map(int, r.split(":"))
    while n > 0:
        k = min(n, v.block_size - pos % v.block_size)
        v.seek(pos)
        b = v.read(k)
        if len(b) != k:
            sys.exit("short read at %d" % pos)
        out.write(b)
        pos += k
        n -= k
"#;

/// Splits `size\nbytes` as the range readers print it.
fn size_and_bytes(out: Vec<u8>, what: &str) -> (u64, Vec<u8>) {
    let nl = out
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or_else(|| panic!("{what}: no size line"));
    let size = std::str::from_utf8(&out[..nl])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: a bad size line"));
    (size, out[nl + 1..].to_vec())
}

/// The virtual size of `chain[0]` as libvhdi-python reads it with `chain[1..]` as
/// parents, and the bytes of `ranges` (offset, length), one after the other: for disks
/// too large to read whole.
#[track_caller]
pub fn libvhdi_python_read_ranges(chain: &[&Path], ranges: &[(u64, u64)]) -> (u64, Vec<u8>) {
    let r = run_cmd(
        Command::new(vhdx_venv_python())
            .args(["-c", LIBVHDI_READ_RANGES])
            .args(chain)
            .arg("--")
            .args(ranges.iter().map(|(o, n)| format!("{o}:{n}"))),
    );
    assert_eq!(r.code, 0, "libvhdi-python read of {chain:?}: {}", r.stderr);
    size_and_bytes(r.stdout, "libvhdi-python")
}

/// The virtual size of the disk at `path` as dissect.hypervisor reads it, and the bytes
/// of `ranges` (offset, length), one after the other.
#[track_caller]
pub fn dissect_read_ranges(path: &Path, ranges: &[(u64, u64)]) -> (u64, Vec<u8>) {
    let r = run_cmd(
        Command::new(vhdx_venv_python())
            .args(["-c", DISSECT_READ_RANGES])
            .arg(path)
            .args(ranges.iter().map(|(o, n)| format!("{o}:{n}"))),
    );
    assert_eq!(
        r.code,
        0,
        "dissect.hypervisor read of {}: {}",
        path.display(),
        r.stderr
    );
    size_and_bytes(r.stdout, "dissect.hypervisor")
}

/// `(virtual size, logical sector size, block size)` as dissect.hypervisor reads them.
#[track_caller]
pub fn dissect_geometry(path: &Path) -> (u64, u64, u64) {
    let r = run_cmd(
        Command::new(vhdx_venv_python())
            .args([
                "-c",
                "import sys\nfrom pathlib import Path\nfrom dissect.hypervisor.disk.vhdx import VHDX\n\
                 v = VHDX(Path(sys.argv[1]))\nprint(v.size, v.sector_size, v.block_size)",
            ])
            .arg(path),
    );
    assert_eq!(
        r.code,
        0,
        "dissect.hypervisor {}: {}",
        path.display(),
        r.stderr
    );
    let v: Vec<u64> = r
        .stdout_str()
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    assert_eq!(v.len(), 3, "dissect geometry {v:?}");
    (v[0], v[1], v[2])
}
