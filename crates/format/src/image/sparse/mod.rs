//! Dynamic and differencing files: opening them (header, BAT, locators, Xen's batmap,
//! all checked against the one layout description in `spec/layout.rs`, which the open
//! file then keeps as its live layout). The rooms: `map.rs` maps a virtual range to its
//! extents through the BAT and sector bitmaps, `write.rs` is the crash-safe write path,
//! `edit.rs` the in-place edits compact, relink and discard make (release, move,
//! shorten, new metadata), `resize.rs` those of a resize — so that no other module
//! edits a sparse file's state.

mod edit;
mod map;
mod resize;
mod write;

use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock};

use crate::error::{Error, Result};
use crate::spec::header::check_block_size;
use crate::spec::layout::BAT_CHUNK_BYTES;
use crate::spec::{
    Bat, DiskType, DynamicHeader, Footer, Severity, SparseLayout, FOOTER_SIZE, HEADER_SIZE,
};

use super::backend::Backend;
use super::container::{Container, ResizeJob, ResizePlan, ResizeSteps};
use super::core::FileCore;
use super::extent::LayerExtent;
use super::footer::FooterSource;
use super::{DiskKind, OpenOptions};

/// An open dynamic or differencing file.
///
/// Its [`SparseLayout`] is the one description of where things lie, as opened and as
/// changed since — only through this type's methods (new metadata, a moved table, a new
/// size). What moves under concurrent writes — the first free byte and the trailing
/// footer — is [`SparseState`], under the lock that serialises allocations; the
/// layout's own `footer_at` is where the footer was when the BAT was validated.
#[derive(Debug)]
pub(crate) struct Sparse {
    header: DynamicHeader,
    layout: SparseLayout,
    bat: RwLock<Bat>,
    state: Mutex<SparseState>,
    /// Xen's batmap, for files blktap wrote.
    batmap: Mutex<Option<super::batmap::Batmap>>,
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
    Ok(Sparse {
        header,
        layout,
        bat: RwLock::new(bat),
        batmap: Mutex::new(batmap),
        state: Mutex::new(SparseState {
            next_free,
            footer_at: footer_pos,
            footer_stale: source == FooterSource::Copy,
        }),
    })
}

impl Sparse {
    /// The dynamic header.
    pub fn header(&self) -> &DynamicHeader {
        &self.header
    }

    /// The live layout.
    pub fn layout(&self) -> &SparseLayout {
        &self.layout
    }

    /// A copy of the BAT.
    pub fn bat(&self) -> Bat {
        self.bat_read().clone()
    }

    /// Whether the file carries Xen's batmap.
    pub fn has_batmap(&self) -> bool {
        self.batmap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn bat_read(&self) -> std::sync::RwLockReadGuard<'_, Bat> {
        self.bat.read().unwrap_or_else(|e| e.into_inner())
    }

    fn bat_write(&self) -> std::sync::RwLockWriteGuard<'_, Bat> {
        self.bat.write().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, SparseState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the trailing footer is now.
    pub fn footer_at(&self) -> u64 {
        self.state().footer_at
    }

    /// Rewrites the dynamic header durably (e.g. a new parent timestamp after a merge);
    /// the layout follows a table the new header puts elsewhere.
    pub fn rewrite_header(&mut self, f: &FileCore, header: DynamicHeader) -> Result<()> {
        let bytes = header.encode();
        let at = self.layout.header_offset;
        f.write(&bytes, at, "writing the dynamic header")?;
        f.sync("syncing the dynamic header")?;
        let old_table = self.layout.table_range(self.header.max_table_entries);
        self.header =
            DynamicHeader::decode(&bytes).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let table = (self.header.table_offset, self.header.max_table_entries);
        if self.layout.table_range(table.1) != old_table || table.0 != self.layout.table_offset {
            self.layout.move_table(old_table, table.0, table.1);
        }
        Ok(())
    }
}

fn differencing(f: &FileCore) -> bool {
    f.footer.disk_type == DiskType::Differencing
}

impl Container for Sparse {
    fn kind(&self, f: &FileCore) -> DiskKind {
        if differencing(f) {
            DiskKind::Differencing
        } else {
            DiskKind::Dynamic
        }
    }

    fn extents(&self, f: &FileCore, pos: u64, end: u64, out: &mut Vec<LayerExtent>) -> Result<()> {
        self.map_extents(f, pos, end, out)
    }

    fn stored_ranges(&self, f: &FileCore) -> Vec<Range<u64>> {
        self.allocated_ranges(f.footer.current_size)
    }

    fn write_runs(&self, f: &FileCore, runs: &[(u64, &[u8])]) -> Result<()> {
        self.write_blocks(f, runs)
    }

    fn discard(&self, f: &FileCore, offset: u64, len: u64) -> Result<u64> {
        if differencing(f) {
            return Ok(0);
        }
        self.discard_blocks(f, offset, len)
    }

    fn file_len(&self, f: &FileCore) -> u64 {
        (self.footer_at() + FOOTER_SIZE as u64).max(f.file_len)
    }

    fn footer_offset(&self, _f: &FileCore) -> u64 {
        self.footer_at()
    }

    fn footer_write_offset(&self, _f: &FileCore) -> u64 {
        self.footer_at()
    }

    fn metadata_ranges(&self) -> Vec<(u64, u64)> {
        self.layout.metadata.clone()
    }

    fn allocated_blocks(&self) -> u64 {
        self.bat_read().allocated_count()
    }

    fn plan_resize(&self, f: &FileCore, new: u64) -> Result<ResizePlan> {
        self.plan(f, new)
    }

    fn resize(
        &mut self,
        f: &mut FileCore,
        plan: ResizePlan,
        job: ResizeJob,
        steps: &mut dyn ResizeSteps,
    ) -> Result<u64> {
        match plan {
            ResizePlan::Grow(growth) => {
                self.grow(f, job.old, job.new, growth, steps)?;
                steps.lap("bat");
                steps.phase(vhdkit_task::Phase::Flush, 0);
                self.set_size(f, job.new)?;
                steps.lap("footer");
                Ok(0)
            }
            ResizePlan::Shrink => self.shrink(f, job.old, job.new, steps),
            ResizePlan::Nothing | ResizePlan::Fixed => Ok(0),
        }
    }
}
