//! The operations: `compact()`, `convert()`, `merge()`, `merge_to()` and `resize()`
//! start a task and return it at once (refusing at once what can be seen before any
//! work: a wrong disk type, a destination that exists, a file in use); `measure()`
//! waits for its result.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use vhdkit_format::image::OutputOptions;
use vhdkit_format::ops::layout::LayoutRequest;
use vhdkit_format::ops::merge_into::Ancestor;
use vhdkit_format::ops::{self, OpsOptions, ResizeOptions, Target};
use vhdkit_format::volume::{partition_table, shrink_guard, FsScan};
use vhdkit_format::{Disk, DiskKind, Error, OpenOptions};

use crate::docs;
use crate::errors::{invalid_argument, OrRaise};
use crate::options::{align, block_size, container_format, open_options, target, Container};
use crate::task::{finish, Task};

/// `source_format=`: "auto" (a VHD, or raw bytes when the file has no VHD footer and
/// no other format's signature) or "raw" (the file's bytes as they are).
fn source_format(py: Python<'_>, name: &str, opts: OpenOptions) -> PyResult<OpenOptions> {
    match name {
        "auto" => Ok(opts),
        "raw" => Ok(OpenOptions {
            force_raw: true,
            ..opts
        }),
        other => Err(invalid_argument(
            py,
            format!("source_format={other:?}: expected \"auto\" or \"raw\""),
        )),
    }
}

/// A library option's name (`block_size`) as a keyword argument (`block_size=`).
fn keyword(name: &str) -> String {
    format!("{name}=")
}

/// The options of the operations that write a new file (convert, merge-to), checked as
/// the command line checks them, and the file-system scan of `fs_aware`.
#[allow(clippy::too_many_arguments)]
fn new_file(
    py: Python<'_>,
    open: OpenOptions,
    dst: &std::path::Path,
    target: Target,
    container: Container,
    block: Option<u64>,
    sparse: bool,
    align_to: Option<u64>,
    replace: bool,
    fs_aware: bool,
    verify: bool,
) -> PyResult<(OpsOptions, Option<FsScan>)> {
    let format = container_format(py, container.format)?;
    let layout = LayoutRequest {
        format,
        block_size: block_size(py, block)?,
        logical_sector: container.logical_sector,
        sparse,
        ..LayoutRequest::new(target, Some(dst))
    }
    .check()
    .map_err(|m| invalid_argument(py, m.message(keyword)))?;
    if fs_aware && target == Target::Fixed {
        return Err(invalid_argument(
            py,
            "fs_aware= applies to a dynamic or raw destination: a fixed disk stores every byte",
        ));
    }
    let scan = fs_aware.then(FsScan::new);
    let opts = OpsOptions {
        open,
        verify,
        sparse,
        align: align(py, align_to)?,
        output: OutputOptions::new().replace(replace).devices(true),
        unused_ranges: scan.as_ref().map(FsScan::unused),
        ..OpsOptions::default()
    };
    Ok((layout.apply(opts, format), scan))
}

