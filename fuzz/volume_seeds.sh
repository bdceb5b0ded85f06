#!/usr/bin/env bash
# Makes the seeds of the volume_* targets under seeds/volume_*/: small real disks made
# by mkfs.ext4/ext2, mkfs.vfat, mkfs.ntfs, mkswap and sfdisk (run as root: loop devices),
# encoded in the sparse format of src/volume.rs (their non-zero sectors).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
tmp="$(mktemp -d)"
loops=()
cleanup() { for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
encode() { # image -> seed file
    python3 - "$1" "$2" <<'PY'
import sys, struct
img = open(sys.argv[1], 'rb').read()
n = len(img) // 512
out = bytearray(struct.pack('<I', n))
s = 0
while s < n:
    if not any(img[s*512:(s+1)*512]):
        s += 1; continue
    a = s
    sec = img[s*512:(s+1)*512]
    if sec == bytes([sec[0]]) * 512:
        while s < n and img[s*512:(s+1)*512] == sec:
            s += 1
        if s - a >= 4:
            out += struct.pack('<IHIB', a, 0xFFFF, s - a, sec[0])
            continue
        s = a
    while s < n and s - a < 127 and any(img[s*512:(s+1)*512]):
        s += 1
    out += struct.pack('<IH', a, (s - a) * 512) + img[a*512:s*512]
open(sys.argv[2], 'wb').write(out)
PY
}
mkdir -p "$tmp/files" && for i in 1 2 3; do head -c $((i * 20000)) /dev/urandom > "$tmp/files/f$i"; done
img() { rm -f "$tmp/i.img"; truncate -s "$1" "$tmp/i.img"; }
put() { mkdir -p "seeds/$1"; encode "$tmp/i.img" "seeds/$1/$2"; }

img 16M; mkfs.ext4 -q -F -d "$tmp/files" "$tmp/i.img"; put volume_ext ext4; put volume_scan ext4
img 16M; mkfs.ext4 -q -F -O ^flex_bg "$tmp/i.img"; put volume_ext ext4-noflex
img 8M; mkfs.ext4 -q -F -b 1024 -O 64bit,metadata_csum "$tmp/i.img"; put volume_ext ext4-1k-64bit
img 8M; mkfs.ext2 -q -F -d "$tmp/files" "$tmp/i.img"; put volume_ext ext2
img 4M; mkfs.vfat -F 12 "$tmp/i.img" >/dev/null; MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/i.img" "$tmp/files/f1" ::/f1; put volume_fat fat12
img 16M; mkfs.vfat -F 16 -s 1 "$tmp/i.img" >/dev/null; put volume_fat fat16; put volume_scan fat16
img 40M; mkfs.vfat -F 32 -s 1 "$tmp/i.img" >/dev/null; MTOOLS_SKIP_CHECK=1 mcopy -i "$tmp/i.img" "$tmp/files/f2" ::/f2; put volume_fat fat32
img 8M; mkfs.ntfs -q -f -F "$tmp/i.img" >/dev/null 2>&1; put volume_ntfs ntfs; put volume_scan ntfs
img 4M; mkswap "$tmp/i.img" >/dev/null 2>&1; put volume_swap swap
# Partitioned disks: MBR with a logical partition, GPT.
img 40M
printf 'label: dos\n1MiB,12MiB,83\n,,5\n,8MiB,6\n,8MiB,82\n' | sfdisk -q "$tmp/i.img"
l=$(losetup -f --show -o $((1<<20)) --sizelimit $((12<<20)) "$tmp/i.img"); loops+=("$l"); mkfs.ext4 -q -F "$l"
l=$(losetup -f --show -o $((14<<20)) --sizelimit $((8<<20)) "$tmp/i.img"); loops+=("$l"); mkfs.vfat -F 16 -s 1 "$l" >/dev/null
l=$(losetup -f --show -o $((23<<20)) --sizelimit $((8<<20)) "$tmp/i.img"); loops+=("$l"); mkswap "$l" >/dev/null
put volume_scan mbr-logical
img 40M
printf 'label: gpt\n,12MiB,L\n,16MiB,EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n,8MiB,S\n' | sfdisk -q "$tmp/i.img"
l=$(losetup -f --show -o $((1<<20)) --sizelimit $((12<<20)) "$tmp/i.img"); loops+=("$l"); mkfs.ext2 -q -F "$l"
l=$(losetup -f --show -o $((13<<20)) --sizelimit $((16<<20)) "$tmp/i.img"); loops+=("$l"); mkfs.ntfs -q -f -F "$l" >/dev/null 2>&1
l=$(losetup -f --show -o $((29<<20)) --sizelimit $((8<<20)) "$tmp/i.img"); loops+=("$l"); mkswap "$l" >/dev/null
put volume_scan gpt
du -sh seeds/volume_*
