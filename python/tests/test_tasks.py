"""The operations as tasks: Task's IVMTask2 members, reports, progress events,
cancel, the GIL released while a task runs and is waited on, asyncio."""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import vhdkit
from helpers import MIB, file_digest, pattern, read_all


def finished(task):
    """Waits for `task` and returns its report (a success is required)."""
    assert task.wait_for_completion(-1) is True
    assert task.error == 0, task.error_description
    return task.result


def midrun(task):
    """Waits until `task` has done part of its work (an event with a percentage above
    0 that is not final); returns that event."""
    for event in task.events():
        assert not event["final"], f"the task ended before it was cancelled: {event}"
        if event["percent"] > 0:
            return event
    raise AssertionError("no events")


class Ticker:
    """A Python thread noting the time every millisecond: it can only run while no
    other thread holds the GIL."""

    def __init__(self):
        self.ticks = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.ticks.append(time.monotonic())
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def between(self, start, end):
        return [t for t in self.ticks if start < t < end]


def test_compact_returns_a_task_with_the_ivmtask2_members(tmp_path, schema):
    path = tmp_path / "d.vhd"
    vhdkit.create(path, size=16 * MIB, block_size=MIB)
    with vhdkit.open(path, writable=True) as d:
        d.write(0, pattern(MIB))
        d.write(4 * MIB, bytes(2 * MIB))  # two allocated blocks of zeros
    before = os.path.getsize(path)
    task = vhdkit.compact(path)
    assert isinstance(task, vhdkit.Task)
    assert isinstance(task.id, int) and task.id > 0
    assert task.description == f"Compacting {path}"
    assert task.is_cancelable is True
    report = finished(task)
    assert task.is_complete is True
    assert task.percent_completed == 100
    assert task.task_result == "success"
    assert task.error_description == ""
    assert task.elapsed > 0
    assert "success" in repr(task)
    schema(report, "report")
    assert report["operation"] == "compact"
    assert report["blocks_released"] == 2
    assert report["file_size_before"] == before > report["file_size_after"]
    assert report["file_size_after"] == os.path.getsize(path)
    assert read_all(path)[:MIB] == pattern(MIB)
    assert task.join() == report


def test_task_ids_increase(dyn, tmp_path):
    a = vhdkit.convert(dyn, tmp_path / "a.vhd", "dynamic")
    b = vhdkit.convert(dyn, tmp_path / "b.vhd", "dynamic")
    assert b.id > a.id
    a.join(), b.join()


def test_compact_dry_run_writes_nothing(dyn, schema):
    with vhdkit.open(dyn, writable=True) as d:
        d.write(0, bytes(MIB))
    digest = file_digest(dyn)
    report = vhdkit.compact(dyn, dry_run=True).join()
    schema(report, "report")
    assert report["dry_run"] is True and report["blocks_released"] == 1
    assert file_digest(dyn) == digest


def test_compact_of_a_differencing_disk_deduplicates_against_its_parent(chain):
    base, child = chain
    with vhdkit.open(child, writable=True) as d:
        d.write(0, read_all(base)[:MIB])  # the parent's bytes again
    want = read_all(child)
    kept = vhdkit.compact(child, dedupe=False).join()
    assert kept["blocks_deduplicated"] == 0
    report = vhdkit.compact(child).join()
    assert report["blocks_deduplicated"] >= 1
    assert read_all(child) == want


@pytest.mark.parametrize("kind", ["fixed", "dynamic", "raw"])
def test_convert_flattens_a_chain_into_each_type(chain, tmp_path, schema, kind):
    base, child = chain
    dst = tmp_path / f"flat.{kind}"
    task = vhdkit.convert(child, dst, kind, verify=True)
    assert task.description.startswith(f"Converting {child} to {kind}")
    report = task.join()
    schema(report, "report")
    assert report["operation"] == "convert"
    assert report["verified"] is True
    assert report["path"] == str(dst)
    assert report["blocks_copied"] + report["blocks_zero"] == report["blocks_total"]
    want = read_all(child)
    if kind == "raw":
        assert dst.read_bytes() == want
    else:
        assert read_all(dst) == want
        assert vhdkit.info(dst)["disk_type"] == kind


