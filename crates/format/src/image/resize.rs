//! The in-place edits a resize makes to one file: the tail of a partly covered last
//! block cleared, BAT entries past the size made unused, `max_table_entries` raised in
//! the table's padding or the table moved to the end of the file, Xen's batmap trimmed,
//! the footers rewritten with the new size, a fixed disk's footer moved. Each edit
//! leaves the file valid on its own and keeps the open file's state (header, BAT,
//! footer place, metadata ranges) in step with what it wrote. `ops/resize.rs` orders
//! them; `docs/crash-safety.md` ("Resize") argues why a crash between any two leaves a
//! disk that opens, checks clean and reads either as before or as resized.

use crate::error::{Error, Result};
use crate::spec::batmap as xen;
use crate::spec::layout::round_up_sector;
use crate::spec::{Bat, Footer, Geometry, BAT_ENTRY_UNUSED, FOOTER_SIZE, SECTOR_SIZE};

use super::file::{Layout, VhdFile};
use super::sparse::Sparse;

/// Bytes read or written at a time by the edits that stream (zeroing, the new table).
const CHUNK: u64 = 1 << 20;

/// The footer of `footer`'s disk at `size`: current size, original size and CHS
/// geometry (the specification's algorithm) change; everything else stays. The
/// specification calls the original size "the size at creation time", for information;
/// but libvhdi takes a disk's size from it (its "disk size"), so it follows the current
/// size, or libvhdi would keep showing the old size.
pub(crate) fn resized_footer(footer: &Footer, size: u64) -> Footer {
    let mut f = footer.clone();
    f.current_size = size;
    f.original_size = size;
    f.geometry = Geometry::from_total_sectors(size / SECTOR_SIZE);
    f
}

fn all_zero(buf: &[u8]) -> bool {
    let mut words = buf.chunks_exact(8);
    let zero_words = words
        .by_ref()
        .all(|w| u64::from_ne_bytes(w.try_into().unwrap_or([1; 8])) == 0);
    zero_words && words.remainder().iter().all(|&b| b == 0)
}

/// The first offset at or after `from` that holds data, by `SEEK_DATA` (`None`: a hole
/// up to the end of the file). Without a file or `SEEK_DATA`, `from` itself.
fn next_data(file: Option<&std::fs::File>, from: u64) -> Option<u64> {
    use rustix::fs::{seek, SeekFrom};
    let Some(f) = file else { return Some(from) };
    match seek(f, SeekFrom::Data(from)) {
        Ok(d) => Some(d),
        Err(rustix::io::Errno::NXIO) => None,
        Err(_) => Some(from),
    }
}

impl VhdFile {
    fn sparse(&self) -> Result<&Sparse> {
        match &self.layout {
            Layout::Sparse(s) => Ok(s),
            _ => Err(self.not_sparse()),
        }
    }

    fn not_sparse(&self) -> Error {
        Error::WrongDiskType {
            path: self.path.clone(),
            found: self.kind().to_string(),
            expected: "a dynamic or differencing disk".into(),
        }
    }

