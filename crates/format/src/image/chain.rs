//! A disk as a guest sees it: one file, or a differencing chain resolved down to its base.

use std::path::Path;

use crate::error::{Error, Result};
use crate::spec::SECTOR_SIZE;

use super::file::{LayerExtent, VhdFile};
use super::parents::{
    canonical, find_parent, FoundBy, FsResolver, ParentCandidate, ParentResolver,
};
use super::{DiskKind, OpenOptions};

/// Writes into differencing disks cover whole bitmap bytes: 8 sectors.
pub const DIFFERENCING_GRANULE: u64 = 8 * SECTOR_SIZE;

/// Where a range of the disk's virtual bytes lives, across the whole chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Stored in chain level `layer` (0 = the file opened) at `file_offset`.
    Data {
        /// Chain level holding the bytes.
        layer: usize,
        /// Byte offset in that file (or host device).
        file_offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Stored nowhere: reads as zeros.
    Zero {
        /// Length in bytes.
        len: u64,
    },
}

impl Extent {
    /// Length of the extent.
    pub fn len(&self) -> u64 {
        match *self {
            Extent::Data { len, .. } | Extent::Zero { len } => len,
        }
    }

    /// Whether the extent is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An open disk: the file opened (level 0) and, for differencing disks, every ancestor
/// down to a fixed or dynamic base.
#[derive(Debug)]
pub struct Disk {
    layers: Vec<VhdFile>,
    /// How each parent was found (`found_by[i]` for `layers[i + 1]`).
    found_by: Vec<FoundBy>,
    warnings: Vec<String>,
}

impl Disk {
    /// Opens a VHD read-only, resolving its parents.
    pub fn open(path: impl AsRef<Path>) -> Result<Disk> {
        Disk::open_with(path, &OpenOptions::new())
    }

    /// Opens a VHD for writing (its parents read-only).
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Disk> {
        Disk::open_with(path, &OpenOptions::new().writable(true))
    }

