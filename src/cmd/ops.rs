//! `vhdkit convert`, `compact`, `merge`, `merge-to`.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use vhdkit_format::image::OutputOptions;
use vhdkit_format::ops::layout::LayoutRequest;
use vhdkit_format::ops::{self, OpsOptions, Target};

use super::create::{logical_sector_arg, FormatArg};
use super::runner::{self, RunArgs};
use super::volumes::FsAware;
use super::{align_arg, block_size_arg, CliError, OpenArgs, SourceArgs};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ConvertType {
    Fixed,
    Dynamic,
    Raw,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MergeToType {
    Fixed,
    Dynamic,
    Raw,
}

/// Options of the data-moving operations.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Read the result back and compare every block's CRC32 with the source's.
    #[arg(long)]
    verify: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Source: any VHD (a differencing chain is flattened), host-drive stub or raw image.
    src: PathBuf,
    /// Destination: a new file (an existing regular file only with --force), or a device
    /// (block or character) that a raw result is written onto in place, from its start
    /// (a block device smaller than the disk is refused before any write).
    dst: PathBuf,
    /// Kind of the destination.
    #[arg(long = "type", value_enum)]
    kind: ConvertType,
    /// Block size of a dynamic destination: a power of two from 4K to 256M (default
    /// 2M; qemu, libvhdi, Windows and Hyper-V read every such size; Xen's blktap only 2M).
    /// A VHDX destination (fixed or dynamic): 1M to 256M, default 32M as Hyper-V.
    #[arg(long, value_parser = block_size_arg)]
    block_size: Option<u32>,
    /// Container of a fixed or dynamic destination (default: by its extension:
    /// `.vhdx`/`.avhdx` make a VHDX, anything else a VHD).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Logical sector size of a VHDX destination: 512 (default) or 4096.
    #[arg(long, value_name = "BYTES", value_parser = logical_sector_arg)]
    logical_sector: Option<u32>,
    /// A fixed destination: leave its data area sparse instead of allocating it up front
    /// (a result that clones its source's data on XFS or btrfs is never preallocated).
    #[arg(long)]
    sparse: bool,
    /// Round the destination's virtual size up to a multiple of SIZE (a multiple of 512),
    /// the added space reading as zeros: `--type fixed --align 1M` makes a VHD Azure
    /// takes (see `check --for azure`).
    #[arg(long, value_name = "SIZE", value_parser = align_arg)]
    align: Option<u64>,
    #[command(flatten)]
    output: OutputArgs,
    /// Leave out what no file system uses: read the source's partition table and file
    /// systems (ext2/3/4, FAT, NTFS, swap; anything else counts as used) and write
    /// neither the dynamic blocks nor the raw 4 KiB pages that lie wholly in free space
    /// (raw: holes). A dynamic or raw destination.
    #[arg(long)]
    fs_aware: bool,
    #[command(flatten)]
    verify: VerifyArgs,
    #[command(flatten)]
    pub(super) run: RunArgs,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    open: OpenArgs,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    /// A dynamic or differencing disk, compacted in place.
    path: PathBuf,
    /// Keep the blocks of a differencing disk that hold the same data as its parent
    /// chain. By default they are released too (they then read from the parent, which
    /// shows the same bytes); that needs the parent chain, so this also compacts a
    /// differencing disk whose parent cannot be opened.
    #[arg(long)]
    no_dedupe: bool,
    /// Also release every block that no file system uses: read the disk's partition
    /// table and file systems through its virtual view (ext2/3/4, FAT, NTFS, swap;
    /// anything else, and any file system that is not clean, counts as used) and
    /// release the blocks wholly in free space. A differencing disk's released blocks
    /// then read from its parent.
    #[arg(long)]
    fs_aware: bool,
    /// Report what would be released and moved (per partition with --fs-aware), and
    /// write nothing.
    #[arg(long, conflicts_with = "verify")]
    dry_run: bool,
    /// With --fs-aware: compact even though other disks name this one as their parent
    /// (where it releases free space they then read zeros instead of its bytes).
    #[arg(long, requires = "fs_aware")]
    force: bool,
    /// With --fs-aware: also look in DIR for disks naming this one as their parent
    /// (besides its own folder); repeatable.
    #[arg(long, value_name = "DIR", requires = "fs_aware")]
    also_check: Vec<PathBuf>,
    #[command(flatten)]
    verify: VerifyArgs,
    #[command(flatten)]
    pub(super) run: RunArgs,
    #[command(flatten)]
    open: OpenArgs,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The differencing disk whose sectors go into its parent.
    child: PathBuf,
    /// Delete the child once the merge is durable (refused while other disks in its
    /// folder name it as their parent, unless --force).
    #[arg(long)]
    delete_child: bool,
    /// Merge even though other disks name a disk it changes as their parent: the
    /// parent's (or ancestor's) other children then read different bytes, and the
    /// children of a disk it deletes (--delete-child, the intermediates of
    /// --into/--depth) are orphaned.
    #[arg(long)]
    force: bool,
    /// Also look in DIR for disks naming a disk the merge changes as their parent
    /// (besides that disk's own folder); repeatable.
    #[arg(long, value_name = "DIR")]
    also_check: Vec<PathBuf>,
    /// Merge into this ancestor: the child and every disk between them go into it; the
    /// child is relinked to it (or deleted with --delete-child) and the intermediates
    /// are removed.
    #[arg(long, value_name = "ANCESTOR", conflicts_with = "depth")]
    into: Option<PathBuf>,
    /// Merge into the ancestor N levels up (1: the parent), as diskpart's depth.
    #[arg(long, value_name = "N")]
    depth: Option<usize>,
    /// With --into/--depth: keep the intermediate disks (they no longer describe a
    /// consistent disk).
    #[arg(long)]
    keep_intermediates: bool,
    #[command(flatten)]
    pub(super) run: RunArgs,
    #[command(flatten)]
    open: OpenArgs,
}

