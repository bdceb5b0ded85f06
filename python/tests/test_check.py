"""check() and its Problem objects, repair()."""

import json
import os

import pytest

import vhdkit
from helpers import MIB, pattern, read_all


def damage_footer_checksum(path, copy_too=False):
    """Flips a bit of the checksum of the footer at the end of the file (and of its
    copy at offset 0)."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for footer in [size - 512] + ([0] if copy_too else []):
            f.seek(footer + 64)  # the footer's checksum field
            b = f.read(1)
            f.seek(footer + 64)
            f.write(bytes([b[0] ^ 1]))


def as_cli(problem):
    """A Problem as the command line's `check --json` prints one."""
    return {
        "severity": problem.severity,
        "structure": problem.structure,
        "field": problem.field,
        "offset": problem.offset,
        "message": problem.message,
    }


def cli_problems(cli, path):
    code, out, err = cli("check", path, "--json")
    doc = json.loads(out)
    return code, [(f["path"], p) for f in doc["files"] for p in f["problems"]]


def test_check_of_a_sound_chain_finds_what_the_cli_finds(chain, cli):
    base, child = chain
    problems = vhdkit.check(child)
    assert all(p.severity == "info" for p in problems), [str(p) for p in problems]
    code, theirs = cli_problems(cli, child)
    assert code == 0
    assert [(p.path, as_cli(p)) for p in problems] == theirs


def test_check_reports_a_damaged_checksum_as_an_object(dyn, cli):
    damage_footer_checksum(dyn)
    problems = vhdkit.check(dyn)
    bad = [p for p in problems if p.structure == "footer" and p.field == "checksum"]
    assert bad, [str(p) for p in problems]
    p = bad[0]
    assert p.severity in ("warning", "error")
    assert p.path == str(dyn)
    assert isinstance(p.offset, int)
    assert "checksum" in str(p) and p.message in str(p)
    assert "vhdkit.Problem" in repr(p)
    code, theirs = cli_problems(cli, dyn)
    assert code == 1
    assert [(q.path, as_cli(q)) for q in problems] == theirs


def test_strict_open_refuses_a_damaged_checksum_with_corrupt(dyn):
    damage_footer_checksum(dyn, copy_too=True)
    with pytest.raises(vhdkit.Corrupt) as e:
        vhdkit.open(dyn, strict=True)
    assert e.value.hresult == vhdkit.VM_E_INVALID_HD_FILE
    assert e.value.path == str(dyn)
    with vhdkit.open(dyn) as d:  # lenient: read with a warning
        assert d.info()["warnings"]
        assert d.read(0, MIB) == pattern(MIB, 1)


def test_disk_check_of_a_read_only_disk_is_the_full_check(chain):
    base, child = chain
    with vhdkit.open(child) as d:
        assert [str(p) for p in d.check()] == [str(p) for p in vhdkit.check(child)]


def test_disk_check_of_a_writable_disk_checks_each_file_after_flushing(dyn):
    with vhdkit.open(dyn, writable=True) as d:
        d.write(5 * MIB, b"new block")
        problems = d.check()
    assert [p for p in problems if p.severity != "info"] == []
    assert not any("in use" in p.message for p in problems)


def test_check_of_a_file_that_is_not_a_vhd_reports_it(tmp_path):
    path = tmp_path / "zeros.vhd"
    path.write_bytes(bytes(MIB))
    problems = vhdkit.check(path)
    assert any(p.severity == "error" for p in problems)
    with pytest.raises(vhdkit.NotAVhd) as e:
        vhdkit.open(path)
    assert e.value.hresult == vhdkit.VM_E_INVALID_HD_FILE


def test_repair_restores_a_footer_lost_at_the_end(dyn):
    want = read_all(dyn)
    size = os.path.getsize(dyn)
    os.truncate(dyn, size - 512)  # the end footer is gone; its copy at 0 remains
    actions = vhdkit.repair(dyn)
    assert actions and all(isinstance(a, str) for a in actions)
    assert os.path.getsize(dyn) == size
    assert [p for p in vhdkit.check(dyn) if p.severity != "info"] == []
    assert read_all(dyn) == want
    assert vhdkit.repair(dyn) == []  # nothing left to repair
