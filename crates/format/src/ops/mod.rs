//! The four `IVMHardDisk` operations — compact, convert, merge, merge-to — create and
//! resize, each as a plain function over a [`Progress`] and as an IVMTask2-style
//! [`OpTask`]; and [`measure()`], the length a convert or merge-to would write, without
//! writing.
//!
//! Every operation runs block by block: metadata gives a plan (pure data, in the crate-private `plan` module),
//! chunks of blocks are composed on rayon from read-only memory maps of the sources,
//! skipping all-zero data, and one ordered writer writes them in the order the
//! operation's crash-safety argument needs (stated on each module). Cancellation is
//! checked and progress reported between chunks; success is reported only after the
//! result is durable (fsync).

mod clone_whole;
pub mod compact;
mod compact_vhdx;
pub mod convert;
mod dependents;
pub mod layout;
pub mod measure;
pub mod merge;
pub mod merge_into;
pub(crate) mod placement;
pub(crate) mod plan;
pub mod relink;
pub mod repair;
pub mod resize;
mod source;
mod task;
mod units;
pub mod unused;
mod vhdx_link;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use vhdkit_task::{Progress, TaskBuilder};

use crate::error::{Error, Result};
use crate::image::{ContainerFormat, CreateOptions, Disk, DiskKind, OpenOptions, OutputOptions};

pub use measure::{measure, measure_task, Measure, MeasureTask};
pub use resize::{ResizeFacts, ResizeOptions};
pub use source::is_zero;
pub use task::OpTask;
pub use unused::{Unused, UnusedRanges, UnusedScan};

/// What a convert or merge-to produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// A fixed VHD.
    Fixed,
    /// A dynamic VHD.
    Dynamic,
    /// A raw image (no VHD structure).
    Raw,
}

impl Target {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Fixed => "fixed",
            Target::Dynamic => "dynamic",
            Target::Raw => "raw",
        }
    }
}

