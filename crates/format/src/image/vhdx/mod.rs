//! VHDX files (MS-VHDX, Hyper-V's format) behind the container trait: fixed, dynamic
//! and differencing `.vhdx` / `.avhdx` files, built on the pure format layer
//! (`crate::vhdx`).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the type, the footer made up for it, the container impl |
//! | `open.rs` | reading the header section, regions, log, metadata and BAT from a file |
//! | `log.rs` | a pending log: replayed in memory (read-only opens) or on disk (writable) |
//! | `map.rs` | BAT states and sector bitmaps → extents |
//! | `info.rs` | the facts `info` shows |
//! | `write.rs` | writes in place, metadata through the log |
//! | `compact.rs` | blocks released and moved into the holes, the file shortened, metadata through the log |
//! | `resize.rs` | the virtual size and the BAT changed together, through the log (the BAT region moved, a fixed file's blocks added or cut) |
//! | `relink.rs` | a parent locator rewritten in place, through the log |
//!
//! `VhdFile`'s API is footer-centric: a VHDX file gets a footer made up from its
//! metadata (`docs/architecture.md`, "VHDX files"): the kind (fixed when
//! leave-blocks-allocated is set, differencing when has-parent is, dynamic otherwise),
//! the virtual size, and the header's data write GUID as the unique id, the identity a
//! child's `parent_linkage` names.

mod compact;
mod discard;
mod info;
mod log;
mod map;
mod open;
mod relink;
mod resize;
mod write;

use std::ops::Range;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::error::{Error, Result};
use crate::spec::{DiskType as VhdDiskType, Footer, VhdTime};
use crate::vhdx::{
    bat::Bat, CurrentHeader, FileAreas, FileIdentifier, Metadata, ParentLocator, PayloadState,
    RegionTable,
};

use super::container::Container;
use super::core::FileCore;
use super::extent::LayerExtent;
use super::DiskKind;

pub(crate) use compact::{Move, MovePlan};
pub use info::{LocatorEntry, VhdxInfo};
pub(crate) use log::LogState;
pub(crate) use open::open_vhdx;

/// An open VHDX file's own state.
#[derive(Debug)]
pub(crate) struct Vhdx {
    /// The file type identifier.
    pub ident: FileIdentifier,
    /// The current header (after an on-disk replay: the header written then).
    pub header: CurrentHeader,
    /// The region table in use.
    pub regions: RegionTable,
    /// Whether both region table copies agree.
    pub regions_agree: bool,
    /// The metadata areas and the file's length (as replayed).
    pub areas: FileAreas,
    /// The metadata (as replayed).
    pub metadata: Metadata,
    /// The BAT (as replayed, and as written since).
    bat: RwLock<Bat>,
    /// What happened to the log on open.
    pub log: LogState,
    /// What the write path keeps: the current header, the end of the file, the log
    /// cursor (`write.rs`).
    write: Mutex<write::WriteState>,
    /// A read-only open's in-memory replay: what every read of the file sees on top of
    /// its bytes (empty when the log was clean or replayed on disk).
    overlay: log::Overlay,
}

impl Vhdx {
    /// The kind of disk the metadata describes.
    pub fn disk_kind(&self) -> DiskKind {
        let p = &self.metadata.file_parameters;
        if p.has_parent {
            DiskKind::Differencing
        } else if p.leave_blocks_allocated {
            DiskKind::Fixed
        } else {
            DiskKind::Dynamic
        }
    }

    /// The parent locator of a differencing file.
    pub fn parent_locator(&self) -> Option<&ParentLocator> {
        self.metadata
            .parent_locator
            .as_ref()
            .filter(|_| self.metadata.file_parameters.has_parent)
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        u64::from(self.metadata.file_parameters.block_size)
    }

