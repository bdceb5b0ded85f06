#!/usr/bin/env bash
# vhdkit serve vs qemu-nbd: `nbdcopy URI null:` over a Unix socket, read-only.
#
#   benches/serve-vs-qemu-nbd.sh [--size 1G] [--runs 7] [--keep]
#
# The disk: a dynamic VHD (2 MiB blocks) made by the release vhdkit from a raw file of
# which about half is random data (whole and partial blocks) and half holes; and a
# 3-level differencing chain over it (two children with random writes). qemu-nbd reads
# wrong data from the chain (its vpc driver ignores parents), so for the chain case it
# serves the same content flattened into one dynamic VHD (`vhdkit merge-to`), and its
# time on the chain's top file itself is shown apart. Runs alternate vhdkit and qemu-nbd
# after one warm-up each; medians; the ratio is vhdkit / qemu-nbd (time). Every copy
# compared is checked once for the right bytes.
#
# Needs: cargo, qemu-nbd, qemu-img, nbdcopy (libnbd-bin), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G
runs=7
keep=0
while (($#)); do
    case "$1" in
        --size) size="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--size SIZE] [--runs N] [--keep]" >&2; exit 2 ;;
    esac
done
for t in qemu-nbd qemu-img nbdcopy python3; do
    command -v "$t" >/dev/null || { echo "$t is required" >&2; exit 2; }
done

cargo build --release --quiet
vhdkit="$PWD/target/release/vhdkit"
work="$(mktemp -d "${TMPDIR:-/tmp}/vhdkit-serve-bench.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if ((keep)); then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

bytes=$(python3 -c "import sys; s=sys.argv[1].upper(); m={'K':1<<10,'M':1<<20,'G':1<<30}; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))" "$size")

# --- the disk -----------------------------------------------------------------------
python3 - "$work/base.raw" "$bytes" <<'EOF'
import os, random, sys
path, size = sys.argv[1], int(sys.argv[2])
rng = random.Random(13)
block = 2 << 20
with open(path, "wb") as f:
    f.truncate(size)
    for b in range(size // block):
        r = rng.random()
        if r < 0.40:          # a whole block of random data
            f.seek(b * block); f.write(os.urandom(block))
        elif r < 0.60:        # part of a block
            off = rng.randrange(0, block // 2, 4096)
            f.seek(b * block + off); f.write(os.urandom(block // 2))
        # else: a hole
EOF
"$vhdkit" convert "$work/base.raw" "$work/base.vhd" --type dynamic --progress none >/dev/null
( cd "$work"
  "$vhdkit" create mid.vhd --type differencing --parent base.vhd >/dev/null
  "$vhdkit" create top.vhd --type differencing --parent mid.vhd >/dev/null )
python3 - "$work" "$bytes" <<'EOF'
import os, random, sys
work, size = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
for name, n in (("mid", 96), ("top", 64)):
    with open(f"{work}/{name}.writes", "w") as f:
        for i in range(n):
            ln = rng.choice([4096, 65536, 1 << 20, 3 << 20])
            off = rng.randrange(0, size - ln, 512)
            data = f"{work}/{name}.{i}.bin"
            open(data, "wb").write(os.urandom(ln))
            f.write(f"{off} {data}\n")
EOF
for name in mid top; do
    while read -r off data; do
        "$vhdkit" write "$work/$name.vhd" --offset "$off" --input "$data"
        rm -f "$data"
    done < "$work/$name.writes"
done
"$vhdkit" read "$work/top.vhd" --output "$work/top.raw"
"$vhdkit" merge-to "$work/top.vhd" "$work/flat.vhd" --type dynamic --progress none >/dev/null

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%d GiB RAM", $2/1048576}' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "vhdkit $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty); $(qemu-nbd --version | head -1); $(nbdcopy --version | head -1)"
alloc_mib=$(( $(du -k "$work/base.raw" | cut -f1) / 1024 ))
echo "disk: $size virtual, 2 MiB blocks; base.raw $alloc_mib MiB allocated; base.vhd $(( $(stat -c %s "$work/base.vhd") >> 20 )) MiB; chain base <- mid <- top"

# --- servers ------------------------------------------------------------------------
start_vhdkit() { # FILE SOCKET
    "$vhdkit" serve "$1" --read-only --socket "$2" > "$work/vhdkit.out" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$2" ] && return; sleep 0.05; done
    echo "vhdkit serve did not start" >&2; exit 1
}
start_qemu() { # FILE SOCKET
    qemu-nbd -f vpc -r -t -e 16 -k "$2" "$1" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$2" ] && return; sleep 0.05; done
    echo "qemu-nbd did not start" >&2; exit 1
}
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    rm -f "$work"/*.sock
}

now() { date +%s.%N; }
copy_time() { # URI CONNECTIONS
    local t0 t1
    t0=$(now)
    nbdcopy --connections="$2" "$1" null:
    t1=$(now)
    python3 -c "print(f'{$t1 - $t0:.3f}')"
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }

check_copy() { # URI EXPECTED-RAW WHAT
    nbdcopy "$1" "$work/check.raw"
    cmp -s "$work/check.raw" "$2" || { echo "$3 read wrong data" >&2; exit 1; }
    rm -f "$work/check.raw"
}

echo
echo "| case | connections | vhdkit median s | qemu-nbd median s | ratio (vhdkit / qemu-nbd) | qemu-nbd on the chain's top, wrong data, s |"
echo "|---|---:|---:|---:|---:|---:|"
for case in dynamic chain; do
    file="$work/base.vhd"; qfile="$work/base.vhd"; expected="$work/base.raw"
    if [ "$case" = chain ]; then
        file="$work/top.vhd"; qfile="$work/flat.vhd"; expected="$work/top.raw"
    fi
    start_vhdkit "$file" "$work/v.sock"
    start_qemu "$qfile" "$work/q.sock"
    v="nbd+unix:///?socket=$work/v.sock"
    q="nbd+unix:///?socket=$work/q.sock"
    check_copy "$v" "$expected" "vhdkit serve ($case)"
    check_copy "$q" "$expected" "qemu-nbd ($case)"
    if [ "$case" = chain ]; then
        start_qemu "$work/top.vhd" "$work/w.sock"
        w="nbd+unix:///?socket=$work/w.sock"
    fi
    for c in 1 2 4; do
        copy_time "$v" "$c" >/dev/null; copy_time "$q" "$c" >/dev/null   # warm-up
        vt=(); qt=(); wt=()
        for _ in $(seq "$runs"); do
            vt+=("$(copy_time "$v" "$c")")
            qt+=("$(copy_time "$q" "$c")")
            [ "$case" = chain ] && wt+=("$(copy_time "$w" "$c")")
        done
        vm=$(median "${vt[@]}"); qm=$(median "${qt[@]}")
        wm="-"; [ "$case" = chain ] && wm=$(median "${wt[@]}")
        ratio=$(python3 -c "print(f'{$vm / $qm:.2f}')")
        label="dynamic, 1 GiB, half data"
        [ "$case" = chain ] && label="3-level chain (qemu-nbd: the same content flattened)"
        echo "| $label | $c | $vm | $qm | $ratio | $wm |"
    done
    stop_all
done
echo
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at end; $runs timed runs per cell, alternating, after one warm-up"