/// Options shared by the operations.
#[derive(Debug, Clone)]
pub struct OpsOptions {
    /// Opening sources (parent id override, strictness, …).
    pub open: OpenOptions,
    /// Block size of a dynamic result.
    pub block_size: u32,
    /// Read the result back and compare CRC32s block by block before reporting success.
    pub verify: bool,
    /// Bytes composed per chunk (a cancellation point and a progress event each).
    /// Default 8 MiB: at most three chunks are alive in a conversion, so this bounds its
    /// memory (peak RSS of a 1 GiB conversion 26–30 MiB, against 64–100 MiB with 32 MiB
    /// chunks, at the same speed). In-place operations whose every batch of writes costs
    /// syncs (compact's moves, merge) take four chunks' worth per batch
    /// (`IN_PLACE_ROUND_CHUNKS`).
    pub chunk_bytes: u64,
    /// Merge: delete the child once merged and durable.
    pub delete_child: bool,
    /// Change or delete a disk even though other disks name it as their parent: merge
    /// into it (they would read different bytes), delete it (`delete_child`, the
    /// intermediates of a merge into an ancestor: they would be orphaned), resize it
    /// (their size would differ), compact it with [`unused_ranges`](Self::unused_ranges)
    /// (they would read zeros where its free space was). Without it, these operations
    /// look for such disks — in the folder of each disk they change and in
    /// [`also_check`](Self::also_check) — and refuse before the first write
    /// ([`Error::HasChildren`], naming each one).
    pub force: bool,
    /// More folders (not searched recursively) where merge, resize and compact with
    /// unused ranges look for disks naming the disk they change as their parent, besides
    /// that disk's own folder. A folder that cannot be listed is refused.
    pub also_check: Vec<PathBuf>,
    /// Merge into an ancestor: keep the intermediate disks (they no longer describe a
    /// consistent disk) instead of deleting them.
    pub keep_intermediates: bool,
    /// Convert and merge-to: bytes written to the new file between two background syncs,
    /// which keep the device busy during the copy instead of all at the final sync
    /// (0: only the final sync). Default 16 MiB: the device starts early and the page
    /// cache never holds much unsynced data.
    pub sync_bytes: u64,
    /// Convert and merge-to to fixed: leave the data area sparse instead of allocating
    /// the whole file up front (see [`CreateOptions::sparse`]).
    pub sparse: bool,
    /// Progress events each subscriber of the task can have queued before the oldest
    /// are dropped (and counted in its next event).
    pub event_capacity: usize,
    /// Convert, merge-to and measure: round the virtual size of the result up to a
    /// multiple of this many bytes (a non-zero multiple of 512), the added space reading
    /// as zeros: `Some(1 << 20)` makes the whole number of MiB Azure requires. `None`:
    /// the source's size.
    pub align: Option<u64>,
    /// Compact of a differencing disk: also release the blocks whose every stored sector
    /// holds what the parent chain shows there (they then read from the parent, which is
    /// the same). Needs the parent chain, opened read-only. On by default.
    pub dedupe: bool,
    /// Byte ranges of the (source's) virtual disk that no file system uses (see
    /// [`unused`]); `None`: none. Compact also releases every allocated block each byte
    /// of which lies in them or reads as without the block (zero; the parent's) — free
    /// or zero; convert, merge-to and measure leave out (as zeros) the blocks of a
    /// dynamic result, and the 4 KiB pages of a raw result, each byte of which lies in
    /// them or is zero — holes in a raw file. A fixed result, which stores every byte,
    /// is refused. A block (or page) holding a used non-zero byte is kept as it is.
    pub unused_ranges: Option<Unused>,
    /// Compact: scan and plan, report what would be released and moved, and write
    /// nothing (the disk is opened read-only).
    pub dry_run: bool,
    /// Convert and merge-to: what may stand at the destination (a regular file to
    /// replace atomically; a device, which takes a raw result in place) and the new
    /// file's permission bits (by default the source's). See [`OutputOptions`].
    pub output: OutputOptions,
    /// Convert and merge-to: the container of a fixed or dynamic result, VHD or VHDX.
    /// `None`: by the destination's extension (`.vhdx` and `.avhdx` make a VHDX,
    /// anything else a VHD; see [`ContainerFormat::for_path`]). A raw result has none.
    pub format: Option<ContainerFormat>,
    /// Block size of a dynamic (or fixed) VHDX result: a power of two from 1 MiB to
    /// 256 MiB. Default 32 MiB, Hyper-V's. ([`block_size`](Self::block_size) is a VHD's.)
    pub vhdx_block_size: u32,
    /// Logical sector size of a VHDX result: 512 (default) or 4096 (the virtual size must
    /// then be a multiple of 4096: [`align`](Self::align) can make it one).
    pub logical_sector_size: u32,
}

impl OpsOptions {
    /// The container a fixed or dynamic result at `dst` gets (`None` for a raw one):
    /// [`format`](Self::format), else by `dst`'s extension.
    pub fn format_for(&self, dst: impl AsRef<Path>, target: Target) -> Option<ContainerFormat> {
        (target != Target::Raw).then(|| ContainerFormat::choose(self.format, dst))
    }
}

/// Chunks' worth of blocks that compact moves, and merge writes, per batch: each batch
/// costs two syncs (its crash-safe write order), so it is larger than a conversion's chunk
/// (measured: with 8 MiB batches compact took 20% and merge 8% longer than with 32 MiB).
pub(crate) const IN_PLACE_ROUND_CHUNKS: u64 = 4;

impl Default for OpsOptions {
    fn default() -> Self {
        OpsOptions {
            open: OpenOptions::default(),
            block_size: crate::spec::DEFAULT_BLOCK_SIZE,
            verify: false,
            chunk_bytes: 8 << 20,
            delete_child: false,
            force: false,
            also_check: Vec::new(),
            keep_intermediates: false,
            sync_bytes: 16 << 20,
            event_capacity: vhdkit_task::DEFAULT_EVENT_CAPACITY,
            sparse: false,
            align: None,
            dedupe: true,
            unused_ranges: None,
            dry_run: false,
            output: OutputOptions::default(),
            format: None,
            vhdx_block_size: crate::image::DEFAULT_VHDX_BLOCK_SIZE,
            logical_sector_size: 512,
        }
    }
}

