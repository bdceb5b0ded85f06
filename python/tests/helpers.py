"""Helpers of the vhdkit Python tests (the fixtures are in conftest.py)."""

import hashlib
import subprocess
import sys
from pathlib import Path

import vhdkit

REPO = Path(__file__).resolve().parents[2]
MIB = 1 << 20

# Debian's python3-libvhdi is built for /usr/bin/python3 only, not a venv's python;
# libvhdi-python (PyPI) is installed in the venv the tests run in.
SYSTEM_PYTHON = "/usr/bin/python3"


def pattern(length: int, seed: int = 1) -> bytes:
    """Non-zero bytes, different for each seed, repeating every 4 KiB."""
    unit = bytes((seed * 7 + i * 13) % 251 + 1 for i in range(4096))
    return (unit * (length // len(unit) + 1))[:length]


def file_digest(path) -> bytes:
    """The SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.digest()


def read_all(path, **options) -> bytes:
    """Every virtual byte of the disk at `path`, through vhdkit."""
    with vhdkit.open(path, **options) as d:
        return d.read(0, d.virtual_size)


# Reads the whole disk argv[1], attaching argv[2:] as its parents in order, to stdout.
# 64 KiB requests at 64 KiB offsets: libvhdi 20210425 (Debian's) answers a request
# that spans two blocks wrongly when the block size is not 2 MiB and the first block's
# bitmap is partial; block by block it reads right (crates/testkit/src/libvhdi.rs).
PYVHDI_READ = r"""
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
    n = min(64 << 10, size - pos)
    b = f.read_buffer_at_offset(n, pos)
    if len(b) != n:
        sys.exit("short read at %d: %d of %d bytes" % (pos, len(b), n))
    out.write(b)
    pos += n
"""


def pyvhdi_read(python: str, *chain) -> bytes:
    """The whole disk chain[0], chain[1:] its parents, as pyvhdi under `python` reads
    it."""
    p = subprocess.run(
        [python, "-c", PYVHDI_READ, *map(str, chain)], capture_output=True
    )
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout


def venv_python() -> str:
    """The interpreter running the tests (the venv with libvhdi-python)."""
    return sys.executable
