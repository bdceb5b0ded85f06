//! Deterministic synthetic disk content for the benches and `compare-qemu.sh`.
//!
//! Pure `std`: the benches include it through `common/mod.rs`, and
//! `benches/tools/mkimage.rs` (compiled with plain `rustc` by the script) includes it by
//! path; it includes the test kit's generator (`crates/testkit/src/rng.rs`, pure `std`
//! too) the same way. Same seed and sizes, same bytes, on every machine.
//!
//! A disk is cut into blocks (2 MiB, the default VHD block size). Each block is one of:
//! random data over the whole block, random data in a few runs (the rest never written),
//! written but all zero (an allocated block of zeros in the VHD forms), or a hole (never
//! written). The mix is drawn per block from a seeded xorshift generator; the bytes of
//! block `b` are a function of `(seed, b)` only, so any range can be regenerated
//! without the rest.

#![allow(dead_code)]

/// Block size of the synthetic layout and of the VHDs made from it: 2 MiB.
pub const BLOCK: u64 = 2 << 20;

/// Granularity of partial runs: 4 KiB, a whole bitmap byte of a differencing disk.
pub const RUN_GRANULE: u64 = 4096;

// The generator is the test kit's, included by path: mkimage is built without Cargo.
#[path = "../../crates/testkit/src/rng.rs"]
mod rng;

pub use rng::{Algorithm, Rng};

/// The layouts' generator: xorshift64* from the splitmix64 of `seed`, so nearby seeds
/// give unrelated streams.
pub fn generator(seed: u64) -> Rng {
    let z = Rng::new(seed).next_u64();
    let state = if z == 0 { 0x2545_F491_4F6C_DD1D } else { z };
    Rng::from_state(Algorithm::XorShiftStar, state)
}

/// Percentages of each kind of block; the rest are holes.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Random data over the whole block.
    pub random: u64,
    /// Random data in 1–4 runs of 4 KiB multiples, the rest never written.
    pub partial: u64,
    /// Written, all zero.
    pub zero: u64,
}

/// A base disk: ~40% random, ~10% partly written, ~10% allocated zeros, ~40% holes.
pub const BASE_MIX: Mix = Mix {
    random: 40,
    partial: 10,
    zero: 10,
};

/// A differencing child holding ~25% of the blocks.
pub const CHILD_MIX: Mix = Mix {
    random: 15,
    partial: 7,
    zero: 3,
};

/// A thin top layer (~12% of the blocks) for three-level chains.
pub const TOP_MIX: Mix = Mix {
    random: 6,
    partial: 5,
    zero: 1,
};

/// Every block random.
pub const ALL_RANDOM: Mix = Mix {
    random: 100,
    partial: 0,
    zero: 0,
};

/// What one block holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockKind {
    /// Never written.
    Hole,
    /// Random over the whole block.
    Random,
    /// Random in these `(offset in block, len)` runs, sorted and disjoint.
    Partial(Vec<(u64, u64)>),
    /// Written with zeros.
    Zero,
}

/// One write that produces the layout: `len` bytes at `offset`, random (from the
/// layout's generator) or zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    /// Virtual byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Zeros rather than data.
    pub zero: bool,
}

/// A synthetic disk's content.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Virtual size (a multiple of [`BLOCK`]).
    pub size: u64,
    /// Seed of the content.
    pub seed: u64,
    /// One entry per block.
    pub blocks: Vec<BlockKind>,
}

