//! Composing blocks of a source view (any disk, chain or raw image).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::error::Result;
use crate::image::{Disk, Extent, Window};

use super::unused::UnusedRanges;

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

/// The bytes of a composed block: part of a window of the source mapped as is (no
/// copy), a buffer composed from several extents, or nothing read at all (the writer
/// clones the block's stored runs).
pub(crate) enum BlockData {
    /// One stored extent covering the whole block: its range of a mapped window that
    /// the chunk's neighbouring blocks share (unmapped when the last of them is dropped).
    Mapped {
        window: Arc<Window>,
        range: Range<usize>,
    },
    /// Composed from several extents (chain levels, zero runs) into a pooled buffer.
    Owned(Vec<u8>),
    /// Not read: the block's [`Composed::runs`] are cloned where they lie (copy offload
    /// into a raw or fixed result, whose layout needs no zero test), its zero runs left
    /// as holes. Whether it holds only zeros is not known.
    Unread,
}

impl BlockData {
    /// The block's bytes, when they were read.
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        match self {
            BlockData::Mapped { window, range } => Some(&window[range.clone()]),
            BlockData::Owned(v) => Some(v),
            BlockData::Unread => None,
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
    /// Where the block's bytes lie — its extents through the chain, in order, covering
    /// it — when the writer may clone them ([`Offload`]) and no byte was masked; empty
    /// otherwise.
    pub runs: Vec<Extent>,
}

/// Copy offload, as composition sees it: the output's file system shares extents, so
/// the writer clones stored runs that lie on it instead of writing their bytes.
pub(crate) struct Offload {
    /// The output's file system (`st_dev`).
    pub device: u64,
    /// Each chain level's data file system (`None`: not a file).
    pub layer_devices: Vec<Option<u64>>,
    /// The output is raw or fixed and nothing asks for the bytes (no verification): a
    /// block whose every stored run can be cloned at its own virtual offset is not read
    /// at all ([`BlockData::Unread`]). A dynamic result must know which blocks are all
    /// zero, so its blocks are read (the holes of a flat source excepted: they are zero
    /// extents, never read).
    pub unread_flat: bool,
}

impl Offload {
    /// Source and output offsets of cloned ranges are multiples of this (the block size
    /// of the file systems that share extents).
    pub(crate) const ALIGN: u64 = 4096;

