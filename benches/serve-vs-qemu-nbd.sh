#!/usr/bin/env bash
# vhdkit serve vs qemu-nbd: `nbdcopy` over a Unix socket, read-only, to `null:` and to
# a file, with 1 and 4 connections (goal: at most 0.60× qemu-nbd's time in every case);
# then a disk as fragmented as they come against `vhdkit read` of it (goal: within
# 1.5×), and block status over a sparse 2040 GiB disk (goal: `nbdinfo --map` under
# 0.5 s).
#
#   benches/serve-vs-qemu-nbd.sh [--size 1G] [--runs 7] [--keep] [--only SECTIONS]
#
# SECTIONS (comma-separated): qemu, fragmented, sparse (default: all three).
#
# The disk: a dynamic VHD (2 MiB blocks) made by the release vhdkit from a raw file of
# which about half is random data (whole and partial blocks) and half holes; and a
# 3-level differencing chain over it (two children with random writes). qemu-nbd reads
# wrong data from the chain (its vpc driver ignores parents), so for the chain case it
# serves the same content flattened into one dynamic VHD (`vhdkit merge-to`), and its
# time on the chain's top file itself is shown apart. Runs alternate vhdkit and qemu-nbd
# after one warm-up each; medians; the ratio is vhdkit / qemu-nbd (time). Every copy
# compared is checked once for the right bytes. To a file: the output is deleted before
# each run (not timed), and lands in the work directory ($TMPDIR or /tmp).
#
# Fragmented: a differencing disk over a dynamic parent, both wholly written, whose every
# sector bitmap alternates (0x55: every other 512-byte sector from the child, as Windows
# writes them), so a read is one piece per sector. `nbdcopy URI null:` through
# `vhdkit serve` against `vhdkit read DISK > /dev/null`, alternating; qemu-nbd cannot
# serve it (no parents). Beside them, where nbdkit is installed, a server without any
# format work: the same bytes flattened into a raw file and served by `nbdkit file` to
# the same nbdcopy, so that nbdkit / read shows what NBD itself costs against a local
# read, and serve / nbdkit what the format work adds. The qemu-nbd cases get the same
# reference (the expected raw image, holes and all, through `nbdkit file`).
#
# Sparse: a 2040 GiB dynamic disk with 32 MiB of data in the middle and a differencing
# child over it with 8 MiB; `nbdinfo --map` (block status over the whole disk) through
# `vhdkit serve`, and qemu-nbd on the dynamic parent.
#
# Needs: cargo, qemu-nbd, qemu-img, nbdcopy and nbdinfo (libnbd-bin), python3; nbdkit
# for the reference server without format work (optional).
set -euo pipefail
cd "$(dirname "$0")/.."

size=1G
runs=7
keep=0
only=qemu,fragmented,sparse
while (($#)); do
    case "$1" in
        --size) size="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --only) only="$2"; shift 2 ;;
        *) echo "usage: $0 [--size SIZE] [--runs N] [--keep] [--only qemu,fragmented,sparse]" >&2; exit 2 ;;
    esac
done
want() { [[ ",$only," == *",$1,"* ]]; }
for t in qemu-nbd qemu-img nbdcopy nbdinfo python3; do
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

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%d GiB RAM", $2/1048576}' /proc/meminfo); load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "vhdkit $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty); $(qemu-nbd --version | head -1); $(nbdcopy --version | head -1)"

