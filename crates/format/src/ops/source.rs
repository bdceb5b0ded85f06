//! Composing blocks of a source view (any disk, chain or raw image).

use std::sync::Mutex;

use crate::error::Result;
use crate::image::{Disk, Extent, Window};

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

/// The bytes of a composed block: a window of the source mapped as is (no copy), or a
/// buffer composed from several extents.
pub(crate) enum BlockData {
    /// One stored extent covering the whole block: handed out as the mapped source.
    Mapped(Window),
    /// Composed from several extents (chain levels, zero runs) into a pooled buffer.
    Owned(Vec<u8>),
}

impl std::ops::Deref for BlockData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            BlockData::Mapped(w) => w,
            BlockData::Owned(v) => v,
        }
    }
}

/// One composed block of the source.
pub(crate) struct Composed {
    /// Block index.
    pub index: u64,
    /// The bytes, or `None` when the block reads as zeros.
    pub data: Option<BlockData>,
    /// Length of the block (the last one may be short).
    pub len: u64,
}

/// Reuses block buffers across chunks: no allocation (and no page faults on fresh
/// memory) per block once the first chunk has run.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    fn take(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        v.resize(len, 0);
        v
    }

    /// Returns a block's buffer to the pool.
    pub(crate) fn give(&self, data: Option<BlockData>) {
        if let Some(BlockData::Owned(v)) = data {
            self.free.lock().unwrap_or_else(|e| e.into_inner()).push(v);
        }
    }
}

/// How a block's stored bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadVia {
    /// Read-only memory maps of bounded windows (sources: no copy where a block lies in
    /// one piece).
    Map,
    /// Positional reads into pooled buffers. Verification reads the new file this way:
    /// through the ordinary read path, and without the process-wide mapping lock that
    /// populating maps takes, so that its CRC work scales across threads.
    Copy,
}

/// Reads block `index` of `unit` bytes (clipped to the virtual size) from `disk`,
/// skipping the read entirely when no level stores any of it.
pub(crate) fn compose(disk: &Disk, index: u64, unit: u64, pool: &BufferPool) -> Result<Composed> {
    compose_via(disk, index, unit, pool, ReadVia::Map)
}

/// [`compose`], reading stored bytes `via` maps or copies.
pub(crate) fn compose_via(
    disk: &Disk,
    index: u64,
    unit: u64,
    pool: &BufferPool,
    via: ReadVia,
) -> Result<Composed> {
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
    let data = match (via, extents.as_slice()) {
        (
            ReadVia::Map,
            [Extent::Data {
                layer, file_offset, ..
            }],
        ) => match disk.layers()[*layer].map_data(*file_offset, len) {
            Some(w) => BlockData::Mapped(w?),
            None => owned(disk, &extents, len, pool)?,
        },
        (ReadVia::Map, _) => owned(disk, &extents, len, pool)?,
        (ReadVia::Copy, _) => {
            let mut buf = pool.take(len as usize);
            disk.read_extents(&extents, &mut buf)?;
            BlockData::Owned(buf)
        }
    };
    let data = if is_zero(&data) {
        pool.give(Some(data));
        None
    } else {
        Some(data)
    };
    Ok(Composed { index, data, len })
}

fn owned(disk: &Disk, extents: &[Extent], len: u64, pool: &BufferPool) -> Result<BlockData> {
    let mut buf = pool.take(len as usize);
    disk.read_extents_mapped(extents, &mut buf)?;
    Ok(BlockData::Owned(buf))
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
