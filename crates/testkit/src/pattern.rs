//! The content pattern every suite writes: the one of `fixtures/make-fixtures.sh`.

/// The content pattern of `fixtures/make-fixtures.sh` (and `fx.py` inside it), which the
/// fixtures hold: seed 0 is `n` zero bytes; otherwise byte `j` is
/// `((j*7 + (j>>8)*3 + seed*13) % 251) + 1` — never zero, so a block of it is never
/// mistaken for a hole, and different at every block boundary. (The seed is taken
/// modulo 251 first, which changes nothing but lets any `u64` be one.)
pub fn pattern(seed: u64, n: usize) -> Vec<u8> {
    if seed == 0 {
        return vec![0; n];
    }
    let shift = seed % 251 * 13;
    (0..n as u64)
        .map(|j| ((j * 7 + (j >> 8) * 3 + shift) % 251 + 1) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_zeros_for_seed_zero_and_never_zero_otherwise() {
        assert_eq!(pattern(0, 1000), vec![0; 1000]);
        for seed in 1..40 {
            assert!(pattern(seed, 70_000).iter().all(|&b| b != 0), "seed {seed}");
        }
    }

    #[test]
    fn pattern_starts_as_the_fixtures_say() {
        // fixtures/README.md: byte j of seed 1 is (j*7 + (j>>8)*3 + 13) % 251 + 1.
        assert_eq!(&pattern(1, 3)[..], &[14, 21, 28]);
        assert_eq!(pattern(1, 257)[256], ((256 * 7 + 3 + 13) % 251 + 1) as u8);
        assert_ne!(pattern(1, 64), pattern(2, 64));
    }

    #[test]
    fn pattern_takes_any_seed() {
        assert_eq!(pattern(u64::MAX, 300), pattern(u64::MAX % 251, 300));
        assert_eq!(pattern(5 + 251, 300), pattern(5, 300));
    }
}
