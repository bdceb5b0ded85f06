//! Resize: change a fixed, dynamic or differencing disk's virtual size in place.
//!
//! Everything that can be refused is refused before the first write ([`open`]): the
//! kind of disk, the size (3 MiB to 2040 GiB, a multiple of 512), a shrink without
//! `allow_shrink` or over a partition (the caller's [`ShrinkGuard`]), a differencing
//! disk whose size would differ from its parent's, a disk other disks name as parent
//! (in its folder or `also_check`; unless `force`), a BAT that cannot grow (more than
//! 2^26 entries; a Xen `tap` file whose table has no room in place, or whose table's
//! padding holds other metadata).
//!
//! Crash safety: **at every instant the disk opens, checks clean and reads either as
//! before or as resized** (`docs/crash-safety.md`, "Resize", has the argument; the
//! plan and the edits are the container's: `image/sparse/resize.rs`, `image/fixed.rs`).
//! In short:
//!
//! - *Dynamic or differencing, growing.* Xen's batmap bits past the old size cleared;
//!   the last block's bytes past the old size cleared (they become new space); the BAT
//!   entries for the new blocks made unused — in the table's padding, then
//!   `max_table_entries` raised by one header-sector write, or, with no room, a new
//!   table written at the end of the file (footer moved out first) and switched to by
//!   one header-sector write; then the footer at the end with the new size, sync, and
//!   the copy at offset 0, sync. Every step before the footer writes only what no reader
//!   of the old size looks at.
//! - *Dynamic or differencing, shrinking.* Batmap bits past the new size cleared; the
//!   footers (end, then copy) with the new size — from here it reads as resized; the
//!   last block's bytes past the new size cleared; the BAT entries of blocks past the
//!   new end released; the footer moved after the last live block and the file
//!   truncated.
//! - *Fixed.* Growing: the footer copied to the new end (the space reserved first), the
//!   part of the new space inside the old file zeroed, then the footer rewritten with
//!   the new size. Shrinking: the footer rewritten with the new size (the cut data is
//!   padding now), then a footer at the new end and the file truncated after it.
//!
//! Rerunning an interrupted resize completes it: a run at the size the footer already
//! says finishes what a shrink left (the copy at offset 0, entries past the end, a
//! fixed disk's padding).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use vhdkit_task::{Phase, Progress};

use crate::error::{Error, Result};
use crate::image::container::{ResizeJob, ResizePlan, ResizeSteps};
use crate::image::{Disk, DiskKind, FooterSource, VhdFile};
use crate::spec::layout::{table_bytes, BatGrowth};
use crate::spec::SECTOR_SIZE;

use super::dependents::{Dependents, Effect};
use super::{OpsOptions, PhaseClock, Report};

/// A check the caller makes before a shrink, on the disk opened for it and the new
/// size: `Err(why)` refuses the shrink. [`crate::volume::shrink_guard`] refuses one
/// that would cut a partition (the guard `vhdkit resize` uses).
pub type ShrinkGuard = Arc<dyn Fn(&Disk, u64) -> std::result::Result<(), String> + Send + Sync>;

/// What size to resize to.
#[derive(Clone, Default)]
pub struct ResizeOptions {
    /// The new virtual size (`None`: the current one, for `align` alone).
    pub size: Option<u64>,
    /// Round the size up to a multiple of this (Azure wants whole MiB).
    pub align: Option<u64>,
    /// Allow a size smaller than the current one (data past it is cut).
    pub allow_shrink: bool,
    /// Asked before a shrink writes anything. `None` (the default): a shrink with
    /// `allow_shrink` cuts whatever lies past the new size;
    /// `Some(`[`crate::volume::shrink_guard()`]`)` refuses one that would cut a
    /// partition, as `vhdkit resize` does.
    pub shrink_guard: Option<ShrinkGuard>,
}

impl std::fmt::Debug for ResizeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResizeOptions")
            .field("size", &self.size)
            .field("align", &self.align)
            .field("allow_shrink", &self.allow_shrink)
            .field("shrink_guard", &self.shrink_guard.is_some())
            .finish()
    }
}

/// How a dynamic or differencing disk's BAT changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatChange {
    /// Not at all (fixed disks, shrinks, a table that already had the entries).
    #[default]
    None,
    /// `max_table_entries` raised inside the table's padding.
    InPlace,
    /// The table moved to the end of the file.
    Relocated,
}

impl BatChange {
    /// Lower-case name (`in-place`).
    pub fn name(self) -> &'static str {
        match self {
            BatChange::None => "none",
            BatChange::InPlace => "in-place",
            BatChange::Relocated => "relocated",
        }
    }
}

/// What a resize did, in [`Report::resize`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResizeFacts {
    /// Virtual size before.
    pub size_before: u64,
    /// Virtual size after.
    pub size_after: u64,
    /// Non-zero bytes of the disk's view past the new size (a shrink cut them).
    pub nonzero_bytes_cut: u64,
    /// What happened to the BAT.
    pub bat: BatChange,
}