def test_convert_options_block_size_align_replace_and_raw_source(tmp_path):
    raw = tmp_path / "disk.img"
    raw.write_bytes(pattern(3 * MIB + 512, 8))
    dst = tmp_path / "out.vhd"
    dst.write_bytes(b"old")
    with pytest.raises(vhdkit.AlreadyExists) as e:
        vhdkit.convert(raw, dst, "dynamic")
    assert e.value.hresult == vhdkit.E_ALREADY_EXISTS and isinstance(e.value, FileExistsError)
    report = vhdkit.convert(
        raw, dst, "dynamic", block_size=64 << 10, align=MIB, replace=True, source_format="raw"
    ).join()
    info = vhdkit.info(dst)
    assert info["block_size"] == 64 << 10
    assert info["virtual_size"] == 4 * MIB
    assert read_all(dst)[: 3 * MIB + 512] == raw.read_bytes()
    assert report["file_size_after"] == os.path.getsize(dst)
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.convert(raw, tmp_path / "x.vhd", "fixed", block_size=MIB)
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.convert(raw, tmp_path / "x.vhd", "qcow2")
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.convert(raw, tmp_path / "x.vhd", "dynamic", align=100)
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.convert(raw, tmp_path / "x.vhd", "fixed", fs_aware=True)
    assert not (tmp_path / "x.vhd").exists()


def test_convert_fs_aware_without_a_file_system_leaves_nothing_out(tmp_path, schema):
    # No partition table and no file system: the whole disk counts as used.
    src = tmp_path / "src.vhd"
    vhdkit.create(src, size=8 * MIB)
    with vhdkit.open(src, writable=True) as d:
        d.write(0, pattern(MIB))
    report = vhdkit.convert(src, tmp_path / "out.vhd", "dynamic", fs_aware=True).join()
    schema(report, "report")
    assert report["partition_table"] == "unrecognised"
    assert report["partitions"] == []
    assert report["blocks_unused"] == 0


