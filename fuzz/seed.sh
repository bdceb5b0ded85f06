#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds: the committed fuzz/seeds/<target>/ (small
# synthetic images from `cargo run --example seedgen -- synth`), and seeds cut from the
# images under fixtures/ and /work/shared/realworld (footer, header, locators, BAT,
# bitmaps, and the whole file, shrunk to its metadata when over 1 MiB).
# Corpus directories are git-ignored; re-running only adds files.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here"

targets=(footer dynamic_header locator bat bitmap host_drive_header open_read chain check write open_vs_check convert compact resize merge volume_scan volume_ext volume_fat volume_ntfs volume_swap vhdx_header vhdx_metadata vhdx_bat vhdx_log)
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true; fi
done
# check, open_vs_check, convert, compact and resize take the same whole images as open_read.
for t in check open_vs_check convert compact resize; do cp -n seeds/open_read/* "corpus/$t/" 2>/dev/null || true; done
# compact_unused takes them behind a header of two unused ranges (as smoke.sh).
mkdir -p corpus/compact_unused
for f in seeds/open_read/*; do
    [ -e "corpus/compact_unused/$(basename "$f")" ] && continue
    { printf '\x02\x00\x00\x00\x00\x00\x00\x40\x00\x00\x04\x60\x00\x00\x00\x30\x00'; cat "$f"; } \
        > "corpus/compact_unused/$(basename "$f")"
done
# merge takes chain inputs (child, then its parent).
cp -n seeds/chain/* corpus/merge/ 2>/dev/null || true

images=()
for dir in "$root/fixtures" "${VHDKIT_REALWORLD:-/work/shared/realworld}"; do
    [ -d "$dir" ] || continue
    while IFS= read -r -d '' f; do images+=("$f"); done \
        < <(find "$dir" -type f \( -name '*.vhd' -o -name '*.bin' \) -print0)
done
# Regression inputs found by earlier runs go back in as seeds.
if [ -d regressions ]; then
    for t in "${targets[@]}"; do
        if [ -d "regressions/$t" ]; then cp -n regressions/"$t"/* "corpus/$t/" 2>/dev/null || true; fi
    done
fi
if [ "${#images[@]}" -gt 0 ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    cargo run -q --release --example seedgen -- extract "$tmp" "${images[@]}"
    for t in "$tmp"/*; do
        name="$(basename "$t")"
        mkdir -p "corpus/$name"
        cp -n "$t"/* "corpus/$name/"
        if [ "$name" = open_read ]; then
            cp -n "$t"/* corpus/check/
            cp -n "$t"/* corpus/open_vs_check/
        fi
    done
    # The fixture chain as one multi-file input (flags byte 0, files split by the
    # separator), each file shrunk to its metadata so it stays under libFuzzer's 1 MiB.
    sep=$'\n--vhdkit-fuzz-file--\n'
    pick() { if [ -f "$tmp/open_read/chain_$1.vhd" ]; then echo "$tmp/open_read/chain_$1.vhd"; else echo "$tmp/open_read/chain_$1.vhd.shrunk"; fi; }
    if [ -f "$(pick top)" ] && [ -f "$(pick mid)" ] && [ -f "$(pick base)" ]; then
        { printf '\0'; cat "$(pick top)"; printf '%s' "$sep"
          cat "$(pick mid)"; printf '%s' "$sep"
          cat "$(pick base)"; } > corpus/chain/fixtures-chain
    fi
fi
for t in "${targets[@]}"; do
    printf '%-18s %5d files %8s\n' "$t" "$(ls "corpus/$t" | wc -l)" "$(du -sh --apparent-size "corpus/$t" | cut -f1)"
done
