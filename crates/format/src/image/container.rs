//! The seam between a disk file and its container format: the one trait every container
//! implements — raw images (`raw.rs`), fixed disks (`fixed.rs`), dynamic and
//! differencing disks (`sparse/`), host-drive stubs (`hostdrive.rs`) — and through
//! which [`super::VhdFile`], and so [`super::Disk`], the operations, `check`, `map` and
//! `serve`, reach it. Nothing above this trait matches on which container a file is.
//!
//! A container keeps only its own state (a sparse file's layout, BAT and free space, a
//! host drive's device); what every file has — path, backend, footer, whether it is
//! writable — is the [`FileCore`] each method receives. `docs/architecture.md` says
//! how to add one.

use std::any::Any;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use vhdkit_task::Phase;

use crate::error::{Error, Result};
use crate::spec::layout::BatGrowth;
use crate::spec::FOOTER_SIZE;

use super::backend::Backend;
use super::core::FileCore;
use super::extent::LayerExtent;
use super::DiskKind;

/// One container format's side of an open file.
///
/// What only one format has (a dynamic disk's BAT, a host drive's device) is reached by
/// downcasting (`Any`) where the operation that needs it is (`file.rs`): this trait
/// names no container, and no container names another.
pub(crate) trait Container: Any + std::fmt::Debug + Send + Sync {
    /// What kind of disk the file is.
    fn kind(&self, f: &FileCore) -> DiskKind;

    /// Appends the extents of the virtual range `pos..end` (within the virtual size) to
    /// `out`, in order: `Data` where this file stores the bytes, else `Parent`
    /// (differencing) or `Zero`.
    fn extents(&self, f: &FileCore, pos: u64, end: u64, out: &mut Vec<LayerExtent>) -> Result<()>;

    /// The virtual ranges this file may hold data in, from metadata alone (see
    /// [`super::VhdFile::stored_ranges`]); unfiltered.
    fn stored_ranges(&self, f: &FileCore) -> Vec<Range<u64>>;

    /// Where the bytes of `Data` extents live — the file itself, or (host drives) the
    /// device it links — and the path naming it in errors.
    fn data_store<'a>(&'a self, f: &'a FileCore) -> (&'a Arc<dyn Backend>, &'a Path) {
        (&f.backend, &f.path)
    }

    /// Reads stored bytes at a file offset given by a `Data` extent.
    fn read(&self, f: &FileCore, buf: &mut [u8], file_offset: u64) -> Result<()> {
        f.read(buf, file_offset, "reading disk data")
    }

    /// Whether the bytes of `Data` extents may be read from the file directly (mapped)
    /// rather than through [`Container::read`]: not when reads see something laid over
    /// the file (a VHDX log replayed in memory).
    fn direct_reads(&self) -> bool {
        true
    }

    /// Refuses writes the container forbids beyond the file being opened read-only.
    fn check_writable(&self, _f: &FileCore) -> Result<()> {
        Ok(())
    }

    /// Writes sector-aligned runs `(virtual offset, bytes)`, checked against the virtual
    /// size, in the container's crash-safe order.
    fn write_runs(&self, f: &FileCore, runs: &[(u64, &[u8])]) -> Result<()>;

    /// Releases the storage of what `offset..offset + len` covers entirely, where the
    /// container can and the bytes then read as zeros; returns the bytes released.
    fn discard(&self, _f: &FileCore, _offset: u64, _len: u64) -> Result<u64> {
        Ok(0)
    }

    /// Makes all writes durable (the file is writable).
    fn flush(&self, f: &FileCore) -> Result<()> {
        f.sync("syncing")
    }

    /// Length of the file, as grown since it was opened.
    fn file_len(&self, f: &FileCore) -> u64 {
        f.file_len
    }

    /// Where the trailing footer is.
    fn footer_offset(&self, f: &FileCore) -> u64 {
        match f.footer_source {
            super::FooterSource::ShortEnd => f.file_len.saturating_sub(511),
            _ => f.file_len.saturating_sub(FOOTER_SIZE as u64),
        }
    }

    /// Where a rewritten footer goes at the end of the file.
    fn footer_write_offset(&self, f: &FileCore) -> u64 {
        f.file_len.saturating_sub(FOOTER_SIZE as u64)
    }

    /// Byte ranges of the file's metadata.
    fn metadata_ranges(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }

    /// Allocated blocks (containers with blocks).
    fn allocated_blocks(&self) -> u64 {
        0
    }

    /// What a resize of this file to `new` bytes will do, decided before anything is
    /// written; refuses what it cannot do.
    fn plan_resize(&self, f: &FileCore, _new: u64) -> Result<ResizePlan> {
        Err(Error::WrongDiskType {
            path: f.path.clone(),
            found: self.kind(f).to_string(),
            expected: "resize needs a fixed, dynamic or differencing disk".into(),
        })
    }

    /// Runs a resize [`Container::plan_resize`] planned (never [`ResizePlan::Nothing`]),
    /// reporting through `steps`; returns the blocks it released.
    fn resize(
        &mut self,
        f: &mut FileCore,
        plan: ResizePlan,
        job: ResizeJob,
        steps: &mut dyn ResizeSteps,
    ) -> Result<u64> {
        let _ = (plan, job, steps);
        self.plan_resize(f, 0).map(|_| 0)
    }
}

/// What a resize will do, decided before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResizePlan {
    /// The size is already right and nothing is left over from an interrupted resize.
    Nothing,
    /// A fixed disk.
    Fixed,
    /// A dynamic or differencing disk grows, its BAT as said.
    Grow(BatGrowth),
    /// A dynamic or differencing disk shrinks (or, at the same size, finishes what an
    /// interrupted shrink left).
    Shrink,
}

/// The sizes of a resize, and how a flat file grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResizeJob {
    /// The virtual size before.
    pub old: u64,
    /// The virtual size after.
    pub new: u64,
    /// A fixed disk that grows leaves the new space sparse instead of allocating it.
    pub sparse: bool,
}

/// How a container's resize reports: phases, progress that may cancel, timings.
pub(crate) trait ResizeSteps {
    /// A phase begins, of `bytes` bytes of work.
    fn phase(&mut self, phase: Phase, bytes: u64);
    /// `n` bytes of the phase are done; fails when the task was cancelled.
    fn tick(&mut self, n: u64) -> Result<()>;
    /// Fails when the task was cancelled.
    fn check_cancelled(&mut self) -> Result<()>;
    /// A step named `name` ended (its time goes into the report).
    fn lap(&mut self, name: &str);
}