#[derive(Debug, Args)]
pub struct MergeToArgs {
    /// The differencing disk whose chain is flattened.
    child: PathBuf,
    /// Destination: a new file (an existing regular file only with --force).
    dst: PathBuf,
    /// Kind of the destination.
    #[arg(long = "type", value_enum)]
    kind: MergeToType,
    /// Block size of a dynamic destination: a power of two from 4K to 256M (default
    /// 2M; qemu, libvhdi, Windows and Hyper-V read every such size; Xen's blktap only 2M).
    /// A VHDX destination (fixed or dynamic): 1M to 256M, default 32M as Hyper-V.
    #[arg(long, value_parser = block_size_arg)]
    block_size: Option<u32>,
    /// Container of a fixed or dynamic destination (default: by its extension:
    /// `.vhdx`/`.avhdx` make a VHDX, anything else a VHD).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Logical sector size of a VHDX destination: 512 (default) or 4096.
    #[arg(long, value_name = "BYTES", value_parser = logical_sector_arg)]
    logical_sector: Option<u32>,
    /// A fixed destination: leave its data area sparse instead of allocating it up front
    /// (a result that clones its source's data on XFS or btrfs is never preallocated).
    #[arg(long)]
    sparse: bool,
    /// Round the destination's virtual size up to a multiple of SIZE (a multiple of 512),
    /// the added space reading as zeros.
    #[arg(long, value_name = "SIZE", value_parser = align_arg)]
    align: Option<u64>,
    #[command(flatten)]
    output: OutputArgs,
    /// Leave out the blocks that no file system in the chain's view uses (as convert
    /// --fs-aware). A dynamic or raw destination.
    #[arg(long)]
    fs_aware: bool,
    #[command(flatten)]
    verify: VerifyArgs,
    #[command(flatten)]
    pub(super) run: RunArgs,
    #[command(flatten)]
    open: OpenArgs,
}

