//! Dynamic and differencing files: opening them (header, BAT, locators, Xen's batmap,
//! all checked against the one layout description in `spec/layout.rs`), mapping a
//! virtual range to its extents through the BAT and sector bitmaps, the crash-safe write
//! path, and the in-place edits compact and repair make (release, move, shorten) — so
//! that no other module edits a sparse file's state.

use std::path::Path;
use std::sync::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::spec::bitmap::{set_range, SectorBitmap};
use crate::spec::header::check_block_size;
use crate::spec::layout::{align_block, BAT_CHUNK_BYTES};
use crate::spec::{
    Bat, DiskType, DynamicHeader, Footer, Severity, SparseLayout, BAT_ENTRY_UNUSED, FOOTER_SIZE,
    HEADER_SIZE, SECTOR_SIZE,
};

use super::backend::Backend;
use super::extent::{push, LayerExtent};
use super::file::VhdFile;
use super::footer::FooterSource;
use super::OpenOptions;

#[derive(Debug)]
pub(crate) struct Sparse {
    pub header: DynamicHeader,
    pub header_offset: u64,
    pub bat: RwLock<Bat>,
    pub block_size: u64,
    pub bitmap_size: u64,
    /// Byte ranges taken by metadata: footer copy, header, BAT, locator payloads, Xen's
    /// batmap.
    pub metadata: Vec<(u64, u64)>,
    pub state: Mutex<SparseState>,
    /// Xen's batmap, for files blktap wrote.
    pub batmap: Mutex<Option<super::batmap::Batmap>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SparseState {
    /// Where the next block's bitmap may start (before alignment).
    pub next_free: u64,
    /// Where the trailing footer is.
    pub footer_at: u64,
    /// The trailing footer is missing or damaged (opened from the copy at offset 0): the
    /// next write rewrites it at `footer_at` even when no block is allocated past it.
    pub footer_stale: bool,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn open_sparse(
    path: &Path,
    b: &dyn Backend,
    footer: &Footer,
    len: u64,
    footer_at: u64,
    source: FooterSource,
    opts: &OpenOptions,
    warnings: &mut Vec<String>,
) -> Result<Sparse> {
    let hoff = footer.data_offset;
    hoff.checked_add(HEADER_SIZE as u64)
        .filter(|&e| e <= len)
        .ok_or_else(|| {
            Error::corrupt(
                path,
                "footer",
                footer_at,
                format!("data offset {hoff:#x} points past the end of the file ({len:#x})"),
            )
            .with_field("data offset")
        })?;
    let mut raw = [0u8; HEADER_SIZE];
    b.read_exact_at(&mut raw, hoff)
        .map_err(|e| Error::io(path, "reading the dynamic header", hoff, e))?;
    let header = DynamicHeader::decode(&raw).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let differencing = footer.disk_type == DiskType::Differencing;
    for p in header.validate(footer.current_size, Some(len), differencing) {
        match (p.severity, p.field) {
            (Severity::Error, "checksum") if !opts.strict => {
                warnings.push(format!("{}; reading anyway", p.detail()))
            }
            (Severity::Error, field) => {
                return Err(
                    Error::corrupt(path, "dynamic header", hoff, p.message).with_field(field)
                )
            }
            (Severity::Warning, _) => warnings.push(p.detail()),
            (Severity::Info, _) => {}
        }
    }
    check_block_size(header.block_size)
        .map_err(|m| Error::corrupt(path, "dynamic header", hoff + 32, m))?;
    let layout = SparseLayout::new(&header, hoff, footer.current_size, len, footer_at);
    let batmap = super::batmap::open(path, b, footer, &header, len, footer_at, opts, warnings)?;
    let layout = match &batmap {
        Some(m) => layout.with_batmap(m.header_offset, &m.header),
        None => layout,
    };
    for &slot in &layout.ignored_locators {
        // No path is that long: a damaged entry, ignored rather than taken to claim a
        // region of the file that may well hold blocks.
        warnings.push(format!(
            "parent locator slot {slot}: length {} is absurd; ignored",
            header.locators[slot].data_length
        ));
    }
    if let (true, Some(&slot)) = (opts.writable, layout.clipped_locators.first()) {
        // A payload running past the end of the file is clipped, so growing the file
        // would put new blocks inside it, and the grown file would no longer open.
        let l = &header.locators[slot];
        return Err(Error::corrupt(
            path,
            "parent locator",
            hoff + (crate::spec::header::LOCATORS_OFFSET + slot * crate::spec::locator::LOCATOR_ENTRY_SIZE) as u64,
            format!(
                "slot {slot}: payload at {:#x} ({} bytes) runs past the end of the file ({len:#x}); new blocks would land inside it (open read-only, or repair the locator)",
                l.data_offset, l.data_length
            ),
        )
        .with_field("data offset"));
    }
    // Only the entries that cover the virtual size matter; any beyond are padding.
    let toff = header.table_offset;
    let bat_bytes = layout.used_bat_bytes();
    if toff.saturating_add(bat_bytes) > len {
        return Err(Error::corrupt(
            path,
            "BAT",
            toff,
            format!(
                "{} entries run past the end of the file ({len:#x})",
                layout.used_entries
            ),
        ));
    }
    // Read and validate chunk by chunk: memory follows the entries the file really
    // holds (a BAT in a sparse file's hole reads as zeros, which fail in the first
    // chunk), never the sizes its fields claim.
    let mut bat = Bat::from_entries(Vec::new());
    let mut scan = layout.scan().list_at_most(1);
    let mut chunk = vec![0u8; (bat_bytes as usize).min(BAT_CHUNK_BYTES)];
    let mut done = 0u64;
    while done < bat_bytes && !scan.has_problems() {
        let n = (bat_bytes - done).min(chunk.len() as u64) as usize;
        b.read_exact_at(&mut chunk[..n], toff + done)
            .map_err(|e| Error::io(path, "reading the BAT", toff + done, e))?;
        let first = bat.len() as u64;
        bat.extend_from_bytes(&chunk[..n]);
        scan.push(first, &bat.entries()[first as usize..]);
        done += n as u64;
    }
    let found = scan.finish();
    if let Some(p) = found.problems.first() {
        return Err(Error::corrupt(path, "BAT", p.offset(), p.to_string()));
    }
    if let Some(m) = &batmap {
        let size = footer.current_size;
        super::batmap::open_bits(path, b, m, &bat, &layout, size, opts, warnings)?;
    }
    let next_free = layout.data_end(found.blocks_end);
    let footer_pos = if source == FooterSource::Copy {
        // The trailing footer is damaged: the next write puts a good one past the data.
        footer_at.max(next_free)
    } else {
        footer_at
    };
    let block_size = layout.block_size;
    let bitmap_size = layout.bitmap_size;
    let metadata = layout.metadata;
    Ok(Sparse {
        header,
        header_offset: hoff,
        bat: RwLock::new(bat),
        block_size,
        bitmap_size,
        metadata,
        batmap: Mutex::new(batmap),
        state: Mutex::new(SparseState {
            next_free,
            footer_at: footer_pos,
            footer_stale: source == FooterSource::Copy,
        }),
    })
}

/// Block sizes and metadata ranges of an open sparse file.
#[derive(Debug, Clone)]
pub(crate) struct SparseGeometry {
    pub bitmap_size: u64,
    pub block_size: u64,
    pub metadata: Vec<(u64, u64)>,
}

impl VhdFile {
    /// Reads the bitmap of an allocated block.
    pub(crate) fn read_bitmap(&self, s: &Sparse, block_offset: u64) -> Result<Vec<u8>> {
        let mut bm = vec![0u8; s.bitmap_size as usize];
        self.backend
            .read_exact_at(&mut bm, block_offset)
            .map_err(|e| Error::io(&self.path, "reading a sector bitmap", block_offset, e))?;
        Ok(bm)
    }

    /// The extents of `pos..end` (within the virtual size) in a sparse file: `Data` where
    /// the block is allocated and the sector's bit set, else `Parent` (differencing) or
    /// `Zero`.
    pub(crate) fn sparse_extents(
        &self,
        s: &Sparse,
        mut pos: u64,
        end: u64,
        out: &mut Vec<LayerExtent>,
    ) -> Result<()> {
        let absent = |len| {
            if self.is_differencing() {
                LayerExtent::Parent { len }
            } else {
                LayerExtent::Zero { len }
            }
        };
        let bat = s.bat.read().unwrap_or_else(|e| e.into_inner());
        while pos < end {
            let block = pos / s.block_size;
            let in_block = pos % s.block_size;
            let n = (s.block_size - in_block).min(end - pos);
            match bat.block_offset(block) {
                None => {
                    // The whole run of unused entries in one step: the cost of a walk
                    // follows the allocated blocks, not the virtual size.
                    let last = (end - 1) / s.block_size + 1;
                    let next = bat.next_allocated(block, last).saturating_mul(s.block_size);
                    let n = n.max(next.min(end).saturating_sub(pos));
                    push(out, absent(n));
                    pos += n;
                    continue;
                }
                Some(boff) => {
                    let bm = self.read_bitmap(s, boff)?;
                    let bitmap = SectorBitmap::new(&bm);
                    let data = boff + s.bitmap_size;
                    let mut p = in_block;
                    let stop = in_block + n;
                    while p < stop {
                        let sector = p / SECTOR_SIZE;
                        let last_sector = (stop - 1) / SECTOR_SIZE;
                        let run = bitmap.run_length(sector, last_sector - sector + 1);
                        let run_end = ((sector + run) * SECTOR_SIZE).min(stop);
                        let l = run_end - p;
                        if bitmap.is_set(sector) {
                            push(
                                out,
                                LayerExtent::Data {
                                    file_offset: data + p,
                                    len: l,
                                },
                            );
                        } else {
                            push(out, absent(l));
                        }
                        p = run_end;
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }

    pub(crate) fn write_sparse(&self, s: &Sparse, runs: &[(u64, &[u8])]) -> Result<()> {
        let io = |doing, at| move |e| Error::io(&self.path, doing, at, e);
        let mut state = s.state.lock().unwrap_or_else(|e| e.into_inner());
        let old_len = state.footer_at + FOOTER_SIZE as u64;
        let stride = s.bitmap_size + s.block_size;

        // Plan: split into block pieces; place new blocks.
        struct Piece<'d> {
            block: u64,
            in_block: u64,
            data: &'d [u8],
            block_offset: u64,
            new: bool,
        }
        let mut pieces = Vec::new();
        let mut next_free = state.next_free;
        {
            let bat = s.bat.read().unwrap_or_else(|e| e.into_inner());
            for &(offset, data) in runs {
                let mut pos = offset;
                let end = offset + data.len() as u64;
                while pos < end {
                    let block = pos / s.block_size;
                    let in_block = pos % s.block_size;
                    let n = (s.block_size - in_block).min(end - pos);
                    let src = &data[(pos - offset) as usize..(pos - offset + n) as usize];
                    let (block_offset, new) = match bat.block_offset(block) {
                        Some(o) => (o, false),
                        None => match pieces.iter().find(|p: &&Piece| p.block == block && p.new) {
                            Some(p) => (p.block_offset, true),
                            None => {
                                let at = align_block(next_free, s.bitmap_size);
                                next_free = at + stride;
                                (at, true)
                            }
                        },
                    };
                    pieces.push(Piece {
                        block,
                        in_block,
                        data: src,
                        block_offset,
                        new,
                    });
                    pos += n;
                }
            }
        }
        let new_blocks: Vec<(u64, u64)> = {
            let mut v: Vec<(u64, u64)> = pieces
                .iter()
                .filter(|p| p.new)
                .map(|p| (p.block, p.block_offset))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        for &(_, at) in &new_blocks {
            if (at / SECTOR_SIZE) >= u64::from(BAT_ENTRY_UNUSED) {
                return Err(Error::Unsupported {
                    path: self.path.clone(),
                    detail: "the file would grow past 2 TiB, beyond what a BAT entry can address"
                        .into(),
                });
            }
        }

        // Step 1: footer at the new end, durable before any block write can overwrite the
        // old one or extend the file.
        let new_footer_at = next_free.max(state.footer_at);
        if new_footer_at != state.footer_at || state.footer_stale {
            let bytes = self.footer.encode();
            self.backend
                .write_all_at(&bytes, new_footer_at)
                .map_err(io("writing the footer at the new end", new_footer_at))?;
            self.backend
                .sync()
                .map_err(|e| Error::file(&self.path, "syncing the footer at the new end", e))?;
        }
        // The space is taken from here on: if a later step fails, it stays unreferenced
        // (a leak, as after a crash) rather than being handed to another block while the
        // in-memory or on-disk BAT may already point into it.
        state.next_free = next_free.max(state.next_free);
        state.footer_at = new_footer_at;
        state.footer_stale = false;

        // Step 2: new blocks (bitmap + data, zero-filled where old bytes lie) and data of
        // existing blocks.
        let differencing = self.is_differencing();
        for &(block, at) in &new_blocks {
            // A dynamic disk's new block is wholly its own (what is not written is
            // zero-filled or past the old end): every bit set, as Windows, disk2vhd,
            // mkimg and qemu write it, so that every reader reads it alike (libvhdi's bulk
            // reads return zeros for data behind partly set bitmaps of small blocks). A
            // differencing block sets only the bits of the sectors it holds.
            let mut bitmap = vec![if differencing { 0u8 } else { 0xFF }; s.bitmap_size as usize];
            for p in pieces.iter().filter(|p| differencing && p.block == block) {
                let first = p.in_block / SECTOR_SIZE;
                set_range(&mut bitmap, first, p.data.len() as u64 / SECTOR_SIZE);
            }
            self.backend
                .write_all_at(&bitmap, at)
                .map_err(io("writing a new block's bitmap", at))?;
            // Zero whatever of the data area lies inside the old file contents.
            let data_at = at + s.bitmap_size;
            if data_at < old_len {
                let zero_end = (data_at + s.block_size).min(old_len);
                let zeros = vec![0u8; (zero_end - data_at) as usize];
                self.backend
                    .write_all_at(&zeros, data_at)
                    .map_err(io("zero-filling a new block", data_at))?;
            }
        }
        for p in &pieces {
            let at = p.block_offset + s.bitmap_size + p.in_block;
            self.backend
                .write_all_at(p.data, at)
                .map_err(io("writing block data", at))?;
        }
        // Step 3.
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, "syncing block data", e))?;

        // Step 4: bitmap bits of existing blocks, then BAT sectors of new blocks.
        for p in pieces.iter().filter(|p| !p.new) {
            let mut bm = self.read_bitmap(s, p.block_offset)?;
            let before = bm.clone();
            let first = p.in_block / SECTOR_SIZE;
            let count = p.data.len() as u64 / SECTOR_SIZE;
            set_range(&mut bm, first, count);
            if bm != before {
                // Rewrite only the bitmap sectors that changed.
                for (i, (a, b)) in bm.chunks(512).zip(before.chunks(512)).enumerate() {
                    if a != b {
                        let at = p.block_offset + i as u64 * SECTOR_SIZE;
                        self.backend
                            .write_all_at(a, at)
                            .map_err(io("updating a sector bitmap", at))?;
                    }
                }
            }
        }
        if !new_blocks.is_empty() {
            let mut bat = s.bat.write().unwrap_or_else(|e| e.into_inner());
            for &(block, at) in &new_blocks {
                // Fits: checked against BAT_ENTRY_UNUSED above.
                bat.set(block, (at / SECTOR_SIZE) as u32);
            }
            let blocks: Vec<u64> = new_blocks.iter().map(|&(b, _)| b).collect();
            self.write_bat_sectors(s, &bat, &blocks)?;
        }
        // Step 5.
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, "syncing the BAT", e))?;
        Ok(())
    }

    /// The sparse part of the file, or a "wrong disk type" error for other kinds.
    fn sparse_part(&self) -> Result<&Sparse> {
        match &self.layout {
            super::file::Layout::Sparse(s) => Ok(s),
            _ => Err(Error::WrongDiskType {
                path: self.path.clone(),
                found: self.kind().to_string(),
                expected: "a dynamic or differencing disk".into(),
            }),
        }
    }

    /// Writes the BAT sectors holding `blocks`' entries of `bat`.
    fn write_bat_sectors(&self, s: &Sparse, bat: &Bat, blocks: &[u64]) -> Result<()> {
        for sector in SparseLayout::bat_sectors(blocks.iter().copied()) {
            let (_, bytes) = bat.sector_of(sector * (SECTOR_SIZE / 4));
            let at = s.header.table_offset + sector * SECTOR_SIZE;
            self.backend
                .write_all_at(&bytes, at)
                .map_err(|e| Error::io(&self.path, "writing a BAT sector", at, e))?;
        }
        Ok(())
    }

    fn sync_for(&self, doing: &'static str) -> Result<()> {
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, doing, e))
    }