    fn sync_resize(&self, doing: &'static str) -> Result<()> {
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, doing, e))
    }

    /// Where the trailing footer is.
    pub(crate) fn footer_offset(&self) -> u64 {
        match &self.layout {
            Layout::Sparse(s) => s.state.lock().unwrap_or_else(|e| e.into_inner()).footer_at,
            _ => match self.footer_source {
                super::FooterSource::ShortEnd => self.file_len.saturating_sub(511),
                _ => self.file_len.saturating_sub(FOOTER_SIZE as u64),
            },
        }
    }

    /// The first free byte past every block and piece of metadata (sparse files; for
    /// others, where the footer is).
    pub(crate) fn data_end(&self) -> u64 {
        match &self.layout {
            Layout::Sparse(s) => s.state.lock().unwrap_or_else(|e| e.into_inner()).next_free,
            _ => self.footer_offset(),
        }
    }

    /// Writes zeros over every non-zero byte of the file in `start..end`, skipping holes,
    /// calling `tick` with the bytes covered after each chunk; the caller syncs. Returns
    /// whether anything was written.
    fn zero_file_range(
        &self,
        start: u64,
        end: u64,
        tick: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<bool> {
        let mut wrote = false;
        let mut pos = start;
        let mut buf = vec![0u8; CHUNK.min(end.saturating_sub(start)) as usize];
        while pos < end {
            let data = next_data(self.backend.as_file(), pos)
                .unwrap_or(end)
                .min(end);
            if data > pos {
                tick(data - pos)?;
                pos = data;
                continue;
            }
            let n = (end - pos).min(CHUNK) as usize;
            let chunk = &mut buf[..n];
            self.backend
                .read_exact_at(chunk, pos)
                .map_err(|e| Error::io(&self.path, "reading the space a resize clears", pos, e))?;
            if !all_zero(chunk) {
                chunk.fill(0);
                self.backend.write_all_at(chunk, pos).map_err(|e| {
                    Error::io(&self.path, "zeroing the space a resize clears", pos, e)
                })?;
                wrote = true;
            }
            tick(n as u64)?;
            pos += n as u64;
        }
        Ok(wrote)
    }

    /// Clears what the block holding virtual byte `size` stores past it, when `size` is
    /// not on a block boundary and the block is allocated: the data is zeroed (every
    /// reader, qemu included, reads zeros there) and, in a differencing disk, the bits
    /// of those sectors cleared (they read as the parent). Past the disk's end these
    /// bytes are read by no one; a grow makes them part of the disk, where they must read
    /// as new space. The caller syncs. Returns whether anything was written.
    pub(crate) fn clear_past(&self, size: u64) -> Result<bool> {
        let s = self.sparse()?;
        let (block, in_block) = (size / s.block_size, size % s.block_size);
        if in_block == 0 {
            return Ok(false);
        }
        let Some(boff) = s
            .bat
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .block_offset(block)
        else {
            return Ok(false);
        };
        let data_at = boff + s.bitmap_size;
        let mut wrote =
            self.zero_file_range(data_at + in_block, data_at + s.block_size, &mut |_| Ok(()))?;
        if self.is_differencing() {
            let mut bm = self.read_bitmap(s, boff)?;
            let before = bm.clone();
            let sectors = s.block_size / SECTOR_SIZE;
            for sector in in_block / SECTOR_SIZE..sectors {
                if let Some(b) = bm.get_mut((sector / 8) as usize) {
                    *b &= !(0x80u8 >> (sector % 8));
                }
            }
            for (i, (a, b)) in bm.chunks(512).zip(before.chunks(512)).enumerate() {
                if a != b {
                    let at = boff + i as u64 * SECTOR_SIZE;
                    self.backend.write_all_at(a, at).map_err(|e| {
                        Error::io(&self.path, "clearing bits past the disk's end", at, e)
                    })?;
                    wrote = true;
                }
            }
        }
        Ok(wrote)
    }

    /// Makes the BAT entries `from..to` unused on disk wherever they are not, writing
    /// only the sectors that change; past the disk's size no reader looks at them. With
    /// `keep_zeros`, entries that are 0 stay (the padding some writers fill with zeros:
    /// sector 0 is never a block); only entries that may name a block are released. The
    /// caller syncs. Returns how many entries changed.
    pub(crate) fn unuse_bat_entries(&self, from: u64, to: u64, keep_zeros: bool) -> Result<u64> {
        let s = self.sparse()?;
        let toff = s.header.table_offset;
        let per_sector = SECTOR_SIZE / 4;
        let mut changed = 0u64;
        let first_sector = from / per_sector;
        let end_sector = to.div_ceil(per_sector);
        let mut buf = Vec::new();
        let mut sector = first_sector;
        while sector < end_sector {
            let n = (end_sector - sector).min(CHUNK / SECTOR_SIZE);
            buf.resize((n * SECTOR_SIZE) as usize, 0);
            let at = toff + sector * SECTOR_SIZE;
            self.backend
                .read_exact_at(&mut buf, at)
                .map_err(|e| Error::io(&self.path, "reading the BAT", at, e))?;
            for (k, sec) in buf.chunks_exact_mut(SECTOR_SIZE as usize).enumerate() {
                let base = (sector + k as u64) * per_sector;
                let mut dirty = false;
                for (j, e) in sec.chunks_exact_mut(4).enumerate() {
                    let i = base + j as u64;
                    let zero = e == [0u8; 4];
                    if (from..to).contains(&i) && e != [0xFFu8; 4] && !(keep_zeros && zero) {
                        e.fill(0xFF);
                        dirty = true;
                        changed += 1;
                    }
                }
                if dirty {
                    let at = toff + (sector + k as u64) * SECTOR_SIZE;
                    self.backend
                        .write_all_at(sec, at)
                        .map_err(|e| Error::io(&self.path, "writing a BAT sector", at, e))?;
                }
            }
            sector += n;
        }
        Ok(changed)
    }

    /// Whether the footer copy at offset 0 holds the same bytes as the trailing footer.
    pub(crate) fn footer_copy_matches(&self) -> Result<bool> {
        let at = self.footer_offset();
        let mut end = [0u8; FOOTER_SIZE];
        let mut copy = [0u8; FOOTER_SIZE];
        let n = if self.footer_source == super::FooterSource::ShortEnd {
            FOOTER_SIZE - 1
        } else {
            FOOTER_SIZE
        };
        self.backend
            .read_exact_at(&mut end[..n], at)
            .map_err(|e| Error::io(&self.path, "reading the footer", at, e))?;
        self.backend
            .read_exact_at(&mut copy, 0)
            .map_err(|e| Error::io(&self.path, "reading the footer copy", 0, e))?;
        Ok(end == copy)
    }

    /// Writes the footer in use over the copy at offset 0, then syncs.
    pub(crate) fn fix_footer_copy(&self) -> Result<()> {
        self.sparse()?;
        self.backend
            .write_all_at(&self.footer.encode(), 0)
            .map_err(|e| Error::io(&self.path, "writing the footer copy", 0, e))?;
        self.sync_resize("syncing the footer copy")
    }

    /// The allocated BAT entries from `from` on, up to `max_table_entries` (entries past
    /// the disk's size: a shrink cut short before releasing them), read from the file.
    pub(crate) fn entries_past(&self, from: u64) -> Result<u64> {
        let s = self.sparse()?;
        let to = u64::from(s.header.max_table_entries);
        let toff = s.header.table_offset;
        let mut count = 0;
        let mut pos = from;
        let mut buf = Vec::new();
        while pos < to {
            let n = (to - pos).min(CHUNK / 4);
            buf.resize((n * 4) as usize, 0);
            let at = toff + pos * 4;
            self.backend
                .read_exact_at(&mut buf, at)
                .map_err(|e| Error::io(&self.path, "reading the BAT", at, e))?;
            count += buf
                .chunks_exact(4)
                .filter(|e| *e != [0xFFu8; 4] && *e != [0u8; 4])
                .count() as u64;
            pos += n;
        }
        Ok(count)
    }

    /// Xen's batmap, for a resize between disks of `old` and `new` bytes: clears every
    /// bit from `limit` on, and every bit in the bytes only the larger size reads (so
    /// that the checksum is the same over the bytes either size reads), within the part
    /// of the bitmap either size reads; a clear bit is always safe. Writes the bitmap
    /// sectors that changed, then the header with the checksum — two sectors, so a crash
    /// between them leaves a checksum that `check --repair` recomputes (as compact's
    /// release does); nothing at all is written when no bit changes. The caller syncs.
    /// Returns whether anything was written; a file without a batmap: nothing.
    pub(crate) fn trim_batmap(&self, limit: u64, old: u64, new: u64) -> Result<bool> {
        let s = self.sparse()?;
        let mut guard = s.batmap.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = guard.as_mut() else {
            return Ok(false);
        };
        let small = xen::map_bytes(old.min(new));
        let limit = limit.min(small * 8);
        let span = xen::map_bytes(old.max(new))
            .max(limit.div_ceil(8))
            .min(m.header.map_area());
        let mut map = vec![0u8; span as usize];
        self.backend
            .read_exact_at(&mut map, m.header.map_offset)
            .map_err(|e| Error::io(&self.path, "reading the batmap", m.header.map_offset, e))?;
        let before = map.clone();
        for bit in limit..span * 8 {
            xen::clear_bit(&mut map, bit);
        }
        if map == before {
            return Ok(false);
        }
        for (i, (now, was)) in map.chunks(512).zip(before.chunks(512)).enumerate() {
            if now != was {
                let at = m.header.map_offset + i as u64 * SECTOR_SIZE;
                self.backend
                    .write_all_at(now, at)
                    .map_err(|e| Error::io(&self.path, "writing the batmap", at, e))?;
            }
        }
        let n = xen::map_bytes(old) as usize;
        m.header.checksum = xen::checksum(&map[..n.min(map.len())], m.header.version);
        self.backend
            .write_all_at(&m.header.encode(), m.header_offset)
            .map_err(|e| Error::io(&self.path, "writing the batmap header", m.header_offset, e))?;
        let keep = m.map.len().min(map.len());
        m.map[..keep].copy_from_slice(&map[..keep]);
        Ok(true)
    }

    /// Raises `max_table_entries` to `entries` inside the table's padding: rewrites the
    /// dynamic header's first sector (table offset, max table entries and checksum all
    /// live there: one atomic sector write), then syncs.
    pub(crate) fn raise_max_table_entries(&mut self, entries: u32) -> Result<()> {
        let mut header = self.sparse()?.header.clone();
        header.max_table_entries = entries;
        self.write_header_first_sector(header)
    }

    /// Writes the first sector of `header` over the dynamic header's (the second,
    /// locators 2–7 and reserved bytes, stays as it is: no field in it changes), syncs,
    /// and adopts it.
    fn write_header_first_sector(&mut self, header: crate::spec::DynamicHeader) -> Result<()> {
        self.sparse()?;
        let path = self.path.clone();
        let backend = self.backend.clone();
        let Layout::Sparse(s) = &mut self.layout else {
            return Ok(());
        };
        let bytes = header.encode();
        let at = s.header_offset;
        backend
            .write_all_at(&bytes[..SECTOR_SIZE as usize], at)
            .map_err(|e| Error::io(&path, "writing the dynamic header", at, e))?;
        backend
            .sync()
            .map_err(|e| Error::file(&path, "syncing the dynamic header", e))?;
        s.header = header;
        Ok(())
    }

    /// Moves the BAT to `table_offset` with room for `entries` entries, its trailing
    /// footer to `footer_at` (both from `spec::layout::bat_growth`):
    ///
    /// 1. if the footer moves: the footer, as it is, at `footer_at`; sync — the file
    ///    ends with a valid footer before anything is written where the old one is;
    /// 2. the new table: the current entries, then unused ones, in chunks (`tick` after
    ///    each, which may cancel); sync;
    /// 3. the header's first sector with the new table offset and `max_table_entries`;
    ///    sync. That one sector write switches tables.
    ///
    /// Before 3 the new table is unreferenced space before the footer; after it the old
    /// table's sectors are referenced by nothing.
    pub(crate) fn relocate_bat(
        &mut self,
        entries: u32,
        table_offset: u64,
        footer_at: u64,
        tick: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<()> {
        let s = self.sparse()?;
        if footer_at != self.footer_offset() {
            let footer = self.footer.encode();
            self.backend.write_all_at(&footer, footer_at).map_err(|e| {
                Error::io(
                    &self.path,
                    "writing the footer past the new BAT",
                    footer_at,
                    e,
                )
            })?;
            self.sync_resize("syncing the footer past the new BAT")?;
        }
        let table_len = round_up_sector(u64::from(entries) * 4);
        {
            // The new table's space is taken from here on, even if a later step fails.
            let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
            st.footer_at = footer_at;
            st.next_free = st.next_free.max(table_offset + table_len);
            st.footer_stale = false;
        }
        {
            let bat = s.bat.read().unwrap_or_else(|e| e.into_inner());
            let mut buf = Vec::with_capacity(CHUNK as usize);
            let mut done = 0u64;
            while done < table_len {
                let n = (table_len - done).min(CHUNK);
                buf.clear();
                buf.resize(n as usize, 0xFF);
                let first = done / 4;
                for (k, e) in buf.chunks_exact_mut(4).enumerate() {
                    if let Some(v) = bat.entry(first + k as u64) {
                        e.copy_from_slice(&v.to_be_bytes());
                    }
                }
                let at = table_offset + done;
                self.backend
                    .write_all_at(&buf, at)
                    .map_err(|e| Error::io(&self.path, "writing the new BAT", at, e))?;
                done += n;
                tick(n)?;
            }
        }
        self.sync_resize("syncing the new BAT")?;
        let old_range = (
            s.header.table_offset,
            s.header.table_offset + s.header.bat_size_on_disk(),
        );
        let mut header = s.header.clone();
        header.table_offset = table_offset;
        header.max_table_entries = entries;
        self.write_header_first_sector(header)?;
        if let Layout::Sparse(s) = &mut self.layout {
            for r in s.metadata.iter_mut().filter(|r| **r == old_range) {
                *r = (table_offset, table_offset + table_len);
            }
        }
        Ok(())
    }

    /// Rewrites the footers with the disk's new `size` — at the end, sync, then the copy
    /// at offset 0, sync — and sizes the open file's BAT (and batmap) to match. The
    /// trailing footer is where readers take the size from, so the disk reads as resized
    /// once it lands; until the copy follows, `check` reports the copy as the trace of an
    /// interrupted resize (information).
    pub(crate) fn set_sparse_size(&mut self, size: u64) -> Result<()> {
        let footer = resized_footer(&self.footer, size);
        self.rewrite_footer(footer)?;
        let s = self.sparse()?;
        let entries = size.div_ceil(s.block_size);
        let mut bat = s.bat.write().unwrap_or_else(|e| e.into_inner());
        let mut v = bat.entries().to_vec();
        v.resize(
            usize::try_from(entries).unwrap_or(usize::MAX),
            BAT_ENTRY_UNUSED,
        );
        *bat = Bat::from_entries(v);
        if let Some(m) = s.batmap.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            m.map.resize(xen::map_bytes(size) as usize, 0);
        }
        Ok(())
    }

    /// Where a `tap` file's batmap sits and how much it holds, for the checks a resize
    /// makes before it writes: (header offset, bits the map area holds, bytes of it).
    pub(crate) fn batmap_room(&self) -> Option<(u64, u64, u64)> {
        let s = self.sparse().ok()?;
        let m = s.batmap.lock().unwrap_or_else(|e| e.into_inner());
        m.as_ref().map(|m| {
            (
                m.header_offset,
                m.header.map_area() * 8,
                m.header.map_area(),
            )
        })
    }

    /// Resizes a fixed disk of `S` bytes whose trailing footer is at `F` (`F > S` only
    /// after an interrupted resize) to `size` (`N`):
    ///
    /// A. when the footer moves forward (`N > F`): the space up to `N + 512` is reserved
    ///    (unless `sparse`); the current footer is written at `N`; sync. The disk still
    ///    reads as before: its size is `S`, the rest is padding before the footer.
    /// B. when it grows: the part of the new space that lay inside the old file
    ///    (`S .. min(N, old end)`: the old footer, any padding) is zeroed where it is
    ///    not zero; sync. Still padding.
    /// C. the footer at `F` is rewritten with the new size and geometry; sync. The disk
    ///    reads as resized (if it shrank, the cut data is padding now).
    /// D. when the footer must come back (`N < F`): the footer at `N`, sync; the file is
    ///    truncated after it, sync.
    ///
    /// `tick` is called with bytes zeroed or skipped in B (it may cancel: B writes only
    /// padding). Returns the file's new length.
    pub(crate) fn resize_fixed(
        &mut self,
        size: u64,
        sparse: bool,
        tick: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<u64> {
        self.check_writable()?;
        if !matches!(self.layout, Layout::Fixed) {
            return Err(Error::WrongDiskType {
                path: self.path.clone(),
                found: self.kind().to_string(),
                expected: "a fixed disk".into(),
            });
        }
        let io = |doing: &'static str, at: u64| {
            let path = self.path.clone();
            move |e| Error::io(&path, doing, at, e)
        };
        let old_size = self.footer.current_size;
        let old_end = self
            .backend
            .len()
            .map_err(|e| Error::file(&self.path, "reading the length", e))?;
        let mut footer_at = self.footer_offset();
        let old_footer = self.footer.encode();
        // A.
        if size > footer_at {
            if !sparse {
                let end = size + FOOTER_SIZE as u64;
                if let Err(e) = self.backend.reserve(old_end, end - old_end) {
                    // Give back what was reserved past the end (nothing reads it).
                    let _ = self.backend.set_len(old_end);
                    return Err(Error::io(&self.path, "reserving the new space", old_end, e));
                }
            }
            self.backend
                .write_all_at(&old_footer, size)
                .map_err(io("writing the footer at the new end", size))?;
            self.sync_resize("syncing the footer at the new end")?;
            footer_at = size;
            self.file_len = size + FOOTER_SIZE as u64;
            self.footer_source = super::FooterSource::End;
        }
        // B.
        if size > old_size {
            let end = size.min(old_end);
            if self.zero_file_range(old_size, end, tick)? {
                self.sync_resize("syncing the zeroed new space")?;
            }
        }
        // C.
        let footer = resized_footer(&self.footer, size);
        let bytes = footer.encode();
        self.backend
            .write_all_at(&bytes, footer_at)
            .map_err(io("writing the footer", footer_at))?;
        self.sync_resize("syncing the footer")?;
        self.footer = footer;
        self.file_len = self.file_len.max(footer_at + FOOTER_SIZE as u64);
        self.footer_source = super::FooterSource::End;
        // D.
        if size < footer_at {
            self.backend
                .write_all_at(&bytes, size)
                .map_err(io("writing the footer at the new end", size))?;
            self.sync_resize("syncing the footer at the new end")?;
            self.backend
                .set_len(size + FOOTER_SIZE as u64)
                .map_err(|e| Error::file(&self.path, "truncating", e))?;
            self.sync_resize("syncing the truncation")?;
            self.file_len = size + FOOTER_SIZE as u64;
        }
        Ok(self.file_len)
    }
}