    /// Opens a VHD with options.
    pub fn open_with(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Disk> {
        let top = VhdFile::open(path.as_ref(), opts)?;
        Disk::resolve(top, opts, &FsResolver)
    }

    /// Opens a VHD, or a raw image when the file has no VHD footer.
    pub fn open_any(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<Disk> {
        let top = VhdFile::open_any(path.as_ref(), opts)?;
        Disk::resolve(top, opts, &FsResolver)
    }

    /// Builds the chain under `top`, opening parents through `resolver`.
    pub fn resolve(
        top: VhdFile,
        opts: &OpenOptions,
        resolver: &dyn ParentResolver,
    ) -> Result<Disk> {
        Disk::resolve_writing(top, opts, resolver, &|_, _| false)
    }

    /// [`Disk::resolve`] that opens for writing the parents `write` names — by chain
    /// level (1: the parent of `top`) and candidate — when they can be: the operations
    /// that write into a parent (merge, merge into an ancestor) open each file once.
    pub(crate) fn resolve_writing(
        top: VhdFile,
        opts: &OpenOptions,
        resolver: &dyn ParentResolver,
        write: &dyn Fn(usize, &ParentCandidate) -> bool,
    ) -> Result<Disk> {
        let top_path = top.path().to_owned();
        let mut layers = vec![top];
        let mut found_by = Vec::new();
        let mut warnings = Vec::new();
        let mut seen_paths = vec![canonical(&top_path)];
        let mut seen_ids = vec![layers[0].footer().unique_id];
        let parent_opts = OpenOptions {
            writable: false,
            parent: None,
            ..opts.clone()
        };
        loop {
            if opts.no_parents {
                break;
            }
            let child = layers.last().expect("chain has its top");
            if !child.is_differencing() {
                break;
            }
            if layers.len() > opts.max_depth {
                return Err(Error::ChainTooDeep {
                    path: top_path,
                    max: opts.max_depth,
                });
            }
            let explicit = if layers.len() == 1 {
                opts.parent.clone()
            } else {
                None
            };
            let level = layers.len();
            let write_level = |c: &ParentCandidate| write(level, c);
            let found = find_parent(
                child,
                explicit,
                &parent_opts,
                resolver,
                &write_level,
                &mut warnings,
            );
            let (parent, how) = match found {
                // A file of this chain opened for writing holds an exclusive lock, so
                // meeting it again as a parent fails to lock: that is a loop, not another
                // process.
                Err(Error::InUse { path }) if seen_paths.contains(&canonical(&path)) => {
                    return Err(Error::ChainLoop {
                        path: top_path,
                        again: path,
                    })
                }
                other => other?,
            };
            let canon = canonical(parent.path());
            let id = parent.footer().unique_id;
            if seen_paths.contains(&canon) || (!id.is_nil() && seen_ids.contains(&id)) {
                return Err(Error::ChainLoop {
                    path: top_path,
                    again: parent.path().to_owned(),
                });
            }
            if parent.kind() == DiskKind::HostDrive {
                return Err(Error::Unsupported {
                    path: child.path().to_owned(),
                    detail: format!(
                        "its parent {} is a host-drive disk, which cannot be a parent",
                        parent.path().display()
                    ),
                });
            }
            if parent.virtual_size() != child.virtual_size() {
                warnings.push(format!(
                    "{}: size {} differs from its child's {}",
                    parent.path().display(),
                    parent.virtual_size(),
                    child.virtual_size()
                ));
            }
            seen_paths.push(canon);
            seen_ids.push(id);
            layers.push(parent);
            found_by.push(how);
        }
        Ok(Disk {
            layers,
            found_by,
            warnings,
        })
    }

    /// The files of the chain, the one opened first.
    pub fn layers(&self) -> &[VhdFile] {
        &self.layers
    }

    /// Splits the chain above `level` (at least 1, at most the number of levels): the
    /// files above it, top first, and the disk from `level` down, with its own chain
    /// (the disk an operation writes into, its ancestors completing partial granules).
    pub(crate) fn split_at(mut self, level: usize) -> (Vec<VhdFile>, Disk) {
        let lower = self.layers.split_off(level);
        let found_by = self.found_by.split_off(level.min(self.found_by.len()));
        let disk = Disk {
            layers: lower,
            found_by,
            warnings: self.warnings,
        };
        (self.layers, disk)
    }

    /// How the parent at chain level `level` (1 = the parent of the file opened) was
    /// found; `None` for level 0 and levels past the base.
    pub fn found_by(&self, level: usize) -> Option<FoundBy> {
        level
            .checked_sub(1)
            .and_then(|i| self.found_by.get(i).copied())
    }

    /// The file opened.
    pub fn top(&self) -> &VhdFile {
        &self.layers[0]
    }

    /// Mutable access to the file opened (to rewrite its footer or header).
    pub fn top_mut(&mut self) -> &mut VhdFile {
        &mut self.layers[0]
    }

    /// Warnings of every level, and of the chain itself.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .layers
            .iter()
            .flat_map(|l| {
                l.warnings()
                    .iter()
                    .map(move |m| format!("{}: {m}", l.path().display()))
            })
            .collect();
        w.extend(self.warnings.iter().cloned());
        w
    }

    /// Virtual size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.top().virtual_size()
    }

    /// Kind of the file opened.
    pub fn kind(&self) -> DiskKind {
        self.top().kind()
    }

    /// Where the bytes of `offset..offset+len` live, across the chain. The range is
    /// clipped to the virtual size.
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let size = self.virtual_size();
        let offset = offset.min(size);
        let len = len.min(size - offset);
        let mut out = Vec::new();
        self.extents_from(0, offset, len, &mut out)?;
        Ok(out)
    }