    /// Releases `blocks` in place (compact): Xen's batmap bits of them are cleared and
    /// made durable first (a clear bit is always safe, a set bit naming an unallocated
    /// block is not), then their BAT entries are marked unused, written, and synced.
    /// What the blocks held must read the same without them (zeros, or the parent).
    pub(crate) fn release_blocks(&self, blocks: &[u64]) -> Result<()> {
        self.check_writable()?;
        let s = self.sparse_part()?;
        if blocks.is_empty() {
            return Ok(());
        }
        if self.clear_batmap_bits(blocks)? {
            self.sync_for("syncing the batmap")?;
        }
        let mut bat = s.bat.write().unwrap_or_else(|e| e.into_inner());
        let mut next = bat.clone();
        for &b in blocks {
            next.set(b, BAT_ENTRY_UNUSED);
        }
        self.write_bat_sectors(s, &next, blocks)?;
        self.sync_for("syncing the released BAT entries")?;
        *bat = next;
        Ok(())
    }

    /// Moves blocks in place (compact), as one batch: copies each block's bitmap and
    /// data from `from` to `to` (slots no live block uses, and none that a block of the
    /// batch vacates), syncs, then points their BAT entries at the copies and syncs.
    /// Until the BAT sectors land the old copies are the ones in use, and they are not
    /// overwritten, so either location is valid at every instant.
    pub(crate) fn move_blocks(&self, moves: &[(u64, u64, u64)], buf: &mut Vec<u8>) -> Result<()> {
        self.check_writable()?;
        let s = self.sparse_part()?;
        if moves.is_empty() {
            return Ok(());
        }
        let stride = s.bitmap_size + s.block_size;
        buf.resize(stride as usize, 0);
        for &(_, from, to) in moves {
            self.read_data_mapped(buf, from)?;
            self.backend
                .write_all_at(buf, to)
                .map_err(|e| Error::io(&self.path, "copying a block to its new place", to, e))?;
        }
        self.sync_for("syncing moved blocks")?;
        let mut bat = s.bat.write().unwrap_or_else(|e| e.into_inner());
        let mut next = bat.clone();
        for &(block, _, to) in moves {
            // Fits: `to` is a slot below an existing entry's sector.
            next.set(block, (to / SECTOR_SIZE) as u32);
        }
        let blocks: Vec<u64> = moves.iter().map(|m| m.0).collect();
        self.write_bat_sectors(s, &next, &blocks)?;
        self.sync_for("syncing moved blocks' BAT entries")?;
        *bat = next;
        Ok(())
    }

