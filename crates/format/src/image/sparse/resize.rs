//! A resize of a dynamic or differencing file: the plan (how the BAT makes room, or why
//! it cannot) and the in-place edits in the order `docs/crash-safety.md` ("Resize")
//! argues — the tail of a partly covered last block cleared, BAT entries past the size
//! made unused, `max_table_entries` raised in the table's padding or the table moved to
//! the end of the file, Xen's batmap trimmed, the footers rewritten with the new size.
//! Each edit leaves the file valid on its own and keeps the open file's state (header,
//! BAT, layout, footer place) in step with what it wrote. `ops/resize.rs` checks
//! everything that does not depend on the container and reports.

use vhdkit_task::Phase;

use crate::error::{Error, Result};
use crate::image::container::{ResizePlan, ResizeSteps};
use crate::image::core::{resized_footer, FileCore, CHUNK};
use crate::spec::batmap as xen;
use crate::spec::layout::{bat_growth, table_bytes, BatGrowth};
use crate::spec::{
    Bat, DynamicHeader, BAT_ENTRY_UNUSED, FOOTER_SIZE, MAX_CREATE_BAT_ENTRIES, SECTOR_SIZE,
};

use super::{differencing, Sparse};

impl Sparse {
    /// What a resize to `new` bytes does: at the same size, finish what an interrupted
    /// shrink left (a stale footer copy, allocated entries past the size) or nothing; a
    /// grow, as the BAT makes room ([`Sparse::grow_plan`]); else a shrink.
    pub(super) fn plan(&self, f: &FileCore, new: u64) -> Result<ResizePlan> {
        let old = f.footer.current_size;
        Ok(if new == old {
            let used = self.layout.blocks_for(old);
            if !self.footer_copy_matches(f)? || self.entries_past(f, used)? > 0 {
                ResizePlan::Shrink
            } else {
                ResizePlan::Nothing
            }
        } else if new > old {
            ResizePlan::Grow(self.grow_plan(f, new)?)
        } else {
            ResizePlan::Shrink
        })
    }

    /// How the BAT grows to cover `new` bytes, or why it cannot.
    fn grow_plan(&self, f: &FileCore, new: u64) -> Result<BatGrowth> {
        let header = &self.header;
        let block = self.layout.block_size;
        let entries = self.layout.blocks_for(new);
        let used = self.layout.blocks_for(f.footer.current_size);
        // Every piece of metadata but the table itself is occupied: a locator another
        // writer put in the table's padding is never written over.
        let table = self.layout.table_range(header.max_table_entries);
        let mut occupied = self.layout.metadata.clone();
        if let Some(i) = occupied.iter().position(|&r| r == table) {
            occupied.remove(i);
        }
        let (next_free, footer_at) = {
            let st = self.state();
            (st.next_free, st.footer_at)
        };
        let growth = bat_growth(header, next_free, footer_at, used, entries, &occupied);
        if let BatGrowth::Relocate { .. } = growth {
            if entries > MAX_CREATE_BAT_ENTRIES {
                return Err(Error::SizeTooLarge {
                    size: new,
                    detail: format!(
                        "{entries} blocks of {block} bytes: vhdkit writes tables of at most {MAX_CREATE_BAT_ENTRIES} entries (convert to a larger block size first)"
                    ),
                });
            }
            if f.footer.creator_app.starts_with(b"tap") {
                let on_disk = header.bat_size_on_disk();
                let room = on_disk / 4 * block;
                let limit = if entries.saturating_mul(4) <= on_disk {
                    "in place it cannot grow: other metadata lies in the table's padding".to_owned()
                } else {
                    format!("in place it covers at most {room} bytes")
                };
                return Err(Error::Unsupported {
                    path: f.path.clone(),
                    detail: format!(
                        "a Xen blktap (`tap`) disk keeps its batmap right after the BAT, and vhd-util check refuses blocks stored before the end of the metadata, so its BAT cannot move to the end of the file; {limit} (grow it further with `vhd-util resize`, or convert it first)"
                    ),
                });
            }
        }
        if let Some((bits, area)) = self.batmap_room() {
            let need = xen::map_bytes(new);
            if entries > bits || need > area {
                return Err(Error::Unsupported {
                    path: f.path.clone(),
                    detail: format!(
                        "the Xen batmap holds {bits} blocks in {area} bytes; {new} bytes needs {entries} blocks and {need} bytes"
                    ),
                });
            }
        }
        Ok(growth)
    }