/// Starts compacting the dynamic or differencing disk at `path` in place, as `vhdkit
/// compact`: releases its empty blocks (and, with `dedupe`, a differencing disk's
/// blocks equal to its parent chain's), moves the last blocks into the holes and
/// shortens the file. The disk reads the same at every instant.
///
/// `fs_aware`: also release the blocks no file system uses (ext2/3/4, FAT, NTFS,
/// swap), adding the partitions to the report; refused when other disks name this one
/// as their parent unless `force` (folders searched: its own and `also_check`).
/// `dry_run`: plan and report, write nothing. `verify`: read back and check. The other
/// keywords are open() options.
#[pyfunction]
#[pyo3(signature = (path, *, dedupe = true, fs_aware = false, dry_run = false, verify = false, force = false, also_check = None, **options))]
#[allow(clippy::too_many_arguments)]
pub fn compact(
    py: Python<'_>,
    path: PathBuf,
    dedupe: bool,
    fs_aware: bool,
    dry_run: bool,
    verify: bool,
    force: bool,
    also_check: Option<Vec<PathBuf>>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Task> {
    if dry_run && verify {
        return Err(invalid_argument(
            py,
            "dry_run= writes nothing to verify= afterwards",
        ));
    }
    let scan = fs_aware.then(FsScan::new);
    let opts = OpsOptions {
        open: open_options(py, "compact", options, OpenOptions::new())?,
        verify,
        dedupe,
        unused_ranges: scan.as_ref().map(FsScan::unused),
        dry_run,
        force,
        also_check: also_check.unwrap_or_default(),
        ..OpsOptions::default()
    };
    let task = py.detach(|| ops::compact_task(&path, &opts)).or_raise(py)?;
    Ok(Task::new(task, scan))
}

/// Starts converting `src` — any VHD (a differencing chain is flattened), host-drive
/// stub or raw image — into a new `dst` of `type` "fixed", "dynamic" or "raw", as
/// `vhdkit convert`. The new file appears only once complete and durable: a failure or
/// cancel leaves nothing, and `src` is never changed.
///
/// `block_size`: of a dynamic result (default 2 MiB). `sparse`: a fixed result's data
/// area is not allocated up front. `align`: round the virtual size up to a multiple of
/// this (1 MiB for Azure). `replace`: an existing regular file at `dst` is replaced
/// atomically once the result is durable. `fs_aware`: leave out what no file system
/// uses (dynamic, raw). `verify`: read the result back and compare. `source_format`:
/// "auto" or "raw". `format`: the container of a fixed or dynamic result, "vhd" or
/// "vhdx" (default: by `dst`'s extension, `.vhdx` and `.avhdx` making a VHDX; its
/// `block_size` then 1–256 MiB, default 32 MiB). `logical_sector`: a VHDX result's,
/// 512 (default) or 4096. The other keywords are open() options for `src`.
#[pyfunction]
#[pyo3(signature = (src, dst, r#type, *, block_size = None, sparse = false, align = None, replace = false, fs_aware = false, verify = false, source_format = "auto", format = None, logical_sector = None, **options))]
#[allow(clippy::too_many_arguments)]
pub fn convert(
    py: Python<'_>,
    src: PathBuf,
    dst: PathBuf,
    r#type: &str,
    block_size: Option<u64>,
    sparse: bool,
    align: Option<u64>,
    replace: bool,
    fs_aware: bool,
    verify: bool,
    source_format: &str,
    format: Option<String>,
    logical_sector: Option<u32>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Task> {
    let target = target(py, r#type)?;
    let open = open_options(py, "convert", options, OpenOptions::new())?;
    let open = self::source_format(py, source_format, open)?;
    let container = Container {
        format,
        logical_sector,
    };
    let (opts, scan) = new_file(
        py, open, &dst, target, container, block_size, sparse, align, replace, fs_aware, verify,
    )?;
    let task = py
        .detach(|| ops::convert_task(&src, &dst, target, &opts))
        .or_raise(py)?;
    Ok(Task::new(task, scan))
}

/// Starts flattening differencing disk `child` and its ancestors into a new `dst` of
/// `type` "fixed", "dynamic" or "raw", as `vhdkit merge-to` (Virtual Server's
/// MergeTo). As convert(): the new file appears only once complete, the chain is never
/// changed; the same keywords.
#[pyfunction]
#[pyo3(signature = (child, dst, r#type, *, block_size = None, sparse = false, align = None, replace = false, fs_aware = false, verify = false, format = None, logical_sector = None, **options))]
#[allow(clippy::too_many_arguments)]
pub fn merge_to(
    py: Python<'_>,
    child: PathBuf,
    dst: PathBuf,
    r#type: &str,
    block_size: Option<u64>,
    sparse: bool,
    align: Option<u64>,
    replace: bool,
    fs_aware: bool,
    verify: bool,
    format: Option<String>,
    logical_sector: Option<u32>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Task> {
    let target = target(py, r#type)?;
    let open = open_options(py, "merge_to", options, OpenOptions::new())?;
    let container = Container {
        format,
        logical_sector,
    };
    let (opts, scan) = new_file(
        py, open, &dst, target, container, block_size, sparse, align, replace, fs_aware, verify,
    )?;
    let task = py
        .detach(|| ops::merge_to_task(&child, &dst, target, &opts))
        .or_raise(py)?;
    Ok(Task::new(task, scan))
}

/// Starts merging differencing disk `child` into its parent in place, as `vhdkit
/// merge` (Virtual Server's Merge): the child reads the same throughout; a merge cut
/// short is finished by running it again.
///
/// `into` (an ancestor's path) or `depth` (levels up, 1 the parent): merge the child
/// and every disk between into that ancestor; the child is relinked to it (or deleted
/// with `delete_child`) and the intermediates removed (kept with
/// `keep_intermediates`). Refused when other disks name a disk the merge changes as
/// their parent, unless `force` (folders searched: each disk's own and `also_check`).
/// The other keywords are open() options.
#[pyfunction]
#[pyo3(signature = (child, into = None, depth = None, *, delete_child = false, force = false, also_check = None, keep_intermediates = false, **options))]
#[allow(clippy::too_many_arguments)]
pub fn merge(
    py: Python<'_>,
    child: PathBuf,
    into: Option<PathBuf>,
    depth: Option<usize>,
    delete_child: bool,
    force: bool,
    also_check: Option<Vec<PathBuf>>,
    keep_intermediates: bool,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Task> {
    let ancestor = match (into, depth) {
        (Some(_), Some(_)) => return Err(invalid_argument(py, "give into= or depth=, not both")),
        (None, Some(0)) => return Err(invalid_argument(py, "depth= counts levels from 1")),
        (Some(p), None) => Some(Ancestor::Path(p)),
        (None, Some(n)) if n > 1 => Some(Ancestor::Depth(n)),
        (None, _) => None,
    };
    if keep_intermediates && ancestor.is_none() {
        return Err(invalid_argument(
            py,
            "keep_intermediates= applies to a merge with into= or depth= above 1",
        ));
    }
    let opts = OpsOptions {
        open: open_options(py, "merge", options, OpenOptions::new())?,
        delete_child,
        force,
        also_check: also_check.unwrap_or_default(),
        keep_intermediates,
        ..OpsOptions::default()
    };
    let task = py
        .detach(|| match &ancestor {
            Some(a) => ops::merge_into_task(&child, a, &opts),
            None => ops::merge_task(&child, &opts),
        })
        .or_raise(py)?;
    Ok(Task::new(task, None))
}

/// `to_minimum`: the end of the last partition of the disk at `path`, never below the
/// smallest disk vhdkit writes; or why there is none (NotAllowed).
fn minimum_size(path: &std::path::Path, disk: &Disk) -> Result<u64, Error> {
    let why = match partition_table(disk).map(|t| t.minimum_size()) {
        Ok(Ok(end)) => return Ok(end.max(vhdkit_format::MIN_CREATE_SIZE)),
        Ok(Err(why)) => why,
        Err(e) => format!("its partition table cannot be read ({e})"),
    };
    Err(Error::NotAllowed {
        path: path.to_owned(),
        detail: format!("to_minimum shrinks to the end of the last partition, and {why}"),
    })
}

/// Starts resizing the fixed, dynamic or differencing disk at `path` in place to
/// `size` bytes (a multiple of 512 from 3 MiB to 2040 GiB), as `vhdkit resize`. The
/// disk reads as before or as resized at every instant.
///
/// `align`: round the size (given, or the current one) up to a multiple of this.
/// `allow_shrink`: a smaller size cuts the data past it — refused anyway when a
/// partition ends past the new size. `to_minimum`: shrink to the end of the last
/// partition (Hyper-V's Resize-VHD -ToMinimumSize). Refused when other disks name it as
/// their parent, unless `force`. `sparse`: a fixed disk's new space is not allocated.
/// The other keywords are open() options.
#[pyfunction]
#[pyo3(signature = (path, size = None, *, align = None, allow_shrink = false, to_minimum = false, force = false, also_check = None, sparse = false, **options))]
#[allow(clippy::too_many_arguments)]
pub fn resize(
    py: Python<'_>,
    path: PathBuf,
    size: Option<u64>,
    align: Option<u64>,
    allow_shrink: bool,
    to_minimum: bool,
    force: bool,
    also_check: Option<Vec<PathBuf>>,
    sparse: bool,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Task> {
    if size.is_some() && to_minimum {
        return Err(invalid_argument(py, "give size= or to_minimum=, not both"));
    }
    if size.is_none() && align.is_none() && !to_minimum {
        return Err(invalid_argument(
            py,
            "resize needs size=, align= or to_minimum=",
        ));
    }
    let open = open_options(py, "resize", options, OpenOptions::new())?;
    let mut resize = ResizeOptions {
        size,
        align: self::align(py, align)?,
        allow_shrink: allow_shrink || to_minimum,
        shrink_guard: Some(shrink_guard()),
    };
    // What the arguments alone get wrong, read-only before the task opens the disk for
    // writing.
    let (kind, minimum) = py
        .detach(|| -> Result<_, Error> {
            let disk = Disk::open_with(&path, &open.clone().writable(false))?;
            let minimum = match to_minimum {
                true => Some(minimum_size(&path, &disk)?),
                false => None,
            };
            Ok((disk.kind(), minimum))
        })
        .or_raise(py)?;
    if sparse && kind != DiskKind::Fixed {
        return Err(invalid_argument(
            py,
            format!(
                "sparse= applies to a fixed disk; {} is {kind}",
                path.display()
            ),
        ));
    }
    if minimum.is_some() {
        resize.size = minimum;
    }
    let opts = OpsOptions {
        open,
        force,
        also_check: also_check.unwrap_or_default(),
        sparse,
        ..OpsOptions::default()
    };
    let task = py
        .detach(|| ops::resize_task(&path, &resize, &opts))
        .or_raise(py)?;
    Ok(Task::new(task, None))
}

/// The exact length of the file convert() (or merge_to()) with the same `type`,
/// `block_size`, `align`, `format` ("vhd", the default, or "vhdx") and `logical_sector`
/// would write, computed without writing, as `vhdkit measure`: a dict with its fields
/// (docs/json.md). Returns when measured (a dynamic
/// result reads the source's allocated data), other threads running meanwhile; a
/// KeyboardInterrupt stops it.
#[pyfunction]
#[pyo3(signature = (src, r#type, *, block_size = None, align = None, source_format = "auto", format = None, logical_sector = None, **options))]
#[allow(clippy::too_many_arguments)]
pub fn measure<'py>(
    py: Python<'py>,
    src: PathBuf,
    r#type: &str,
    block_size: Option<u64>,
    align: Option<u64>,
    source_format: &str,
    format: Option<String>,
    logical_sector: Option<u32>,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let target = target(py, r#type)?;
    let format = container_format(py, format)?;
    let layout = LayoutRequest {
        format,
        block_size: self::block_size(py, block_size)?,
        logical_sector,
        ..LayoutRequest::new(target, None)
    }
    .check()
    .map_err(|m| invalid_argument(py, m.message(keyword)))?;
    let open = open_options(py, "measure", options, OpenOptions::new())?;
    let opts = OpsOptions {
        open: self::source_format(py, source_format, open)?,
        align: self::align(py, align)?,
        ..OpsOptions::default()
    };
    let opts = layout.apply(opts, format);
    let task = py
        .detach(|| ops::measure_task(&src, target, &opts))
        .or_raise(py)?;
    let m = finish(py, task)?;
    docs::measure(py, &src, &m)
}