    /// Shortens the file to its live blocks and metadata (compact, repair): writes the
    /// footer right after them, syncs (the footer at the end is still valid and the same),
    /// truncates after the new one, syncs — if that is before where the footer is now.
    /// The open file's idea of its end follows. Returns where the footer is.
    pub(crate) fn shorten(&self) -> Result<u64> {
        self.check_writable()?;
        let s = self.sparse_part()?;
        let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
        self.shorten_locked(s, &mut st)
    }

    /// [`VhdFile::shorten`] under the state lock the caller holds (the lock that
    /// serialises the write path's allocations).
    fn shorten_locked(&self, s: &Sparse, st: &mut SparseState) -> Result<u64> {
        let stride = s.bitmap_size + s.block_size;
        let live_end = s
            .bat
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .allocated()
            .map(|(_, off)| off + stride)
            .max()
            .unwrap_or(0);
        let meta_end = s.metadata.iter().map(|&(_, e)| e).max().unwrap_or(0);
        let new_footer_at = crate::spec::layout::round_up_sector(live_end.max(meta_end));
        if new_footer_at >= st.footer_at {
            return Ok(st.footer_at);
        }
        self.backend
            .write_all_at(&self.footer.encode(), new_footer_at)
            .map_err(|e| Error::io(&self.path, "writing the footer", new_footer_at, e))?;
        self.sync_for("syncing the new footer")?;
        self.backend
            .set_len(new_footer_at + FOOTER_SIZE as u64)
            .map_err(|e| Error::file(&self.path, "truncating", e))?;
        self.sync_for("syncing the truncation")?;
        st.footer_at = new_footer_at;
        st.next_free = new_footer_at;
        st.footer_stale = false;
        Ok(new_footer_at)
    }

