#!/usr/bin/env bash
# A fuzzing campaign: every target in turn (one at a time: one core), SECONDS each, from
# the full seed set (seed.sh), then a Markdown table ready for fuzz/README.md: runs,
# runs per second, libFuzzer's final coverage (`cov:` edges, `ft:` features), the corpus
# at the end (files, bytes) and the result.
#
#   ./campaign.sh SECONDS [TARGET...]      # every target when none is named
#
# The corpora grow under $CAMPAIGN_DIR (default corpus/campaign-<UTC time>/, git-ignored),
# each target's libFuzzer output beside its corpus (<target>.log); crashing inputs land in
# artifacts/<target>/ (keep each in regressions/<target>/ with a test in
# crates/format/tests/fuzz_regressions.rs). Exits non-zero when a target failed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
. ./lib.sh
secs="${1:?usage: campaign.sh SECONDS [TARGET...]}"
shift
export RUSTC_BOOTSTRAP=1
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ]; then export TMPDIR=/dev/shm; fi

cargo fuzz build
bin="$(fuzz_bin_dir)"
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(fuzz_targets); fi
dir="${CAMPAIGN_DIR:-corpus/campaign-$(date -u +%Y%m%dT%H%M%SZ)}"
# (Not `| head -n 1`: under pipefail, seed.sh killed by SIGPIPE would stop the run.)
seeded="$(./seed.sh "$dir")"
printf '%s\n' "${seeded%%$'\n'*}" >&2

# "1234567" -> "1.23 M"
human() { awk -v n="$1" 'BEGIN { if (n >= 1e6) printf "%.2f M", n / 1e6; else if (n >= 1e3) printf "%.1f k", n / 1e3; else printf "%d", n }'; }

rows=()
failed=0
for t in "${targets[@]}"; do
    echo "campaign: $t for $secs s" >&2
    log="$dir/$t.log"
    start=$(date +%s)
    if fuzz_run "$t" "$secs" "$dir/$t" "$here/artifacts/$t" "$log"; then
        result="ok"
    else
        failed=1
        kind="$(grep -Eom1 'ERROR: libFuzzer: [a-z -]+|panicked at [^:]+:[0-9]+' "$log" || echo 'failed')"
        unit="$(sed -nE 's/.*Test unit written to (.*)/\1/p' "$log" | tail -n 1)"
        result="**${kind#ERROR: libFuzzer: }**${unit:+: \`${unit#"$here/"}\`}"
    fi
    took=$(( $(date +%s) - start ))
    runs="$(sed -nE 's/^Done ([0-9]+) runs.*/\1/p' "$log" | tail -n 1)"
    [ -n "$runs" ] || runs="$(sed -nE 's/^#([0-9]+).*/\1/p' "$log" | tail -n 1)"
    runs="${runs:-0}"
    read -r cov ft < <(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+).*/\1 \2/p' "$log" | tail -n 1; echo "- -")
    files="$(find "$dir/$t" -type f | wc -l)"
    size="$(du -sh --apparent-size "$dir/$t" | cut -f1)"
    rows+=("| \`$t\` | $secs | $(human "$runs") | $(( runs / (took > 0 ? took : 1) )) | $cov | $ft | $files / $size | $result |")
done

echo
echo "Campaign of $(date -u +%Y-%m-%d): $secs s per target, one at a time, from the full seed set (corpora in fuzz/$dir)."
echo
echo "| target | s | runs | runs/s | cov | ft | corpus (files / size) | result |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
exit "$failed"