/// Which operation a [`Report`] is of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// [`convert_task`].
    #[default]
    Convert,
    /// [`compact_task`].
    Compact,
    /// [`merge_task`].
    Merge,
    /// [`merge_to_task`].
    MergeTo,
    /// [`merge_into_task`].
    MergeInto,
    /// [`create_task`].
    Create,
    /// [`resize_task`].
    Resize,
}

impl Operation {
    /// The name the CLI gives it (`merge-to`).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Convert => "convert",
            Operation::Compact => "compact",
            Operation::Merge => "merge",
            Operation::MergeTo => "merge-to",
            Operation::MergeInto => "merge-into",
            Operation::Create => "create",
            Operation::Resize => "resize",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The operation.
    pub operation: Operation,
    /// The file produced or changed.
    pub path: PathBuf,
    /// Blocks considered.
    pub blocks_total: u64,
    /// Convert, merge-to: of `blocks_total`, the blocks handed to the pipeline — read
    /// and composed — because the source's metadata says some level of it may store
    /// data there (allocated blocks, a flat file's stored extents; less those wholly
    /// unused). The others read as zeros without being read: the work follows the
    /// data, not the virtual size.
    pub blocks_composed: u64,
    /// Blocks written with data.
    pub blocks_copied: u64,
    /// Blocks found all zero (skipped or released).
    pub blocks_zero: u64,
    /// Blocks released (compact): the empty ones (`blocks_zero`), the deduplicated
    /// ones and the unused ones (`blocks_unused`).
    pub blocks_released: u64,
    /// Blocks of a differencing disk that compact released because they held the same
    /// data as the parent chain.
    pub blocks_deduplicated: u64,
    /// Compact: blocks released because each byte of them lies in
    /// [`OpsOptions::unused_ranges`] or reads as without the block (free or zero;
    /// those wholly unused are not read; none is counted in `blocks_zero`). Convert,
    /// merge-to: blocks whose every byte lies in the unused ranges, left out (counted in
    /// `blocks_zero` too, as the blocks not written).
    pub blocks_unused: u64,
    /// Virtual bytes left out because unused: compact, the unused bytes of the
    /// `blocks_unused` blocks; convert and merge-to, of the wholly unused blocks and
    /// (raw result) of the wholly unused 4 KiB pages. Whatever the bytes held.
    pub bytes_unused: u64,
    /// The virtual byte ranges counted in `bytes_unused`, sorted and merged (for
    /// attributing them to partitions).
    pub unused_released: Vec<std::ops::Range<u64>>,
    /// Blocks moved (compact).
    pub blocks_moved: u64,
    /// Bytes of data written.
    pub bytes_written: u64,
    /// Convert and merge-to: of `bytes_written`, the bytes cloned from a source file
    /// rather than copied (copy offload on a file system that shares extents between
    /// files, XFS with reflink or btrfs): they cost no new space.
    pub bytes_cloned: u64,
    /// File size before (compact, merge: of the file changed).
    pub file_size_before: u64,
    /// File size after.
    pub file_size_after: u64,
    /// Whether the result was read back and verified.
    pub verified: bool,
    /// Compact with [`OpsOptions::dry_run`]: nothing was written; the counts say what
    /// would be released and moved, `file_size_after` the length the file would have.
    pub dry_run: bool,
    /// Wall time.
    #[serde(serialize_with = "ser_secs")]
    pub elapsed: Duration,
    /// Wall time of each phase, in order. Convert and merge-to: `copy` (composing and
    /// writing, overlapped), `flush`, `verify`; compact: `scan`, `release`, `move`,
    /// `truncate`, `verify`; merge: `copy`, `flush`, `child` (its header updated, and
    /// deleted when asked); resize: `scan` (a shrink), then `bat`, `footer` (a sparse
    /// grow), `footer`, `release`, `truncate` (a sparse shrink) or `resize` (fixed).
    /// `verify` only when asked. In JSON, an object of seconds.
    #[serde(serialize_with = "ser_phases")]
    pub phases: Vec<(String, Duration)>,
    /// Resize: the sizes, the non-zero bytes a shrink cut, what became of the BAT.
    pub resize: Option<ResizeFacts>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Times the phases of an operation into [`Report::phases`].
pub(crate) struct PhaseClock(std::time::Instant);

impl PhaseClock {
    /// Starts timing the first phase.
    pub(crate) fn start() -> PhaseClock {
        PhaseClock(std::time::Instant::now())
    }

