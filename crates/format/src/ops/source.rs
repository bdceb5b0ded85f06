//! Composing blocks of a source view (any disk, chain or raw image).

use crate::error::Result;
use crate::image::{Disk, Extent};

/// Whether every byte of `buf` is zero (word at a time).
pub fn is_zero(buf: &[u8]) -> bool {
    // Fixed-size chunks OR-ed into one word: the compiler vectorises this loop.
    let mut chunks = buf.chunks_exact(64);
    for c in &mut chunks {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            acc |= u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// One composed block of the source.
pub(crate) struct Composed {
    /// Block index.
    pub index: u64,
    /// The bytes, or `None` when the block reads as zeros.
    pub data: Option<Vec<u8>>,
    /// Length of the block (the last one may be short).
    pub len: u64,
}

/// Reads block `index` of `unit` bytes (clipped to the virtual size) from `disk`,
/// skipping the read entirely when no level stores any of it.
pub(crate) fn compose(disk: &Disk, index: u64, unit: u64) -> Result<Composed> {
    let size = disk.virtual_size();
    let start = index * unit;
    let len = unit.min(size - start);
    let extents = disk.extents(start, len)?;
    let stored = extents.iter().any(|e| matches!(e, Extent::Data { .. }));
    if !stored {
        return Ok(Composed {
            index,
            data: None,
            len,
        });
    }
    let mut buf = vec![0u8; len as usize];
    disk.read_extents_mapped(&extents, &mut buf)?;
    let data = if is_zero(&buf) { None } else { Some(buf) };
    Ok(Composed { index, data, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_sees_a_single_set_byte_anywhere() {
        let mut buf = vec![0u8; 4096 + 13];
        assert!(is_zero(&buf));
        for i in [0, 63, 64, 4095, 4096 + 12] {
            buf[i] = 1;
            assert!(!is_zero(&buf), "{i}");
            buf[i] = 0;
        }
        assert!(is_zero(&[]));
    }
}