    fn extents_from(
        &self,
        level: usize,
        offset: u64,
        len: u64,
        out: &mut Vec<Extent>,
    ) -> Result<()> {
        let layer = &self.layers[level];
        let within = len.min(layer.virtual_size().saturating_sub(offset));
        let mine = layer.extents(offset, within)?;
        let has_parent = level + 1 < self.layers.len();
        let mut pos = offset;
        let mut i = 0;
        while i < mine.len() {
            if matches!(mine[i], LayerExtent::Parent { .. }) && has_parent {
                // This piece and the next ones starting within the window: the levels
                // below walked once for all their parent pieces.
                let (group, span) = parent_group(&mine[i..]);
                let mut below = Vec::new();
                self.extents_from(level + 1, pos, span, &mut below)?;
                let mut below = Slicer::new(&below, pos);
                for &e in &mine[i..i + group] {
                    match answered(level, e) {
                        Some(x) => push(out, x),
                        None => below.take(pos, e.len(), out),
                    }
                    pos += e.len();
                }
                i += group;
                continue;
            }
            // The last level's parent pieces read as zeros.
            let e = mine[i];
            push(
                out,
                answered(level, e).unwrap_or(Extent::Zero { len: e.len() }),
            );
            pos += e.len();
            i += 1;
        }
        if len > within {
            push(out, Extent::Zero { len: len - within });
        }
        Ok(())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.virtual_size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::OutOfRange {
                path: self.top().path().to_owned(),
                offset,
                len,
                size,
            });
        }
        Ok(())
    }

    /// Reads `buf.len()` virtual bytes at `offset`, through the whole chain.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let extents = self.extents(offset, buf.len() as u64)?;
        self.read_extents(&extents, buf)
    }

    /// Writes `data` at virtual `offset` (any offset and length) into the file opened.
    /// Partial sectors are completed from the chain's current content. Dynamic and
    /// differencing disks are written in the crash-safe order documented on the file
    /// layer; call [`Disk::flush`] before relying on fixed-disk data being durable.
    ///
    /// Writes into a differencing disk are widened to whole 8-sector granules (one
    /// bitmap byte), copying the surrounding sectors up from the parent: libvhdi reads
    /// every sector after the first set bit of a bitmap byte from the child, so a byte
    /// with a set bit followed by clear ones would read differently there. With whole
    /// bytes set, every reader agrees.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        self.write_runs(&[(offset, data)])
    }

    /// Writes several runs `(virtual offset, bytes)` at once, each as [`Disk::write_at`]
    /// would, under one application of the crash-safe write order (one footer move and
    /// two barriers for all of them). Runs may be unaligned; runs that share a sector or
    /// (differencing disks) a granule are combined, the later run winning where they
    /// overlap.
    pub fn write_runs(&self, runs: &[(u64, &[u8])]) -> Result<()> {
        for &(offset, data) in runs {
            self.check_range(offset, data.len() as u64)?;
        }
        let granule = if self.top().is_differencing() {
            DIFFERENCING_GRANULE
        } else {
            SECTOR_SIZE
        };
        let size = self.virtual_size();
        let widen = |offset: u64, len: u64| {
            let start = offset / granule * granule;
            let end = ((offset + len).div_ceil(granule) * granule).min(size);
            (start, end)
        };
        // Group runs whose widened ranges overlap, in offset order.
        let mut order: Vec<usize> = (0..runs.len()).filter(|&i| !runs[i].1.is_empty()).collect();
        order.sort_by_key(|&i| runs[i].0);
        let mut groups: Vec<(u64, u64, Vec<usize>)> = Vec::new();
        for i in order {
            let (start, end) = widen(runs[i].0, runs[i].1.len() as u64);
            match groups.last_mut() {
                Some(g) if start < g.1 => {
                    g.1 = g.1.max(end);
                    g.2.push(i);
                }
                _ => groups.push((start, end, vec![i])),
            }
        }
        let mut owned: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut borrowed: Vec<(u64, &[u8])> = Vec::new();
        for (start, end, members) in groups {
            if let [only] = members.as_slice() {
                let (offset, data) = runs[*only];
                if offset == start && offset + data.len() as u64 == end {
                    borrowed.push((offset, data));
                    continue;
                }
            }
            let mut buf = vec![0u8; (end - start) as usize];
            // Every granule the runs do not cover entirely keeps its current content:
            // read those from the chain (consecutive ones in one read), then lay the runs
            // over the buffer.
            let mut covered: Vec<(u64, u64)> = members
                .iter()
                .map(|&m| (runs[m].0, runs[m].0 + runs[m].1.len() as u64))
                .collect();
            covered.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::new();
            for (a, b) in covered {
                match merged.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            let fully_covered = |g0: u64, g1: u64| merged.iter().any(|&(a, b)| a <= g0 && g1 <= b);
            let mut g = start;
            let mut pending: Option<u64> = None;
            while g < end {
                let ge = (g + granule).min(end);
                if fully_covered(g, ge) {
                    if let Some(p) = pending.take() {
                        self.read_at(&mut buf[(p - start) as usize..(g - start) as usize], p)?;
                    }
                } else if pending.is_none() {
                    pending = Some(g);
                }
                g = ge;
            }
            if let Some(p) = pending {
                self.read_at(&mut buf[(p - start) as usize..], p)?;
            }
            // In the caller's order, not the offset order of the grouping: the later run
            // wins where runs overlap.
            let mut in_order = members;
            in_order.sort_unstable();
            for &m in &in_order {
                let (offset, data) = runs[m];
                let at = (offset - start) as usize;
                buf[at..at + data.len()].copy_from_slice(data);
            }
            owned.push((start, buf));
        }
        let mut all: Vec<(u64, &[u8])> = borrowed;
        all.extend(owned.iter().map(|(o, b)| (*o, b.as_slice())));
        if all.is_empty() {
            return Ok(());
        }
        self.top().write_aligned_runs(&all)
    }

    /// Makes every write durable.
    pub fn flush(&self) -> Result<()> {
        self.top().flush()
    }

    /// Releases the blocks of a dynamic disk that `offset..offset + len` covers entirely
    /// (a last block shorter than the block size counts when the range reaches the end
    /// of the disk), so that they read as zeros and their space is given back: the file
    /// is shortened when they were its last blocks. Returns the virtual bytes released.
    ///
    /// Crash-safe: Xen's batmap bits of the blocks are cleared and made durable first,
    /// then the BAT entries are marked unused and synced, then the footer moves down and
    /// the file is truncated (the order compact uses). At every instant each block reads
    /// as before or as zeros.
    ///
    /// On a fixed disk or a raw image the whole range is released: a hole is punched
    /// in the file (`fallocate`'s `FALLOC_FL_PUNCH_HOLE`, macOS `F_PUNCHHOLE`, Windows
    /// `FSCTL_SET_ZERO_DATA`, which frees space only in a file already sparse), or zeros
    /// are written where the file system has no holes; it reads as zeros either way and
    /// the file keeps its length (a fixed disk's footer is untouched). A raw image on a
    /// device has no holes: nothing is released there.
    ///
    /// Releases nothing (returns 0) on other disks: a differencing disk's released
    /// block would read from its parent — neither zeros nor what it held — and VHDX
    /// files are not released here. Concurrent reads of the released ranges may fail
    /// or see another block's bytes (their content is being discarded); writes wait.
    pub fn discard(&self, offset: u64, len: u64) -> Result<u64> {
        self.check_range(offset, len)?;
        self.top().discard(offset, len)
    }

    /// Where the bytes of `offset..offset + len` would live if the file opened held none
    /// of them: the parent chain's view of the range (zeros past a parent's end, and
    /// everywhere for a disk without its parents). Layer indexes are [`Disk::layers`]'.
    pub(crate) fn parent_extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let size = self.virtual_size();
        let offset = offset.min(size);
        let len = len.min(size - offset);
        let mut out = Vec::new();
        if self.layers.len() > 1 {
            self.extents_from(1, offset, len, &mut out)?;
        } else if len > 0 {
            out.push(Extent::Zero { len });
        }
        Ok(out)
    }
}

