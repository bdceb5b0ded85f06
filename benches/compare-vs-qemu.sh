#!/usr/bin/env bash
# `vhdkit compare` against `qemu-img compare` on one generated disk (issue 10, item 14):
# a dynamic VHD against its raw equivalent, and against a second dynamic VHD of the same
# content laid out differently. Prints Markdown on stdout; progress on stderr.
#
# usage: benches/compare-vs-qemu.sh [--size SIZE] [--runs N] [--dir DIR]
#                                   [--keep | --inputs DIR] [--skip-build]
#   --size SIZE    virtual size of the generated disk (default 4G; env SIZE)
#   --runs N       timed runs per tool and case, alternating vhdkit/qemu-img (default 7;
#                  env RUNS)
#   --dir DIR      where the temporary directory goes (default $TMPDIR or /tmp; env DIR)
#   --keep         keep the generated inputs and print their directory (for --inputs)
#   --inputs DIR   reuse the inputs a --keep run left in DIR (same size)
#   --skip-build   use the vhdkit binary already built (env VHDKIT=path overrides too)
#
# The content is the base mix of benches/common/layout.rs (seeded, the same on every
# machine): 2 MiB blocks, ~40% random, ~10% partly written, ~10% written zeros, the rest
# holes — at 4 GiB, ~1.6 GiB of data. base.raw is sparse in the holes; base.vhd is a
# dynamic VHD written as compare-qemu.sh writes it (the random, partial and zero blocks
# allocated, partial blocks' bitmaps covering their runs); copy.vhd is `vhdkit convert`
# of base.raw (zero blocks not allocated: the two VHDs' extents differ).
#
# Method: both tools run once untimed per case (warm page cache; their verdicts checked:
# identical, and the same offset for a planted difference), then RUNS timed runs
# alternating vhdkit and qemu-img. Wall time by bash's EPOCHREALTIME; medians; ratio =
# vhdkit / qemu-img (goal ≤ 1.0).
set -euo pipefail

SIZE=${SIZE:-4G}
RUNS=${RUNS:-7}
DIR=${DIR:-${TMPDIR:-/tmp}}
BUILD=1
KEEP=0
INPUTS=
while (($#)); do
    case $1 in
    --size) SIZE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --inputs) INPUTS=$2; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log() { echo "[compare-vs-qemu] $*" >&2; }
die() { echo "[compare-vs-qemu] error: $*" >&2; exit 1; }

command -v qemu-img >/dev/null || die "qemu-img not found (apt-get install -y qemu-utils)"
if [[ -z ${VHDKIT:-} ]]; then
    if ((BUILD)); then
        log "building vhdkit (release)"
        (cd "$ROOT" && cargo build --release --bin vhdkit -q) || die "cargo build failed"
    fi
    VHDKIT=${CARGO_TARGET_DIR:-$ROOT/target}/release/vhdkit
fi
[[ -x $VHDKIT ]] || die "no vhdkit binary at $VHDKIT"

if [[ -n $INPUTS ]]; then
    T=$(cd "$INPUTS" && pwd)
    [[ -f $T/base.vhd && -f $T/copy.vhd && -f $T/base.raw ]] || die "$INPUTS holds no inputs of a --keep run"
    KEEP=1
else
    T=$(mktemp -d "$DIR/vhdkit-cmp.XXXXXX")