    /// The steps of a grow before the footers.
    pub(super) fn grow(
        &mut self,
        f: &mut FileCore,
        old: u64,
        new: u64,
        growth: BatGrowth,
        steps: &mut dyn ResizeSteps,
    ) -> Result<()> {
        let block = self.layout.block_size;
        let (old_used, new_used) = (self.layout.blocks_for(old), self.layout.blocks_for(new));
        // Fits: checked against MAX_CREATE_BAT_ENTRIES or the existing table, both u32.
        let entries = u32::try_from(new_used)
            .map_err(|_| Error::InvalidArgument(format!("{new_used} blocks do not fit a BAT")))?;
        // Xen's batmap: the bits of the blocks the new size brings in must be clear, and
        // so must that of a differencing disk's partly covered last block, whose sector
        // bitmap loses bits below. (Rare in blktap's files: their sizes are whole blocks.)
        let partial = !old.is_multiple_of(block) && differencing(f);
        let clear_from = if partial { old / block } else { old_used };
        if self.trim_batmap(f, clear_from, old, new)? {
            f.sync("syncing")?;
        }
        if self.clear_past(f, old)? {
            f.sync("syncing")?;
        }
        steps.check_cancelled()?;
        match growth {
            BatGrowth::Fits | BatGrowth::InPlace => {
                if self.unuse_bat_entries(f, old_used, new_used, false)? > 0 {
                    f.sync("syncing")?;
                }
                if growth == BatGrowth::InPlace {
                    let mut header = self.header.clone();
                    header.max_table_entries = entries;
                    self.write_header_first_sector(f, header)?;
                }
            }
            BatGrowth::Relocate {
                table_offset,
                footer_at,
            } => {
                steps.phase(Phase::Flush, table_bytes(new_used));
                self.relocate_bat(f, entries, table_offset, footer_at, &mut |n| steps.tick(n))?;
            }
        }
        Ok(())
    }

    /// A shrink (or, at the same size, the end of an interrupted one). Returns the
    /// blocks released.
    pub(super) fn shrink(
        &mut self,
        f: &mut FileCore,
        old: u64,
        new: u64,
        steps: &mut dyn ResizeSteps,
    ) -> Result<u64> {
        let new_used = self.layout.blocks_for(new);
        let max = u64::from(self.header.max_table_entries);
        steps.phase(Phase::Flush, 0);
        // Xen's batmap: only what its checksum needs (the bytes the smaller size no
        // longer reads cleared, when it reads fewer). The bits of blocks past the new end
        // may stay set: no reader or checker looks past the size, and a grow clears them
        // first.
        if self.trim_batmap(f, u64::MAX, old, new)? {
            f.sync("syncing")?;
        }
        if new < old {
            self.set_size(f, new)?;
        } else if !self.footer_copy_matches(f)? {
            f.write(&f.footer.encode(), 0, "writing the footer copy")?;
            f.sync("syncing the footer copy")?;
        }
        steps.lap("footer");
        steps.phase(Phase::Zero, 0);
        if self.clear_past(f, new)? {
            f.sync("syncing")?;
        }
        let released = self.unuse_bat_entries(f, new_used, max, true)?;
        if released > 0 {
            f.sync("syncing")?;
        }
        steps.lap("release");
        self.shorten(f)?;
        steps.lap("truncate");
        Ok(released)
    }