    /// Whether a run of chain level `layer` at `file_offset`, written at output offset
    /// `at`, can be cloned: it lies on the output's file system, at the same offset
    /// within a 4 KiB block as its place in the output.
    pub(crate) fn can_clone(&self, layer: usize, file_offset: u64, at: u64) -> bool {
        self.layer_devices.get(layer).copied().flatten() == Some(self.device)
            && file_offset % Self::ALIGN == at % Self::ALIGN
    }
}

/// Unused ranges to compose as zeros, in pieces of `grain` bytes counted from each
/// block's start: a piece is zeroed only when each byte of it is unused or zero (free or
/// zero), so a block (dynamic results: `grain` is the block) or a page (raw results:
/// 4 KiB) holding a used non-zero byte keeps all of its bytes.
#[derive(Clone, Copy)]
pub(crate) struct Mask<'a> {
    /// The unused ranges.
    pub unused: &'a UnusedRanges,
    /// The size of a piece.
    pub grain: u64,
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

/// Blocks whose data lie at most this far apart in a file share one mapped window (the
/// gap holds the next block's sector bitmap, or alignment padding).
const MAX_WINDOW_GAP: u64 = 64 << 10;

/// Composes blocks `blocks` (indexes, in order) of `unit` bytes (the last clipped to
/// `size`) of the view of `disk` that is `size` bytes long — its virtual size, or more:
/// the source padded with zeros (`--align`) — in parallel, skipping the read entirely
/// where no level stores any of a block.
///
/// Blocks stored whole in one extent are handed out as ranges of shared windows: the
/// chunk's blocks that lie next to each other in one file get one map (see
/// `image::map_clone`), which each worker populates for its own block.
///
/// With a `mask`, the pieces of each block that lie wholly in its unused ranges read as
/// zeros; a block that is wholly unused is not read at all. With `offload`, each block
/// carries its runs for the writer to clone, and (a raw or fixed result) a block whose
/// every run can be cloned in place is not read.
pub(crate) fn compose_chunk(
    disk: &Disk,
    size: u64,
    blocks: &[u64],
    unit: u64,
    pool: &BufferPool,
    mask: Option<Mask<'_>>,
    offload: Option<&Offload>,
) -> Result<Vec<Composed>> {
    let planned: Vec<Planned> = blocks
        .par_iter()
        .map(|&index| {
            let start = index * unit;
            let len = unit.min(size - start);
            let masked = match mask {
                Some(m) => m.unused.whole_pieces(&(start..start + len), m.grain),
                None => Vec::new(),
            };
            let whole = matches!(masked.as_slice(), [r] if r.end - r.start == len);
            let extents = if whole {
                // Nothing of it is read: it is composed as zeros.
                vec![Extent::Zero { len }]
            } else {
                view_extents(disk, start, len)?
            };
            let stored = extents.iter().any(|e| matches!(e, Extent::Data { .. }));
            // A block with unused bytes is read: whether its pieces are free or zero
            // depends on what they hold.
            let touched = mask.is_some_and(|m| !m.unused.within(&(start..start + len)).is_empty());
            let unread = stored
                && !touched
                && offload.is_some_and(|o| o.unread_flat && all_clonable(o, &extents, start));
            Ok(Planned {
                index,
                len,
                extents,
                masked,
                unread,
            })
        })
        .collect::<Result<_>>()?;
    let windows = shared_windows(disk, &planned)?;
    planned
        .into_par_iter()
        .zip(windows)
        .map(|(p, window)| {
            let Planned {
                index,
                len,
                extents,
                masked,
                unread,
            } = p;
            if !extents.iter().any(|e| matches!(e, Extent::Data { .. })) {
                return Ok(Composed {
                    index,
                    data: None,
                    len,
                    runs: Vec::new(),
                });
            }
            // The writer clones runs only where no byte was masked (a clone would bring
            // the masked bytes back).
            let runs = if offload.is_some() && masked.is_empty() {
                extents.clone()
            } else {
                Vec::new()
            };
            if unread {
                return Ok(Composed {
                    index,
                    data: Some(BlockData::Unread),
                    len,
                    runs,
                });
            }
            let data = match window {
                Some((window, range)) => {
                    window.populate(range.clone()).map_err(|e| {
                        let (path, at) = match extents[0] {
                            Extent::Data {
                                layer, file_offset, ..
                            } => (disk.layers()[layer].path(), file_offset),
                            Extent::Zero { .. } => (disk.top().path(), 0),
                        };
                        crate::error::Error::io(path, "reading mapped disk data", at, e)
                    })?;
                    BlockData::Mapped { window, range }
                }
                None => owned(disk, &extents, len, pool)?,
            };
            let data = zero_masked(data, index * unit, &masked, pool);
            let (data, freed) = match mask {
                Some(m) => free_or_zero(data, index * unit, m, pool),
                None => (data, false),
            };
            let mut c = finish(index, len, data, pool);
            if c.data.is_some() && !freed {
                c.runs = runs;
            }
            Ok(c)
        })
        .collect()
}

/// Whether every stored run of `extents` (covering the block at virtual `start`) can be
/// cloned to its own virtual offset in a flat result.
fn all_clonable(offload: &Offload, extents: &[Extent], start: u64) -> bool {
    let mut at = start;
    extents.iter().all(|e| {
        let ok = match *e {
            Extent::Data {
                layer, file_offset, ..
            } => offload.can_clone(layer, file_offset, at),
            Extent::Zero { .. } => true,
        };
        at += e.len();
        ok
    })
}

/// A planned block: its index, length, extents and masked ranges, and whether it is
/// left unread for the writer to clone.
struct Planned {
    index: u64,
    len: u64,
    extents: Vec<Extent>,
    masked: Vec<Range<u64>>,
    unread: bool,
}

/// `data` (the block starting at virtual byte `start`) with the `masked` virtual ranges
/// zeroed: a mapped block is copied into a pooled buffer first (the map is read-only).
fn zero_masked(data: BlockData, start: u64, masked: &[Range<u64>], pool: &BufferPool) -> BlockData {
    if masked.is_empty() {
        return data;
    }
    // Blocks with masked bytes are always read: never `Unread` here.
    let mut buf = match into_buffer(data, pool) {
        Ok(buf) => buf,
        Err(unread) => return unread,
    };
    for r in masked {
        let (a, b) = ((r.start - start) as usize, (r.end - start) as usize);
        buf[a..b].fill(0);
    }
    BlockData::Owned(buf)
}

/// `data` (the block starting at virtual byte `start`) with every piece of the mask's
/// grain zeroed whose each byte is either unused or zero — free or zero — though not
/// wholly unused ([`zero_masked`] zeroed those): e.g. a block holding free clusters and
/// a file system's unused, zero-filled inode table. A piece holding any non-zero byte
/// that some file system uses stays as it is. Returns whether a piece was zeroed.
fn free_or_zero(
    data: BlockData,
    start: u64,
    mask: Mask<'_>,
    pool: &BufferPool,
) -> (BlockData, bool) {
    let Some(bytes) = data.bytes() else {
        return (data, false);
    };
    let end = start + bytes.len() as u64;
    let unused = mask.unused.within(&(start..end));
    if unused.is_empty() {
        return (data, false);
    }
    let at = |v: u64| (v - start) as usize;
    let mut freed: Vec<Range<u64>> = Vec::new();
    let mut first = 0; // the first unused range that may meet the piece
    let mut piece = start;
    while piece < end {
        let piece_end = piece.saturating_add(mask.grain).min(end);
        while unused.get(first).is_some_and(|r| r.end <= piece) {
            first += 1;
        }
        let mut pos = piece;
        let mut any_unused = false;
        let mut used_zero = true;
        for r in unused[first..].iter().take_while(|r| r.start < piece_end) {
            if r.start > pos {
                used_zero &= is_zero(&bytes[at(pos)..at(r.start)]);
            }
            any_unused = true;
            pos = pos.max(r.end.min(piece_end));
        }
        if pos < piece_end {
            used_zero &= is_zero(&bytes[at(pos)..at(piece_end)]);
        }
        if any_unused && used_zero && !is_zero(&bytes[at(piece)..at(piece_end)]) {
            freed.push(piece..piece_end);
        }
        piece = piece_end;
    }
    if freed.is_empty() {
        return (data, false);
    }
    let mut buf = match into_buffer(data, pool) {
        Ok(buf) => buf,
        Err(unread) => return (unread, false),
    };
    for r in &freed {
        buf[at(r.start)..at(r.end)].fill(0);
    }
    (BlockData::Owned(buf), true)
}

/// The block's bytes in a pooled buffer that may be changed (a mapped block is copied
/// first: the map is read-only); a block composed unread comes back as it is.
fn into_buffer(data: BlockData, pool: &BufferPool) -> std::result::Result<Vec<u8>, BlockData> {
    match data {
        BlockData::Owned(v) => Ok(v),
        BlockData::Mapped { window, range } => {
            let mut v = pool.take(range.len());
            v.copy_from_slice(&window[range]);
            Ok(v)
        }
        BlockData::Unread => Err(BlockData::Unread),
    }
}

/// The extents of `len` bytes at `start` of `disk` padded with zeros past its virtual
/// size: they cover the whole range.
fn view_extents(disk: &Disk, start: u64, len: u64) -> Result<Vec<Extent>> {
    let mut extents = disk.extents(start, len)?;
    let covered: u64 = extents.iter().map(Extent::len).sum();
    if covered < len {
        extents.push(Extent::Zero { len: len - covered });
    }
    Ok(extents)
}

/// For each planned block stored whole in one mappable extent, its window and range;
/// neighbours in the same file share a window.
#[allow(clippy::type_complexity)]
fn shared_windows(
    disk: &Disk,
    planned: &[Planned],
) -> Result<Vec<Option<(Arc<Window>, Range<usize>)>>> {
    // A block stored whole in one extent, and read: (layer, file offset, length).
    let whole = |p: &Planned| match p.extents.as_slice() {
        [Extent::Data {
            layer,
            file_offset,
            len,
        }] if !p.unread => Some((*layer, *file_offset, *len)),
        _ => None,
    };
    let mut out: Vec<Option<(Arc<Window>, Range<usize>)>> = vec![None; planned.len()];
    let mut i = 0;
    while i < planned.len() {
        let Some((layer, first, first_len)) = whole(&planned[i]) else {
            i += 1;
            continue;
        };
        // Extend the run while the next block follows closely in the same file.
        let mut j = i + 1;
        let mut end = first + first_len;
        while let Some((l, o, n)) = planned.get(j).and_then(whole) {
            if l != layer || o < end || o - end > MAX_WINDOW_GAP {
                break;
            }
            end = o + n;
            j += 1;
        }
        let file = &disk.layers()[layer];
        // `None`: not a file (in-memory backend); those blocks are composed by copy.
        if let Some(window) = file.map_window(first, end - first, false) {
            let window = Arc::new(window?);
            for (k, slot) in out.iter_mut().enumerate().take(j).skip(i) {
                let (_, o, n) = whole(&planned[k]).expect("in the run");
                let at = (o - first) as usize;
                *slot = Some((Arc::clone(&window), at..at + n as usize));
            }
        }
        i = j;
    }
    Ok(out)
}

/// Reads block `index` of `unit` bytes (clipped to `size`, at most the virtual size) from `disk` by
/// positional reads, skipping the read entirely when no level stores any of it.
/// Verification reads the new file this way: through the ordinary read path, and
/// without taking the process-wide mapping lock, so that its CRC work scales across
/// threads.
pub(crate) fn compose_copied(
    disk: &Disk,
    size: u64,
    index: u64,
    unit: u64,
    pool: &BufferPool,
) -> Result<Composed> {
    let start = index * unit;
    let len = unit.min(size - start);
    let extents = disk.extents(start, len)?;
    if !extents.iter().any(|e| matches!(e, Extent::Data { .. })) {
        return Ok(Composed {
            index,
            data: None,
            len,
            runs: Vec::new(),
        });
    }
    let mut buf = pool.take(len as usize);
    disk.read_extents(&extents, &mut buf)?;
    Ok(finish(index, len, BlockData::Owned(buf), pool))
}

/// A block whose bytes are all zero reads as a hole.
fn finish(index: u64, len: u64, data: BlockData, pool: &BufferPool) -> Composed {
    let data = if data.bytes().is_some_and(is_zero) {
        pool.give(Some(data));
        None
    } else {
        Some(data)
    };
    Composed {
        index,
        data,
        len,
        runs: Vec::new(),
    }
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

    /// Blocks written one after another share a window; a block stored out of order, a
    /// partly written block and a hole start or break runs; every block's range holds
    /// exactly its virtual bytes.
    #[test]
    fn neighbouring_blocks_share_one_window_and_read_their_own_bytes() {
        use crate::image::{CreateOptions, DiskKind};
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("d.vhd");
        let unit = 512 * 1024;
        Disk::create(
            &path,
            &CreateOptions::new(DiskKind::Dynamic, 16 * unit).block_size(unit as u32),
        )
        .expect("create");
        let block = |i: u64| vec![i as u8 + 1; unit as usize];
        {
            let d = Disk::open_rw(&path).expect("open");
            // File order: blocks 0, 1, 2, then 5, then 3 (out of order), 4 partly.
            for i in [0, 1, 2, 5, 3] {
                d.write_at(&block(i), i * unit).expect("write");
            }
            d.write_at(&[9u8; 512], 4 * unit).expect("partial");
            d.flush().expect("flush");
        }
        let disk = Disk::open(&path).expect("open");
        let planned: Vec<Planned> = (0..8)
            .map(|i| {
                let extents = disk.extents(i * unit, unit).expect("extents");
                Planned {
                    index: i,
                    len: unit,
                    extents,
                    masked: Vec::new(),
                    unread: false,
                }
            })
            .collect();
        let windows = shared_windows(&disk, &planned).expect("windows");
        let window = |i: usize| &windows[i].as_ref().expect("a whole block has a window").0;
        let same = |a: usize, b: usize| Arc::ptr_eq(window(a), window(b));
        assert!(same(0, 1) && same(1, 2), "blocks 0-2 lie one after another");
        assert!(!same(2, 3), "block 3 lies after block 5 in the file");
        // A dynamic disk's block is wholly its own however little was written (its
        // bitmap is full): mapped like the others, the rest reading as zeros.
        assert!(
            windows[4].is_some(),
            "a partly written dynamic block is mapped"
        );
        assert!(windows[5].is_some() && !same(3, 5));
        assert!(windows[6].is_none() && windows[7].is_none(), "holes");
        for i in [0, 1, 2, 3, 5] {
            let (w, r) = windows[i].as_ref().expect("a whole block has a window");
            assert_eq!(&w[r.clone()], &block(i as u64)[..], "block {i}");
        }
        let pool = BufferPool::default();
        let composed = compose_chunk(
            &disk,
            disk.virtual_size(),
            &[0, 1, 2, 3, 4, 5, 6, 7],
            unit,
            &pool,
            None,
            None,
        )
        .expect("compose");
        for c in &composed {
            let mut want = vec![0u8; unit as usize];
            disk.read_at(&mut want, c.index * unit).expect("read");
            match &c.data {
                Some(d) => assert_eq!(d.bytes(), Some(&want[..]), "block {}", c.index),
                None => assert!(is_zero(&want), "block {}", c.index),
            }
        }
    }
}
