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
//! edits themselves are in `image/resize.rs`). In short:
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
use crate::image::{Disk, DiskKind, FooterSource, VhdFile};
use crate::spec::layout::{bat_growth, BatGrowth};
use crate::spec::{MAX_CREATE_BAT_ENTRIES, SECTOR_SIZE};

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

/// What a resize will do, decided before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
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

/// A disk opened and checked for a resize, nothing written yet.
#[derive(Debug)]
pub struct Prepared {
    disk: Disk,
    path: PathBuf,
    old: u64,
    new: u64,
    plan: Plan,
}

impl Prepared {
    /// The size before and the size after.
    pub fn sizes(&self) -> (u64, u64) {
        (self.old, self.new)
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
    let sparse = kind != DiskKind::Fixed;
    let plan = if new == old {
        match leftover(top)? {
            true if sparse => Plan::Shrink,
            true => Plan::Fixed,
            false => Plan::Nothing,
        }
    } else if !sparse {
        Plan::Fixed
    } else if new > old {
        Plan::Grow(grow_plan(top, new)?)
    } else {
        Plan::Shrink
    };
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

/// Whether an interrupted resize left something for a run at the same size to finish:
/// a fixed disk's padding before its footer; a dynamic or differencing disk's stale
/// footer copy or allocated entries past its size.
fn leftover(top: &VhdFile) -> Result<bool> {
    if top.kind() == DiskKind::Fixed {
        return Ok(top.footer_offset() > top.virtual_size());
    }
    let used = top
        .virtual_size()
        .div_ceil(top.block_size().unwrap_or(u64::MAX).max(1));
    Ok(!top.footer_copy_matches()? || top.entries_past(used)? > 0)
}

/// How a dynamic or differencing disk's BAT grows to cover `new` bytes, or why it cannot.
fn grow_plan(top: &VhdFile, new: u64) -> Result<BatGrowth> {
    let path = top.path();
    let (Some(header), Some(block)) = (top.header(), top.block_size()) else {
        return Err(Error::WrongDiskType {
            path: path.to_owned(),
            found: top.kind().to_string(),
            expected: "a dynamic or differencing disk".into(),
        });
    };
    let entries = new.div_ceil(block);
    let used = top.virtual_size().div_ceil(block);
    // Every piece of metadata but the table itself is occupied: a locator another
    // writer put in the table's padding is never written over.
    let table = (
        header.table_offset,
        header.table_offset + header.bat_size_on_disk(),
    );
    let mut occupied = top
        .sparse_geometry()
        .map(|g| g.metadata)
        .unwrap_or_default();
    if let Some(i) = occupied.iter().position(|&r| r == table) {
        occupied.remove(i);
    }
    let growth = bat_growth(
        header,
        top.data_end(),
        top.footer_offset(),
        used,
        entries,
        &occupied,
    );
    if let BatGrowth::Relocate { .. } = growth {
        if entries > MAX_CREATE_BAT_ENTRIES {
            return Err(Error::SizeTooLarge {
                size: new,
                detail: format!(
                    "{entries} blocks of {block} bytes: vhdkit writes tables of at most {MAX_CREATE_BAT_ENTRIES} entries (convert to a larger block size first)"
                ),
            });
        }
        if top.footer().creator_app.starts_with(b"tap") {
            let room = header.bat_size_on_disk() / 4 * block;
            let limit = if entries.saturating_mul(4) <= header.bat_size_on_disk() {
                "in place it cannot grow: other metadata lies in the table's padding".to_owned()
            } else {
                format!("in place it covers at most {room} bytes")
            };
            return Err(Error::Unsupported {
                path: path.to_owned(),
                detail: format!(
                    "a Xen blktap (`tap`) disk keeps its batmap right after the BAT, and vhd-util check refuses blocks stored before the end of the metadata, so its BAT cannot move to the end of the file; {limit} (grow it further with `vhd-util resize`, or convert it first)"
                ),
            });
        }
    }
    if let Some((_, bits, area)) = top.batmap_room() {
        let need = crate::spec::batmap::map_bytes(new);
        if entries > bits || need > area {
            return Err(Error::Unsupported {
                path: path.to_owned(),
                detail: format!(
                    "the Xen batmap holds {bits} blocks in {area} bytes; {new} bytes needs {entries} blocks and {need} bytes"
                ),
            });
        }
    }
    Ok(growth)
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
        Plan::Grow(BatGrowth::Relocate { .. }) => {
            let block = disk.top().block_size().unwrap_or(u64::MAX).max(1);
            phases.push((Phase::Flush, table_bytes(new.div_ceil(block))));
        }
        Plan::Fixed if new > old => phases.push((Phase::Zero, new - old)),
        _ => {}
    }
    progress.plan_phases(&phases);
    if cut > 0 {
        progress.set_phase(Phase::Scan, 0, cut);
        facts.nonzero_bytes_cut = count_nonzero(&disk, new, old, progress)?;
        clock.lap(&mut report, "scan");
    }
    match plan {
        Plan::Nothing => {}
        Plan::Fixed => {
            progress.set_phase(Phase::Zero, 0, new.saturating_sub(old));
            let mut tick = |n: u64| -> Result<()> {
                progress.add_blocks_done(0, n);
                progress.check_cancelled().map_err(Error::from)
            };
            disk.top_mut().resize_fixed(new, opts.sparse, &mut tick)?;
            clock.lap(&mut report, "resize");
        }
        Plan::Grow(growth) => {
            grow(disk.top_mut(), old, new, growth, progress)?;
            facts.bat = match growth {
                BatGrowth::Fits => BatChange::None,
                BatGrowth::InPlace => BatChange::InPlace,
                BatGrowth::Relocate { .. } => BatChange::Relocated,
            };
            clock.lap(&mut report, "bat");
            progress.set_phase(Phase::Flush, 0, 0);
            disk.top_mut().set_sparse_size(new)?;
            clock.lap(&mut report, "footer");
        }
        Plan::Shrink => {
            let released = shrink(disk.top_mut(), old, new, progress, &mut report, &mut clock)?;
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

/// Bytes a BAT of `entries` entries takes, in whole sectors.
fn table_bytes(entries: u64) -> u64 {
    crate::spec::layout::round_up_sector(entries.saturating_mul(4))
}

/// The steps of a grow before the footers (see the module docs).
fn grow(f: &mut VhdFile, old: u64, new: u64, growth: BatGrowth, progress: &Progress) -> Result<()> {
    let block = f.block_size().unwrap_or(u64::MAX).max(1);
    let (old_used, new_used) = (old.div_ceil(block), new.div_ceil(block));
    // Fits: checked against MAX_CREATE_BAT_ENTRIES or the existing table, both u32.
    let entries = u32::try_from(new_used)
        .map_err(|_| Error::InvalidArgument(format!("{new_used} blocks do not fit a BAT")))?;
    // Xen's batmap: the bits of the blocks the new size brings in must be clear, and so
    // must that of a differencing disk's partly covered last block, whose sector bitmap
    // loses bits below. (Rare in blktap's files: their sizes are whole blocks.)
    let partial = !old.is_multiple_of(block) && f.is_differencing();
    let clear_from = if partial { old / block } else { old_used };
    if f.trim_batmap(clear_from, old, new)? {
        f.flush()?;
    }
    if f.clear_past(old)? {
        f.flush()?;
    }
    progress.check_cancelled()?;
    match growth {
        BatGrowth::Fits | BatGrowth::InPlace => {
            if f.unuse_bat_entries(old_used, new_used, false)? > 0 {
                f.flush()?;
            }
            if growth == BatGrowth::InPlace {
                f.raise_max_table_entries(entries)?;
            }
        }
        BatGrowth::Relocate {
            table_offset,
            footer_at,
        } => {
            progress.set_phase(Phase::Flush, 0, table_bytes(new_used));
            let mut tick = |n: u64| -> Result<()> {
                progress.add_blocks_done(0, n);
                progress.check_cancelled().map_err(Error::from)
            };
            f.relocate_bat(entries, table_offset, footer_at, &mut tick)?;
        }
    }
    Ok(())
}

/// A shrink of a dynamic or differencing disk (or, at the same size, the end of an
/// interrupted one). Returns the blocks released.
fn shrink(
    f: &mut VhdFile,
    old: u64,
    new: u64,
    progress: &Progress,
    report: &mut Report,
    clock: &mut PhaseClock,
) -> Result<u64> {
    let block = f.block_size().unwrap_or(u64::MAX).max(1);
    let new_used = new.div_ceil(block);
    let max = f
        .header()
        .map(|h| u64::from(h.max_table_entries))
        .unwrap_or(new_used);
    progress.set_phase(Phase::Flush, 0, 0);
    // Xen's batmap: only what its checksum needs (the bytes the smaller size no longer
    // reads cleared, when it reads fewer). The bits of blocks past the new end may stay
    // set: no reader or checker looks past the size, and a grow clears them first.
    if f.trim_batmap(u64::MAX, old, new)? {
        f.flush()?;
    }
    if new < old {
        f.set_sparse_size(new)?;
    } else if !f.footer_copy_matches()? {
        f.fix_footer_copy()?;
    }
    clock.lap(report, "footer");
    progress.set_phase(Phase::Zero, 0, 0);
    if f.clear_past(new)? {
        f.flush()?;
    }
    let released = f.unuse_bat_entries(new_used, max, true)?;
    if released > 0 {
        f.flush()?;
    }
    clock.lap(report, "release");
    f.shorten()?;
    clock.lap(report, "truncate");
    Ok(released)
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
    use rustix::fs::{seek, SeekFrom};
    let end = offset + len;
    let mut pos = offset;
    let mut count = 0u64;
    while pos < end {
        if let Some(f) = file.backend().as_file() {
            match seek(f, SeekFrom::Data(pos)) {
                Ok(d) if d >= end => break,
                Ok(d) => pos = pos.max(d),
                Err(rustix::io::Errno::NXIO) => break,
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