/// The size `opts` asks for a disk of `current` bytes: the size given (or the current
/// one), rounded up to the alignment. Fails on an alignment that is 0 or not a multiple
/// of 512, and on overflow.
pub fn target_size(current: u64, opts: &ResizeOptions) -> Result<u64> {
    let size = opts.size.unwrap_or(current);
    match opts.align {
        None => Ok(size),
        Some(a) if a == 0 || !a.is_multiple_of(SECTOR_SIZE) => Err(Error::InvalidArgument(
            format!("alignment {a} is not a positive multiple of 512"),
        )),
        Some(a) => size
            .checked_next_multiple_of(a)
            .ok_or_else(|| Error::InvalidArgument(format!("{size} rounded up to {a} overflows"))),
    }
}

/// A disk opened and checked for a resize, nothing written yet.
#[derive(Debug)]
pub struct Prepared {
    disk: Disk,
    path: PathBuf,
    old: u64,
    new: u64,
    plan: ResizePlan,
}

impl Prepared {
    /// The size before and the size after.
    pub fn sizes(&self) -> (u64, u64) {
        (self.old, self.new)
    }

    /// The disk, opened for writing, as the resize will find it: what a caller shows
    /// about it (its kind, its partition table) comes from here, not from opening it
    /// again.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// What the plan does to a dynamic or differencing disk's BAT.
    pub fn bat_change(&self) -> BatChange {
        match self.plan {
            ResizePlan::Grow(BatGrowth::InPlace) => BatChange::InPlace,
            ResizePlan::Grow(BatGrowth::Relocate { .. }) => BatChange::Relocated,
            _ => BatChange::None,
        }
    }
}

fn refuse(path: &Path, detail: String) -> Error {
    Error::NotAllowed {
        path: path.to_owned(),
        detail,
    }
}

/// Opens the disk at `path` for writing (its parents read-only) and checks everything a
/// resize to the size `resize` asks for needs, before anything is written.
pub fn open(path: impl AsRef<Path>, resize: &ResizeOptions, opts: &OpsOptions) -> Result<Prepared> {
    let path = path.as_ref();
    let open = opts.open.clone().writable(true);
    let disk = Disk::open_with(path, &open)?;
    prepare(disk, resize, opts)
}

/// The checks of [`open`] on a disk already open for writing.
pub fn prepare(disk: Disk, resize: &ResizeOptions, opts: &OpsOptions) -> Result<Prepared> {
    let top = disk.top();
    let path = top.path().to_owned();
    let kind = top.kind();
    if !matches!(
        kind,
        DiskKind::Fixed | DiskKind::Dynamic | DiskKind::Differencing
    ) {
        return Err(Error::WrongDiskType {
            path,
            found: kind.to_string(),
            expected: "resize needs a fixed, dynamic or differencing disk".into(),
        });
    }
    if top.footer().saved_state != 0 {
        return Err(Error::WrongDiskType {
            path,
            found: "disk in a saved state".into(),
            expected: "a disk is not resized while the saved-state flag is set".into(),
        });
    }
    if !top.is_writable() {
        return Err(Error::ReadOnly {
            path,
            detail: "resize writes into the disk: open it for writing".into(),
        });
    }
    if top.footer_source() == FooterSource::Copy {
        return Err(Error::corrupt(
            &path,
            "footer",
            top.file_len().saturating_sub(512),
            "the footer at the end is missing or damaged (opened from its copy at offset 0); run check --repair first",
        ));
    }
    let old = top.virtual_size();
    let new = target_size(old, resize)?;
    if new != old {
        crate::image::check_create_size(new)?;
    }
    if new < old && !resize.allow_shrink {
        return Err(Error::InvalidArgument(format!(
            "{}: {new} bytes is smaller than the disk's {old}; shrinking cuts the data past the new size (allow it explicitly)",
            path.display()
        )));
    }
    // The container decides what it does (and refuses what it cannot).
    let plan = top.plan_resize(new)?;
    if new != old {
        if kind == DiskKind::Differencing {
            let Some(parent) = disk.layers().get(1) else {
                return Err(refuse(
                    &path,
                    "a differencing disk's size must equal its parent's, and its parent was not opened".into(),
                ));
            };
            if parent.virtual_size() != new {
                return Err(refuse(
                    &path,
                    format!(
                        "a differencing disk's size must equal its parent's, and {} is {} bytes; resize the base disk first (with --force: its children name it), then each child to the same size, from the base up",
                        parent.path().display(),
                        parent.virtual_size()
                    ),
                ));
            }
        }
        let mut dependents = Dependents::new(opts);
        dependents.look(&path, top.footer().unique_id, Effect::Size(new), &[])?;
        dependents.refuse(&path)?;
        if new < old {
            if let Some(guard) = &resize.shrink_guard {
                guard(&disk, new).map_err(|why| refuse(&path, why))?;
            }
        }
    }
    Ok(Prepared {
        disk,
        path,
        old,
        new,
        plan,
    })
}

