# Shared by seed.sh, smoke.sh and campaign.sh (sourced, not run): the target list, how
# each target is run (dictionary, input size, limits), and one bounded libFuzzer run.

# Every target, from fuzz/Cargo.toml (cargo-fuzz reads it; nothing is compiled).
fuzz_targets() {
    RUSTC_BOOTSTRAP=1 cargo fuzz list
}

# The libFuzzer limits of every run (smoke, campaign, regression replay).
FUZZ_LIMITS=(-rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10)

# The flags of target $1: its dictionary, and the input size of the whole-image targets.
fuzz_flags() {
    case "$1" in
        volume_*) printf '%s\n' -dict=volume.dict ;;
        vhdx_*) printf '%s\n' -dict=vhdx.dict ;;
        *) printf '%s\n' -dict=vhd.dict ;;
    esac
    case "$1" in
        open_read|check|chain|open_vs_check|convert|compact|compact_unused|resize|merge|trust|chain_ops|volume_*|vhdx_*)
            printf '%s\n' -max_len=1048576 ;;
    esac
}

# Fuzzes target $1 for $2 seconds on corpus directory $3 (the corpus grows there),
# crashing inputs into $4/, libFuzzer's output into $5. Needs $bin (the built targets)
# and the current directory to be fuzz/. Returns libFuzzer's exit status.
fuzz_run() {
    local t="$1" secs="$2" corpus="$3" artifacts="$4" log="$5" flags
    mapfile -t flags < <(fuzz_flags "$t")
    mkdir -p "$corpus" "$artifacts"
    "$bin/$t" "${flags[@]}" "${FUZZ_LIMITS[@]}" -max_total_time="$secs" \
        -artifact_prefix="$artifacts/" "$corpus" > "$log" 2>&1
}

# The built targets' directory (after `cargo fuzz build`).
fuzz_bin_dir() {
    printf '%s/target/%s/release\n' "$(pwd)" "$(rustc -vV | sed -n 's/^host: //p')"
}