    /// Clears what the block holding virtual byte `size` stores past it, when `size` is
    /// not on a block boundary and the block is allocated: the data is zeroed (every
    /// reader, qemu included, reads zeros there) and, in a differencing disk, the bits
    /// of those sectors cleared (they read as the parent). Past the disk's end these
    /// bytes are read by no one; a grow makes them part of the disk, where they must read
    /// as new space. The caller syncs. Returns whether anything was written.
    fn clear_past(&self, f: &FileCore, size: u64) -> Result<bool> {
        let (block_size, bitmap_size) = (self.layout.block_size, self.layout.bitmap_size);
        let (block, in_block) = (size / block_size, size % block_size);
        if in_block == 0 {
            return Ok(false);
        }
        let Some(boff) = self.bat_read().block_offset(block) else {
            return Ok(false);
        };
        let data_at = boff + bitmap_size;
        let mut wrote = f.zero_range(data_at + in_block, data_at + block_size, &mut |_| Ok(()))?;
        if differencing(f) {
            let mut bm = self.read_bitmap(f, boff)?;
            let before = bm.clone();
            let sectors = block_size / SECTOR_SIZE;
            for sector in in_block / SECTOR_SIZE..sectors {
                if let Some(b) = bm.get_mut((sector / 8) as usize) {
                    *b &= !(0x80u8 >> (sector % 8));
                }
            }
            for (i, (a, b)) in bm.chunks(512).zip(before.chunks(512)).enumerate() {
                if a != b {
                    let at = boff + i as u64 * SECTOR_SIZE;
                    f.write(a, at, "clearing bits past the disk's end")?;
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
    fn unuse_bat_entries(&self, f: &FileCore, from: u64, to: u64, keep_zeros: bool) -> Result<u64> {
        let per_sector = SECTOR_SIZE / 4;
        let mut changed = 0u64;
        let first_sector = from / per_sector;
        let end_sector = to.div_ceil(per_sector);
        let mut buf = Vec::new();
        let mut sector = first_sector;
        while sector < end_sector {
            let n = (end_sector - sector).min(CHUNK / SECTOR_SIZE);
            buf.resize((n * SECTOR_SIZE) as usize, 0);
            f.read(
                &mut buf,
                self.layout.bat_sector_offset(sector),
                "reading the BAT",
            )?;
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
                    let at = self.layout.bat_sector_offset(sector + k as u64);
                    f.write(sec, at, "writing a BAT sector")?;
                }
            }
            sector += n;
        }
        Ok(changed)
    }

    /// Whether the footer copy at offset 0 holds the same bytes as the trailing footer.
    fn footer_copy_matches(&self, f: &FileCore) -> Result<bool> {
        let at = self.footer_at();
        let mut end = [0u8; FOOTER_SIZE];
        let mut copy = [0u8; FOOTER_SIZE];
        let n = if f.footer_source == crate::image::FooterSource::ShortEnd {
            FOOTER_SIZE - 1
        } else {
            FOOTER_SIZE
        };
        f.read(&mut end[..n], at, "reading the footer")?;
        f.read(&mut copy, 0, "reading the footer copy")?;
        Ok(end == copy)
    }

    /// The allocated BAT entries from `from` on, up to `max_table_entries` (entries past
    /// the disk's size: a shrink cut short before releasing them), read from the file.
    fn entries_past(&self, f: &FileCore, from: u64) -> Result<u64> {
        let to = u64::from(self.header.max_table_entries);
        let toff = self.layout.table_offset;
        let mut count = 0;
        let mut pos = from;
        let mut buf = Vec::new();
        while pos < to {
            let n = (to - pos).min(CHUNK / 4);
            buf.resize((n * 4) as usize, 0);
            f.read(&mut buf, toff + pos * 4, "reading the BAT")?;
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
    fn trim_batmap(&self, f: &FileCore, limit: u64, old: u64, new: u64) -> Result<bool> {
        let mut guard = self.batmap.lock().unwrap_or_else(|e| e.into_inner());
        let Some(m) = guard.as_mut() else {
            return Ok(false);
        };
        let small = xen::map_bytes(old.min(new));
        let limit = limit.min(small * 8);
        let span = xen::map_bytes(old.max(new))
            .max(limit.div_ceil(8))
            .min(m.header.map_area());
        let mut map = vec![0u8; span as usize];
        f.read(&mut map, m.header.map_offset, "reading the batmap")?;
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
                f.write(now, at, "writing the batmap")?;
            }
        }
        let n = xen::map_bytes(old) as usize;
        m.header.checksum = xen::checksum(&map[..n.min(map.len())], m.header.version);
        f.write(
            &m.header.encode(),
            m.header_offset,
            "writing the batmap header",
        )?;
        let keep = m.map.len().min(map.len());
        m.map[..keep].copy_from_slice(&map[..keep]);
        Ok(true)
    }

    /// Writes the first sector of `header` over the dynamic header's (table offset, max
    /// table entries and checksum all live there: one atomic sector write; the second
    /// sector, locators 2–7 and reserved bytes, stays as it is: no field in it changes),
    /// syncs, and adopts it.
    fn write_header_first_sector(&mut self, f: &FileCore, header: DynamicHeader) -> Result<()> {
        let bytes = header.encode();
        f.write(
            &bytes[..SECTOR_SIZE as usize],
            self.layout.header_offset,
            "writing the dynamic header",
        )?;
        f.sync("syncing the dynamic header")?;
        self.header = header;
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
    fn relocate_bat(
        &mut self,
        f: &FileCore,
        entries: u32,
        table_offset: u64,
        footer_at: u64,
        tick: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<()> {
        if footer_at != self.footer_at() {
            f.write(
                &f.footer.encode(),
                footer_at,
                "writing the footer past the new BAT",
            )?;
            f.sync("syncing the footer past the new BAT")?;
        }
        let table_len = table_bytes(u64::from(entries));
        {
            // The new table's space is taken from here on, even if a later step fails.
            let mut st = self.state();
            st.footer_at = footer_at;
            st.next_free = st.next_free.max(table_offset + table_len);
            st.footer_stale = false;
        }
        {
            let bat = self.bat_read();
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
                f.write(&buf, table_offset + done, "writing the new BAT")?;
                done += n;
                tick(n)?;
            }
        }
        f.sync("syncing the new BAT")?;
        let old_range = self.layout.table_range(self.header.max_table_entries);
        let mut header = self.header.clone();
        header.table_offset = table_offset;
        header.max_table_entries = entries;
        self.write_header_first_sector(f, header)?;
        self.layout.move_table(old_range, table_offset, entries);
        Ok(())
    }

    /// Rewrites the footers with the disk's new `size` — at the end, sync, then the copy
    /// at offset 0, sync — and sizes the open file's layout, BAT (and batmap) to match.
    /// The trailing footer is where readers take the size from, so the disk reads as
    /// resized once it lands; until the copy follows, `check` reports the copy as the
    /// trace of an interrupted resize (information).
    pub(super) fn set_size(&mut self, f: &mut FileCore, size: u64) -> Result<()> {
        let footer = resized_footer(&f.footer, size);
        let bytes = footer.encode();
        let at = self.footer_at();
        f.write(&bytes, at, "writing the footer")?;
        f.sync("syncing the footer")?;
        f.write(&bytes, 0, "writing the footer copy")?;
        f.sync("syncing the footer copy")?;
        f.footer = crate::spec::Footer::decode(&bytes)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.layout.set_size(size);
        let entries = self.layout.used_entries;
        let mut bat = self.bat_write();
        let mut v = bat.entries().to_vec();
        v.resize(
            usize::try_from(entries).unwrap_or(usize::MAX),
            BAT_ENTRY_UNUSED,
        );
        *bat = Bat::from_entries(v);
        drop(bat);
        if let Some(m) = self
            .batmap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            m.map.resize(xen::map_bytes(size) as usize, 0);
        }
        Ok(())
    }

    /// Where a `tap` file's batmap sits and how much it holds, for the checks a resize
    /// makes before it writes: (bits the map area holds, bytes of it).
    fn batmap_room(&self) -> Option<(u64, u64)> {
        let m = self.batmap.lock().unwrap_or_else(|e| e.into_inner());
        m.as_ref()
            .map(|m| (m.header.map_area() * 8, m.header.map_area()))
    }
}
