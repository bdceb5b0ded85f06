#!/usr/bin/env bash
# Remakes the committed seeds of the VHDX fuzz targets (seeds/vhdx_*/qemu-*) from files
# qemu-img and qemu-io write: the header section (first 320 KiB), the metadata region
# (its table and items), the BAT behind a config naming the file's geometry, and the
# log qemu leaves after a write (its log GUID set by the config flag). The synthetic
# seeds (vhdkit's own encoders: differencing metadata, wrapping log entries, sector
# bitmaps) come from `cargo run --example seedgen -- vhdx seeds`.
#
# Needs qemu-img and qemu-io (qemu-utils), python3 (standard library only) and cargo.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mk() { qemu-img create -q -f vhdx -o "$2" "$work/$1.vhdx" "$3"; }
mk dynamic-zero subformat=dynamic,block_size=1M 16M
mk dynamic-plain subformat=dynamic,block_size=1M,block_state_zero=off 16M
mk dynamic-default subformat=dynamic 100M
mk fixed-8m subformat=fixed,block_size=8M,block_state_zero=off 16M
mk written subformat=dynamic,block_size=2M 16M
qemu-io -f vhdx -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 5M 64k' "$work/written.vhdx" > /dev/null
mkdir -p "$here"/seeds/vhdx_{header,metadata,bat,log}
python3 - "$here/seeds" "$work"/*.vhdx <<'PY'
import os, struct, sys, uuid
out, files = sys.argv[1], sys.argv[2:]
BAT = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
MD = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
def put(target, name, data):
    with open(os.path.join(out, target, "qemu-" + name), "wb") as f:
        f.write(data)
for path in files:
    name = os.path.basename(path)[:-5]
    b = open(path, "rb").read()
    put("vhdx_header", name, b[:320 * 1024].rstrip(b"\0"))
    rt = b[0x30000:0x40000]
    regions = {}
    for i in range(struct.unpack_from("<I", rt, 8)[0]):
        e = rt[16 + 32 * i:48 + 32 * i]
        regions[uuid.UUID(bytes_le=e[:16])] = struct.unpack_from("<QI", e, 16)
    mo, ml = regions[MD]
    md = b[mo:mo + ml]
    end = 0x10000
    for i in range(struct.unpack_from("<H", md, 10)[0]):
        off, ln = struct.unpack_from("<II", md, 32 + 32 * i + 16)
        end = max(end, off + ln)
    put("vhdx_metadata", name, md[:end])
    # The geometry vhdx_bat's config encodes: virtual size in MiB, block size shift,
    # 512-byte sectors, no parent, file length in 1/16 MiB, log at 1 MiB.
    items = {}
    for i in range(struct.unpack_from("<H", md, 10)[0]):
        e = md[32 + 32 * i:64 + 32 * i]
        off, ln = struct.unpack_from("<II", e, 16)
        items[uuid.UUID(bytes_le=e[:16])] = md[off:off + ln]
    bs = struct.unpack_from("<I", items[uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")])[0]
    vs = struct.unpack_from("<Q", items[uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")])[0]
    cfg = struct.pack("<I4BII", vs >> 20, bs.bit_length() - 21, 0, 0, 0, (len(b) * 16) >> 20, 0)
    cfg += b"\0" * (24 - len(cfg))
    bo, bl = regions[BAT]
    table = b[bo:bo + bl].rstrip(b"\0")
    table += b"\0" * (-len(table) % 8)
    put("vhdx_bat", name, cfg + table)
    ll, lo = struct.unpack_from("<IQ", b, 0x10000 + 68)
    log = b[lo:lo + ll]
    if log[:4] == b"loge":
        used = len(log.rstrip(b"\0"))
        log = log[:(used + 4095) // 4096 * 4096]
        cfg = struct.pack("<QB", len(b), 1) + b"\0" * 23
        put("vhdx_log", name, cfg + log)
PY
(cd "$here" && cargo run -q --release --example vhdx_seedgen -- "$here/seeds")
ls "$here"/seeds/vhdx_*/ | grep -c . | xargs echo "VHDX seeds:"
