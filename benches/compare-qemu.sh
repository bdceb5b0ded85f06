#!/usr/bin/env bash
# Side-by-side timings of vhdkit and qemu-img on one generated image, with the durable-write
# floor of each conversion (dd conv=fsync of the bytes vhdkit's output allocates), plus
# floors (plain cat / cp of the same data), copy offload on XFS and btrfs (loop devices;
# needs root; warm and from a cold cache), a 2040 GiB disk holding 32 MiB (every job side
# by side with qemu-img), and CPU scaling (RAYON_NUM_THREADS=1 vs 2). Prints Markdown on
# stdout; progress on stderr.
#
# usage: benches/compare-qemu.sh [--size SIZE] [--runs N] [--dir DIR] [--only LIST]
#                                 [--keep | --inputs DIR] [--skip-build]
#   --size SIZE    virtual size of the generated disk (default 1G; env SIZE)
#   --runs N       timed runs per tool and case, alternating vhdkit/qemu (default 5; env RUNS)
#   --dir DIR      where the temporary directory goes (default $TMPDIR or /tmp; env DIR).
#                  The conversions read and write there: it is the device being measured.
#   --only LIST    sections to run, comma-separated: convert, offload, ops, big, rss, scale
#                  (default all; env ONLY)
#   --keep         keep the generated inputs and print their directory (for --inputs)
#   --inputs DIR   reuse the inputs a --keep run left in DIR (same size): no generation,
#                  nothing in DIR deleted but the outputs
#   --skip-build   use the vhdkit binary already built (env VHDKIT=path overrides too)
#
# Quick reruns while optimising: run once with --keep, then e.g.
#   benches/compare-qemu.sh --inputs /tmp/vhdkit-compare.XXXXXX --only convert --runs 3
#
# The generated content (benches/common/layout.rs, seeded, the same on every machine):
# 2 MiB blocks, ~40% random, ~10% partly written (1-4 runs of 4 KiB multiples), ~10%
# written zeros (allocated-but-zero blocks in the VHD forms), the rest holes. The raw
# image is sparse in the holes; the fixed VHD is fully allocated (as Hyper-V makes
# them); the dynamic VHD allocates the random, partial and zero blocks, with the
# partial blocks' bitmaps covering their runs only. A differencing child holds ~25% of
# the blocks (random, partial and zero).
#
# Method: a warm-up run of each tool per case (untimed; its output is verified against
# the expected raw content with `qemu-img compare`, and its virtual size checked), then
# RUNS timed runs alternating vhdkit and qemu-img, outputs deleted and `sync` run
# between runs (untimed). Wall time by bash's EPOCHREALTIME around `/usr/bin/time`,
# which gives the peak RSS (%M). The page cache is warm for the sources (the convert
# section reads each source, untimed, before every run).
#
# Durability: vhdkit fsyncs its result before renaming it into place. qemu-img
# convert's default cache mode for the output is `unsafe` (it never flushes), so the
# qemu-img column runs it with `-t writeback` (one fdatasync at close): the same
# promise. The last column is qemu-img as it runs by default, without a flush.
set -euo pipefail

SIZE=${SIZE:-1G}
RUNS=${RUNS:-5}
DIR=${DIR:-${TMPDIR:-/tmp}}
ONLY=${ONLY:-convert,offload,ops,big,rss,scale}
BUILD=1
KEEP=0
INPUTS=
while (($#)); do
    case $1 in
    --size) SIZE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --inputs) INPUTS=$2; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log() { echo "[compare-qemu] $*" >&2; }
want() { [[ ,$ONLY, == *,$1,* ]]; }
die() { echo "[compare-qemu] error: $*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------
command -v qemu-img >/dev/null || die "qemu-img not found (apt-get install -y qemu-utils)"
if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time for peak RSS"
    apt-get install -y -qq time >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq time >/dev/null; } ||
        die "/usr/bin/time missing (apt-get install -y time)"
fi
if [[ -z ${VHDKIT:-} ]]; then
    TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
    if ((BUILD)); then
        log "building vhdkit (release)"
        (cd "$ROOT" && cargo build --release --bin vhdkit -q) || die "cargo build failed"
    fi
    VHDKIT=$TARGET_DIR/release/vhdkit
fi
[[ -x $VHDKIT ]] || die "no vhdkit binary at $VHDKIT"

SCALE_DIR=
if [[ -n $INPUTS ]]; then
    T=$(cd "$INPUTS" && pwd)
    [[ -f $T/base.writes && -f $T/child.vhd ]] || die "$INPUTS holds no inputs of a --keep run"
    KEEP=1
else
    T=$(mktemp -d "$DIR/vhdkit-compare.XXXXXX")
fi
cleanup() {
    [[ -z $SCALE_DIR || $SCALE_DIR == "$T/work" ]] || rm -rf "$SCALE_DIR"
    if ((KEEP)); then
        rm -rf "$T/work" "$T/times"
        log "inputs kept in $T (rerun with --inputs $T)"
    else
        rm -rf "$T"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$T/times" "$T/work"
mkdir -p "$T/times" "$T/work"

log "building the generator"
rustc -O --edition 2021 "$ROOT/benches/tools/mkimage.rs" -o "$T/mkimage" 2>"$T/rustc.err" ||
    { cat "$T/rustc.err" >&2; die "rustc failed"; }

to_bytes() { # 1G, 512M, 1GiB, 4096 → bytes
    local s=${1,,} n unit m
    n=${s%%[!0-9]*}
    unit=${s#"$n"}
    unit=${unit%ib}
    unit=${unit%b}
    case $unit in
    "") m=1 ;; k) m=1024 ;; m) m=$((1 << 20)) ;; g) m=$((1 << 30)) ;; t) m=$((1 << 40)) ;;
    *) return 1 ;;
    esac
    [[ -n $n ]] || return 1
    echo $((n * m))
}
BYTES=$(to_bytes "$SIZE") || die "bad size $SIZE (use e.g. 1G, 512M)"
BYTES=$(((BYTES + 2097151) / 2097152 * 2097152))