    /// Ends phase `name` (records its wall time) and starts the next.
    pub(crate) fn lap(&mut self, report: &mut Report, name: &str) {
        let now = std::time::Instant::now();
        report.phases.push((name.to_owned(), now - self.0));
        self.0 = now;
    }
}

fn ser_phases<S: serde::Serializer>(
    phases: &[(String, Duration)],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(phases.len()))?;
    for (name, d) in phases {
        map.serialize_entry(name, &d.as_secs_f64())?;
    }
    map.end()
}

fn spawn<T: Send + 'static>(
    desc: String,
    opts: &OpsOptions,
    work: impl FnOnce(&Progress) -> Result<T> + Send + 'static,
) -> OpTask<T> {
    OpTask::from(
        TaskBuilder::new(desc)
            .cancelable(true)
            .event_capacity(opts.event_capacity)
            .spawn(work),
    )
}

/// Checks a new file's path before any work: not empty, in a folder that exists, not
/// there yet (not even as a dangling symbolic link).
fn require_absent(dst: &Path) -> Result<()> {
    crate::image::output::inspect(dst, &OutputOptions::new(), None).map(drop)
}

/// Starts compacting `path` in place. Fails at once on a wrong disk type, and (with
/// [`OpsOptions::unused_ranges`], unless [`OpsOptions::force`]) on a disk other disks
/// name as their parent ([`Error::HasChildren`]).
pub fn compact_task(path: impl AsRef<Path>, opts: &OpsOptions) -> Result<OpTask> {
    let path = path.as_ref();
    // Opened (for writing) and checked once, before the task starts; moved into it.
    let disk = compact::open(path, opts)?;
    let o = opts.clone();
    Ok(spawn(
        format!("Compacting {}", path.display()),
        opts,
        move |pr| compact::run(disk, &o, pr),
    ))
}

/// Starts converting `src` (any kind, chains flattened, or raw) into a new `dst`.
pub fn convert_task(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    target: Target,
    opts: &OpsOptions,
) -> Result<OpTask> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let disk = Disk::open_any(src, &opts.open)?;
    let size = convert::check_target(&disk, target, opts)?;
    convert::check_output(&disk, dst, target, opts, size)?;
    let (d, o) = (dst.to_owned(), opts.clone());
    Ok(spawn(
        format!(
            "Converting {} to {} {}",
            src.display(),
            target.name(),
            dst.display()
        ),
        opts,
        move |pr| convert::convert_disk(&disk, &d, target, &o, pr, Operation::Convert),
    ))
}

/// Starts merging differencing disk `child` into its parent, in place. Refused before
/// the task starts, unless [`OpsOptions::force`], when other disks name the parent as
/// theirs (the merge changes what they read) — see [`merge::open`].
///
/// ```
/// use vhdkit_format::ops::{self, OpsOptions};
/// use vhdkit_format::{CreateOptions, Disk, DiskKind, ErrorKind};
/// # let dir = tempfile::tempdir().unwrap();
/// let base = dir.path().join("base.vhd");
/// Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).unwrap();
/// let top = dir.path().join("top.vhd");
/// Disk::create(&top, &CreateOptions::differencing(&base)).unwrap();
/// let sibling = dir.path().join("sibling.vhd");
/// Disk::create(&sibling, &CreateOptions::differencing(&base)).unwrap();
/// Disk::open_rw(&top).unwrap().write_at(b"top's own", 0).unwrap();
///
/// let refused = ops::merge_task(&top, &OpsOptions::default()).unwrap_err();
/// assert_eq!(refused.kind(), ErrorKind::HasChildren);
/// let forced = OpsOptions { force: true, ..OpsOptions::default() };
/// ops::merge_task(&top, &forced).unwrap().join().unwrap();
/// ```
pub fn merge_task(child: impl AsRef<Path>, opts: &OpsOptions) -> Result<OpTask> {
    let child = child.as_ref();
    // Checked, opened and locked before the task starts: a child or parent in use is
    // refused here, before anything is written.
    let files = merge::open(child, opts)?;
    let o = opts.clone();
    Ok(spawn(
        format!("Merging {} into its parent", child.display()),
        opts,
        move |pr| merge::run(files, &o, pr),
    ))
}

