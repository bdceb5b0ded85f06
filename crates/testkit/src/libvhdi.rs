//! libvhdi as a judge, the only reader here of differencing chains: `vhdiinfo`
//! (libvhdi-utils) and the Python binding pyvhdi (python3-libvhdi). Each helper first
//! checks that its tool is installed ([`have`]): a missing one fails the test.

use std::path::Path;
use std::process::Command;

use crate::run::{have, run_cmd, Run, Tool};

/// The interpreter that has libvhdi's binding (the `python3` on PATH may not).
pub const PYTHON: &str = "/usr/bin/python3";

/// `vhdiinfo DISK`: the run (stdout is the report).
pub fn vhdiinfo(disk: &Path) -> Run {
    have(Tool::Vhdiinfo);
    run_cmd(Command::new("vhdiinfo").arg(disk))
}

/// A field of the vhdiinfo report, e.g. `Parent identifier`; vhdiinfo must succeed.
pub fn vhdiinfo_field(disk: &Path, name: &str) -> Option<String> {
    let r = vhdiinfo(disk);
    assert_eq!(r.code, 0, "vhdiinfo {}: {}", disk.display(), r.stderr);
    r.stdout_str().lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_owned())
    })
}

/// vhdiinfo's `Media size`, in bytes (the number in parentheses).
pub fn vhdiinfo_size(disk: &Path) -> u64 {
    let v = vhdiinfo_field(disk, "Media size")
        .unwrap_or_else(|| panic!("vhdiinfo {} has no Media size", disk.display()));
    let inner = v
        .rsplit_once('(')
        .and_then(|(_, r)| r.strip_suffix(" bytes)"))
        .unwrap_or_else(|| panic!("unexpected Media size {v:?}"));
    inner.trim().parse().expect("a byte count")
}

/// Writes `length` bytes (to the end when negative) at `offset` of the first file named,
/// with the others attached as its parents in order, to stdout.
///
/// The reads are 64 KiB requests at 64 KiB offsets, which never cross a block boundary
/// of the disks of the tests (blocks are at least 64 KiB): libvhdi 20210425 answers a
/// request that spans two blocks wrongly when the block size is not 2 MiB and the first
/// block's bitmap is partial (zeros for the second block, or the parent's bytes for the
/// whole rest of a differencing request). The same bytes read block by block are right.
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
    have(Tool::Pyvhdi);
    let len = len.map(|l| l as i64).unwrap_or(-1);
    let mut c = Command::new(PYTHON);
    c.args(["-c", PYVHDI_READ])
        .arg(offset.to_string())
        .arg(len.to_string())
        .args(chain);
    c
}

/// The whole disk `chain[0]` as libvhdi reads it with `chain[1..]` as its parents.
pub fn pyvhdi_read_all(chain: &[&Path]) -> Vec<u8> {
    let r = run_cmd(&mut pyvhdi_read_cmd(chain, 0, None));
    assert_eq!(r.code, 0, "pyvhdi read of {chain:?} failed: {}", r.stderr);
    r.stdout
}

/// pyvhdi's `get_media_size()`.
pub fn pyvhdi_size(disk: &Path) -> u64 {
    have(Tool::Pyvhdi);
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
