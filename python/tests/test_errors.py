"""Exceptions: VhdError and its subclasses carry the Virtual Server HRESULT of each
kind of failure, the file concerned and the message."""

import pickle

import pytest

import vhdkit
from helpers import MIB


def not_a_vhd(tmp_path):
    p = tmp_path / "zeros.vhd"
    p.write_bytes(bytes(MIB))
    vhdkit.open(p)


def in_use(tmp_path):
    p = tmp_path / "d.vhd"
    vhdkit.create(p, size=4 * MIB)
    held = vhdkit.open(p, writable=True)
    try:
        vhdkit.open(p, writable=True)
    finally:
        held.close()


def existing(tmp_path):
    p = tmp_path / "d.vhd"
    vhdkit.create(p, size=4 * MIB)
    vhdkit.create(p, size=4 * MIB)


def folder_missing(tmp_path):
    vhdkit.create(tmp_path / "no" / "such" / "d.vhd", size=4 * MIB)


def too_small(tmp_path):
    vhdkit.create(tmp_path / "d.vhd", size=MIB)


def too_large(tmp_path):
    vhdkit.create(tmp_path / "d.vhd", size=3 << 40)


def parent_missing(tmp_path):
    base = tmp_path / "base.vhd"
    vhdkit.create(base, size=4 * MIB)
    vhdkit.create(tmp_path / "child.vhd", parent=base)
    base.unlink()
    vhdkit.open(tmp_path / "child.vhd")


def wrong_parent(tmp_path):
    base = tmp_path / "base.vhd"
    other = tmp_path / "other.vhd"
    vhdkit.create(base, size=4 * MIB)
    vhdkit.create(other, size=4 * MIB)
    vhdkit.create(tmp_path / "child.vhd", parent=base)
    vhdkit.open(tmp_path / "child.vhd", parent=other)


def merge_of_fixed(tmp_path):
    p = tmp_path / "f.vhd"
    vhdkit.create(p, "fixed", 4 * MIB)
    vhdkit.merge(p)


def compact_of_fixed(tmp_path):
    p = tmp_path / "f.vhd"
    vhdkit.create(p, "fixed", 4 * MIB)
    vhdkit.compact(p)


def read_only(tmp_path):
    p = tmp_path / "d.vhd"
    vhdkit.create(p, size=4 * MIB)
    vhdkit.open(p).write(0, b"x")


def out_of_range(tmp_path):
    p = tmp_path / "d.vhd"
    vhdkit.create(p, size=4 * MIB)
    vhdkit.open(p).read(4 * MIB, 1)


def a_folder(tmp_path):
    vhdkit.open(tmp_path)


def qcow2(tmp_path):
    p = tmp_path / "d.qcow2"
    p.write_bytes(b"QFI\xfb" + bytes(MIB))
    vhdkit.convert(p, tmp_path / "out.vhd", "dynamic")


CASES = [
    # (what, class, HRESULT, kind, path names the file)
    ("missing", vhdkit.NotFound, 0x80070002, "not_found", True),
    (not_a_vhd, vhdkit.NotAVhd, 0xA0040682, "not_vhd", True),
    (in_use, vhdkit.InUse, 0x80070020, "in_use", True),
    (existing, vhdkit.AlreadyExists, 0x800700B7, "already_exists", True),
    (folder_missing, vhdkit.NotFound, 0x80070003, "path_not_found", True),
    (too_small, vhdkit.InvalidArgument, 0xA0040684, "size_too_small", False),
    (too_large, vhdkit.InvalidArgument, 0xA0040683, "size_too_large", False),
    (parent_missing, vhdkit.ParentNotFound, 0xA0040677, "parent_not_found", True),
    (wrong_parent, vhdkit.ParentIdMismatch, 0xA0040685, "parent_id_mismatch", True),
    (merge_of_fixed, vhdkit.WrongDiskType, 0xA004067B, "wrong_disk_type", True),
    (compact_of_fixed, vhdkit.WrongDiskType, 0xA004067B, "wrong_disk_type", True),
    (read_only, vhdkit.ReadOnly, 0xA004067A, "read_only", True),
    (out_of_range, vhdkit.InvalidArgument, 0x80070057, "out_of_range", True),
    (a_folder, vhdkit.Unsupported, 0xA004067C, "wrong_file_type", True),
    (qcow2, vhdkit.VhdError, None, None, True),
]


@pytest.mark.parametrize(
    "what, cls, hresult, kind, has_path",
    CASES,
    ids=[c[0] if isinstance(c[0], str) else c[0].__name__ for c in CASES],
)
def test_each_failure_raises_its_class_with_its_hresult(tmp_path, what, cls, hresult, kind, has_path):
    with pytest.raises(cls) as e:
        if what == "missing":
            vhdkit.open(tmp_path / "missing.vhd")
        else:
            what(tmp_path)
    err = e.value
    assert isinstance(err, vhdkit.VhdError)
    if hresult is not None:
        assert err.hresult == hresult, hex(err.hresult)
        assert err.kind == kind
    assert err.hresult & 0x80000000, "a failure HRESULT"
    assert (err.path is not None) == has_path
    if has_path:
        assert str(tmp_path) in err.path
    assert str(err) == err.message and err.message


def test_hresult_constants_are_the_virtual_server_values():
    assert vhdkit.S_OK == 0
    assert vhdkit.E_ABORT == 0x80004004
    assert vhdkit.E_FAIL == 0x80004005
    assert vhdkit.E_INVALIDARG == 0x80070057
    assert vhdkit.VM_E_INVALID_HD_FILE == 0xA0040682
    assert vhdkit.VM_E_PARENT_PATH_NOT_FOUND == 0xA0040677


def test_subclasses_are_also_the_builtin_exceptions_they_mean(tmp_path):
    assert issubclass(vhdkit.NotFound, FileNotFoundError)
    assert issubclass(vhdkit.AlreadyExists, FileExistsError)
    assert issubclass(vhdkit.InvalidArgument, ValueError)
    assert issubclass(vhdkit.NotAllowed, PermissionError)
    assert issubclass(vhdkit.HasChildren, vhdkit.InUse)
    with pytest.raises(FileNotFoundError):
        vhdkit.open(tmp_path / "missing.vhd")


def test_exception_classes_live_in_vhdkit_and_pickle(tmp_path):
    with pytest.raises(vhdkit.NotFound) as e:
        vhdkit.open(tmp_path / "missing.vhd")
    assert type(e.value).__module__ == "vhdkit"
    back = pickle.loads(pickle.dumps(e.value))
    assert type(back) is vhdkit.NotFound
    assert (back.hresult, back.path, back.kind, str(back)) == (
        e.value.hresult,
        e.value.path,
        e.value.kind,
        str(e.value),
    )


def test_vhd_error_can_be_raised_by_scripts():
    err = vhdkit.VhdError("mine")
    assert err.hresult == vhdkit.E_FAIL and err.path is None and err.kind == "other"
    err = vhdkit.InUse("busy", hresult=vhdkit.E_SHARING_VIOLATION, path="/x")
    assert err.path == "/x" and err.children == []