    /// [`crate::Disk::discard`] on this file: releases the allocated blocks of a dynamic
    /// disk that `offset..offset + len` (inside the disk) covers entirely, with
    /// [`VhdFile::release_blocks`]' order, then shortens the file
    /// ([`VhdFile::shorten`]'s order), all under the write path's lock so that no write
    /// allocates meanwhile. Returns the virtual bytes released; 0 on other disk kinds.
    pub(crate) fn discard(&self, offset: u64, len: u64) -> Result<u64> {
        self.check_writable()?;
        let s = match &self.layout {
            super::file::Layout::Sparse(s) if !self.is_differencing() => s,
            _ => return Ok(0),
        };
        let size = self.virtual_size();
        let bs = s.block_size;
        let end = offset.saturating_add(len).min(size);
        let first = offset.div_ceil(bs);
        // A last block shorter than the block size is covered when the range reaches
        // the end of the disk.
        let stop = if end == size {
            size.div_ceil(bs)
        } else {
            end / bs
        };
        if first >= stop {
            return Ok(0);
        }
        let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
        let blocks: Vec<u64> = {
            let bat = s.bat.read().unwrap_or_else(|e| e.into_inner());
            (first..stop)
                .filter(|&b| bat.block_offset(b).is_some())
                .collect()
        };
        if blocks.is_empty() {
            return Ok(0);
        }
        self.release_blocks(&blocks)?;
        self.shorten_locked(s, &mut st)?;
        Ok(blocks
            .iter()
            .map(|&b| bs.min(size.saturating_sub(b * bs)))
            .sum())
    }