/// Starts merging differencing disk `child` and every disk between it and `ancestor`
/// into `ancestor`, in place (see [`merge_into`]). Checked, opened and locked before the
/// task starts; refused then, unless [`OpsOptions::force`], when disks outside the chain
/// depend on what it changes or removes ([`merge_into::open`]).
pub fn merge_into_task(
    child: impl AsRef<Path>,
    ancestor: &merge_into::Ancestor,
    opts: &OpsOptions,
) -> Result<OpTask> {
    let child = child.as_ref();
    let files = merge_into::open(child, ancestor, opts)?;
    let desc = format!(
        "Merging {} into its ancestor {}",
        child.display(),
        files.ancestor().display()
    );
    let o = opts.clone();
    Ok(spawn(desc, opts, move |pr| merge_into::run(files, &o, pr)))
}

/// Starts flattening the chain of differencing disk `child` into a new `dst`.
pub fn merge_to_task(
    child: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    target: Target,
    opts: &OpsOptions,
) -> Result<OpTask> {
    let (child, dst) = (child.as_ref(), dst.as_ref());
    let disk = Disk::open_with(child, &opts.open)?;
    if disk.kind() != DiskKind::Differencing {
        return Err(Error::WrongDiskType {
            path: child.to_owned(),
            found: disk.kind().to_string(),
            expected: "merge-to needs a differencing disk".into(),
        });
    }
    let size = convert::check_target(&disk, target, opts)?;
    convert::check_output(&disk, dst, target, opts, size)?;
    let (d, o) = (dst.to_owned(), opts.clone());
    Ok(spawn(
        format!(
            "Merging {} and its ancestors to {}",
            child.display(),
            dst.display()
        ),
        opts,
        move |pr| convert::convert_disk(&disk, &d, target, &o, pr, Operation::MergeTo),
    ))
}

/// Starts resizing the disk at `path` in place (see [`resize`] for the orders). The
/// disk is opened for writing and every refusal (kind, size, shrink, parent size,
/// children, `resize.shrink_guard`) made before the task starts.
pub fn resize_task(
    path: impl AsRef<Path>,
    resize: &ResizeOptions,
    opts: &OpsOptions,
) -> Result<OpTask> {
    let prepared = resize::open(path.as_ref(), resize, opts)?;
    Ok(resize_prepared_task(prepared, opts))
}

/// Starts a resize [`resize::prepare`] checked (on a disk the caller opened for
/// writing and may have looked at: its partition table, its kind).
pub fn resize_prepared_task(prepared: resize::Prepared, opts: &OpsOptions) -> OpTask {
    let (old, new) = prepared.sizes();
    let path = prepared.disk().top().path().to_owned();
    let o = opts.clone();
    spawn(
        format!("Resizing {} from {old} to {new} bytes", path.display()),
        opts,
        move |pr| resize::run(prepared, &o, pr),
    )
}

/// Starts creating a disk.
pub fn create_task(path: impl AsRef<Path>, opts: &CreateOptions) -> Result<OpTask> {
    let path = path.as_ref();
    require_absent(path)?;
    crate::image::create::check_create_options_for(opts, opts.format_for(path))?;
    let (p, o) = (path.to_owned(), opts.clone());
    Ok(spawn(
        format!("Creating {} disk {}", opts.kind, path.display()),
        &OpsOptions::default(),
        move |pr| {
            let start = std::time::Instant::now();
            pr.check_cancelled()?;
            Disk::create(&p, &o)?;
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            Ok(Report {
                operation: Operation::Create,
                path: p,
                file_size_after: size,
                elapsed: start.elapsed(),
                ..Report::default()
            })
        },
    ))
}
