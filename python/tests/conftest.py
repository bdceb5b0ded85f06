"""Shared fixtures of the vhdkit Python tests: disks to work on, the JSON schemas of
docs/schema/, the vhdkit command line (to compare with), and pyvhdi readers.

Run from the repository: `pytest python/tests` after `pip install ./python`.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

import vhdkit
from helpers import MIB, REPO, pattern

SCHEMAS = REPO / "docs" / "schema"

# Bytes of the large source the cancel and GIL tests work on: large enough that a
# conversion with verification runs well over the 0.4 s those tests wait, at the speed
# a quiet machine converts (256 MiB took 0.27–0.8 s, and the tests then failed now and
# then: the conversion was done before the wait or the interrupt).
BIG = 1024 * MIB


@pytest.fixture
def dyn(tmp_path):
    """A 16 MiB dynamic disk holding a pattern in its first and third MiB."""
    path = tmp_path / "dyn.vhd"
    vhdkit.create(path, size=16 * MIB)
    with vhdkit.open(path, writable=True) as d:
        d.write(0, pattern(MIB, 1))
        d.write(2 * MIB, pattern(MIB, 2))
    return path


@pytest.fixture
def chain(tmp_path):
    """base.vhd (dynamic, 16 MiB) <- child.vhd, with data in both: (base, child)."""
    base = tmp_path / "base.vhd"
    vhdkit.create(base, size=16 * MIB, block_size=MIB)
    with vhdkit.open(base, writable=True) as d:
        d.write(0, pattern(4 * MIB, 3))
    child = tmp_path / "child.vhd"
    vhdkit.create(child, parent=base)
    with vhdkit.open(child, writable=True) as d:
        d.write(MIB + 512, pattern(MIB, 4))
        d.write(10 * MIB, pattern(3 * MIB, 5))
    return base, child


@pytest.fixture(scope="session")
def big_source(tmp_path_factory):
    """A dynamic disk of BIG non-zero bytes (every block allocated), made once."""
    path = tmp_path_factory.mktemp("big") / "big.vhd"
    vhdkit.create(path, size=BIG)
    chunk = pattern(8 * MIB, 9)
    with vhdkit.open(path, writable=True) as d:
        for offset in range(0, BIG, len(chunk)):
            d.write(offset, chunk)
    return path


@pytest.fixture(scope="session")
def schema():
    """validate(document, name): checks a dict against docs/schema/<name>.schema.json."""
    import jsonschema

    cache = {}

    def validate(document, name):
        if name not in cache:
            with open(SCHEMAS / f"{name}.schema.json") as f:
                cache[name] = json.load(f)
        jsonschema.validate(document, cache[name], cls=jsonschema.Draft202012Validator)

    return validate


@pytest.fixture(scope="session")
def cli():
    """run(*args): the vhdkit command line's exit code, stdout and stderr. The binary
    of the checkout (target/debug or target/release), built if neither is there."""
    candidates = [
        os.environ.get("VHDKIT_BIN"),
        REPO / "target" / "debug" / "vhdkit",
        REPO / "target" / "release" / "vhdkit",
    ]
    binary = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if binary is None:
        subprocess.run(["cargo", "build", "--quiet", "--bin", "vhdkit"], cwd=REPO, check=True)
        binary = REPO / "target" / "debug" / "vhdkit"

    def run(*args):
        p = subprocess.run([str(binary), *map(str, args)], capture_output=True)
        return p.returncode, p.stdout, p.stderr

    return run
