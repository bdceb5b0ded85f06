//! Seeded pseudo-random numbers for test data, offsets and schedules.
//!
//! Pure `std`, and nothing from the rest of the crate: `benches/common/layout.rs`
//! includes this file by path, and `benches/tools/mkimage.rs`, which includes that one,
//! is built with plain `rustc`.

/// The generator behind an [`Rng`]. The suites chose their seeds, sizes and expected
/// counts with these streams, so each is reproduced bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// splitmix64: every seed, zero included, gives a good stream.
    SplitMix,
    /// xorshift64* (12, 25, 27, multiplied by `0x2545_F491_4F6C_DD1D`).
    XorShiftStar,
    /// Marsaglia's xorshift64 (13, 7, 17); the output is the state.
    XorShift,
}

/// Multiplier that spreads a small seed over the state (the golden ratio, 2^64 / φ).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A small deterministic generator, so that a failure reproduces.
#[derive(Debug, Clone)]
pub struct Rng {
    algorithm: Algorithm,
    state: u64,
}

impl Rng {
    /// splitmix64 from `seed`: the generator of the CLI and serve suites.
    pub fn new(seed: u64) -> Rng {
        Rng::from_state(Algorithm::SplitMix, seed)
    }

    /// xorshift64* from the state `seed·φ | 1`: the generator of the format crate's
    /// suites and of the operation tests.
    pub fn xorshift_star(seed: u64) -> Rng {
        Rng::from_state(Algorithm::XorShiftStar, seed.wrapping_mul(GOLDEN) | 1)
    }

    /// xorshift64 from the state `seed·φ | 1`.
    pub fn xorshift(seed: u64) -> Rng {
        Rng::from_state(Algorithm::XorShift, seed.wrapping_mul(GOLDEN) | 1)
    }

    /// `algorithm` from exactly `state`. The xorshift states must not be zero (they would
    /// stay zero).
    pub fn from_state(algorithm: Algorithm, state: u64) -> Rng {
        assert!(
            state != 0 || algorithm == Algorithm::SplitMix,
            "a xorshift generator needs a state other than zero"
        );
        Rng { algorithm, state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        match self.algorithm {
            Algorithm::SplitMix => {
                self.state = self.state.wrapping_add(GOLDEN);
                let mut z = self.state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            }
            Algorithm::XorShiftStar => {
                let mut x = self.state;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                self.state = x;
                x.wrapping_mul(0x2545_F491_4F6C_DD1D)
            }
            Algorithm::XorShift => {
                let mut x = self.state;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.state = x;
                x
            }
        }
    }

    /// Uniform in `lo..hi` (`lo < hi`; the small modulo bias does not matter here).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` random bytes: the little-endian bytes of successive values, the last one cut.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        self.fill(&mut out);
        out
    }

    /// Fills `buf` like [`Rng::bytes`] would.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let last = self.next_u64().to_le_bytes();
            let n = rest.len();
            rest.copy_from_slice(&last[..n]);
        }
    }
}