    /// Reads `buf.len()` bytes at file offset `at` as the file reads after the log's
    /// replay: the file's bytes (zeros past its end, where a replay grew it), with the
    /// in-memory replay's writes on top.
    pub(crate) fn read_file(
        &self,
        f: &FileCore,
        buf: &mut [u8],
        at: u64,
        doing: &'static str,
    ) -> Result<()> {
        open::read_replayed(f, &self.overlay, buf, at, doing)
    }

    /// The BAT.
    pub(crate) fn bat(&self) -> RwLockReadGuard<'_, Bat> {
        self.bat.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> MutexGuard<'_, write::WriteState> {
        self.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The data write GUID the file has now: the header's at open, a new one after the
    /// first data write ([`Vhdx::plan_data_write_guid`]). A child's `parent_linkage`
    /// names it.
    pub(crate) fn data_write_guid(&self) -> uuid::Uuid {
        write::data_write_guid(&self.write_state())
    }

    /// Makes `guid` the data write GUID the first data write gives the file (a merge
    /// names it in the child as `parent_linkage2` before writing). Refused once the
    /// file has been written since opening (its GUID is changed already).
    pub(crate) fn plan_data_write_guid(&self, f: &FileCore, guid: uuid::Uuid) -> Result<()> {
        let mut st = self.write_state();
        if st.guids_changed() {
            return Err(Error::InvalidArgument(format!(
                "{}: written since it was opened, so its next data write GUID is taken",
                f.path.display()
            )));
        }
        st.next_data_guid = Some(guid);
        Ok(())
    }

    /// Replaces the parent locator of this differencing file by `loc`, through the log
    /// (`relink.rs`). The in-memory metadata keeps the old locator: reopen to see it.
    pub(crate) fn rewrite_parent_locator(&self, f: &FileCore, loc: &ParentLocator) -> Result<()> {
        relink::rewrite_parent_locator(self, f, loc)
    }

    /// The blocks a merge copies from this file: those it stores (fully or partially
    /// present) and those it reads as zeros over its parent (zero state), in order.
    pub(crate) fn merge_blocks(&self) -> Vec<u64> {
        let bat = self.bat();
        (0..bat.geometry.data_blocks)
            .filter(|&b| {
                bat.payload(b).is_some_and(|p| {
                    matches!(
                        p.state,
                        Some(
                            PayloadState::FullyPresent
                                | PayloadState::PartiallyPresent
                                | PayloadState::Zero
                        )
                    )
                })
            })
            .collect()
    }

    /// Sets `blocks` (stored ones) not present, through the log (`compact.rs`).
    pub(crate) fn release_blocks(&self, f: &FileCore, blocks: &[u64]) -> Result<()> {
        compact::release(self, f, blocks, false)
    }

    /// The moves that fill the file's holes from its tail once `released` (payload
    /// blocks, sorted) are not stored (`compact.rs`).
    pub(crate) fn plan_moves(&self, released: &[u64]) -> MovePlan {
        compact::plan_moves(self, released)
    }

    /// Moves one batch of blocks, their BAT entries through the log (`compact.rs`).
    pub(crate) fn move_blocks(
        &self,
        f: &FileCore,
        batch: &[Move],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        compact::move_blocks(self, f, batch, buf)
    }

    /// Closes the log and cuts the file after what it holds (`compact.rs`); returns its
    /// length.
    pub(crate) fn shorten(&self, f: &FileCore) -> Result<u64> {
        compact::shorten(self, f)
    }

    /// The payload blocks stored in the file (fully or partially present), in order.
    pub(crate) fn allocated(&self) -> Vec<u64> {
        let bat = self.bat();
        (0..bat.geometry.data_blocks)
            .filter(|&b| {
                bat.payload(b).is_some_and(|p| {
                    matches!(
                        p.state,
                        Some(PayloadState::FullyPresent | PayloadState::PartiallyPresent)
                    )
                })
            })
            .collect()
    }
}

