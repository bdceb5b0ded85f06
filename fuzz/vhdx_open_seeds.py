"""Seeds of the vhdx_open fuzz target from whole VHDX files (seed.sh runs it).

    python3 vhdx_open_seeds.py OUT_DIR FILE...

Each file becomes inputs that turn the target's templates into it as far as the first
16 MiB go: the file's length (when the target allows it), then its header section,
metadata region, BAT and log as patches of at most 255 bytes (the runs of non-zero
bytes; anchor 0, the file's start). One input per template, read-only and writable.
Standard library only.
"""
import os
import struct
import sys
import uuid

BAT = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
MD = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
LIMIT = 1 << 24  # offsets are 24-bit
TEMPLATES = 6


def runs(b, base):
    """(offset, bytes) of the non-zero runs of b (gaps under 8 bytes merged)."""
    i, n = 0, len(b)
    while i < n:
        while i < n and b[i] == 0:
            i += 1
        if i >= n:
            return
        j = i
        zeros = 0
        while j < n and j - i < 255:
            zeros = zeros + 1 if b[j] == 0 else 0
            if zeros >= 8:
                j -= 7
                break
            j += 1
        yield base + i, b[i:j]
        i = j


def patches(path):
    b = open(path, "rb").read()
    if len(b) < 0x50000 or b[:8] != b"vhdxfile":
        return None
    areas = [(0, 0x50000)]
    rt = b[0x30000:0x40000]
    count = struct.unpack_from("<I", rt, 8)[0]
    for i in range(min(count, 64)):
        e = rt[16 + 32 * i:48 + 32 * i]
        off, ln = struct.unpack_from("<QI", e, 16)
        areas.append((off, min(ln, 1 << 20)))
    for at in (0x10000, 0x20000):
        ll, lo = struct.unpack_from("<IQ", b, at + 68)
        if b[at:at + 4] == b"head" and ll:
            areas.append((lo, min(ll, 1 << 20)))
    out = bytearray()
    if len(b) // 1024 < LIMIT:
        out += bytes([0xFF]) + (len(b) // 1024).to_bytes(3, "little")
    for off, ln in sorted(set(areas)):
        for at, run in runs(b[off:off + ln], off):
            if at + len(run) >= LIMIT:
                continue
            out += bytes([0]) + at.to_bytes(3, "little") + bytes([len(run)]) + run
    return bytes(out)


def main():
    out = sys.argv[1]
    for path in sys.argv[2:]:
        p = patches(path)
        if p is None or len(p) > (1 << 20) - 2:
            continue
        name = os.path.basename(path)
        for t in range(TEMPLATES):
            for flags in (0x00, 0x01):
                dst = os.path.join(out, f"{name}-t{t}-f{flags}")
                with open(dst, "wb") as f:
                    f.write(bytes([t, flags]) + p)


main()