/// Resizes the disk at `path`: [`open`], then [`run`].
pub fn resize(
    path: impl AsRef<Path>,
    resize: &ResizeOptions,
    opts: &OpsOptions,
    progress: &Progress,
) -> Result<Report> {
    let path = path.as_ref();
    run(open(path, resize, opts)?, opts, progress)
}

/// Runs a resize [`open`] prepared.
pub fn run(prepared: Prepared, opts: &OpsOptions, progress: &Progress) -> Result<Report> {
    let start = Instant::now();
    let bat = prepared.bat_change();
    let Prepared {
        mut disk,
        path,
        old,
        new,
        plan,
    } = prepared;
    let mut report = Report {
        operation: super::Operation::Resize,
        path,
        file_size_before: length(disk.top())?,
        ..Report::default()
    };
    let mut facts = ResizeFacts {
        size_before: old,
        size_after: new,
        bat,
        ..ResizeFacts::default()
    };
    let mut clock = PhaseClock::start();
    progress.check_cancelled()?;
    let cut = old.saturating_sub(new);
    let mut phases = Vec::new();
    if cut > 0 {
        phases.push((Phase::Scan, cut));
    }
    match plan {
        ResizePlan::Grow(BatGrowth::Relocate { .. }) => {
            let block = disk.top().block_size().unwrap_or(u64::MAX).max(1);
            phases.push((Phase::Flush, table_bytes(new.div_ceil(block))));
        }
        ResizePlan::Fixed if new > old => phases.push((Phase::Zero, new - old)),
        _ => {}
    }
    progress.plan_phases(&phases);
    if cut > 0 {
        progress.set_phase(Phase::Scan, 0, cut);
        facts.nonzero_bytes_cut = count_nonzero(&disk, new, old, progress)?;
        clock.lap(&mut report, "scan");
    }
    if plan != ResizePlan::Nothing {
        let job = ResizeJob {
            old,
            new,
            sparse: opts.sparse,
        };
        let mut steps = Steps {
            progress,
            report: &mut report,
            clock: &mut clock,
        };
        let released = disk.top_mut().resize(plan, job, &mut steps)?;
        if plan == ResizePlan::Shrink {
            report.blocks_total = released;
            report.blocks_released = released;
        }
    }
    report.file_size_after = length(disk.top())?;
    report.resize = Some(facts);
    report.elapsed = start.elapsed();
    Ok(report)
}

/// The file's length now.
fn length(f: &VhdFile) -> Result<u64> {
    f.backend()
        .len()
        .map_err(|e| Error::file(f.path(), "reading the length", e))
}

/// A resize's progress, report and phase clock, as the container's steps see them.
struct Steps<'a> {
    progress: &'a Progress,
    report: &'a mut Report,
    clock: &'a mut PhaseClock,
}

impl ResizeSteps for Steps<'_> {
    fn phase(&mut self, phase: Phase, bytes: u64) {
        self.progress.set_phase(phase, 0, bytes);
    }

    fn tick(&mut self, n: u64) -> Result<()> {
        self.progress.add_blocks_done(0, n);
        self.progress.check_cancelled().map_err(Error::from)
    }

    fn check_cancelled(&mut self) -> Result<()> {
        self.progress.check_cancelled().map_err(Error::from)
    }

    fn lap(&mut self, name: &str) {
        self.clock.lap(self.report, name);
    }
}

/// Non-zero bytes of `disk`'s view in `from..to`, reading only what is stored (holes of
/// a file skipped), counting progress as it goes.
fn count_nonzero(disk: &Disk, from: u64, to: u64, progress: &Progress) -> Result<u64> {
    use crate::image::Extent;
    const WINDOW: u64 = 32 << 20;
    let mut buf = vec![0u8; 1 << 20];
    let mut count = 0u64;
    let mut pos = from;
    while pos < to {
        progress.check_cancelled()?;
        let n = (to - pos).min(WINDOW);
        for e in disk.extents(pos, n)? {
            if let Extent::Data {
                layer,
                file_offset,
                len,
            } = e
            {
                count += count_stored(&disk.layers()[layer], file_offset, len, &mut buf)?;
            }
        }
        progress.add_blocks_done(0, n);
        pos += n;
    }
    Ok(count)
}

/// Non-zero bytes stored in `file` at `offset..offset + len`, holes skipped.
fn count_stored(file: &VhdFile, offset: u64, len: u64, buf: &mut [u8]) -> Result<u64> {
    let end = offset + len;
    let mut pos = offset;
    let mut count = 0u64;
    while pos < end {
        if let Some(f) = file.backend().as_file() {
            match vhdkit_platform::next_data(f, pos) {
                Ok(Some(d)) if d >= end => break,
                Ok(Some(d)) => pos = pos.max(d),
                Ok(None) => break,
                Err(_) => {}
            }
        }
        let n = (end - pos).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..n];
        file.read_data(chunk, pos)?;
        if !super::is_zero(chunk) {
            count += chunk.iter().filter(|&&b| b != 0).count() as u64;
        }
        pos += n as u64;
    }
    Ok(count)
}