# --- inputs ----------------------------------------------------------------------
# apply_writes DISK SOURCE_RAW WRITES: replays the generator's writes into a VHD.
apply_writes() {
    local disk=$1 src=$2 list=$3 off len kind
    while read -r off len kind; do
        if [[ $kind == zero ]]; then
            head -c "$len" /dev/zero
        else
            dd if="$src" iflag=skip_bytes,count_bytes skip="$off" count="$len" bs=1M status=none
        fi | "$VHDKIT" write "$disk" --offset "$off"
    done <"$list"
}

cd "$T"
if [[ -n $INPUTS ]]; then
    [[ $(stat -c %s base.raw) == "$BYTES" ]] || die "the inputs in $T are not $BYTES bytes (--size)"
    log "reusing the inputs in $T"
else
    log "generating a $BYTES-byte disk in $T"
    ./mkimage base.raw "$BYTES" 1 base >base.writes
    "$VHDKIT" create --type dynamic --size "$BYTES" base.vhd >/dev/null
    apply_writes base.vhd base.raw base.writes
    "$VHDKIT" convert base.raw fixed.sparse --type fixed --progress none >/dev/null
    cp --sparse=never fixed.sparse fixed.vhd && rm fixed.sparse
    # The chain: child.vhd over base.vhd; chain.raw is its flattened content, child.raw
    # the child's own writes over zeros (the floor's "equivalent raw file").
    cp --sparse=always base.raw chain.raw
    ./mkimage chain.raw "$BYTES" 2 child >child.writes
    ./mkimage child.raw "$BYTES" 2 child >/dev/null
    "$VHDKIT" create --type differencing --parent base.vhd child.vhd >/dev/null
    apply_writes child.vhd chain.raw child.writes
    # Inputs must read as intended, by a reader other than vhdkit where one exists.
    qemu-img compare -q -f raw -F vpc base.raw base.vhd || die "base.vhd differs from base.raw"
    qemu-img compare -q -f raw -F vpc base.raw fixed.vhd || die "fixed.vhd differs from base.raw"
    "$VHDKIT" compare child.vhd chain.raw >/dev/null || die "child.vhd differs from chain.raw"
fi
sync

