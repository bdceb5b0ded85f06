"""VHDX from Python: Hyper-V's format made, written, chained and converted through the
same functions as VHD (`format=`, `logical_sector=`, or the `.vhdx`/`.avhdx`
extension), and read identically by libvhdi (Debian's and PyPI's) and qemu-img."""

import subprocess

import pytest

import vhdkit
from helpers import MIB, SYSTEM_PYTHON, pattern, pyvhdi_read, read_all, venv_python

READERS = {"debian-pyvhdi": SYSTEM_PYTHON, "pypi-libvhdi-python": None}


def vhdx_chain(folder):
    """base.vhdx (dynamic, 1 MiB blocks) <- top.avhdx, each written across block
    boundaries from Python: (base, top)."""
    base, top = folder / "base.vhdx", folder / "top.avhdx"
    vhdkit.create(base, "dynamic", 24 * MIB, block_size=MIB)
    with vhdkit.open(base, writable=True) as d:
        d.write(0, pattern(3 * MIB, 1))
        d.write(20 * MIB - 100, pattern(300, 2))
    vhdkit.create(top, parent=base)
    with vhdkit.open(top, writable=True) as d:
        d.write(MIB - 512, pattern(1024, 3))  # across a block boundary
        d.write(10 * MIB, pattern(2 * MIB, 4))
    return base, top


def test_files_named_vhdx_are_vhdx_and_name_their_container(tmp_path):
    base, top = vhdx_chain(tmp_path)
    for path, kind in [(base, "dynamic"), (top, "differencing")]:
        assert path.read_bytes()[:8] == b"vhdxfile"
        info = vhdkit.info(path)
        assert info["container"] == "vhdx", info
        assert info["disk_type"] == kind, info
    with vhdkit.open(top) as d:
        assert d.read(MIB - 512, 1024) == pattern(1024, 3)
        assert d.read(0, 512) == pattern(3 * MIB, 1)[:512]
        assert d.read(20 * MIB - 100, 300) == pattern(300, 2)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_vhdx_chain_made_in_python_reads_identically_in_libvhdi(tmp_path, reader):
    base, top = vhdx_chain(tmp_path)
    python = READERS[reader] or venv_python()
    assert pyvhdi_read(python, top, base) == read_all(top)
    assert pyvhdi_read(python, base) == read_all(base)


def test_the_azure_job_from_a_checkpoint_chain(tmp_path):
    base, top = vhdx_chain(tmp_path)
    azure = tmp_path / "azure.vhd"
    vhdkit.convert(top, azure, "fixed", align=MIB, verify=True).join()
    assert azure.read_bytes()[-512:][:8] == b"conectix"
    raw = tmp_path / "flat.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", azure, raw], check=True)
    assert raw.read_bytes() == read_all(top)


def test_format_and_logical_sector_choose_the_container(tmp_path):
    base, top = vhdx_chain(tmp_path)
    out = tmp_path / "result.img"
    vhdkit.merge_to(
        top, out, "dynamic", format="vhdx", logical_sector=4096, block_size=2 * MIB
    ).join()
    assert out.read_bytes()[:8] == b"vhdxfile"
    info = vhdkit.info(out)
    assert info["container"] == "vhdx", info
    assert read_all(out) == read_all(top)
    vhd = tmp_path / "named.vhdx"
    vhdkit.convert(base, vhd, "dynamic", format="vhd").join()
    assert vhd.read_bytes()[:8] == b"conectix"
    assert read_all(vhd) == read_all(base)


@pytest.mark.parametrize(
    "kind, extra",
    [("dynamic", {}), ("fixed", {}), ("dynamic", {"block_size": 2 * MIB, "logical_sector": 4096})],
)
def test_measure_of_a_vhdx_result_is_the_length_convert_writes(tmp_path, schema, kind, extra):
    base, top = vhdx_chain(tmp_path)
    m = vhdkit.measure(top, kind, format="vhdx", **extra)
    schema(m, "measure")
    assert m["format"] == "vhdx", m
    out = tmp_path / "out.vhdx"
    vhdkit.convert(top, out, kind, **extra).join()
    assert m["required_bytes"] == out.stat().st_size
    assert vhdkit.measure(top, kind)["format"] == "vhd"
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.measure(top, "raw", format="vhdx")
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.measure(top, kind, logical_sector=4096)


@pytest.mark.parametrize(
    "call",
    [
        lambda t: vhdkit.convert(t / "base.vhdx", t / "x.vhd", "dynamic", logical_sector=4096),
        lambda t: vhdkit.convert(t / "base.vhdx", t / "x.raw", "raw", format="vhdx"),
        lambda t: vhdkit.convert(t / "base.vhdx", t / "x.vhdx", "dynamic", format="qcow2"),
        lambda t: vhdkit.convert(t / "base.vhdx", t / "x.vhdx", "dynamic", block_size=64 * 1024),
        lambda t: vhdkit.create(t / "y.vhd", "dynamic", 8 * MIB, logical_sector=4096),
        lambda t: vhdkit.create(t / "y.vhdx", "dynamic", 8 * MIB, logical_sector=1024),
        lambda t: vhdkit.create(t / "y.avhdx", parent=t / "plain.vhd"),
    ],
)
def test_container_mistakes_raise_invalid_argument_and_leave_nothing(tmp_path, call):
    vhdx_chain(tmp_path)
    vhdkit.create(tmp_path / "plain.vhd", "dynamic", 24 * MIB)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(vhdkit.VhdError):
        call(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
