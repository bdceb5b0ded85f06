#!/usr/bin/env bash
# Builds every fuzz target, replays the saved crash inputs under fuzz/regressions/, then
# fuzzes each target for a short bounded time (SMOKE_SECONDS, default 20) from the
# committed seeds, SMOKE_JOBS (default 2) at a time. Exits non-zero on any crash,
# timeout or out-of-memory; the failing inputs land in fuzz/artifacts/<target>/.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on stable through RUSTC_BOOTSTRAP.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
export RUSTC_BOOTSTRAP=1
# open_read also reads each image from a real file (mapped reads); keep those on tmpfs.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ]; then export TMPDIR=/dev/shm; fi
secs="${SMOKE_SECONDS:-20}"
jobs="${SMOKE_JOBS:-2}"
targets=(footer dynamic_header locator bat bitmap host_drive_header open_read chain check write open_vs_check convert compact compact_unused resize merge trust chain_ops volume_scan volume_ext volume_fat volume_ntfs volume_swap nbd_proto vhdx_header vhdx_metadata vhdx_bat vhdx_log)
limits=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10)

cargo fuzz build
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin="$here/target/$triple/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0

# 1. Every saved crash input must now pass.
for t in "${targets[@]}"; do
    [ -d "regressions/$t" ] || continue
    if ! "$bin/$t" "${limits[@]}" regressions/"$t"/* > "$work/$t.replay.log" 2>&1; then
        echo "FAIL $t: a regression input crashes again"
        tail -n 30 "$work/$t.replay.log"
        failed=1
    fi
done

# Copies the whole-image seeds of directory $1 into $2 behind compact_unused's header:
# two ranges, 0..4 MiB and 6 MiB + 1 KiB..+3 MiB.
with_ranges() {
    local f
    for f in "$1"/*; do
        { printf '\x02\x00\x00\x00\x00\x00\x00\x40\x00\x00\x04\x60\x00\x00\x00\x30\x00'; cat "$f"; } \
            > "$2/$(basename "$f")"
    done
}

# 2. A short fuzzing run per target.
run_one() {
    local t="$1" max_len="" dict="vhd.dict"
    case "$t" in open_read|check|chain|open_vs_check|convert|compact|compact_unused|resize|merge|trust|chain_ops|volume_*|vhdx_*) max_len="-max_len=1048576" ;; esac
    case "$t" in volume_*) dict="volume.dict" ;; vhdx_*) dict="vhdx.dict" ;; esac
    mkdir -p "$work/corpus/$t" "$here/artifacts/$t"
    for d in "seeds/$t" "regressions/$t"; do
        if [ -d "$d" ]; then cp "$d"/* "$work/corpus/$t/"; fi
    done
    case "$t" in check|open_vs_check|convert|compact|resize) cp seeds/open_read/* "$work/corpus/$t/" ;; esac
    case "$t" in merge|chain_ops) cp seeds/chain/* "$work/corpus/$t/" ;; esac
    # compact_unused: the same images behind a header of two unused ranges.
    case "$t" in compact_unused) with_ranges seeds/open_read "$work/corpus/$t" ;; esac
    if "$bin/$t" -dict="$dict" $max_len -max_total_time="$secs" \
        -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
        -artifact_prefix="$here/artifacts/$t/" "$work/corpus/$t" > "$work/$t.log" 2>&1; then
        echo "ok   $t: $(grep -Eo '^Done [0-9]+ runs' "$work/$t.log" || echo '?')"
    else
        echo "FAIL $t"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$work/$t.log" | head -n 10
        return 1
    fi
}
export -f run_one with_ranges
export work here bin secs
if ! printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {}; then
    failed=1
fi
exit "$failed"