/// Piece `e` of level `level` as the chain's extent, when the level answers it itself
/// (stored there, or zeros); `None` for a piece from its parent.
fn answered(level: usize, e: LayerExtent) -> Option<Extent> {
    match e {
        LayerExtent::Data { file_offset, len } => Some(Extent::Data {
            layer: level,
            file_offset,
            len,
        }),
        LayerExtent::Zero { len } => Some(Extent::Zero { len }),
        LayerExtent::Parent { .. } => None,
    }
}

/// How far past the start of a layer's piece that comes from the parent the parent
/// pieces after it are resolved with it, in one walk of the levels below: a disk whose
/// sector bitmaps alternate (Windows writes such) costs one walk per window below, not
/// one per 512-byte piece; at most this much of the walk below is for bytes the layer
/// holds itself.
const PARENT_WINDOW: u64 = 4 << 20;

/// The first `n` of `pieces` (the first one from the parent) to resolve together — it and the following ones that start within
/// [`PARENT_WINDOW`], cut after the last parent piece — and the bytes they span.
fn parent_group(pieces: &[LayerExtent]) -> (usize, u64) {
    let (mut n, mut span, mut at) = (1, pieces[0].len(), pieces[0].len());
    for (k, e) in pieces.iter().enumerate().skip(1) {
        if at >= PARENT_WINDOW {
            break;
        }
        at += e.len();
        if matches!(e, LayerExtent::Parent { .. }) {
            (n, span) = (k + 1, at);
        }
    }
    (n, span)
}