fi
cleanup() {
    rm -rf "$T/times" "$T/diff.raw"
    if ((KEEP)); then log "inputs kept in $T (rerun with --inputs $T)"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$T/times"
mkdir -p "$T/times"
cd "$T"

to_bytes() { # 1G, 512M, 4096 → bytes
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
BYTES=$(to_bytes "$SIZE") || die "bad size $SIZE (use e.g. 4G, 512M)"
BYTES=$(((BYTES + 2097151) / 2097152 * 2097152))

if [[ -n $INPUTS ]]; then
    [[ $(stat -c %s base.raw) == "$BYTES" ]] || die "the inputs in $T are not $BYTES bytes (--size)"
    log "reusing the inputs in $T"
else
    log "generating a $BYTES-byte disk in $T"
    rustc -O --edition 2021 "$ROOT/benches/tools/mkimage.rs" -o mkimage 2>rustc.err ||
        { cat rustc.err >&2; die "rustc failed"; }
    ./mkimage base.raw "$BYTES" 1 base >base.writes
    "$VHDKIT" create --type dynamic --size "$BYTES" base.vhd >/dev/null
    while read -r off len kind; do
        if [[ $kind == zero ]]; then
            head -c "$len" /dev/zero
        else
            dd if=base.raw iflag=skip_bytes,count_bytes skip="$off" count="$len" bs=1M status=none
        fi | "$VHDKIT" write base.vhd --offset "$off"
    done <base.writes
    "$VHDKIT" convert base.raw copy.vhd --type dynamic --progress none >/dev/null
    # The inputs must read as intended by a reader other than vhdkit.
    qemu-img compare -q -f raw -F vpc base.raw base.vhd || die "base.vhd differs from base.raw"
    qemu-img compare -q -f raw -F vpc base.raw copy.vhd || die "copy.vhd differs from base.raw"
fi
sync

# timed LABEL CMD...: one timed run (exit 0 or 1 expected), appends seconds to times/LABEL.
timed() {
    local label=$1 t0 t1 rc=0
    shift
    t0=$EPOCHREALTIME
    "$@" >/dev/null 2>"$T/err" || rc=$?
    t1=$EPOCHREALTIME
    ((rc <= 1)) || { cat "$T/err" >&2; die "$label failed (exit $rc): $*"; }
    awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f\n", b - a}' >>"$T/times/$label"
}
median() {
    sort -n "$T/times/$1" | awk '{a[NR]=$1} END{if (NR % 2) printf "%.3f", a[(NR+1)/2];
        else printf "%.3f", (a[NR/2]+a[NR/2+1])/2}'
}
spread() { sort -n "$T/times/$1" | awk 'NR==1{lo=$1} {hi=$1} END{printf "%.3f–%.3f", lo, hi}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }

# verdict: the offset (or "identical") from either tool's output.
verdict() { sed -n 's/^Images are identical\.$/identical/p; s/^Content mismatch at offset \([0-9]*\)!\{0,1\}$/\1/p'; }
agree() { # agree WHAT VHDKIT_ARGS -- QEMU_ARGS
    local what=$1 v q
    shift
    local vk=() qm=()
    while [[ $1 != -- ]]; do vk+=("$1"); shift; done
    shift
    qm=("$@")
    v=$("$VHDKIT" compare "${vk[@]}" | verdict || true)
    q=$(qemu-img compare "${qm[@]}" | verdict || true)
    [[ -n $v && $v == "$q" ]] || die "$what: vhdkit says '$v', qemu-img says '$q'"
    log "  $what: both say $v"
}

ROWS=()
# case NAME A B FMT_A FMT_B: compare A with B both ways, alternating.
bench_case() {
    local name=$1 a=$2 b=$3 fa=$4 fb=$5
    log "case $name"
    agree "$name" "$a" "$b" -- -f "$fa" -F "$fb" "$a" "$b"
    for ((i = 0; i < RUNS; i++)); do
        timed "vk.$name" "$VHDKIT" compare "$a" "$b"
        timed "qm.$name" qemu-img compare -f "$fa" -F "$fb" "$a" "$b"
    done
    local v q
    v=$(median "vk.$name"); q=$(median "qm.$name")
    ROWS+=("| $name | $v ($(spread "vk.$name")) | $q ($(spread "qm.$name")) | $(ratio "$v" "$q") |")
}

bench_case "dynamic VHD vs raw" base.vhd base.raw vpc raw
bench_case "dynamic VHD vs dynamic VHD" base.vhd copy.vhd vpc vpc

# A planted difference in the last data block: both tools name the same offset.
cp --sparse=always base.raw diff.raw
last=$(awk '$3 == "data" {o = $1 + $2 - 1} END {printf "%.0f", o}' base.writes)
old=$(od -An -tu1 -j "$last" -N1 diff.raw)
printf "\\x$(printf %02x $((old ^ 0xff)))" | dd of=diff.raw bs=1 seek="$last" conv=notrunc status=none
agree "planted difference at byte $last" base.vhd diff.raw -- -f vpc -F raw base.vhd diff.raw

alloc() { du -B1 "$1" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN{printf "%.0f", b / 1048576}'; }
cat <<EOF
## vhdkit compare vs qemu-img compare — $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r); load average $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end (other work on the machine skews absolute times; alternating runs keep the ratio fair)
- work dir: $T ($(df --output=fstype "$T" | tail -n1)); page cache warm
- vhdkit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo "+dirty"); $(qemu-img --version | head -n1)
- disk: $(mib "$BYTES") MiB virtual; base.raw $(mib "$(alloc base.raw)") MiB allocated; base.vhd $(mib "$(stat -c %s base.vhd)") MiB; copy.vhd $(mib "$(stat -c %s copy.vhd)") MiB
- $RUNS timed runs each, alternating; median (min–max) seconds; ratio = vhdkit / qemu-img

| case | vhdkit s | qemu-img s | ratio |
|---|---:|---:|---:|
$(printf '%s\n' "${ROWS[@]}")
EOF