impl Layout {
    /// Draws the layout of a disk of `size` bytes (rounded up to whole blocks).
    pub fn new(size: u64, seed: u64, mix: Mix) -> Layout {
        let n = size.div_ceil(BLOCK);
        let mut rng = generator(seed ^ 0x6C61_796F_7574);
        let blocks = (0..n)
            .map(|_| {
                let r = rng.below(100);
                if r < mix.random {
                    BlockKind::Random
                } else if r < mix.random + mix.partial {
                    let k = 1 + rng.below(4);
                    let seg = BLOCK / k;
                    let granules = seg / RUN_GRANULE;
                    let runs = (0..k)
                        .map(|i| {
                            // Up to a quarter of the segment, anywhere inside it.
                            let len = (1 + rng.below((granules / 4).max(1))) * RUN_GRANULE;
                            let start = rng.below(granules - len / RUN_GRANULE + 1) * RUN_GRANULE;
                            (i * seg + start, len)
                        })
                        .collect();
                    BlockKind::Partial(runs)
                } else if r < mix.random + mix.partial + mix.zero {
                    BlockKind::Zero
                } else {
                    BlockKind::Hole
                }
            })
            .collect();
        Layout {
            size: n * BLOCK,
            seed,
            blocks,
        }
    }

    /// Number of blocks.
    pub fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// The random bytes of block `b` (whether or not the block uses them).
    pub fn block_bytes(&self, b: u64, out: &mut [u8]) {
        let mut rng = generator(self.seed.wrapping_mul(0x1000_0000_01B3) ^ b);
        rng.fill(out);
    }

    /// The writes that produce the layout, in offset order; adjacent whole random blocks
    /// are joined into one write.
    pub fn writes(&self) -> Vec<Write> {
        let mut out: Vec<Write> = Vec::new();
        for (b, kind) in self.blocks.iter().enumerate() {
            let base = b as u64 * BLOCK;
            match kind {
                BlockKind::Hole => {}
                BlockKind::Random => match out.last_mut() {
                    Some(w) if !w.zero && w.offset + w.len == base && w.len % BLOCK == 0 => {
                        w.len += BLOCK
                    }
                    _ => out.push(Write {
                        offset: base,
                        len: BLOCK,
                        zero: false,
                    }),
                },
                BlockKind::Partial(runs) => out.extend(runs.iter().map(|&(o, l)| Write {
                    offset: base + o,
                    len: l,
                    zero: false,
                })),
                BlockKind::Zero => out.push(Write {
                    offset: base,
                    len: BLOCK,
                    zero: true,
                }),
            }
        }
        out
    }

    /// The bytes of write `w` (or of any range inside random or partial blocks).
    pub fn data(&self, w: &Write) -> Vec<u8> {
        let mut out = vec![0u8; w.len as usize];
        if w.zero {
            return out;
        }
        let mut block = vec![0u8; BLOCK as usize];
        let mut pos = w.offset;
        let end = w.offset + w.len;
        while pos < end {
            let b = pos / BLOCK;
            let in_block = pos % BLOCK;
            let n = (BLOCK - in_block).min(end - pos);
            self.block_bytes(b, &mut block);
            let at = (pos - w.offset) as usize;
            out[at..at + n as usize]
                .copy_from_slice(&block[in_block as usize..(in_block + n) as usize]);
            pos += n;
        }
        out
    }

    /// Bytes written by the layout (zeros included).
    pub fn bytes_written(&self) -> u64 {
        self.writes().iter().map(|w| w.len).sum()
    }

    /// Applies the layout's writes to `file` (created or grown to the layout's size):
    /// a sparse raw image where holes stay holes.
    pub fn apply_to_raw(&self, file: &std::fs::File) -> std::io::Result<()> {
        // Plain std (seek, write): the comparison script builds the generator with
        // rustc alone, without the workspace's crates.
        use std::io::{Seek, SeekFrom, Write as _};
        let mut out = file;
        if file.metadata()?.len() < self.size {
            file.set_len(self.size)?;
        }
        for w in self.writes() {
            // One block at a time: an all-random disk is one long write.
            let mut pos = w.offset;
            while pos < w.offset + w.len {
                let piece = Write {
                    offset: pos,
                    len: (BLOCK - pos % BLOCK).min(w.offset + w.len - pos),
                    zero: w.zero,
                };
                out.seek(SeekFrom::Start(pos))?;
                out.write_all(&self.data(&piece))?;
                pos += piece.len;
            }
        }
        Ok(())
    }
}