/// Stored pieces of one layer at most this far apart in its file are read as one span
/// (the bytes between them read and dropped): a block whose sector bitmap alternates
/// costs one read per layer, not one per 512-byte piece.
const GATHER_GAP: u64 = 64 << 10;
/// The longest span read to gather pieces.
const GATHER_SPAN: u64 = 4 << 20;

/// A stored piece of a read: `len` bytes of layer `layer` at `file_offset`, for the
/// buffer at `at`.
#[derive(Debug, Clone, Copy)]
struct Piece {
    layer: usize,
    file_offset: u64,
    at: usize,
    len: usize,
}

/// How many of `pieces` (sorted by layer and file offset) to read as one span from the
/// first one's offset, and the span's length: the following pieces of the same layer
/// that start within [`GATHER_GAP`] of the span so far and keep it within
/// [`GATHER_SPAN`].
fn gather(pieces: &[Piece]) -> (usize, usize) {
    let first = pieces[0];
    let mut end = first.file_offset + first.len as u64;
    let mut n = 1;
    for p in &pieces[1..] {
        let p_end = p.file_offset + p.len as u64;
        if p.layer != first.layer
            || p.file_offset > end + GATHER_GAP
            || p_end.max(end) - first.file_offset > GATHER_SPAN
        {
            break;
        }
        end = end.max(p_end);
        n += 1;
    }
    (n, (end - first.file_offset) as usize)
}

/// Hands out the parts of a contiguous run of extents (starting at a virtual offset)
/// that lie in ranges asked for in increasing order.
struct Slicer<'a> {
    list: &'a [Extent],
    idx: usize,
    /// The virtual offset where `list[idx]` starts.
    at: u64,
}

