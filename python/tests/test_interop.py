"""What vhdkit writes from Python reads identically in other readers: libvhdi's
pyvhdi (Debian's python3-libvhdi under /usr/bin/python3, and libvhdi-python from PyPI
in the test venv), the one reader of differencing chains here, and qemu-img for the
flattened results."""

import subprocess

import pytest

import vhdkit
from helpers import MIB, SYSTEM_PYTHON, pattern, pyvhdi_read, read_all, venv_python

READERS = {"debian-pyvhdi": SYSTEM_PYTHON, "pypi-libvhdi-python": None}


def python_for(reader):
    return READERS[reader] or venv_python()


def make_chain(folder, base_type):
    """base (fixed or dynamic) <- mid <- top, each level writing over the one below at
    offsets that straddle sectors and blocks: (base, mid, top)."""
    base, mid, top = folder / "base.vhd", folder / "mid.vhd", folder / "top.vhd"
    vhdkit.create(base, base_type, 24 * MIB)
    with vhdkit.open(base, writable=True) as d:
        d.write(0, pattern(6 * MIB, 1))
        d.write(20 * MIB - 100, pattern(300, 2))
    vhdkit.create(mid, parent=base)
    with vhdkit.open(mid, writable=True) as d:
        d.write(MIB + 7, pattern(3 * MIB, 3))
        d.write(12 * MIB, pattern(MIB, 4))
    vhdkit.create(top, parent=mid)
    with vhdkit.open(top, writable=True) as d:
        d.write(2 * MIB - 1, pattern(2, 5))  # across a block boundary
        d.write(5 * MIB + 511, pattern(1025, 6))
        d.write(23 * MIB, pattern(MIB, 7))
    return base, mid, top


@pytest.fixture(scope="module")
def pyvhdi_in_venv():
    import pyvhdi  # libvhdi-python: the test venv must have it

    return pyvhdi


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("base_type", ["dynamic", "fixed"])
def test_a_chain_made_in_python_reads_identically_in_pyvhdi(tmp_path, reader, base_type, pyvhdi_in_venv):
    base, mid, top = make_chain(tmp_path, base_type)
    want = read_all(top)
    assert want[2 * MIB - 1 : 2 * MIB + 1] == pattern(2, 5)
    assert pyvhdi_read(python_for(reader), top, mid, base) == want
    assert pyvhdi_read(python_for(reader), mid, base) == read_all(mid)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_results_of_python_operations_read_identically_in_pyvhdi(tmp_path, reader):
    base, mid, top = make_chain(tmp_path, "dynamic")
    want = read_all(top)
    flat = tmp_path / "flat.vhd"
    vhdkit.merge_to(top, flat, "dynamic").join()
    assert pyvhdi_read(python_for(reader), flat) == want
    vhdkit.merge(top).join()  # top's sectors into mid
    vhdkit.compact(mid).join()
    assert pyvhdi_read(python_for(reader), mid, base) == want


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_a_chain_flattened_in_python_reads_identically_in_qemu_img(tmp_path, kind):
    # qemu-img reads no differencing disks: the flattened chain it can read.
    base, mid, top = make_chain(tmp_path, "dynamic")
    flat = tmp_path / "flat.vhd"
    vhdkit.merge_to(top, flat, kind).join()
    raw = tmp_path / "flat.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(flat), str(raw)], check=True
    )
    assert raw.read_bytes() == read_all(top)


def test_the_venv_pyvhdi_is_importable(pyvhdi_in_venv):
    assert pyvhdi_in_venv.get_version()
