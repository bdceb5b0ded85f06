#!/usr/bin/env bash
# The figures of README.md's "Filesystem-aware compaction" table: for each file system, a
# raw disk (MBR, one partition) made by the real mkfs, filled with files through a loop
# mount (ntfs-3g, mtools for FAT), a third of them deleted, converted to a dynamic VHD;
# then
#   - the size after `compact --fs-aware`, against the reference: the same disk with its
#     free space zero-filled from inside (a file of zeros written until the file system
#     is full, then deleted), converted and compacted plainly;
#   - the time of `compact --fs-aware` against a plain `compact` of the same VHD
#     (medians of RUNS runs, each on a fresh copy, page cache warm for both), and
#     of that the `volumes` phase (reading the partition table and the file system).
# Needs root and the tools .ci/run installs. Usage: benches/fs_aware.sh [SIZE_MIB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
runs=${2:-5}
cargo build --release -q --bin vhdkit
vhdkit=$PWD/target/release/vhdkit
work=$(mktemp -d)
cleanup() {
    umount -q "$work/m" 2>/dev/null || true
    losetup -j "$work/disk.img" -O NAME -n 2>/dev/null | xargs -r losetup -d
    losetup -j "$work/zeroed.img" -O NAME -n 2>/dev/null | xargs -r losetup -d
    rm -rf "$work"
}
trap cleanup EXIT
export MTOOLS_SKIP_CHECK=1
# mtools says it cannot get a loop device's geometry, on stderr without a newline.
mtool() { "$@" 2>/dev/null; }

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
seconds() { local s e; s=$(date +%s.%N); "$@" >"$work/out.json"; e=$(date +%s.%N); echo "$e - $s" | bc; }
# Milliseconds of the phase named $1 in the last report.
phase() { python3 -c "import json,sys; print(1000*sum(p['seconds'] for p in json.load(open(sys.argv[1]))['phases'] if p['name']==sys.argv[2]))" "$work/out.json" "$1"; }
loop_of() { losetup -f --show -o $((2048 * 512)) --sizelimit $(((size_mib - 1) * 1048576)) "$1"; }

echo "| file system | fs-aware compact, bytes | zero-filled + plain compact, bytes | difference | plain compact alone, bytes | time fs-aware | of which reading the file systems | time plain |"
echo "|---|---|---|---|---|---|---|---|"
for fs in ext4 fat32 ntfs; do
    rm -rf "${work:?}"/*
    mkdir "$work/m" "$work/files"
    truncate -s "${size_mib}M" "$work/disk.img"
    case $fs in ext4) t=83 ;; fat32) t=c ;; ntfs) t=7 ;; esac
    printf 'label: dos\n,,%s\n' "$t" | sfdisk -q "$work/disk.img"
    dev=$(loop_of "$work/disk.img")
    case $fs in
    ext4) mkfs.ext4 -q -F "$dev" && mount "$dev" "$work/m" ;;
    fat32) mkfs.vfat -F 32 "$dev" >/dev/null ;;
    ntfs) mkfs.ntfs -q -f -F "$dev" >/dev/null 2>&1 && ntfs-3g "$dev" "$work/m" ;;
    esac
    # 48 files of random data, up to a 1/40 of the disk each (about 60% of it in all);
    # every third deleted.
    max=$((size_mib * 1048576 / 40))
    for i in $(seq 0 47); do
        f="$work/files/f$i"
        head -c $((max / 8 + (RANDOM * 32768 + RANDOM) % (max - max / 8))) /dev/urandom >"$f"
        if [ $fs = fat32 ]; then mtool mcopy -i "$dev" "$f" "::/f$i"; else cp "$f" "$work/m/"; fi
        rm "$f"
    done
    for i in $(seq 1 3 47); do
        if [ $fs = fat32 ]; then mtool mdel -i "$dev" "::/f$i"; else rm "$work/m/f$i"; fi
    done
    [ $fs = fat32 ] || { sync; umount "$work/m"; }
    losetup -d "$dev"
    "$vhdkit" convert "$work/disk.img" "$work/disk.vhd" --type dynamic >/dev/null

    cp --sparse=always "$work/disk.img" "$work/zeroed.img"
    dev=$(loop_of "$work/zeroed.img")
    case $fs in
    fat32)
        truncate -s "$(mtool mdir -i "$dev" :: | grep 'bytes free' | tr -dc 0-9)" "$work/zeros"
        mtool mcopy -i "$dev" "$work/zeros" ::/zeros && mtool mdel -i "$dev" ::/zeros
        rm "$work/zeros"
        ;;
    *)
        if [ $fs = ntfs ]; then ntfs-3g "$dev" "$work/m"; else mount "$dev" "$work/m"; fi
        dd if=/dev/zero of="$work/m/zeros" bs=1M 2>/dev/null || true
        sync && rm "$work/m/zeros" && umount "$work/m"
        ;;
    esac
    losetup -d "$dev"
    "$vhdkit" convert "$work/zeroed.img" "$work/reference.vhd" --type dynamic >/dev/null
    "$vhdkit" compact "$work/reference.vhd" >/dev/null
    rm "$work/zeroed.img"

    t_fs=() t_vol=() t_plain=()
    for _ in $(seq "$runs"); do
        cp "$work/disk.vhd" "$work/a.vhd" && sync
        t_fs+=("$(seconds "$vhdkit" compact "$work/a.vhd" --fs-aware --json)")
        t_vol+=("$(phase volumes)")
        cp "$work/disk.vhd" "$work/b.vhd" && sync
        t_plain+=("$(seconds "$vhdkit" compact "$work/b.vhd" --json)")
    done
    a=$(stat -c %s "$work/a.vhd") r=$(stat -c %s "$work/reference.vhd") b=$(stat -c %s "$work/b.vhd")
    printf '| %s | %s | %s | %+.2f%% | %s | %.3f s | %.1f ms | %.3f s |\n' "$fs" "$a" "$r" \
        "$(echo "($a - $r) * 100 / $r" | bc -l)" "$b" \
        "$(printf '%s\n' "${t_fs[@]}" | median)" "$(printf '%s\n' "${t_vol[@]}" | median)" \
        "$(printf '%s\n' "${t_plain[@]}" | median)"
done
