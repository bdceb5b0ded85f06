"""create(), open() and Disk: reading, writing, info(), map(), check()."""

import os
import threading

import pytest

import vhdkit
from helpers import MIB, pattern, read_all


def test_create_dynamic_opens_with_its_size_and_reads_zeros(tmp_path):
    path = tmp_path / "d.vhd"
    report = vhdkit.create(path, size=8 * MIB)
    assert report["operation"] == "create"
    assert report["path"] == str(path)
    assert report["file_size_after"] == os.path.getsize(path)
    with vhdkit.open(path) as d:
        assert d.type == "dynamic"
        assert d.virtual_size == 8 * MIB
        assert d.read(0, 4096) == bytes(4096)


def test_create_fixed_is_allocated_whole(tmp_path):
    path = tmp_path / "f.vhd"
    vhdkit.create(path, "fixed", 4 * MIB)
    assert os.path.getsize(path) == 4 * MIB + 512
    assert vhdkit.open(path).type == "fixed"


def test_create_fixed_sparse_leaves_a_hole(tmp_path):
    path = tmp_path / "f.vhd"
    vhdkit.create(path, type="fixed", size=64 * MIB, sparse=True)
    assert os.stat(path).st_blocks * 512 < MIB


def test_create_with_parent_makes_a_differencing_disk_of_the_parents_size(tmp_path):
    base = tmp_path / "base.vhd"
    vhdkit.create(base, size=6 * MIB, block_size=512 << 10)
    child = tmp_path / "child.vhd"
    vhdkit.create(child, parent=base)
    info = vhdkit.info(child)
    assert info["disk_type"] == "differencing"
    assert info["virtual_size"] == 6 * MIB
    assert info["block_size"] == 512 << 10, "the parent's block size by default"
    assert [level["path"] for level in info["chain"]] == [str(child), str(base)]


def test_create_block_size_is_used(tmp_path):
    path = tmp_path / "d.vhd"
    vhdkit.create(path, "dynamic", 8 * MIB, block_size=64 << 10)
    assert vhdkit.info(path)["block_size"] == 64 << 10


def test_create_host_drive_links_a_file_when_allowed(tmp_path):
    device = tmp_path / "drive.img"
    device.write_bytes(pattern(4 * MIB, 6))
    stub = tmp_path / "hd.vhd"
    vhdkit.create(stub, "host-drive", host_drive=device, read_only=True)
    with pytest.raises(vhdkit.NotAllowed) as refused:
        vhdkit.open(stub)
    assert refused.value.hresult == vhdkit.E_ACCESSDENIED
    with vhdkit.open(stub, host_drive="files") as d:
        assert d.type == "host-drive"
        assert d.read(0, 4 * MIB) == device.read_bytes()
    info = vhdkit.info(stub, host_drive="files")
    assert info["host_drive"]["read_only"] is True
    assert info["host_drive"]["device"] == str(device)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"type": "dynamic"},  # no size
        {"type": "fixed", "size": 8 * MIB, "block_size": 1 << 20},
        {"type": "dynamic", "size": 8 * MIB, "sparse": True},
        {"type": "differencing"},  # no parent
        {"type": "host-drive"},  # no device
        {"type": "floppy", "size": 8 * MIB},
        {"size": 8 * MIB, "read_only": True},
        {"size": 8 * MIB, "block_size": 3000},
    ],
)
def test_create_argument_mistakes_are_invalid_argument(tmp_path, kwargs):
    path = tmp_path / "x.vhd"
    with pytest.raises(vhdkit.InvalidArgument) as e:
        vhdkit.create(path, **kwargs)
    assert e.value.hresult == vhdkit.E_INVALIDARG
    assert isinstance(e.value, ValueError)
    assert not path.exists()


def test_read_returns_what_write_wrote_at_unaligned_offsets(tmp_path):
    path = tmp_path / "d.vhd"
    vhdkit.create(path, size=8 * MIB, block_size=64 << 10)
    data = pattern(200_000, 7)
    with vhdkit.open(path, writable=True) as d:
        assert d.write(65_000, data) == len(data)
        assert d.read(65_000, len(data)) == data
        assert d.read(64_999, 1) == b"\0"
    assert read_all(path)[65_000 : 65_000 + len(data)] == data


def test_write_takes_bytearray_and_memoryview(tmp_path):
    path = tmp_path / "d.vhd"
    vhdkit.create(path, size=4 * MIB)
    with vhdkit.open(path, writable=True) as d:
        d.write(0, bytearray(b"array"))
        d.write(512, memoryview(b"--view--")[2:6])
        with pytest.raises(TypeError):
            d.write(1024, 5)
        with pytest.raises(TypeError):
            d.write(1024, "text")
        assert d.read(0, 5) == b"array"
        assert d.read(512, 4) == b"view"
        assert d.read(1024, 5) == bytes(5)


def test_write_to_a_disk_opened_read_only_raises_read_only(dyn):
    with vhdkit.open(dyn) as d:
        assert d.writable is False
        with pytest.raises(vhdkit.ReadOnly) as e:
            d.write(0, b"x")
    assert e.value.hresult == vhdkit.VM_E_FILE_READ_ONLY
    assert e.value.path == str(dyn)


def test_read_outside_the_disk_raises_invalid_argument_before_allocating(dyn):
    with vhdkit.open(dyn) as d:
        with pytest.raises(vhdkit.InvalidArgument) as e:
            d.read(d.virtual_size - 10, 11)
        assert e.value.hresult == vhdkit.E_INVALIDARG
        assert e.value.kind == "out_of_range"
        with pytest.raises(vhdkit.InvalidArgument):
            d.read(0, 1 << 62)  # never allocated: refused first
        assert d.read(d.virtual_size - 10, 10) == bytes(10)