    /// The layout facts compact plans with.
    pub(crate) fn sparse_geometry(&self) -> Option<SparseGeometry> {
        let s = self.sparse_part().ok()?;
        Some(SparseGeometry {
            bitmap_size: s.bitmap_size,
            block_size: s.block_size,
            metadata: s.metadata.clone(),
        })
    }

    /// Appends `payloads` (locator texts, already encoded) as new metadata past every
    /// block and piece of metadata, each in whole sectors, and returns their offsets.
    /// Crash-safe as a block allocation: the footer moves to the new end first (synced),
    /// then the payloads are written (synced); until a header names them they are
    /// unreferenced space, which `check` reports as information.
    pub(crate) fn append_metadata(&mut self, payloads: &[Vec<u8>]) -> Result<Vec<u64>> {
        use crate::spec::layout::round_up_sector;
        self.check_writable()?;
        let path = self.path.clone();
        let backend = self.backend.clone();
        let footer = self.footer.encode();
        let super::file::Layout::Sparse(s) = &mut self.layout else {
            return Err(Error::WrongDiskType {
                path,
                found: self.footer.disk_type.to_string(),
                expected: "a dynamic or differencing disk".into(),
            });
        };
        let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = round_up_sector(st.next_free);
        let mut offsets = Vec::with_capacity(payloads.len());
        for p in payloads {
            offsets.push(at);
            at += round_up_sector(p.len() as u64).max(SECTOR_SIZE);
        }
        let new_footer_at = at.max(st.footer_at);
        if new_footer_at != st.footer_at || st.footer_stale {
            backend.write_all_at(&footer, new_footer_at).map_err(|e| {
                Error::io(&path, "writing the footer at the new end", new_footer_at, e)
            })?;
            backend
                .sync()
                .map_err(|e| Error::file(&path, "syncing the footer at the new end", e))?;
        }
        st.next_free = at;
        st.footer_at = new_footer_at;
        st.footer_stale = false;
        drop(st);
        for (p, &off) in payloads.iter().zip(&offsets) {
            let mut padded = p.clone();
            padded.resize(round_up_sector(p.len() as u64).max(SECTOR_SIZE) as usize, 0);
            backend
                .write_all_at(&padded, off)
                .map_err(|e| Error::io(&path, "writing a parent locator", off, e))?;
            s.metadata.push((off, off + padded.len() as u64));
        }
        backend
            .sync()
            .map_err(|e| Error::file(&path, "syncing the parent locators", e))?;
        Ok(offsets)
    }
}