/// What may stand at the destination of convert and merge-to.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Replace the destination if it is a regular file that exists, atomically: the
    /// result is written beside it and renamed over it once complete and durable (the
    /// old file stays whole until then, and after a failure or cancel). Symbolic links
    /// are never followed nor replaced.
    #[arg(long)]
    force: bool,
}

impl OutputArgs {
    /// The library's output options: devices are written in place (a raw result only),
    /// the new file takes the source's permission bits.
    fn options(&self) -> OutputOptions {
        OutputOptions::new().replace(self.force).devices(true)
    }
}

/// What a stopped run leaves at `dst`: a device is written in place, anything else
/// appears only when complete.
fn leaves_at(dst: &Path) -> runner::Leaves {
    use vhdkit_platform::FileKind;
    let is_device = vhdkit_platform::is_device_name(dst)
        || std::fs::symlink_metadata(dst).is_ok_and(|m| {
            matches!(
                vhdkit_platform::kind(&m),
                FileKind::BlockDevice | FileKind::CharDevice
            )
        });
    if is_device {
        runner::Leaves::Device
    } else {
        runner::Leaves::NewFile
    }
}

/// The destination of the operations that write a new file (convert, merge-to): its
/// container and blocks.
struct Destination<'a> {
    path: &'a Path,
    target: Target,
    format: Option<FormatArg>,
    block: Option<u32>,
    logical_sector: Option<u32>,
}

/// Options of the operations that write a new file (convert, merge-to).
fn new_file_opts(
    open: &OpenArgs,
    src: &std::path::Path,
    dst: Destination<'_>,
    verify: &VerifyArgs,
    sparse: bool,
) -> Result<OpsOptions, CliError> {
    let format = dst.format.map(FormatArg::container);
    let layout = LayoutRequest {
        format,
        block_size: dst.block,
        logical_sector: dst.logical_sector,
        sparse,
        ..LayoutRequest::new(dst.target, Some(dst.path))
    }
    .check()
    .map_err(|m| super::usage_error(&m.message(super::flag)))?;
    let opts = OpsOptions {
        open: open.options_for(src)?,
        verify: verify.verify,
        sparse,
        ..OpsOptions::default()
    };
    Ok(layout.apply(opts, format))
}

pub fn convert(a: ConvertArgs) -> Result<u8, CliError> {
    let target = match a.kind {
        ConvertType::Fixed => Target::Fixed,
        ConvertType::Dynamic => Target::Dynamic,
        ConvertType::Raw => Target::Raw,
    };
    let dst = Destination {
        path: &a.dst,
        target,
        format: a.format,
        block: a.block_size,
        logical_sector: a.logical_sector,
    };
    let mut opts = new_file_opts(&a.open, &a.src, dst, &a.verify, a.sparse)?;
    opts.open = a.source.apply(opts.open);
    opts.align = a.align;
    opts.output = a.output.options();
    let fs = fs_aware(a.fs_aware, target)?;
    opts.unused_ranges = fs.as_ref().map(FsAware::unused);
    let task = ops::convert_task(&a.src, &a.dst, target, &opts)?;
    let r = runner::run_fs_aware(task, &a.run, leaves_at(&a.dst), fs.as_ref());
    runner::hint_sparse(r, target == Target::Fixed && !a.sparse)
}

/// `--fs-aware` of a conversion into `target`: refused (a usage mistake) for a fixed
/// disk, which stores every byte.
fn fs_aware(asked: bool, target: Target) -> Result<Option<FsAware>, CliError> {
    if !asked {
        return Ok(None);
    }
    if target == Target::Fixed {
        return Err(super::usage_error(
            "--fs-aware applies to a dynamic or raw destination: a fixed disk stores every byte",
        ));
    }
    Ok(Some(FsAware::default()))
}

