"""Side by side: reading and writing a disk through the Python package vs the vhdkit
command line, and the GIL released during a long read. Run with the package installed:

    python python/benches/throughput.py [--size 1G] [--rounds 5] [--cli target/release/vhdkit]

Each round runs every case once, in turn (the machine is noisy: alternation spreads the
noise over all cases); medians are printed with their ratio to the CLI's. The disks
live in --dir (default /dev/shm, so that the device does not dominate), page cache
warm. Not a test: figures for python/README.md.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import vhdkit

MIB = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 10, "M": 20, "G": 30}
    if text[-1].upper() in units:
        return int(float(text[:-1]) * (1 << units[text[-1].upper()]))
    return int(text)


def make_source(folder: str, size: int) -> str:
    """A dynamic disk whose every block holds non-zero bytes."""
    path = os.path.join(folder, "src.vhd")
    vhdkit.create(path, size=size)
    unit = bytes((i * 13) % 251 + 1 for i in range(4096)) * (8 * MIB // 4096)
    with vhdkit.open(path, writable=True) as d:
        for offset in range(0, size, len(unit)):
            d.write(offset, unit[: size - offset])
    return path


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def cli_read(cli: str, path: str):
    with open(os.devnull, "wb") as null:
        subprocess.run([cli, "read", path], stdout=null, check=True)


def py_read(path: str, chunk: int):
    with vhdkit.open(path) as d:
        size = d.virtual_size
        for offset in range(0, size, chunk):
            d.read(offset, min(chunk, size - offset))


def cli_write(cli: str, path: str, raw: str):
    subprocess.run([cli, "write", path, "--offset", "0", "--input", raw], check=True, capture_output=True)


def py_write(path: str, data: bytes, chunk: int):
    with vhdkit.open(path, writable=True) as d:
        view = memoryview(data)
        for offset in range(0, len(data), chunk):
            d.write(offset, view[offset : offset + chunk] if chunk < len(data) else data)


def fresh(folder: str, size: int) -> str:
    path = os.path.join(folder, "dst.vhd")
    if os.path.exists(path):
        os.remove(path)
    vhdkit.create(path, size=size)
    return path


def gil_ticks(path: str):
    """Ticks a Python thread makes per second while idle and during one large read."""
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.3)
    idle_start, idle_end = time.monotonic() - 0.25, time.monotonic()
    with vhdkit.open(path) as d:
        start = time.monotonic()
        d.read(0, d.virtual_size)
        end = time.monotonic()
    stop.set()
    t.join()
    idle = sum(idle_start < x < idle_end for x in ticks) / (idle_end - idle_start)
    busy = sum(start < x < end for x in ticks) / (end - start)
    return idle, busy, end - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cli", default=os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "vhdkit"))
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    a = ap.parse_args()
    size = parse_size(a.size)
    with tempfile.TemporaryDirectory(dir=a.dir) as folder:
        src = make_source(folder, size)
        raw = os.path.join(folder, "src.raw")
        vhdkit.convert(src, raw, "raw").join()
        with open(raw, "rb") as f:
            data = f.read()
        cases = {
            "read  CLI (4 MiB chunks, to /dev/null)": lambda: cli_read(a.cli, src),
            "read  Python, 1 MiB chunks": lambda: py_read(src, MIB),
            "read  Python, 4 MiB chunks": lambda: py_read(src, 4 * MIB),
            "read  Python, 64 MiB chunks": lambda: py_read(src, 64 * MIB),
            "write CLI (--input a raw file)": lambda: cli_write(a.cli, fresh(folder, size), raw),
            "write Python, 4 MiB chunks (from memory)": lambda: py_write(fresh(folder, size), data, 4 * MIB),
        }
        times = {name: [] for name in cases}
        for _ in range(a.rounds):
            for name, run in cases.items():
                times[name].append(timed(run))
        print(f"vhdkit {vhdkit.__version__}, Python {sys.version.split()[0]}, {size // MIB} MiB, "
              f"{a.rounds} rounds, in {a.dir or tempfile.gettempdir()}")
        base = {"read": None, "write": None}
        for name, ts in times.items():
            med = statistics.median(ts)
            kind = name.split()[0]
            if base[kind] is None:
                base[kind] = med
            print(f"{name:45} median {size / med / MIB:8.0f} MiB/s  "
                  f"({med * 1000:7.1f} ms, x{base[kind] / med:.2f} of the CLI)")
        idle, busy, secs = gil_ticks(src)
        print(f"GIL: a Python thread ticks {idle:.0f}/s idle and {busy:.0f}/s during a "
              f"{secs * 1000:.0f} ms read of {size // MIB} MiB")


if __name__ == "__main__":
    main()