@pytest.fixture
def ext4_disk(tmp_path):
    """A dynamic disk holding an ext4 file system over the whole disk (mkfs.ext4 on a
    raw image, converted), mostly free."""
    raw = tmp_path / "fs.img"
    with open(raw, "wb") as f:
        f.truncate(64 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0", str(raw)], check=True)
    disk = tmp_path / "fs.vhd"
    vhdkit.convert(raw, disk, "dynamic", source_format="raw").join()
    raw.unlink()
    return disk


def test_fs_aware_reports_the_partitions_as_the_cli_does(ext4_disk, tmp_path, schema, cli):
    ours = vhdkit.convert(ext4_disk, tmp_path / "ours.vhd", "dynamic", fs_aware=True).join()
    schema(ours, "report")
    code, out, err = cli("convert", ext4_disk, tmp_path / "cli.vhd", "--type", "dynamic", "--fs-aware", "--json")
    assert code == 0, err
    theirs = json.loads(out)
    assert ours["partition_table"] == theirs["partition_table"] == "none"
    assert ours["partitions"] == theirs["partitions"]
    [whole] = ours["partitions"]
    assert whole["fs"] == "ext4" and whole["index"] == 0
    assert 0 < whole["released_bytes"] <= whole["free_bytes"]
    assert ours["blocks_unused"] > 0
    compacted = vhdkit.compact(ext4_disk, fs_aware=True, dry_run=True).join()
    schema(compacted, "report")
    assert compacted["partitions"][0]["fs"] == "ext4"


def test_merge_writes_the_child_into_its_parent(chain, schema):
    base, child = chain
    want = read_all(child)
    report = vhdkit.merge(child).join()
    schema(report, "report")
    assert report["operation"] == "merge"
    assert report["path"] == str(base)
    assert read_all(base) == want
    assert read_all(child) == want


def test_merge_into_an_ancestor_by_depth_and_by_path(chain, tmp_path, schema):
    base, child = chain
    top = tmp_path / "top.vhd"
    vhdkit.create(top, parent=child)
    with vhdkit.open(top, writable=True) as d:
        d.write(7 * MIB, b"top")
    want = read_all(top)
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.merge(top, into=base, depth=2)
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.merge(top, depth=0)
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.merge(top, keep_intermediates=True)
    report = vhdkit.merge(top, depth=2).join()
    schema(report, "report")
    assert report["operation"] == "merge-into"
    assert report["path"] == str(base)
    assert read_all(base) == want
    assert read_all(top) == want
    assert not child.exists(), "the intermediate is removed"


def test_merge_refuses_when_another_disk_depends_on_the_parent(chain, tmp_path):
    base, child = chain
    sibling = tmp_path / "sibling.vhd"
    vhdkit.create(sibling, parent=base)
    digest = file_digest(base)
    with pytest.raises(vhdkit.HasChildren) as e:
        vhdkit.merge(child)
    assert e.value.hresult == vhdkit.E_SHARING_VIOLATION
    assert e.value.children == [str(sibling)]
    assert isinstance(e.value, vhdkit.InUse)
    assert file_digest(base) == digest
    vhdkit.merge(child, force=True).join()


def test_merge_delete_child_removes_it(chain):
    base, child = chain
    want = read_all(child)
    vhdkit.merge(child, delete_child=True).join()
    assert not child.exists()
    assert read_all(base) == want


def test_merge_of_a_dynamic_disk_is_wrong_disk_type(dyn):
    with pytest.raises(vhdkit.WrongDiskType) as e:
        vhdkit.merge(dyn)
    assert e.value.hresult == vhdkit.VM_E_WRONG_HD_IMAGE_TYPE


def test_merge_to_flattens_into_a_new_file(chain, tmp_path, schema):
    base, child = chain
    dst = tmp_path / "flat.vhd"
    report = vhdkit.merge_to(child, dst, "dynamic", block_size=512 << 10).join()
    schema(report, "report")
    assert report["operation"] == "merge-to"
    assert read_all(dst) == read_all(child)
    with pytest.raises(vhdkit.WrongDiskType):
        vhdkit.merge_to(base, tmp_path / "x.vhd", "fixed")


def test_resize_grows_and_shrinks_only_when_allowed(dyn, schema):
    with vhdkit.open(dyn, writable=True) as d:
        d.write(12 * MIB, b"cut by the shrink")
    want = read_all(dyn)
    report = vhdkit.resize(dyn, 32 * MIB).join()
    schema(report, "report")
    assert report["operation"] == "resize"
    assert (report["size_before"], report["size_after"]) == (16 * MIB, 32 * MIB)
    assert read_all(dyn) == want + bytes(16 * MIB)
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.resize(dyn)
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.resize(dyn, 8 * MIB, sparse=True)  # sparse= is for fixed disks
    with pytest.raises(vhdkit.VhdError) as e:
        vhdkit.resize(dyn, 8 * MIB)
    assert e.value.hresult != 0
    report = vhdkit.resize(dyn, 8 * MIB, allow_shrink=True).join()
    assert report["nonzero_bytes_cut"] > 0
    assert read_all(dyn) == want[: 8 * MIB]


def test_resize_to_minimum_without_a_partition_table_is_not_allowed(dyn):
    with pytest.raises(vhdkit.NotAllowed) as e:
        vhdkit.resize(dyn, to_minimum=True)
    assert e.value.hresult == vhdkit.E_ACCESSDENIED
    assert "partition" in str(e.value)


def test_resize_align_rounds_the_current_size_up(tmp_path):
    path = tmp_path / "f.vhd"
    vhdkit.create(path, "fixed", 3 * MIB + 512)
    vhdkit.resize(path, align=MIB).join()
    assert vhdkit.open(path).virtual_size == 4 * MIB


@pytest.mark.parametrize("kind", ["fixed", "dynamic", "raw"])
def test_measure_is_the_size_convert_writes(chain, tmp_path, schema, kind):
    base, child = chain
    m = vhdkit.measure(child, kind)
    schema(m, "measure")
    assert m["path"] == str(child) and m["target"] == kind
    report = vhdkit.convert(child, tmp_path / "out", kind).join()
    assert m["required_bytes"] == report["file_size_after"]
    if kind == "dynamic":
        assert m["allocated_blocks"] == report["blocks_copied"]
    else:
        assert m["block_size"] is None
    with pytest.raises(vhdkit.InvalidArgument):
        vhdkit.measure(child, "fixed", block_size=MIB)


def test_events_have_the_fields_of_progress_json(big_source, tmp_path, schema):
    task = vhdkit.convert(big_source, tmp_path / "out.vhd", "dynamic")
    events = list(task.events())
    assert len(events) > 2
    for e in events:
        schema(e, "progress-event")
        assert e["task_id"] == task.id
    percents = [e["percent"] for e in events]
    assert percents == sorted(percents), "the percentage never goes down"
    assert all(e["percent"] < 100 for e in events[:-1])
    last = events[-1]
    assert last["final"] is True and last["result"] == "success" and last["percent"] == 100
    assert [e for e in events if e["final"]] == [last]
    assert {e["phase"] for e in events} >= {"copy", "finish"}
    task.join()


def test_events_after_completion_give_the_final_state_and_end(dyn, tmp_path):
    task = vhdkit.convert(dyn, tmp_path / "out.vhd", "fixed")
    task.join()
    events = list(task.events())
    assert events[-1]["final"] is True and events[-1]["result"] == "success"
    it = task.events()
    list(it)
    assert list(it) == [], "an iterator that ended stays ended"


def test_slow_event_reader_loses_intermediate_events_not_the_final_one(big_source, tmp_path):
    task = vhdkit.convert(big_source, tmp_path / "out.vhd", "dynamic")
    events = task.events(capacity=1)
    task.wait_for_completion(-1)
    received = list(events)
    assert received[-1]["final"] is True
    assert sum(e["lost"] for e in received) > 0


def test_percent_reaches_100_only_with_completion(big_source, tmp_path):
    task = vhdkit.convert(big_source, tmp_path / "out.vhd", "fixed", verify=True)
    samples = []
    while True:
        percent = task.percent_completed  # first the percentage, then whether complete
        complete = task.is_complete
        samples.append((percent, complete))
        if complete:
            break
        time.sleep(0.002)
    assert any(0 < p < 100 for p, _ in samples), "seen part way"
    assert all(c for p, c in samples if p == 100), "100 only once complete"
    assert [p for p, _ in samples] == sorted(p for p, _ in samples)
    assert task.percent_completed == 100 and task.task_result == "success"


def test_cancelled_conversion_leaves_no_output_and_the_source_unchanged(big_source, tmp_path):
    digest = file_digest(big_source)
    dst = tmp_path / "out.vhd"
    task = vhdkit.convert(big_source, dst, "fixed", verify=True)
    midrun(task)
    task.cancel()
    assert task.wait_for_completion(-1) is True
    assert task.error == vhdkit.E_ABORT == 0x80004004
    assert task.task_result == "cancelled"
    assert task.result is None
    assert task.percent_completed < 100
    assert task.error_description != ""
    assert not dst.exists()
    assert os.listdir(tmp_path) == [], "no temporary file left behind"
    assert file_digest(big_source) == digest
    with pytest.raises(vhdkit.Cancelled) as e:
        task.join()
    assert e.value.hresult == vhdkit.E_ABORT
    assert e.value.kind == "cancelled"
    final = list(task.events())[-1]
    assert final["final"] and final["result"] == "cancelled" and final["percent"] < 100
    task.cancel()  # once complete: does nothing
    assert task.task_result == "cancelled"


def test_cancelled_merge_to_leaves_no_output(big_source, tmp_path):
    child = tmp_path / "child.vhd"
    vhdkit.create(child, parent=big_source)
    digests = file_digest(big_source), file_digest(child)
    dst = tmp_path / "flat.vhd"
    task = vhdkit.merge_to(child, dst, "dynamic")
    midrun(task)
    task.cancel()
    with pytest.raises(vhdkit.Cancelled):
        task.join()
    assert task.error == vhdkit.E_ABORT
    assert not dst.exists()
    assert sorted(os.listdir(tmp_path)) == ["child.vhd"]
    assert (file_digest(big_source), file_digest(child)) == digests


def test_cancelled_compact_leaves_the_disk_reading_the_same(big_source, tmp_path):
    path = tmp_path / "copy.vhd"
    vhdkit.convert(big_source, path, "dynamic").join()
    with vhdkit.open(path, writable=True) as d:
        for offset in range(0, 64 * MIB, 2 * MIB):  # blocks of zeros to release
            d.write(offset, bytes(2 * MIB))
    want = read_all(path)
    task = vhdkit.compact(path)
    midrun(task)
    task.cancel()
    task.wait_for_completion(-1)
    assert task.error == vhdkit.E_ABORT
    assert read_all(path) == want
    assert [p for p in vhdkit.check(path) if p.severity == "error"] == []


def test_cancel_after_success_changes_nothing(dyn, tmp_path):
    task = vhdkit.convert(dyn, tmp_path / "out.vhd", "dynamic")
    report = task.join()
    task.cancel()
    assert task.task_result == "success" and task.error == 0
    assert task.result == report


def test_wait_for_completion_with_a_timeout_returns_false_while_running(big_source, tmp_path):
    task = vhdkit.convert(big_source, tmp_path / "out.vhd", "fixed", verify=True)
    assert task.wait_for_completion(0) is False
    assert task.is_complete is False
    assert task.result is None and task.task_result is None
    assert task.error == 0 and task.error_description == ""
    start = time.monotonic()
    assert task.wait_for_completion(50) is False
    assert time.monotonic() - start >= 0.045
    assert task.wait_for_completion(None) is True
    assert task.wait_for_completion(0) is True


def test_failure_while_working_is_reported_through_the_task(dyn):
    # /dev/full takes a raw result in place (a device) and fails every write: ENOSPC.
    task = vhdkit.convert(dyn, "/dev/full", "raw")
    task.wait_for_completion(-1)
    assert task.error == vhdkit.E_DISK_FULL
    assert task.task_result == "disk_related_error"
    assert task.result is None
    assert "/dev/full" in task.error_description
    with pytest.raises(vhdkit.DiskFull) as e:
        task.join()
    assert e.value.hresult == vhdkit.E_DISK_FULL
    assert e.value.path == "/dev/full"


def test_another_thread_runs_during_a_long_wait_for_completion(big_source, tmp_path):
    task = vhdkit.convert(big_source, tmp_path / "out.vhd", "fixed", verify=True)
    with Ticker() as ticker:
        start = time.monotonic()
        complete = task.wait_for_completion(400)
        end = time.monotonic()
    task.cancel()
    task.wait_for_completion(-1)
    assert not complete, "the conversion takes longer than the wait"
    assert end - start >= 0.39
    inside = ticker.between(start + 0.05, end - 0.05)
    # The ticker notes the time about every millisecond when it gets the GIL (less
    # often on a loaded machine); held by the wait, it would note none.
    assert len(inside) > 10, f"only {len(inside)} ticks in {end - start:.2f} s"


def test_another_thread_runs_while_the_task_runs_and_during_join(big_source, tmp_path):
    with Ticker() as ticker:
        start = time.monotonic()
        task = vhdkit.convert(big_source, tmp_path / "out.vhd", "fixed")
        report = task.join()
        end = time.monotonic()
    assert report["elapsed"] > 0.1
    assert len(ticker.between(start + 0.02, end - 0.02)) > 20


def test_another_thread_runs_during_a_long_read_and_write(big_source, tmp_path):
    with vhdkit.open(big_source) as d, Ticker() as ticker:
        start = time.monotonic()
        data = d.read(0, d.virtual_size)
        end = time.monotonic()
    assert len(data) == d.virtual_size
    assert len(ticker.between(start + 0.01, end - 0.01)) > 5, f"read took {end - start:.3f} s"
    path = tmp_path / "w.vhd"
    vhdkit.create(path, size=len(data))
    with vhdkit.open(path, writable=True) as w, Ticker() as ticker:
        start = time.monotonic()
        w.write(0, data)
        end = time.monotonic()
    assert len(ticker.between(start + 0.01, end - 0.01)) > 5, f"write took {end - start:.3f} s"


def test_await_gives_the_report(chain, tmp_path, schema):
    base, child = chain

    async def main():
        a = vhdkit.convert(child, tmp_path / "a.vhd", "fixed")
        b = vhdkit.merge_to(child, tmp_path / "b.vhd", "dynamic")
        return await asyncio.gather(a, b)

    ra, rb = asyncio.run(main())
    schema(ra, "report")
    assert (ra["operation"], rb["operation"]) == ("convert", "merge-to")
    assert read_all(tmp_path / "a.vhd") == read_all(tmp_path / "b.vhd") == read_all(child)


def test_await_of_a_failing_task_raises_its_error(dyn):
    async def main():
        return await vhdkit.convert(dyn, "/dev/full", "raw")

    with pytest.raises(vhdkit.DiskFull):
        asyncio.run(main())


def test_await_keeps_the_event_loop_running(big_source, tmp_path):
    async def main():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.ensure_future(tick())
        await vhdkit.convert(big_source, tmp_path / "out.vhd", "dynamic")
        ticker.cancel()
        return ticks

    assert asyncio.run(main()) > 10


def test_cancelling_the_awaiting_coroutine_cancels_the_task(big_source, tmp_path):
    dst = tmp_path / "out.vhd"
    holder = {}

    async def main():
        task = holder["task"] = vhdkit.convert(big_source, dst, "fixed", verify=True)
        await asyncio.wait_for(task, timeout=0.05)

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(main())
    task = holder["task"]
    assert task.wait_for_completion(-1)
    assert task.error == vhdkit.E_ABORT
    assert not dst.exists()


SCRIPT_EXITS_WITHOUT_WAITING = """
import sys, vhdkit
task = vhdkit.convert(sys.argv[1], sys.argv[2], "dynamic")
next(e for e in task.events() if e["percent"] > 0)
print(task.id, flush=True)
"""


@pytest.fixture
def no_tmpfile_dir(tmp_path):
    """A folder where files cannot be created unnamed (no O_TMPFILE), so a new file is
    written under a temporary name: an NTFS image mounted with ntfs-3g (FUSE; needs
    root, as CI runs)."""
    image, mountpoint = tmp_path / "ntfs.img", tmp_path / "mnt"
    mountpoint.mkdir()
    with open(image, "wb") as f:
        f.truncate(256 * MIB)
    subprocess.run(["mkfs.ntfs", "-F", "-f", "-q", str(image)], check=True, capture_output=True)
    subprocess.run(["ntfs-3g", str(image), str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_script_that_exits_without_waiting_cancels_its_tasks(tmp_path, no_tmpfile_dir):
    src = tmp_path / "src.vhd"
    vhdkit.create(src, size=128 * MIB)
    with vhdkit.open(src, writable=True) as d:
        d.write(0, pattern(128 * MIB, 11))
    dst = no_tmpfile_dir / "out.vhd"
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT_EXITS_WITHOUT_WAITING, str(src), str(dst)],
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr.decode()
    # Killed at exit, the conversion would leave its temporary file (.out.vhd.*); the
    # task cancelled at exit removes it.
    assert [n for n in os.listdir(no_tmpfile_dir) if not n.startswith("$")] == []


SCRIPT_INTERRUPTED = """
import os, signal, sys, threading, vhdkit
# Python leaves SIGINT ignored when it starts with it ignored (a job started with & by a
# shell without job control): Ctrl-C is what this script is about.
signal.signal(signal.SIGINT, signal.default_int_handler)
task = vhdkit.convert(sys.argv[1], sys.argv[2], "fixed", verify=True)
next(e for e in task.events() if e["percent"] > 0)
threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
try:
    task.wait_for_completion(-1)
    print("not interrupted")
except KeyboardInterrupt:
    print(task.is_complete, task.task_result, hex(task.error))
"""


def test_keyboard_interrupt_during_a_wait_cancels_the_task(big_source, tmp_path):
    dst = tmp_path / "out.vhd"
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT_INTERRUPTED, str(big_source), str(dst)],
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().split() == ["True", "cancelled", "0x80004004"]
    assert not dst.exists()
