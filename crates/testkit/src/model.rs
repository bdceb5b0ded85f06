//! The byte-array model of a disk: the tests write into it what they write into the
//! disk, then compare what the disk reads with it.

use crate::rng::Rng;
use crate::SECTOR;

/// One write: a virtual byte offset and the bytes written there.
pub type Write = (u64, Vec<u8>);

/// Every virtual byte of a disk, as the writes so far leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model(pub Vec<u8>);

impl Model {
    /// A disk of `size` zero bytes.
    pub fn new(size: u64) -> Model {
        Model(vec![0; size as usize])
    }

    /// A disk of `size` zero bytes after `writes`, in order.
    pub fn from_writes(size: u64, writes: &[Write]) -> Model {
        let mut m = Model::new(size);
        m.apply(writes);
        m
    }

    /// Writes `data` at `offset` (inside the disk).
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let o = offset as usize;
        self.0[o..o + data.len()].copy_from_slice(data);
    }

    /// Makes every write of `writes`, in order.
    pub fn apply(&mut self, writes: &[Write]) {
        for (offset, data) in writes {
            self.write(*offset, data);
        }
    }

    /// The virtual size.
    pub fn size(&self) -> u64 {
        self.0.len() as u64
    }
}

/// `count` writes inside a disk of `size` bytes: random unaligned ones that may cross
/// block boundaries, single aligned sectors, a few bytes inside a 4 KiB granule, and
/// runs of zeros, in turn.
pub fn random_writes(rng: &mut Rng, size: u64, count: usize) -> Vec<Write> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (offset, data) = match i % 5 {
            // Unaligned, up to ~300 KiB, may cross block boundaries.
            0 | 1 => {
                let len = rng.range(1, 300_000).min(size);
                (rng.range(0, size - len + 1), rng.bytes(len as usize))
            }
            // One aligned sector.
            2 => {
                let sector = rng.range(0, size / 512);
                (sector * 512, rng.bytes(512))
            }
            // A few bytes inside a 4 KiB granule.
            3 => {
                let len = rng.range(1, 700);
                let at = rng.range(0, size - len);
                (at, rng.bytes(len as usize))
            }
            // Zeros.
            _ => {
                let len = rng.range(1, 20_000).min(size);
                (rng.range(0, size - len + 1), vec![0; len as usize])
            }
        };
        out.push((offset, data));
    }
    out
}

/// A mix of writes per `unit`-sized block of a disk of `size` bytes, drawn from
/// [`Rng::xorshift_star`]`(seed)`: whole random blocks, holes, partly written blocks (at
/// offsets that are not sector-aligned), blocks written with zeros only, zeros and data
/// in one block, and writes that straddle two blocks. Over a parent's content, the zero
/// writes hide the parent's data.
pub fn mixed_writes(size: u64, unit: u64, seed: u64) -> Vec<Write> {
    let mut out = Vec::new();
    let mut rng = Rng::xorshift_star(seed);
    let blocks = size.div_ceil(unit);
    for b in 0..blocks {
        let start = b * unit;
        let len = unit.min(size - start);
        match (b + seed) % 7 {
            0 => out.push((start, rng.bytes(len as usize))),
            1 | 4 => {} // hole
            2 => {
                let off = rng.range(0, len / 2);
                let n = rng.range(1, len / 2);
                out.push((start + off, rng.bytes(n as usize)));
            }
            3 => out.push((start, vec![0; len as usize])),
            5 => {
                let half = len / 2;
                out.push((start, vec![0; half as usize]));
                let n = rng.range(1, len - half);
                let d = rng.bytes(n as usize);
                out.push((start + half + rng.range(0, len - half - n + 1), d));
            }
            _ => {
                // Straddles the boundary with the next block.
                let n = rng.range(SECTOR, unit);
                let at = (start + len).saturating_sub(n / 2);
                let n = n.min(size - at);
                out.push((at, rng.bytes(n as usize)));
            }
        }
    }
    out
}
