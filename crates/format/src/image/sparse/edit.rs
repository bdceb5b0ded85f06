//! The in-place edits of a sparse file outside its write path: releasing blocks
//! (compact, discard), moving them (compact), shortening the file to its live blocks
//! (compact, discard, resize, repair) and appending metadata (relink's new locators).
//! Each keeps the open file's state — BAT, free space, footer place, layout — in step
//! with what it wrote.

use crate::error::{Error, Result};
use crate::image::core::FileCore;
use crate::spec::layout::{locator_space, round_up_sector};
use crate::spec::{BAT_ENTRY_UNUSED, FOOTER_SIZE, SECTOR_SIZE};

use super::{Sparse, SparseState};

impl Sparse {
    /// Clears Xen's batmap bits of `blocks` (blocks no longer fully written: released)
    /// and rewrites the batmap with its checksum if a bit changed; the caller syncs.
    /// Returns whether anything was written. A file without a batmap: nothing to do.
    fn clear_batmap_bits(&self, f: &FileCore, blocks: &[u64]) -> Result<bool> {
        let mut m = self.batmap.lock().unwrap_or_else(|e| e.into_inner());
        match m.as_mut() {
            Some(m) => m.clear(&f.path, &*f.backend, blocks),
            None => Ok(false),
        }
    }

    /// Releases `blocks` in place (compact): Xen's batmap bits of them are cleared and
    /// made durable first (a clear bit is always safe, a set bit naming an unallocated
    /// block is not), then their BAT entries are marked unused, written, and synced.
    /// What the blocks held must read the same without them (zeros, or the parent).
    pub fn release_blocks(&self, f: &FileCore, blocks: &[u64]) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        if self.clear_batmap_bits(f, blocks)? {
            f.sync("syncing the batmap")?;
        }
        let mut bat = self.bat_write();
        let mut next = bat.clone();
        for &b in blocks {
            next.set(b, BAT_ENTRY_UNUSED);
        }
        self.write_bat_sectors(f, &next, blocks)?;
        f.sync("syncing the released BAT entries")?;
        *bat = next;
        Ok(())
    }

    /// Moves blocks in place (compact), as one batch: copies each block's bitmap and
    /// data from `from` to `to` (slots no live block uses, and none that a block of the
    /// batch vacates), syncs, then points their BAT entries at the copies and syncs.
    /// Until the BAT sectors land the old copies are the ones in use, and they are not
    /// overwritten, so either location is valid at every instant. `read` copies stored
    /// bytes out (through a map when it can).
    pub fn move_blocks(
        &self,
        f: &FileCore,
        moves: &[(u64, u64, u64)],
        buf: &mut Vec<u8>,
        read: &dyn Fn(&mut [u8], u64) -> Result<()>,
    ) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        buf.resize(self.layout.stride() as usize, 0);
        for &(_, from, to) in moves {
            read(buf, from)?;
            f.write(buf, to, "copying a block to its new place")?;
        }
        f.sync("syncing moved blocks")?;
        let mut bat = self.bat_write();
        let mut next = bat.clone();
        for &(block, _, to) in moves {
            // Fits: `to` is a slot below an existing entry's sector.
            next.set(block, (to / SECTOR_SIZE) as u32);
        }
        let blocks: Vec<u64> = moves.iter().map(|m| m.0).collect();
        self.write_bat_sectors(f, &next, &blocks)?;
        f.sync("syncing moved blocks' BAT entries")?;
        *bat = next;
        Ok(())
    }

    /// Shortens the file to its live blocks and metadata (compact, repair): writes the
    /// footer right after them, syncs (the footer at the end is still valid and the same),
    /// truncates after the new one, syncs — if that is before where the footer is now.
    /// The open file's idea of its end follows. Returns where the footer is.
    pub fn shorten(&self, f: &FileCore) -> Result<u64> {
        let mut st = self.state();
        self.shorten_locked(f, &mut st)
    }

    /// [`Sparse::shorten`] under the state lock the caller holds (the lock that
    /// serialises the write path's allocations).
    fn shorten_locked(&self, f: &FileCore, st: &mut SparseState) -> Result<u64> {
        let stride = self.layout.stride();
        let live_end = self
            .bat_read()
            .allocated()
            .map(|(_, off)| off + stride)
            .max()
            .unwrap_or(0);
        let new_footer_at = self.layout.data_end(live_end);
        if new_footer_at >= st.footer_at {
            return Ok(st.footer_at);
        }
        f.write(&f.footer.encode(), new_footer_at, "writing the footer")?;
        f.sync("syncing the new footer")?;
        f.backend
            .set_len(new_footer_at + FOOTER_SIZE as u64)
            .map_err(|e| Error::file(&f.path, "truncating", e))?;
        f.sync("syncing the truncation")?;
        st.footer_at = new_footer_at;
        st.next_free = new_footer_at;
        st.footer_stale = false;
        Ok(new_footer_at)
    }

    /// Releases the allocated blocks of a dynamic disk that `offset..offset + len`
    /// (inside the disk) covers entirely, with [`Sparse::release_blocks`]' order, then
    /// shortens the file ([`Sparse::shorten`]'s order), all under the write path's lock
    /// so that no write allocates meanwhile. Returns the virtual bytes released.
    pub(super) fn discard_blocks(&self, f: &FileCore, offset: u64, len: u64) -> Result<u64> {
        let size = f.footer.current_size;
        let bs = self.layout.block_size;
        let covered = super::super::allocation::covered_blocks(offset, len, size, bs);
        let (first, stop) = (covered.start, covered.end);
        if first >= stop {
            return Ok(0);
        }
        let mut st = self.state();
        let blocks: Vec<u64> = {
            let bat = self.bat_read();
            (first..stop)
                .filter(|&b| bat.block_offset(b).is_some())
                .collect()
        };
        if blocks.is_empty() {
            return Ok(0);
        }
        self.release_blocks(f, &blocks)?;
        self.shorten_locked(f, &mut st)?;
        Ok(blocks
            .iter()
            .map(|&b| bs.min(size.saturating_sub(b * bs)))
            .sum())
    }

    /// Appends `payloads` (locator texts, already encoded) as new metadata past every
    /// block and piece of metadata, each in whole sectors ([`locator_space`]), and
    /// returns their offsets. Crash-safe as a block allocation: the footer moves to the
    /// new end first (synced), then the payloads are written (synced); until a header
    /// names them they are unreferenced space, which `check` reports as information.
    pub fn append_metadata(&mut self, f: &FileCore, payloads: &[Vec<u8>]) -> Result<Vec<u64>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut at = round_up_sector(st.next_free);
        let mut offsets = Vec::with_capacity(payloads.len());
        for p in payloads {
            offsets.push(at);
            at += locator_space(p.len() as u64);
        }
        let new_footer_at = at.max(st.footer_at);
        if new_footer_at != st.footer_at || st.footer_stale {
            f.write(
                &f.footer.encode(),
                new_footer_at,
                "writing the footer at the new end",
            )?;
            f.sync("syncing the footer at the new end")?;
        }
        st.next_free = at;
        st.footer_at = new_footer_at;
        st.footer_stale = false;
        drop(st);
        for (p, &off) in payloads.iter().zip(&offsets) {
            let mut padded = p.clone();
            padded.resize(locator_space(p.len() as u64) as usize, 0);
            f.write(&padded, off, "writing a parent locator")?;
            self.layout.add_metadata((off, off + padded.len() as u64));
        }
        f.sync("syncing the parent locators")?;
        Ok(offsets)
    }
}
