//! Writes the deterministic synthetic content of `benches/common/layout.rs` into a raw
//! image and prints the writes that produced it, for `benches/compare-qemu.sh`.
//!
//! Plain `std`, built by the script with `rustc -O` (no Cargo target, no dependency):
//!
//! ```text
//! mkimage FILE SIZE SEED MIX
//! ```
//!
//! `MIX` is `base` (~40% random, ~10% partly written, ~10% written zeros, rest holes),
//! `child` (~25% of the blocks), `top` (~12%) or `random` (every block). An existing
//! `FILE` is overlaid (so `cp base.raw chain.raw; mkimage chain.raw SIZE 2 child` gives
//! the flattened content of a base with a child). Prints one line per write:
//! `OFFSET LEN data|zero`.

#[path = "../common/layout.rs"]
mod layout;

use std::io::Write as _;
use std::process::ExitCode;

use layout::{Layout, ALL_RANDOM, BASE_MIX, CHILD_MIX, TOP_MIX};

fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let usage = || {
        eprintln!("usage: mkimage FILE SIZE SEED base|child|top|random");
        ExitCode::from(2)
    };
    if args.len() != 5 {
        return usage();
    }
    let (Some(size), Ok(seed)) = (parse_size(&args[2]), args[3].parse::<u64>()) else {
        return usage();
    };
    let mix = match args[4].as_str() {
        "base" => BASE_MIX,
        "child" => CHILD_MIX,
        "top" => TOP_MIX,
        "random" => ALL_RANDOM,
        _ => return usage(),
    };
    let layout = Layout::new(size, seed, mix);
    let file = match std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&args[1])
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mkimage: opening {}: {e}", args[1]);
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = layout.apply_to_raw(&file) {
        eprintln!("mkimage: writing {}: {e}", args[1]);
        return ExitCode::FAILURE;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for w in layout.writes() {
        let kind = if w.zero { "zero" } else { "data" };
        if writeln!(out, "{} {} {kind}", w.offset, w.len).is_err() {
            return ExitCode::FAILURE;
        }
    }
    if out.flush().is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