pub fn compact(a: CompactArgs) -> Result<u8, CliError> {
    let fs = a.fs_aware.then(FsAware::default);
    let opts = OpsOptions {
        open: a.open.options_for(&a.path)?,
        verify: a.verify.verify,
        dedupe: !a.no_dedupe,
        unused_ranges: fs.as_ref().map(FsAware::unused),
        dry_run: a.dry_run,
        force: a.force,
        also_check: a.also_check,
        ..OpsOptions::default()
    };
    let task = match ops::compact_task(&a.path, &opts) {
        Ok(task) => task,
        // Deduplication and --fs-aware open the parent chain: when that is what failed
        // (the child alone opens for compaction), say so, and how to compact without it.
        Err(error)
            if (opts.dedupe || opts.unused_ranges.is_some())
                && error.kind() != vhdkit_format::ErrorKind::HasChildren
                && parent_chain_failed(&a.path, &opts) =>
        {
            return Err(CliError::Stopped {
                error,
                state: if opts.unused_ranges.is_some() {
                    "nothing was changed (--fs-aware reads a differencing disk's file \
                     systems through its parent chain, which must open)"
                } else {
                    "nothing was changed (compact compares a differencing disk's blocks \
                     with its parent chain; --no-dedupe compacts it without the parent)"
                },
            })
        }
        Err(e) => return Err(e.into()),
    };
    let leaves = if a.dry_run {
        runner::Leaves::Nothing
    } else {
        runner::Leaves::Compact
    };
    runner::run_fs_aware(task, &a.run, leaves, fs.as_ref())
}

/// Whether `path` is a differencing disk that opens for compaction on its own: then a
/// failure to open it with its parents (for dedupe or --fs-aware) came from its parent
/// chain.
fn parent_chain_failed(path: &std::path::Path, opts: &OpsOptions) -> bool {
    let alone = OpsOptions {
        dedupe: false,
        unused_ranges: None,
        ..opts.clone()
    };
    ops::compact::open(path, &alone)
        .is_ok_and(|d| d.kind() == vhdkit_format::DiskKind::Differencing)
}

pub fn merge(a: MergeArgs) -> Result<u8, CliError> {
    let opts = OpsOptions {
        open: a.open.options_for(&a.child)?,
        delete_child: a.delete_child,
        force: a.force,
        also_check: a.also_check,
        keep_intermediates: a.keep_intermediates,
        ..OpsOptions::default()
    };
    if a.keep_intermediates && a.into.is_none() && a.depth.is_none() {
        return Err(super::usage_error(
            "--keep-intermediates applies to a merge with --into or --depth",
        ));
    }
    let ancestor = match (&a.into, a.depth) {
        (Some(p), _) => Some(ops::merge_into::Ancestor::Path(p.clone())),
        (None, Some(0)) => return Err(super::usage_error("--depth counts levels from 1")),
        (None, Some(1)) | (None, None) => None,
        (None, Some(n)) => Some(ops::merge_into::Ancestor::Depth(n)),
    };
    match ancestor {
        Some(anc) => {
            let task = ops::merge_into_task(&a.child, &anc, &opts)?;
            runner::run(task, &a.run, runner::Leaves::MergeInto)
        }
        None => {
            let task = ops::merge_task(&a.child, &opts)?;
            runner::run(task, &a.run, runner::Leaves::Merge)
        }
    }
}

pub fn merge_to(a: MergeToArgs) -> Result<u8, CliError> {
    let target = match a.kind {
        MergeToType::Fixed => Target::Fixed,
        MergeToType::Dynamic => Target::Dynamic,
        MergeToType::Raw => Target::Raw,
    };
    let dst = Destination {
        path: &a.dst,
        target,
        format: a.format,
        block: a.block_size,
        logical_sector: a.logical_sector,
    };
    let mut opts = new_file_opts(&a.open, &a.child, dst, &a.verify, a.sparse)?;
    opts.align = a.align;
    opts.output = a.output.options();
    let fs = fs_aware(a.fs_aware, target)?;
    opts.unused_ranges = fs.as_ref().map(FsAware::unused);
    let task = ops::merge_to_task(&a.child, &a.dst, target, &opts)?;
    let r = runner::run_fs_aware(task, &a.run, leaves_at(&a.dst), fs.as_ref());
    runner::hint_sparse(r, target == Target::Fixed && !a.sparse)
}