def test_differencing_child_reads_parent_where_it_holds_nothing(chain):
    base, child = chain
    whole_base = read_all(base)
    whole = read_all(child)
    assert whole[:MIB + 512] == whole_base[:MIB + 512]
    assert whole[MIB + 512 : 2 * MIB + 512] == pattern(MIB, 4)
    assert whole[10 * MIB : 13 * MIB] == pattern(3 * MIB, 5)
    assert whole[2 * MIB + 512 : 4 * MIB] == whole_base[2 * MIB + 512 : 4 * MIB]


def test_open_parent_option_names_the_parent(chain, tmp_path):
    base, child = chain
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    os.rename(base, moved / "renamed.vhd")
    with pytest.raises(vhdkit.ParentNotFound) as e:
        vhdkit.open(child)
    assert e.value.hresult == vhdkit.VM_E_PARENT_PATH_NOT_FOUND
    assert e.value.path == str(child)
    with vhdkit.open(child, parent=moved / "renamed.vhd") as d:
        assert d.read(0, 16) == pattern(16, 3)


def test_open_unknown_keyword_is_a_type_error(dyn):
    with pytest.raises(TypeError, match="stirct"):
        vhdkit.open(dyn, stirct=True)


def test_second_writer_is_refused_with_in_use(dyn):
    with vhdkit.open(dyn, writable=True):
        with pytest.raises(vhdkit.InUse) as e:
            vhdkit.open(dyn, writable=True)
    assert e.value.hresult == vhdkit.E_SHARING_VIOLATION
    assert e.value.path == str(dyn)
    vhdkit.open(dyn, writable=True).close()  # the lock went with the first


def test_closed_disk_raises_value_error_and_close_twice_is_harmless(dyn):
    d = vhdkit.open(dyn)
    assert d.closed is False
    d.close()
    d.close()
    assert d.closed is True
    assert d.virtual_size == 16 * MIB and d.path == str(dyn)
    for call in (lambda: d.read(0, 1), d.info, d.map, d.check, d.flush):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_context_manager_closes_and_keeps_the_exception(dyn):
    with pytest.raises(KeyError):
        with vhdkit.open(dyn) as d:
            raise KeyError("x")
    assert d.closed


def test_close_of_a_writable_disk_makes_it_durable_and_reopenable(tmp_path):
    path = tmp_path / "d.vhd"
    vhdkit.create(path, size=4 * MIB)
    d = vhdkit.open(path, writable=True)
    d.write(4096, b"durable")
    d.flush()
    d.close()
    assert vhdkit.open(path).read(4096, 7) == b"durable"


def test_discard_releases_whole_blocks_of_a_dynamic_disk(tmp_path):
    path = tmp_path / "d.vhd"
    vhdkit.create(path, size=8 * MIB, block_size=MIB)
    with vhdkit.open(path, writable=True) as d:
        d.write(0, pattern(3 * MIB))
        assert d.discard(MIB, MIB) == MIB
        assert d.read(MIB, MIB) == bytes(MIB)
        assert d.read(0, MIB) == pattern(MIB)
    assert vhdkit.info(path)["allocated_blocks"] == 2


def test_disk_properties_and_repr(dyn):
    with vhdkit.open(dyn, writable=True) as d:
        assert d.path == str(dyn)
        assert d.type == "dynamic"
        assert d.writable is True
        assert "dyn.vhd" in repr(d) and "writable" in repr(d)


def test_paths_may_be_pathlike_or_str(dyn):
    assert vhdkit.open(str(dyn)).virtual_size == vhdkit.open(dyn).virtual_size


def test_info_has_the_fields_of_info_json(chain, schema, cli):
    base, child = chain
    ours = vhdkit.info(child)
    schema(ours, "info")
    code, out, err = cli("info", child, "--json")
    assert code == 0, err
    import json

    theirs = json.loads(out)
    for volatile in ("host_free_disk_space",):
        ours.pop(volatile)
        theirs.pop(volatile)
    assert ours == theirs
    with vhdkit.open(child) as d:
        from_disk = d.info()
    schema(from_disk, "info")
    from_disk.pop("host_free_disk_space")
    assert from_disk == ours


def test_info_of_a_broken_chain_says_why(chain, schema):
    base, child = chain
    os.remove(base)
    info = vhdkit.info(child)
    schema(info, "info")
    assert info["parent"]["found"] is False
    assert "not found" in info["parent"]["error"]
    assert len(info["chain"]) == 1


def test_map_rows_are_map_json_rows(chain, schema, cli):
    base, child = chain
    with vhdkit.open(child) as d:
        rows = d.map()
        part = d.map(MIB, 2 * MIB)
    schema({"schema": 1, "rows": rows}, "map")
    import json

    code, out, err = cli("map", child, "--json")
    assert code == 0, err
    assert rows == json.loads(out)["rows"]
    kinds = {r["kind"] for r in rows}
    assert kinds == {"allocated", "parent", "zero"}
    assert sum(r["length"] for r in rows) == 16 * MIB
    assert part[0]["start"] == MIB
    assert sum(r["length"] for r in part) == 2 * MIB


def test_map_of_a_range_outside_the_disk_is_invalid_argument(dyn):
    with vhdkit.open(dyn) as d, pytest.raises(vhdkit.InvalidArgument):
        d.map(15 * MIB, 2 * MIB)


def test_reads_from_many_threads_of_one_disk_agree(dyn):
    want = read_all(dyn)
    results = []
    with vhdkit.open(dyn) as d:

        def reader(seed):
            for i in range(20):
                offset = ((seed * 31 + i * 17) % 15) * MIB
                results.append(d.read(offset, MIB) == want[offset : offset + MIB])

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results and all(results)