# --- servers and timing -------------------------------------------------------------
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
start_nbdkit() { # RAW-FILE SOCKET: a server without any format work
    nbdkit --exit-with-parent -f -r -U "$2" file "$1" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$2" ] && return; sleep 0.05; done
    echo "nbdkit did not start" >&2; exit 1
}
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
    rm -f "$work"/*.sock
}

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(now)"; }
# Seconds of one `nbdcopy --connections=N URI SINK` (SINK: null or file; the file is
# deleted first, untimed).
copy_time() { # URI CONNECTIONS SINK
    local t0 dst=null:
    if [ "$3" = file ]; then dst="$work/copy.raw"; rm -f "$dst"; fi
    t0=$(now)
    nbdcopy --connections="$2" "$1" "$dst"
    since "$t0"
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }

check_copy() { # URI EXPECTED-RAW WHAT
    nbdcopy "$1" "$work/check.raw"
    cmp -s "$work/check.raw" "$2" || { echo "$3 read wrong data" >&2; exit 1; }
    rm -f "$work/check.raw"
}

# --- against qemu-nbd ---------------------------------------------------------------
if want qemu; then
    python3 - "$work/base.raw" "$bytes" <<'PY'
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
PY
    "$vhdkit" convert "$work/base.raw" "$work/base.vhd" --type dynamic --progress none >/dev/null
    ( cd "$work"
      "$vhdkit" create mid.vhd --type differencing --parent base.vhd >/dev/null
      "$vhdkit" create top.vhd --type differencing --parent mid.vhd >/dev/null )
    python3 - "$work" "$bytes" <<'PY'
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
PY
    for name in mid top; do
        while read -r off data; do
            "$vhdkit" write "$work/$name.vhd" --offset "$off" --input "$data"
            rm -f "$data"
        done < "$work/$name.writes"
    done
    "$vhdkit" read "$work/top.vhd" --output "$work/top.raw"
    "$vhdkit" merge-to "$work/top.vhd" "$work/flat.vhd" --type dynamic --progress none >/dev/null

    alloc_mib=$(( $(du -k "$work/base.raw" | cut -f1) / 1024 ))
    echo "disk: $size virtual, 2 MiB blocks; base.raw $alloc_mib MiB allocated; base.vhd $(( $(stat -c %s "$work/base.vhd") >> 20 )) MiB; chain base <- mid <- top"
    echo
    echo "| case | connections | to | vhdkit median s | qemu-nbd median s | ratio (vhdkit / qemu-nbd) | nbdkit file (the raw bytes) median s | nbdkit / qemu-nbd | qemu-nbd on the chain's top, wrong data, s |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
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
        k=""
        if command -v nbdkit >/dev/null; then
            start_nbdkit "$expected" "$work/k.sock"
            k="nbd+unix:///?socket=$work/k.sock"
        fi
        if [ "$case" = chain ]; then
            start_qemu "$work/top.vhd" "$work/w.sock"
            w="nbd+unix:///?socket=$work/w.sock"
        fi
        for sink in null file; do
            for c in 1 4; do
                copy_time "$v" "$c" "$sink" >/dev/null; copy_time "$q" "$c" "$sink" >/dev/null   # warm-up
                [ -n "$k" ] && copy_time "$k" "$c" "$sink" >/dev/null
                vt=(); qt=(); wt=(); kt=()
                for _ in $(seq "$runs"); do
                    vt+=("$(copy_time "$v" "$c" "$sink")")
                    qt+=("$(copy_time "$q" "$c" "$sink")")
                    if [ -n "$k" ]; then kt+=("$(copy_time "$k" "$c" "$sink")"); fi
                    if [ "$case" = chain ]; then wt+=("$(copy_time "$w" "$c" "$sink")"); fi
                done
                vm=$(median "${vt[@]}"); qm=$(median "${qt[@]}")
                km="n/a"; kr=""
                if [ -n "$k" ]; then km=$(median "${kt[@]}"); kr=$(ratio "$km" "$qm"); fi
                wm="-"; if [ "$case" = chain ]; then wm=$(median "${wt[@]}"); fi
                label="dynamic, $size, half data"
                if [ "$case" = chain ]; then label="3-level chain (qemu-nbd: the same content flattened)"; fi
                to="null:"; if [ "$sink" = file ]; then to="a file"; fi
                echo "| $label | $c | $to | $vm | $qm | $(ratio "$vm" "$qm") | $km | $kr | $wm |"
            done
        done
        stop_all
    done
    rm -f "$work"/copy.raw "$work"/*.raw "$work"/*.vhd "$work"/*.writes
fi

# --- fragmented: every other sector from the parent ---------------------------------
if want fragmented; then
    python3 - "$vhdkit" "$work" "$bytes" <<'PY'
import os, struct, subprocess, sys
vhdkit, work, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
base, child = f"{work}/alt-base.vhd", f"{work}/alt.vhd"
def write_fill(disk):
    # Random bytes through stdin: no temporary file of the disk's size.
    p = subprocess.Popen([vhdkit, "write", disk, "--offset", "0"], stdin=subprocess.PIPE)
    for _ in range(size >> 20):
        p.stdin.write(os.urandom(1 << 20))
    p.stdin.close()
    if p.wait() != 0:
        sys.exit("vhdkit write failed")
subprocess.run([vhdkit, "create", base, "--type", "dynamic", "--size", str(size)], check=True, stdout=subprocess.DEVNULL)
write_fill(base)
subprocess.run([vhdkit, "create", child, "--type", "differencing", "--parent", base], check=True, stdout=subprocess.DEVNULL)
write_fill(child)
with open(child, "r+b") as f:
    footer = f.read(512)
    f.seek(struct.unpack(">Q", footer[16:24])[0]); h = f.read(1024)
    table, n, bs = struct.unpack(">Q", h[16:24])[0], struct.unpack(">I", h[28:32])[0], struct.unpack(">I", h[32:36])[0]
    f.seek(table); bat = f.read(4 * n)
    for i in range(n):
        e = struct.unpack(">I", bat[4 * i:4 * i + 4])[0]
        if e != 0xFFFFFFFF:
            f.seek(e * 512); f.write(b"\x55" * (bs // 512 // 8))
PY
    "$vhdkit" check "$work/alt.vhd" >/dev/null
    start_vhdkit "$work/alt.vhd" "$work/a.sock"
    a="nbd+unix:///?socket=$work/a.sock"
    cmp -s <(nbdcopy "$a" -) <("$vhdkit" read "$work/alt.vhd") ||
        { echo "vhdkit serve (fragmented) read wrong data" >&2; exit 1; }
    read_time() { local t0; t0=$(now); "$vhdkit" read "$work/alt.vhd" > /dev/null; since "$t0"; }
    # A server without format work: the same bytes flattened into a raw file, served by
    # nbdkit's file plugin to the same nbdcopy.
    plain=""
    if command -v nbdkit >/dev/null; then
        "$vhdkit" read "$work/alt.vhd" --output "$work/alt-flat.raw"
        start_nbdkit "$work/alt-flat.raw" "$work/k.sock"
        plain="nbd+unix:///?socket=$work/k.sock"
    fi
    echo
    echo "fragmented: $size differencing disk, every sector bitmap 0x55 (a piece per 512 bytes);"
    echo "nbdkit: the same bytes flattened into a raw file, served by \`nbdkit file\` to the same nbdcopy"
    echo
    echo "| connections | vhdkit serve + nbdcopy median s | vhdkit read median s | ratio (serve / read) | nbdkit file + nbdcopy median s | nbdkit / read | serve / nbdkit |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    for c in 1 4; do
        copy_time "$a" "$c" null >/dev/null; read_time >/dev/null   # warm-up
        [ -n "$plain" ] && copy_time "$plain" "$c" null >/dev/null
        st=(); rt=(); ft=()
        for _ in $(seq "$runs"); do
            st+=("$(copy_time "$a" "$c" null)")
            rt+=("$(read_time)")
            [ -n "$plain" ] && ft+=("$(copy_time "$plain" "$c" null)")
        done
        sm=$(median "${st[@]}"); rdm=$(median "${rt[@]}")
        if [ -n "$plain" ]; then
            fm=$(median "${ft[@]}")
            echo "| $c | $sm | $rdm | $(ratio "$sm" "$rdm") | $fm | $(ratio "$fm" "$rdm") | $(ratio "$sm" "$fm") |"
        else
            echo "| $c | $sm | $rdm | $(ratio "$sm" "$rdm") | n/a (no nbdkit) | | |"
        fi
    done
    stop_all
    rm -f "$work/alt.vhd" "$work/alt-base.vhd" "$work/alt-flat.raw"
fi

# --- sparse: block status over 2040 GiB ---------------------------------------------
if want sparse; then
    head -c $((32 << 20)) /dev/urandom > "$work/d32.bin"
    head -c $((8 << 20)) /dev/urandom > "$work/d8.bin"
    "$vhdkit" create "$work/huge.vhd" --type dynamic --size 2040G >/dev/null
    "$vhdkit" write "$work/huge.vhd" --offset $((1 << 40)) --input "$work/d32.bin"
    ( cd "$work" && "$vhdkit" create huge-child.vhd --type differencing --parent huge.vhd >/dev/null )
    "$vhdkit" write "$work/huge-child.vhd" --offset $(( (1 << 40) + (64 << 20) )) --input "$work/d8.bin"
    rm -f "$work/d32.bin" "$work/d8.bin"
    map_time() { local t0; t0=$(now); nbdinfo --map "$1" > /dev/null; since "$t0"; }
    echo
    echo "sparse: 2040 GiB dynamic disk with 32 MiB of data, and a differencing child over it with 8 MiB more"
    echo
    echo "| disk | server (vhdkit serve, qemu-nbd) | nbdinfo --map median s |"
    echo "|---|---|---:|"
    map_row() { # SERVER(vhdkit|qemu) DISK
        "start_$1" "$work/$2.vhd" "$work/h.sock"
        local h="nbd+unix:///?socket=$work/h.sock" mt=()
        map_time "$h" >/dev/null
        for _ in $(seq "$runs"); do mt+=("$(map_time "$h")"); done
        echo "| $2.vhd | $1 | $(median "${mt[@]}") |"
        stop_all
    }
    map_row vhdkit huge
    map_row vhdkit huge-child
    map_row qemu huge   # (qemu-nbd cannot serve the child: its vpc driver ignores parents)
fi

echo
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) at end; $runs timed runs per cell, alternating, after one warm-up"
