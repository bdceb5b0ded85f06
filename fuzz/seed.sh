#!/usr/bin/env bash
# Fills a corpus directory with every target's full seed set: the committed seeds/
# (synthetic images from `cargo run --example seedgen -- synth`, the volume disks, the
# minimized `write` and `host_drive_header` corpora), seeds cut from the images under
# fixtures/ and the real-world images (footer, header, locators, BAT, bitmaps, and the
# whole file, shrunk to its metadata when over 1 MiB; Xen `tap` files also with their
# batmap damaged on purpose), and the saved crash inputs of regressions/.
#
#   ./seed.sh [DIR]     # DIR defaults to corpus/ (git-ignored); re-running only adds files
#
# The real-world images are $VHDKIT_REALWORLD, by default the workplace's
# ../shared/realworld beside the repository when it is there (a clone without it seeds
# from fixtures/ alone). smoke.sh and campaign.sh seed through this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here"
. ./lib.sh

out="${1:-corpus}"
realworld="${VHDKIT_REALWORLD:-}"
if [ -z "$realworld" ] && [ -d "$root/../shared/realworld" ]; then
    realworld="$(cd "$root/../shared/realworld" && pwd)"
fi
if [ -n "$realworld" ] && [ ! -d "$realworld" ]; then
    echo "seed.sh: VHDKIT_REALWORLD=$realworld is not a directory" >&2
    exit 2
fi

mapfile -t targets < <(fuzz_targets)
# Targets whose input is one whole image, and those that take the chain format (files
# split at the separator of src/lib.rs). compact_unused takes whole images behind a
# header of unused ranges.
whole=(open_read check open_vs_check convert compact resize)
chains=(chain merge chain_ops)
is_in() { local x="$1"; shift; printf '%s\n' "$@" | grep -qx -- "$x"; }

# Copies the files of directory $1 (if any) into $2, keeping what $2 already has.
add_all() {
    local f
    [ -d "$1" ] || return 0
    for f in "$1"/*; do
        [ -f "$f" ] && [ ! -e "$2/$(basename "$f")" ] && cp "$f" "$2/"
    done
    return 0
}

gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
cp -r seeds/. "$gen/"
images=()
for dir in "$root/fixtures" $realworld; do
    while IFS= read -r -d '' f; do images+=("$f"); done \
        < <(find "$dir" -type f \( -name '*.vhd' -o -name '*.bin' \) -print0 | sort -z)
done
cargo run -q --release --example seedgen -- extract "$gen" "${images[@]}"
# vhdx_open: each VHDX fixture as patches over every template (src: its header
# section, metadata region, BAT and log, in 255-byte runs of non-zero bytes, offsets
# from the file's start; fuzz_targets/vhdx_open.rs has the input format).
mkdir -p "$gen/vhdx_open"
find "$root/fixtures" $realworld -type f \( -name '*.vhdx' -o -name '*.avhdx' \) -print0 \
    | xargs -0 -r python3 vhdx_open_seeds.py "$gen/vhdx_open"
# The fixture chain as one multi-file input (flags byte 0, files split by the
# separator), each file shrunk to its metadata so it stays under libFuzzer's 1 MiB.
sep=$'\n--vhdkit-fuzz-file--\n'
pick() { if [ -f "$gen/open_read/chain_$1.vhd" ]; then echo "$gen/open_read/chain_$1.vhd"; else echo "$gen/open_read/chain_$1.vhd.shrunk"; fi; }
if [ -f "$(pick top)" ] && [ -f "$(pick mid)" ] && [ -f "$(pick base)" ]; then
    { printf '\0'; cat "$(pick top)"; printf '%s' "$sep"
      cat "$(pick mid)"; printf '%s' "$sep"
      cat "$(pick base)"; } > "$gen/chain/fixtures-chain"
fi
# Saved crash inputs join the pool of their kind of input.
mkdir -p "$gen/pool-whole" "$gen/pool-chain"
add_all "$gen/open_read" "$gen/pool-whole"
add_all "$gen/chain" "$gen/pool-chain"
for t in "${whole[@]}"; do add_all "regressions/$t" "$gen/pool-whole"; done
for t in "${chains[@]}"; do add_all "regressions/$t" "$gen/pool-chain"; done

for t in "${targets[@]}"; do
    mkdir -p "$out/$t"
    add_all "$gen/$t" "$out/$t"
    add_all "regressions/$t" "$out/$t"
    if is_in "$t" "${whole[@]}"; then add_all "$gen/pool-whole" "$out/$t"; fi
    if is_in "$t" "${chains[@]}"; then add_all "$gen/pool-chain" "$out/$t"; fi
    if [ "$t" = compact_unused ]; then
        # Two unused ranges: 0..4 MiB and 6 MiB + 1 KiB..+3 MiB (byte 0: the count and
        # no flags; then start and length of each, u32 little-endian).
        for f in "$gen/pool-whole"/*; do
            dst="$out/$t/$(basename "$f")"
            [ -e "$dst" ] && continue
            { printf '\x02\x00\x00\x00\x00\x00\x00\x40\x00\x00\x04\x60\x00\x00\x00\x30\x00'; cat "$f"; } > "$dst"
        done
    fi
done
echo "seeds from ${#images[@]} images (fixtures/${realworld:+ and $realworld}) into $out/:"
for t in "${targets[@]}"; do
    printf '  %-18s %5d files %8s\n' "$t" "$(find "$out/$t" -type f | wc -l)" \
        "$(du -sh --apparent-size "$out/$t" | cut -f1)"
done