# --- measuring -------------------------------------------------------------------
# timed LABEL CMD...: one timed run, appends "seconds peak_rss_kib" to times/LABEL.
timed() {
    local label=$1 t0 t1
    shift
    t0=$EPOCHREALTIME
    if ! /usr/bin/time -f %M -o "$T/rss" "$@" >"${TIMED_STDOUT:-/dev/null}" 2>"$T/err"; then
        cat "$T/err" "$T/rss" >&2
        die "$label failed: $*"
    fi
    t1=$EPOCHREALTIME
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", b - a}') $(tail -n1 "$T/rss")" \
        >>"$T/times/$label"
}
median() { # median of the seconds column of times/LABEL
    sort -n "$T/times/$1" | awk '{a[NR]=$1} END{if (NR == 0) print "nan";
        else if (NR % 2) printf "%.3f", a[(NR+1)/2]; else printf "%.3f", (a[NR/2]+a[NR/2+1])/2}'
}
peak_mib() { awk '$2>m{m=$2} END{printf "%.0f", m/1024}' "$T/times/$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
vsize() { qemu-img info --output=json -f "$1" "$2" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p' | tail -n1; }

# verify FMT OUT EXPECTED_RAW WHAT: the output reads as the expected raw content and
# has its virtual size.
verify() {
    local fmt=$1 out=$2 expect=$3 what=$4 vs
    qemu-img compare -q -f raw -F "$fmt" "$expect" "$out" || die "$what: output differs from $expect"
    vs=$(vsize "$fmt" "$out")
    [[ $vs == "$BYTES" ]] || die "$what: virtual size $vs, expected $BYTES"
    log "  verified $what"
}

ROWS=()
# compare_case NAME OUT_FMT SRC VHDKIT_TYPE QEMU_ARGS...: convert SRC both ways, and the
# durable-write floor of the same run: as many bytes as vhdkit's output allocates,
# written with `dd bs=1M conv=fsync` into a fresh file of the same directory.
compare_case() {
    local name=$1 fmt=$2 src=$3 type=$4
    shift 4
    local ext=vhd
    [[ $fmt == raw ]] && ext=raw
    [[ $fmt == vhdx ]] && ext=vhdx # vhdkit writes a VHDX for the extension
    local out=$T/work/out.$ext floor=$T/work/floor.dd
    local vk=("$VHDKIT" convert "$src" "$out" --type "$type" --progress none)
    local qm=(qemu-img convert -t writeback "$@" "$src" "$out")
    local qu=(qemu-img convert "$@" "$src" "$out")
    log "case $name"
    rm -f "$out"; "${vk[@]}" >/dev/null; verify "$fmt" "$out" "$T/base.raw" "vhdkit $name"
    local mib
    mib=$((($(du -B1 "$out" | cut -f1) + 1048575) >> 20))
    local fl=(dd if=/dev/zero of="$floor" bs=1M count="$mib" conv=fsync status=none)
    rm -f "$out"; "${qm[@]}"; verify "$fmt" "$out" "$T/base.raw" "qemu-img $name"
    # The source is read into the page cache (untimed) before each run of either tool:
    # an idle file's pages may be reclaimed between runs (this VM runs DAMON-based
    # reclaim), and the floor reads nothing.
    for ((i = 0; i < RUNS; i++)); do
        rm -f "$out"; sync; cat "$src" >/dev/null; timed "vk.$name" "${vk[@]}"
        rm -f "$out"; sync; cat "$src" >/dev/null; timed "qm.$name" "${qm[@]}"
        rm -f "$out"; sync; cat "$src" >/dev/null; timed "qu.$name" "${qu[@]}"
        rm -f "$out" "$floor"; sync; timed "fl.$name" "${fl[@]}"
    done
    rm -f "$out" "$floor"
    local a b f
    a=$(median "vk.$name"); b=$(median "qm.$name"); f=$(median "fl.$name")
    ROWS+=("| $name | $a | $b | $(ratio "$a" "$b") | $mib | $f | $(ratio "$a" "$f") | $(peak_mib "vk.$name") | $(peak_mib "qm.$name") | $(median "qu.$name") |")
}

if want convert; then
    compare_case "raw → dynamic" vpc base.raw dynamic -f raw -O vpc -o subformat=dynamic,force_size=on
    compare_case "dynamic → raw" raw base.vhd raw -f vpc -O raw
    compare_case "dynamic → fixed" vpc base.vhd fixed -f vpc -O vpc -o subformat=fixed,force_size=on
    compare_case "fixed → dynamic" vpc fixed.vhd dynamic -f vpc -O vpc -o subformat=dynamic,force_size=on
    # VHD → VHDX, both tools with Hyper-V's 32 MiB blocks (vhdkit's default; qemu-img
    # would choose by size).
    compare_case "raw → dynamic VHDX" vhdx base.raw dynamic -f raw -O vhdx -o subformat=dynamic,block_size=32M
    compare_case "dynamic → dynamic VHDX" vhdx base.vhd dynamic -f vpc -O vhdx -o subformat=dynamic,block_size=32M
    compare_case "dynamic → fixed VHDX" vhdx base.vhd fixed -f vpc -O vhdx -o subformat=fixed,block_size=32M
    # VHDX → VHD and raw: the source is a dynamic VHDX written by qemu-img (an
    # independent writer), 32 MiB blocks.
    [[ -e base.vhdx ]] || qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=32M base.raw base.vhdx
    qemu-img compare -q -f raw -F vhdx base.raw base.vhdx || die "base.vhdx differs from base.raw"
    compare_case "dynamic VHDX → dynamic" vpc base.vhdx dynamic -f vhdx -O vpc -o subformat=dynamic,force_size=on
    compare_case "dynamic VHDX → fixed" vpc base.vhdx fixed -f vhdx -O vpc -o subformat=fixed,force_size=on
    compare_case "dynamic VHDX → raw" raw base.vhdx raw -f vhdx -O raw
fi

# --- copy offload on file systems that share extents ----------------------------------
# For XFS (reflink) and btrfs, each made in a sparse file on a loop device: the inputs are
# copied in, then each case runs RUNS times alternating vhdkit, qemu-img -C (its copy
# offload, with -t writeback: the same promise), qemu-img -C without a flush, and the
# limit: `cp --reflink=always` of the equivalent raw file and `sync FILE`. Space is the
# growth of the file system's used bytes (df after `sync -f`) while the output is made;
# medians of the runs.
OFFLOAD=()
COLD=()
OFFLOAD_NOTE=
if want offload; then
    if ((EUID != 0)); then
        OFFLOAD_NOTE="skipped: loop mounts need root"
    elif ! command -v mkfs.xfs >/dev/null || ! command -v mkfs.btrfs >/dev/null; then
        OFFLOAD_NOTE="skipped: mkfs.xfs (xfsprogs) and mkfs.btrfs (btrfs-progs) needed"
    fi
    [[ -z $OFFLOAD_NOTE ]] || log "offload $OFFLOAD_NOTE"
fi
if want offload && [[ -z $OFFLOAD_NOTE ]]; then
    FS_MNT=
    fs_cleanup() { [[ -z $FS_MNT ]] || { umount "$FS_MNT" 2>/dev/null || true; FS_MNT=; }; }
    trap 'fs_cleanup; cleanup' EXIT
    used() { sync -f "$1"; df --output=used -B1 "$1" | tail -n1; }
    # XFS frees a deleted file's extents in the background: wait until the count settles.
    settled() {
        local a b n
        a=$(used "$1")
        for ((n = 0; n < 50; n++)); do
            sleep 0.1; b=$(used "$1")
            [[ $a == "$b" ]] && break
            a=$b
        done
        echo "$a"
    }
    # offload_run LABEL MNT OUT CMD...: one timed run, then the space the output took.
    offload_run() {
        local label=$1 mnt=$2 out=$3 u0 u1
        shift 3
        rm -f "$out"; sync; u0=$(settled "$mnt")
        timed "$label" "$@"
        u1=$(settled "$mnt")
        echo $(((u1 - u0) >> 20)) >>"$T/times/$label.space"
    }
    space() { sort -n "$T/times/$1.space" | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
    for fs in xfs btrfs; do
        log "case copy offload on $fs"
        img=$T/work/$fs.img mnt=$T/work/$fs.mnt
        rm -f "$img"; truncate -s $((BYTES * 8 + (1 << 30))) "$img"; mkdir -p "$mnt"
        if [[ $fs == xfs ]]; then mkfs.xfs -q -m reflink=1 "$img"; else mkfs.btrfs -q "$img" >/dev/null; fi
        mount -o loop "$img" "$mnt"; FS_MNT=$mnt
        cp --sparse=always base.raw chain.raw base.vhd child.vhd "$mnt/"
        cp --sparse=never fixed.vhd "$mnt/"
        M=$mnt
        # case NAME SRC OUT TYPE LIMIT_RAW QEMU_ARGS (empty: qemu-img cannot do it)
        offload_case() {
            local name=$1 src=$M/$2 out=$M/$3 type=$4 limit=$M/$5 qargs=$6 fmt=vpc
            [[ $type == raw ]] && fmt=raw
            local vk=("$VHDKIT" convert "$src" "$out" --type "$type" --progress none)
            local key="$fs.$name"
            rm -f "$out"; "${vk[@]}" >/dev/null; verify "$fmt" "$out" "$limit" "vhdkit $name on $fs"
            for ((i = 0; i < RUNS; i++)); do
                offload_run "ov.$key" "$M" "$out" "${vk[@]}"
                if [[ -n $qargs ]]; then
                    # shellcheck disable=SC2086 # qargs is a word list
                    offload_run "oq.$key" "$M" "$out" qemu-img convert -C -t writeback $qargs "$src" "$out"
                    # shellcheck disable=SC2086
                    offload_run "ou.$key" "$M" "$out" qemu-img convert -C $qargs "$src" "$out"
                fi
                # shellcheck disable=SC2016 # expanded by the inner sh
                offload_run "oc.$key" "$M" "$out" sh -c 'cp --reflink=always "$1" "$2" && sync "$2"' sh "$limit" "$out"
            done
            rm -f "$out"
            local a q="n/a" qs="n/a" qu="n/a" r="n/a"
            a=$(median "ov.$key")
            if [[ -n $qargs ]]; then
                q=$(median "oq.$key"); qs=$(space "oq.$key"); qu=$(median "ou.$key"); r=$(ratio "$a" "$q")
            fi
            OFFLOAD+=("| $fs | $name | $a | $(space "ov.$key") | $q | $qs | $r | $qu | $(median "oc.$key") | $(space "oc.$key") | $(peak_mib "ov.$key") |")
        }
        offload_case "fixed → raw" fixed.vhd out.raw raw base.raw "-f vpc -O raw"
        offload_case "dynamic → raw" base.vhd out.raw raw base.raw "-f vpc -O raw"
        # From a cold cache (the whole page cache dropped before each run, binaries
        # included): vhdkit against `cp --reflink=always` of the same source file,
        # `truncate` to the disk's size and `sync` of it. Target ≤ 3×.
        cold_case() {
            local name=$1 src=$M/$2 out=$M/out.raw key="$fs.$1"
            local vk=("$VHDKIT" convert "$src" "$out" --type raw --progress none)
            for ((i = 0; i < RUNS; i++)); do
                rm -f "$out"; sync; echo 3 >/proc/sys/vm/drop_caches
                timed "cv.$key" "${vk[@]}"
                rm -f "$out"; sync; echo 3 >/proc/sys/vm/drop_caches
                # shellcheck disable=SC2016 # expanded by the inner sh
                timed "cc.$key" sh -c 'cp --reflink=always "$1" "$2" && truncate -s "$3" "$2" && sync "$2"' \
                    sh "$src" "$out" "$BYTES"
            done
            rm -f "$out"
            local a c
            a=$(median "cv.$key"); c=$(median "cc.$key")
            COLD+=("| $fs | $name | $a | $c | $(ratio "$a" "$c") | $(awk -v a="$a" -v c="$c" 'BEGIN{print (a <= 3 * c) ? "yes" : "NO"}') |")
        }
        cold_case "fixed → raw" fixed.vhd
        cold_case "raw → raw" base.raw
        cold_case "dynamic → raw" base.vhd
        offload_case "chain → fixed" child.vhd out.vhd fixed chain.raw ""
        offload_case "chain → dynamic" child.vhd out.vhd dynamic chain.raw ""
        fs_cleanup
        rm -rf "$img" "$mnt"
    done
fi

# --- in-place and chain operations, against floors --------------------------------
OPS=()
# floor_runs LABEL_PREFIX FLOOR_RAW FILES_TO_CAT...: times the two floors RUNS times.
floor_runs() {
    local p=$1 raw=$2
    shift 2
    for ((i = 0; i < RUNS; i++)); do
        timed "$p.cat" sh -c 'cat "$@" >/dev/null' sh "$@"
        rm -f "$T/work/floor.raw"; sync
        # shellcheck disable=SC2016 # expanded by the inner sh
        timed "$p.cp" sh -c 'cp --sparse=always "$1" "$2" && sync "$2"' sh "$raw" "$T/work/floor.raw"
    done
    rm -f "$T/work/floor.raw"
}
# op_row NAME LABEL FLOOR_LABEL: a row of the floors table.
op_row() {
    local a c p
    a=$(median "$2"); c=$(median "$3.cat"); p=$(median "$3.cp")
    OPS+=("| $1 | $a | $c | $p | $(ratio "$a" "$c") | $(ratio "$a" "$p") | $(peak_mib "$2") |")
}

W=$T/work
if want ops; then
    log "case compact"
    cp base.vhd "$W/c.vhd"; "$VHDKIT" compact "$W/c.vhd" --progress none >/dev/null
    verify vpc "$W/c.vhd" base.raw "vhdkit compact"
    "$VHDKIT" check "$W/c.vhd" >/dev/null || die "compact left a disk that check rejects"
    for ((i = 0; i < RUNS; i++)); do
        rm -f "$W/c.vhd"; cp base.vhd "$W/c.vhd"; sync
        timed compact "$VHDKIT" compact "$W/c.vhd" --progress none
    done
    rm -f "$W/c.vhd"
    floor_runs floor.base base.raw base.vhd
    op_row "compact (dynamic, ~10% zero blocks)" compact floor.base

    # Merge and merge-to of the same chain, alternating, so that their ratio (target:
    # merge ≤ 0.5 × merge-to) compares runs made under the same conditions.
    log "case merge and merge-to"
    merge_prep() { rm -rf "$W/m"; mkdir "$W/m"; cp base.vhd child.vhd "$W/m/"; }
    merge_cmd=("$VHDKIT" merge "$W/m/child.vhd" --with-parent "$W/m/base.vhd" --progress none)
    merge_prep; "${merge_cmd[@]}" >/dev/null
    verify vpc "$W/m/base.vhd" chain.raw "vhdkit merge (the parent now reads as the chain)"
    for type in dynamic fixed; do
        rm -f "$W/mt.vhd"
        "$VHDKIT" merge-to child.vhd "$W/mt.vhd" --type "$type" --progress none >/dev/null
        verify vpc "$W/mt.vhd" chain.raw "vhdkit merge-to $type"
    done
    for ((i = 0; i < RUNS; i++)); do
        merge_prep; sync
        timed merge "${merge_cmd[@]}"
        for type in dynamic fixed; do
            rm -f "$W/mt.vhd"; sync
            timed "merge-to-$type" "$VHDKIT" merge-to child.vhd "$W/mt.vhd" --type "$type" --progress none
        done
    done
    rm -rf "$W/m" "$W/mt.vhd"
    floor_runs floor.child child.raw child.vhd
    op_row "merge (child, ~25% of blocks, into parent)" merge floor.child
    floor_runs floor.chain chain.raw base.vhd child.vhd
    op_row "merge-to dynamic (chain of 2)" merge-to-dynamic floor.chain
    op_row "merge-to fixed (chain of 2)" merge-to-fixed floor.chain
    MERGE_RATIO=$(ratio "$(median merge)" "$(median merge-to-dynamic)")

    log "case check"
    for ((i = 0; i < RUNS; i++)); do
        timed check "$VHDKIT" check base.vhd
        timed check-chain "$VHDKIT" check child.vhd
    done
    op_row "check (dynamic)" check floor.base
    op_row "check (chain of 2)" check-chain floor.chain
fi

# --- a 2040 GiB disk holding 32 MiB: cost follows the data -----------------------------
# A 2040 GiB dynamic disk with 16 blocks of data (32 MiB) spread over it and a
# differencing child with 8 MiB; each job side by side with qemu-img where qemu-img has
# one (RUNS alternating runs, medians). Targets: within 2× qemu-img's time for the same
# job; metadata work (measure, map, check, info, compact with nothing to move, the scan
# of --fs-aware) under 0.5 s. qemu-img reads no differencing chain: beside merge-to the
# qemu-img column converts the child alone (the same size of job: the child's own
# blocks, its parent's holes read as zeros). The fs-aware row times the `volumes` phase
# (reading the partition table and the file system's maps) of `compact --fs-aware
# --dry-run` on a 2040 GiB ext4 made by mkfs.ext4, from the report.
BIG=()
if want big; then
    log "case 2040 GiB dynamic holding 32 MiB"
    B=$W/big
    rm -rf "$B"; mkdir "$B"
    "$VHDKIT" create --type dynamic --size 2040G "$B/big.vhd" >/dev/null
    for at in 0 7 100 333 500 777 1000 1024 1200 1400 1500 1700 1800 2000 2030 2038; do
        head -c 2M /dev/urandom | "$VHDKIT" write "$B/big.vhd" --offset "${at}G"
    done
    "$VHDKIT" create --type differencing --parent "$B/big.vhd" "$B/child.vhd" >/dev/null
    for at in 3 100 700 1900; do
        head -c 2M /dev/urandom | "$VHDKIT" write "$B/child.vhd" --offset "${at}G"
    done
    REALWORLD=${REALWORLD:-$ROOT/../shared/realworld}
    HV=$REALWORLD/hyperv2012r2-dynamic-127g-empty.vhd
    dyn=(-O vpc -o subformat=dynamic,force_size=on)
    # big_case NAME OUT "VHDKIT ARGS" "QEMU ARGS" (qemu args empty: no qemu-img job)
    big_case() {
        local name=$1 out=$2 vk=$3 qm=$4 i
        log "  $name"
        for ((i = 0; i < RUNS; i++)); do
            rm -f "$out"
            # shellcheck disable=SC2086 # word lists
            timed "big.vk.$name" $vk
            if [[ -n $qm ]]; then
                rm -f "$out"
                # shellcheck disable=SC2086
                timed "big.qm.$name" $qm
            fi
        done
        rm -f "$out"
        local a q="n/a" r="n/a" goal
        a=$(median "big.vk.$name")
        if [[ -n $qm ]]; then
            q=$(median "big.qm.$name"); r=$(ratio "$a" "$q")
            goal=$(awk -v a="$a" -v q="$q" 'BEGIN{print (a <= 2 * q) ? "≤ 2× qemu-img: yes" : "≤ 2× qemu-img: NO"}')
        else
            goal=$(awk -v a="$a" 'BEGIN{print (a < 0.5) ? "< 0.5 s: yes" : "< 0.5 s: NO"}')
        fi
        BIG+=("| $name | $a | $q | $r | $goal | $(peak_mib "big.vk.$name") |")
    }
    O=$B/out
    big_case "convert → dynamic" "$O" "$VHDKIT convert $B/big.vhd $O --type dynamic --progress none" \
        "qemu-img convert -t writeback -f vpc ${dyn[*]} $B/big.vhd $O"
    big_case "convert → raw" "$O" "$VHDKIT convert $B/big.vhd $O --type raw --progress none" \
        "qemu-img convert -t writeback -f vpc -O raw $B/big.vhd $O"
    big_case "convert → dynamic --verify" "$O" "$VHDKIT convert $B/big.vhd $O --type dynamic --verify --progress none" ""
    big_case "merge-to (chain) → dynamic" "$O" "$VHDKIT merge-to $B/child.vhd $O --type dynamic --progress none" \
        "qemu-img convert -t writeback -f vpc ${dyn[*]} $B/child.vhd $O"
    if [[ -f $HV ]]; then
        big_case "127 GiB empty Hyper-V disk → dynamic" "$O" "$VHDKIT convert $HV $O --type dynamic --progress none" \
            "qemu-img convert -t writeback -f vpc ${dyn[*]} $HV $O"
    else
        log "  $HV absent: its row is left out"
    fi
    big_case "measure --type dynamic (chain)" "$O" "$VHDKIT measure $B/child.vhd --type dynamic" ""
    big_case "map (chain)" "$O" "$VHDKIT map $B/child.vhd --json" "qemu-img map -f vpc --output=json $B/child.vhd"
    big_case "check (chain)" "$O" "$VHDKIT check $B/child.vhd" ""
    big_case "info" "$O" "$VHDKIT info $B/big.vhd" "qemu-img info -f vpc $B/big.vhd"
    cp "$B/big.vhd" "$B/c.vhd"
    big_case "compact, nothing to move" "$O" "$VHDKIT compact $B/c.vhd --progress none" ""
    # The fs-aware scan of a 2040 GiB ext4 (mkfs.ext4 writes ~1 GiB of metadata).
    truncate -s 2040G "$B/e.img"
    mkfs.ext4 -q -F "$B/e.img"
    "$VHDKIT" convert "$B/e.img" "$B/e.vhd" --type dynamic --progress none >/dev/null
    rm -f "$B/e.img"
    for ((i = 0; i < RUNS; i++)); do
        "$VHDKIT" compact "$B/e.vhd" --fs-aware --dry-run --json >"$T/report.json"
        python3 -c 'import json,sys; print({p["name"]: p["seconds"] for p in json.load(open(sys.argv[1]))["phases"]}["volumes"])' \
            "$T/report.json" >>"$T/times/big.fsaware"
    done
    a=$(median big.fsaware)
    BIG+=("| --fs-aware scan of a 2040 GiB ext4 (volumes phase) | $a | n/a | n/a | $(awk -v a="$a" 'BEGIN{print (a < 0.5) ? "< 0.5 s: yes" : "< 0.5 s: NO"}') | |")
    rm -rf "$B"
fi

# --- peak memory on a 16 GiB disk ---------------------------------------------------
# Every operation on 16 GiB disks holding 1 GiB of data spread over the whole range
# (and a child holding 256 MiB): peak RSS, target ≤ 256 MiB. One run each; the time is
# shown for orientation only.
RSS=()
if want rss; then
    log "case peak RSS on 16 GiB disks"
    R=$W/rss
    rm -rf "$R"; mkdir "$R"
    "$VHDKIT" create --type dynamic --size 16G "$R/base.vhd" >/dev/null
    for ((i = 0; i < 64; i++)); do
        head -c 16M /dev/urandom | "$VHDKIT" write "$R/base.vhd" --offset $((i * 256 + 3))M
    done
    "$VHDKIT" create --type differencing --parent "$R/base.vhd" "$R/child.vhd" >/dev/null
    for ((i = 0; i < 32; i++)); do
        head -c 8M /dev/urandom | "$VHDKIT" write "$R/child.vhd" --offset $((i * 512 + 130))M
    done
    rss_case() { # NAME CMD...: one run; the row gives its peak RSS
        local name=$1 kib secs
        shift
        rm -f "$T/times/rss.$name"
        timed "rss.$name" "$@"
        secs=$(median "rss.$name"); kib=$(awk '{print $2}' "$T/times/rss.$name")
        RSS+=("| $name | $(awk -v k="$kib" 'BEGIN{printf "%.0f", k / 1024}') | $(awk -v k="$kib" 'BEGIN{print (k <= 262144) ? "yes" : "NO"}') | $secs |")
    }
    rss_case "info" "$VHDKIT" info "$R/child.vhd"
    rss_case "check" "$VHDKIT" check "$R/child.vhd"
    rss_case "map" "$VHDKIT" map "$R/child.vhd"
    rss_case "read (whole chain to stdout)" "$VHDKIT" read "$R/child.vhd"
    rss_case "convert dynamic → raw" "$VHDKIT" convert "$R/base.vhd" "$R/base.raw" --type raw --progress none
    rss_case "convert raw → dynamic --verify" "$VHDKIT" convert "$R/base.raw" "$R/d.vhd" --type dynamic --verify --progress none
    rss_case "convert dynamic → fixed" "$VHDKIT" convert "$R/base.vhd" "$R/f.vhd" --type fixed --progress none
    rss_case "convert fixed → dynamic" "$VHDKIT" convert "$R/f.vhd" "$R/d2.vhd" --type dynamic --progress none
    rm -f "$R/d.vhd" "$R/d2.vhd" "$R/f.vhd"
    rss_case "compare (dynamic vs raw)" "$VHDKIT" compare "$R/base.vhd" "$R/base.raw"
    rm -f "$R/base.raw"
    rss_case "merge-to dynamic" "$VHDKIT" merge-to "$R/child.vhd" "$R/mt.vhd" --type dynamic --progress none
    rss_case "merge-to fixed --verify" "$VHDKIT" merge-to "$R/child.vhd" "$R/mtf.vhd" --type fixed --verify --progress none
    rm -f "$R/mt.vhd" "$R/mtf.vhd"
    # Compact works on a copy whose every other 16 MiB data run is overwritten with zeros:
    # releases, then moves of the blocks above the holes.
    cp --sparse=always "$R/base.vhd" "$R/c.vhd"
    for ((i = 0; i < 64; i += 2)); do
        head -c 16M /dev/zero | "$VHDKIT" write "$R/c.vhd" --offset $((i * 256 + 3))M
    done
    rss_case "compact (half the data zeroed)" "$VHDKIT" compact "$R/c.vhd" --progress none
    rss_case "merge (child into parent)" "$VHDKIT" merge "$R/child.vhd" --progress none
    rm -rf "$R"
fi

# --- CPU scaling ----------------------------------------------------------------------
SCALE=()
if want scale; then
    SCALE_DIR=$W
    shm_avail=$(df --output=avail -B1 /dev/shm 2>/dev/null | tail -n1 || echo 0)
    if ((shm_avail > BYTES * 3 + (1 << 30))); then
        SCALE_DIR=$(mktemp -d /dev/shm/vhdkit-compare.XXXXXX)
    fi
    log "case CPU scaling in $SCALE_DIR"
    head -c "$BYTES" /dev/zero >"$SCALE_DIR/zeros.raw"
    "$T/mkimage" "$SCALE_DIR/random.raw" "$BYTES" 9 random >/dev/null
    # scale_case NAME PHASE SRC EXTRA_ARGS...: convert SRC to raw with 1 and 2 rayon
    # threads; the row gives the whole run and PHASE alone (from the report's `phases`).
    scale_case() {
        local name=$1 phase=$2 src=$3 a b pa pb
        shift 3
        local out=$SCALE_DIR/out.raw
        local cmd=("$VHDKIT" convert "$src" "$out" --type raw --progress none --json "$@")
        rm -f "$out"; "${cmd[@]}" >/dev/null
        cmp -s "$src" "$out" || die "$name: output differs from the source"
        for ((i = 0; i < RUNS; i++)); do
            for n in 1 2; do
                rm -f "$out"
                TIMED_STDOUT=$T/report.json timed "scale.$name.$n" env RAYON_NUM_THREADS=$n "${cmd[@]}"
                python3 -c 'import json,sys; print({p["name"]: p["seconds"] for p in json.load(open(sys.argv[1]))["phases"]}[sys.argv[2]])' \
                    "$T/report.json" "$phase" >>"$T/times/scale.$name.$phase.$n"
            done
        done
        rm -f "$out"
        a=$(median "scale.$name.1"); b=$(median "scale.$name.2")
        pa=$(median "scale.$name.$phase.1"); pb=$(median "scale.$name.$phase.2")
        SCALE+=("| $name | $a | $b | $(ratio "$a" "$b") | $phase | $pa | $pb | $(ratio "$pa" "$pb") |")
    }
    scale_case "zero detection: all-zero (written) raw → raw" copy "$SCALE_DIR/zeros.raw"
    scale_case "copy: all-random raw → raw" copy "$SCALE_DIR/random.raw"
    scale_case "copy + CRC verify: all-random raw → raw --verify" verify "$SCALE_DIR/random.raw" --verify
    rm -f "$SCALE_DIR/zeros.raw" "$SCALE_DIR/random.raw"
fi

# --- report ---------------------------------------------------------------------------
alloc() { du -B1 "$1" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN{printf "%.0f", b / 1048576}'; }
cat <<EOF
## vhdkit vs qemu-img — $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r); load average $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end (other work on the machine skews absolute times; the alternation keeps ratios fair)
- work dir: $T ($(df --output=fstype "$T" | tail -n1))
- vhdkit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo "+dirty"); $(qemu-img --version | head -n1)
- disk: $(mib "$BYTES") MiB virtual, 2 MiB blocks; base.raw $(mib "$(alloc base.raw)") MiB allocated; base.vhd $(mib "$(stat -c %s base.vhd)") MiB; fixed.vhd $(mib "$(stat -c %s fixed.vhd)") MiB (fully allocated); child.vhd $(mib "$(stat -c %s child.vhd)") MiB ($(grep -c . child.writes) writes)
- $RUNS timed runs each, alternating, after one verified warm-up; medians; peak RSS is the largest of the runs
EOF
if ((${#ROWS[@]})); then
    cat <<EOF

qemu-img runs with \`-t writeback\` (fsync at the end, as vhdkit); the last column is its
default (\`-t unsafe\`: no flush, the data still in the page cache when it exits). The
floor is the durable write of as many bytes as vhdkit's output allocates
(\`dd if=/dev/zero bs=1M conv=fsync\` into a fresh file of the same directory), timed in
the same alternation. Targets: vhdkit / qemu-img ≤ 0.60, vhdkit / floor ≤ 1.10.

| case | vhdkit median s | qemu-img median s | vhdkit / qemu-img | output allocates MiB | floor (dd conv=fsync) s | vhdkit / floor | vhdkit peak RSS MiB | qemu peak RSS MiB | qemu-img default, no fsync, s |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${ROWS[@]}")
EOF
fi
if ((${#OFFLOAD[@]})); then
    cat <<EOF

Copy offload on XFS (\`mkfs.xfs -m reflink=1\`) and btrfs, each on a loop device. vhdkit
clones the extents of data that lies 4 KiB-aligned in a source on the same file system
(\`FICLONERANGE\`; the report's \`bytes_cloned\`); qemu-img runs with \`-C\` (its copy
offload) and \`-t writeback\`; the limit is \`cp --reflink=always\` of the equivalent raw
file + \`sync FILE\`. Space: MiB the file system's use grew by while the output was made
(medians). qemu-img cannot read a differencing chain (its vpc driver ignores the parent),
so the chain rows have no qemu-img column. A fixed output that shares extents is not
preallocated (copy on write makes preallocation promise nothing there).

| fs | case | vhdkit s | vhdkit MiB | qemu-img -C s | qemu-img MiB | vhdkit / qemu | qemu-img -C, no fsync, s | cp --reflink s | cp MiB | vhdkit peak RSS MiB |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${OFFLOAD[@]}")
EOF
fi
if ((${#COLD[@]})); then
    cat <<EOF

Clones at metadata speed, from a cold cache (\`echo 3 > /proc/sys/vm/drop_caches\` before
each run): a fixed disk or a raw image into raw is the source's bytes as they are, so
vhdkit clones the whole file in one call (\`FICLONE\`) and cuts the footer off; from a
dynamic disk a raw result needs no zero test, so vhdkit clones the source's runs without
reading them. Against \`cp --reflink=always\` of the same source file, \`truncate\` to the
disk's size and \`sync\` of it; target ≤ 3×.

| fs | case | vhdkit cold s | cp --reflink + truncate + sync cold s | ratio | ≤ 3× |
|---|---|---:|---:|---:|---|
$(printf '%s\n' "${COLD[@]}")
EOF
elif [[ -n $OFFLOAD_NOTE ]]; then
    printf '\nCopy offload section %s.\n' "$OFFLOAD_NOTE"
fi
if ((${#OPS[@]})); then
    cat <<EOF

Floors: \`cat\` of the source VHD(s) (reading the stored data once) and
\`cp --sparse=always\` of the equivalent raw file followed by \`sync FILE\` (fsync).
qemu-img has no counterpart: its vpc driver opens no differencing disk and has no compact.

| case | vhdkit median s | floor cat s | floor cp+fsync s | vhdkit / cat | vhdkit / cp | vhdkit peak RSS MiB |
|---|---:|---:|---:|---:|---:|---:|
$(printf '%s\n' "${OPS[@]}")

merge / merge-to dynamic of the same chain (medians of alternating runs): **$MERGE_RATIO**
(target ≤ 0.50).
EOF
fi
if ((${#BIG[@]})); then
    cat <<EOF

A 2040 GiB dynamic disk holding 32 MiB (16 blocks of 2 MiB spread over it) and a
differencing child with 8 MiB: the work follows the data, not the virtual size. Targets:
within 2× qemu-img's time for the same job; metadata work under 0.5 s.

| case | vhdkit median s | qemu-img median s | vhdkit / qemu-img | goal | vhdkit peak RSS MiB |
|---|---:|---:|---:|---|---:|
$(printf '%s\n' "${BIG[@]}")
EOF
fi
if ((${#RSS[@]})); then
    cat <<EOF

Peak RSS of every operation on 16 GiB disks (1 GiB of data spread over the range; a child
with 256 MiB); target ≤ 256 MiB. One run each; seconds for orientation only.

| operation | peak RSS MiB | ≤ 256 MiB | s |
|---|---:|---|---:|
$(printf '%s\n' "${RSS[@]}")
EOF
fi
if ((${#SCALE[@]})); then
    cat <<EOF

CPU scaling, $(mib "$BYTES") MiB on $([[ $SCALE_DIR == "$W" ]] && echo "$DIR" || echo "/dev/shm (tmpfs)"), \`RAYON_NUM_THREADS\` 1 vs 2.

Whole runs, and one phase of them from the report's \`phases\` (\`copy\`: compose + zero
test + write, overlapped; \`verify\`: read back + CRC32). The CPU stages alone:
\`cargo bench --bench scale\`.

| case | 1 thread s | 2 threads s | speedup | phase | 1 thread s | 2 threads s | speedup |
|---|---:|---:|---:|---|---:|---:|---:|
$(printf '%s\n' "${SCALE[@]}")
EOF
fi
