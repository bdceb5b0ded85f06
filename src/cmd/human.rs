//! Numbers for people: sizes as `qemu-img info` prints them, counts with their noun in
//! the right number.

/// `val` bytes in binary units as `qemu-img` writes them (its `size_to_str`): three
/// significant digits, trailing zeros dropped, and the next unit from 1000 of the
/// previous one on (`1000 KiB` is written `0.977 MiB`): `512 B`, `1.5 KiB`, `4.77 MiB`,
/// `1 GiB`.
pub fn size(val: u64) -> String {
    const SUFFIXES: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    // qemu: frexp(val / (1000.0 / 1024.0), &e); i = (e - 1) / 10 — e - 1 is
    // floor(log2(val * 1.024)), read here exactly from the f64's exponent bits.
    let scaled = val as f64 / (1000.0 / 1024.0);
    let i = if scaled >= 1.0 {
        let log2 = ((scaled.to_bits() >> 52) & 0x7ff) as i64 - 1023;
        (log2 / 10) as usize
    } else {
        0
    };
    let i = i.min(SUFFIXES.len() - 1);
    let v = val as f64 / (1u64 << (i * 10)) as f64;
    format!("{} {}", three_digits(v), SUFFIXES[i])
}

/// `v` (0 ≤ v < 1000) with three significant digits, as printf's `%0.3g` writes numbers
/// of that range: `0.977`, `4.77`, `1.5`, `954` — except that a value rounding up to
/// 1000 is written `1000`, where `%g` (and so qemu-img) writes `1e+03`.
fn three_digits(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let decimals = (2 - v.log10().floor() as i64).clamp(0, 3) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// `bytes` as `info` shows sizes: `1 GiB (1073741824 bytes)`, as `qemu-img info` does.
pub fn size_and_bytes(bytes: u64) -> String {
    format!("{} ({bytes} bytes)", size(bytes))
}

/// `n` and `noun`, the noun in the plural unless `n` is 1: `1 block`, `3 blocks`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each value as `qemu-img info` 10.0 prints it for a raw file of that size.
    #[test]
    fn size_matches_qemu_img() {
        for (val, want) in [
            (0, "0 B"),
            (512, "512 B"),
            (999, "999 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (1_024_000, "0.977 MiB"),
            (1_048_064, "1 MiB"),
            (1_065_472, "1.02 MiB"),
            (4_194_304, "4 MiB"),
            (5_000_704, "4.77 MiB"),
            (1_000_000_000, "954 MiB"),
            // qemu-img: "1e+03 KiB".
            (1_023_590, "1000 KiB"),
            (1_073_741_824, "1 GiB"),
            (2_190_433_320_960, "1.99 TiB"),
        ] {
            assert_eq!(size(val), want, "{val}");
        }
    }

    #[test]
    fn size_of_the_largest_values_stays_in_range() {
        assert_eq!(size(u64::MAX), "16 EiB");
        assert_eq!(size(1 << 50), "1 PiB");
    }

    #[test]
    fn count_is_singular_for_one_only() {
        assert_eq!(count(0, "block"), "0 blocks");
        assert_eq!(count(1, "block"), "1 block");
        assert_eq!(count(2, "problem"), "2 problems");
    }
}
