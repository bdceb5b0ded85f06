#!/usr/bin/env bash
# Builds every fuzz target, replays the saved crash inputs under fuzz/regressions/, then
# fuzzes each target for a short bounded time (SMOKE_SECONDS, default 20) from its full
# seed set, SMOKE_JOBS (default 2) at a time. The seed set is seed.sh's: the committed
# seeds, seeds cut from fixtures/ and — when the workplace's ../shared/realworld is
# beside the repository, as in CI — from the real-world images, and the regressions. Exits
# non-zero on any crash, timeout or out-of-memory; the failing inputs land in
# fuzz/artifacts/<target>/.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on stable through RUSTC_BOOTSTRAP.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
. ./lib.sh
export RUSTC_BOOTSTRAP=1
# open_read also reads each image from a real file (mapped reads); keep those on tmpfs.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ]; then export TMPDIR=/dev/shm; fi
secs="${SMOKE_SECONDS:-20}"
jobs="${SMOKE_JOBS:-2}"

cargo fuzz build
bin="$(fuzz_bin_dir)"
mapfile -t targets < <(fuzz_targets)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0

# 1. Every saved crash input must now pass.
for t in "${targets[@]}"; do
    [ -d "regressions/$t" ] || continue
    if ! "$bin/$t" "${FUZZ_LIMITS[@]}" regressions/"$t"/* > "$work/$t.replay.log" 2>&1; then
        echo "FAIL $t: a regression input crashes again"
        tail -n 30 "$work/$t.replay.log"
        failed=1
    fi
done

# 2. The full seed set.
if ! ./seed.sh "$work/corpus" > "$work/seed.log" 2>&1; then
    cat "$work/seed.log"
    exit 1
fi
head -n 1 "$work/seed.log"

# 3. A short fuzzing run per target.
run_one() {
    local t="$1"
    if fuzz_run "$t" "$secs" "$work/corpus/$t" "$here/artifacts/$t" "$work/$t.log"; then
        echo "ok   $t: $(grep -Eo '^Done [0-9]+ runs' "$work/$t.log" || echo '?')"
    else
        echo "FAIL $t"
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$work/$t.log" | head -n 10
        return 1
    fi
}
export -f run_one
export work here bin secs
if ! printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c '. ./lib.sh; run_one "$1"' _ {}; then
    failed=1
fi
exit "$failed"