/// The footer a VHDX file is presented with (see the module's documentation).
pub(crate) fn made_up_footer(v: &Vhdx, f: Option<&std::fs::File>) -> Footer {
    let disk_type = match v.disk_kind() {
        DiskKind::Differencing => VhdDiskType::Differencing,
        DiskKind::Fixed => VhdDiskType::Fixed,
        _ => VhdDiskType::Dynamic,
    };
    let mut footer = Footer::new(disk_type, v.metadata.virtual_size);
    footer.cookie = crate::vhdx::ident::IDENT_SIGNATURE;
    footer.unique_id = v.header.header.data_write_guid;
    footer.creator_app = [0; 4];
    footer.creator_version = 0;
    footer.creator_host_os = [0; 4];
    footer.timestamp = f
        .and_then(|f| f.metadata().ok())
        .and_then(|m| m.modified().ok())
        .map(VhdTime::from_system_time)
        .unwrap_or(VhdTime(0));
    footer
}

impl Container for Vhdx {
    fn kind(&self, _f: &FileCore) -> DiskKind {
        self.disk_kind()
    }

    fn extents(&self, f: &FileCore, pos: u64, end: u64, out: &mut Vec<LayerExtent>) -> Result<()> {
        map::extents(self, f, pos, end, out)
    }

    fn stored_ranges(&self, _f: &FileCore) -> Vec<Range<u64>> {
        let bs = self.block_size();
        let size = self.metadata.virtual_size;
        let mut out: Vec<Range<u64>> = Vec::new();
        for b in self.allocated() {
            let r = b * bs..((b + 1) * bs).min(size);
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    fn read(&self, f: &FileCore, buf: &mut [u8], file_offset: u64) -> Result<()> {
        self.read_file(f, buf, file_offset, "reading disk data")
    }

    fn direct_reads(&self) -> bool {
        self.overlay.is_empty()
    }

    fn write_runs(&self, f: &FileCore, runs: &[(u64, &[u8])]) -> Result<()> {
        write::write_runs(self, f, runs)
    }

    fn discard(&self, f: &FileCore, offset: u64, len: u64) -> Result<u64> {
        discard::discard(self, f, offset, len)
    }

    fn flush(&self, f: &FileCore) -> Result<()> {
        write::close_log(self, f)
    }

    fn file_len(&self, _f: &FileCore) -> u64 {
        self.write_state().file_end
    }

    fn footer_offset(&self, f: &FileCore) -> u64 {
        self.file_len(f)
    }

    fn footer_write_offset(&self, f: &FileCore) -> u64 {
        self.file_len(f)
    }

    fn metadata_ranges(&self) -> Vec<(u64, u64)> {
        let mut r = vec![(0, crate::vhdx::HEADER_SECTION_SIZE)];
        if self.areas.log.1 > self.areas.log.0 {
            r.push((self.areas.log.0, self.areas.log.1 - self.areas.log.0));
        }
        r.extend(self.areas.regions.iter().map(|&(s, e, _)| (s, e - s)));
        let bat = self.bat();
        for chunk in 0..bat.geometry.bitmap_blocks {
            if let Some((Some(crate::vhdx::SectorBitmapState::Present), at)) =
                bat.sector_bitmap(chunk)
            {
                r.push((at, crate::vhdx::bat::SECTOR_BITMAP_BLOCK_SIZE));
            }
        }
        r.sort_unstable();
        r
    }

    fn allocated_blocks(&self) -> u64 {
        self.allocated().len() as u64
    }

    fn plan_resize(&self, f: &FileCore, new: u64) -> Result<super::container::ResizePlan> {
        resize::plan(self, f, new)
    }

    fn resize(
        &mut self,
        f: &mut FileCore,
        plan: super::container::ResizePlan,
        job: super::container::ResizeJob,
        steps: &mut dyn super::container::ResizeSteps,
    ) -> Result<u64> {
        let _ = plan;
        steps.check_cancelled()?;
        let cut = resize::resize(self, f, job.new, job.sparse)?;
        steps.lap("resize");
        Ok(cut)
    }
}