impl<'a> Slicer<'a> {
    fn new(list: &'a [Extent], start: u64) -> Slicer<'a> {
        Slicer {
            list,
            idx: 0,
            at: start,
        }
    }

    /// Pushes onto `out` the extents covering `pos..pos + len` (at or after the last
    /// range taken).
    fn take(&mut self, pos: u64, len: u64, out: &mut Vec<Extent>) {
        let end = pos + len;
        while let Some(&e) = self.list.get(self.idx) {
            let e_end = self.at + e.len();
            if e_end <= pos {
                (self.idx, self.at) = (self.idx + 1, e_end);
                continue;
            }
            if self.at >= end {
                break;
            }
            let (s, t) = (self.at.max(pos), e_end.min(end));
            push(
                out,
                match e {
                    Extent::Data {
                        layer, file_offset, ..
                    } => Extent::Data {
                        layer,
                        file_offset: file_offset + (s - self.at),
                        len: t - s,
                    },
                    Extent::Zero { .. } => Extent::Zero { len: t - s },
                },
            );
            if e_end > end {
                break;
            }
            (self.idx, self.at) = (self.idx + 1, e_end);
        }
    }
}

fn push(out: &mut Vec<Extent>, e: Extent) {
    if let Some(last) = out.last_mut() {
        match (last, e) {
            (Extent::Zero { len }, Extent::Zero { len: l }) => {
                *len += l;
                return;
            }
            (
                Extent::Data {
                    layer,
                    file_offset,
                    len,
                },
                Extent::Data {
                    layer: la,
                    file_offset: o,
                    len: l,
                },
            ) if *layer == la && *file_offset + *len == o => {
                *len += l;
                return;
            }
            _ => {}
        }
    }
    out.push(e);
}

impl Disk {
    /// Like [`Disk::read_at`], but reads stored bytes through read-only memory maps of
    /// bounded windows (the operations' read path).
    pub fn read_mapped(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let extents = self.extents(offset, buf.len() as u64)?;
        self.read_extents_mapped(&extents, buf)
    }

    /// Fills `buf` from `extents` (as [`Disk::extents`] returned them for a range of
    /// exactly `buf.len()` bytes) through read-only memory maps.
    pub fn read_extents_mapped(&self, extents: &[Extent], buf: &mut [u8]) -> Result<()> {
        self.fill_extents(extents, buf, VhdFile::read_data_mapped)
    }

    /// Fills `buf` from `extents` (as [`Disk::extents`] returned them) with positional
    /// reads.
    pub fn read_extents(&self, extents: &[Extent], buf: &mut [u8]) -> Result<()> {
        self.fill_extents(extents, buf, VhdFile::read_data)
    }

    fn fill_extents(
        &self,
        extents: &[Extent],
        buf: &mut [u8],
        read: fn(&VhdFile, &mut [u8], u64) -> Result<()>,
    ) -> Result<()> {
        // The stored pieces, by layer and file offset, to gather neighbours into one read.
        let mut pieces = Vec::new();
        let mut pos = 0usize;
        for e in extents {
            let n = e.len() as usize;
            let dst = buf
                .get_mut(pos..pos + n)
                .ok_or_else(|| Error::InvalidArgument("extents longer than the buffer".into()))?;
            match *e {
                Extent::Data {
                    layer, file_offset, ..
                } => pieces.push(Piece {
                    layer,
                    file_offset,
                    at: pos,
                    len: n,
                }),
                Extent::Zero { .. } => dst.fill(0),
            }
            pos += n;
        }
        pieces.sort_by_key(|p| (p.layer, p.file_offset));
        let mut span = Vec::new();
        let mut rest = &pieces[..];
        while let Some(first) = rest.first() {
            let (n, len) = gather(rest);
            let layer = &self.layers[first.layer];
            if n == 1 {
                read(
                    layer,
                    &mut buf[first.at..first.at + first.len],
                    first.file_offset,
                )?;
            } else {
                span.resize(len, 0);
                read(layer, &mut span, first.file_offset)?;
                for p in &rest[..n] {
                    let from = (p.file_offset - first.file_offset) as usize;
                    buf[p.at..p.at + p.len].copy_from_slice(&span[from..from + p.len]);
                }
            }
            rest = &rest[n..];
        }
        Ok(())
    }
}
