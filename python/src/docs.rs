//! The dicts the package returns, each with the fields of the JSON document the
//! command line prints for the same thing (`docs/json.md`, `docs/schema/`): `info()`,
//! an operation's report, a progress event, `measure()`, the rows of `map()`. The CLI
//! builds its documents in the binary (`src/cmd/`), out of reach of a library; the
//! tests validate these dicts against the same schemas.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use vhdkit_format::image::Extent;
use vhdkit_format::ops::{Measure, Report, UnusedRanges};
use vhdkit_format::volume::{DiskReport, Reason, TableKind};
use vhdkit_format::{Disk, Error, ProgressEvent};

use crate::convert::{dict, path_str, serde_dict};
use crate::errors::variant_name;

/// The version of the JSON documents these dicts mirror (their `"schema"` field).
pub const SCHEMA: u32 = 1;

/// `info()`: the fields of `vhdkit info --json` for `disk`, opened from `path` — the
/// library's [`vhdkit_format::info::Info`], the very document the command line prints;
/// `chain_error` says why its parents could not be opened (then `disk` is the file
/// alone).
pub fn info<'py>(
    py: Python<'py>,
    disk: &Disk,
    chain_error: Option<&Error>,
    path: &Path,
) -> PyResult<Bound<'py, PyDict>> {
    let info = vhdkit_format::info::describe(disk, chain_error, path);
    let d = dict!(py, { "schema" => SCHEMA });
    d.update(serde_dict(py, &info)?.as_mapping())?;
    Ok(d)
}

/// A progress event: the fields of one `--progress json` line.
pub fn event<'py>(py: Python<'py>, e: &ProgressEvent) -> PyResult<Bound<'py, PyDict>> {
    Ok(dict!(py, {
        "schema" => SCHEMA,
        "task_id" => e.task_id,
        "phase" => e.phase.name(),
        "percent" => e.task_percent,
        "phase_percent" => e.phase_percent,
        "phase_blocks_done" => e.phase_blocks_done,
        "phase_blocks_total" => e.phase_blocks_total,
        "phase_bytes_done" => e.phase_bytes_done,
        "phase_bytes_total" => e.phase_bytes_total,
        "block_index" => e.block_index,
        "lost" => e.lost,
        "final" => e.is_final,
        "result" => e.result.map(|r| variant_name(&r)),
    }))
}

/// An operation's report: the fields of its `--json` document; with the disk's
/// partitions when `volumes` holds what a file-system scan (`fs_aware`) found.
pub fn report<'py>(
    py: Python<'py>,
    r: &Report,
    volumes: Option<&DiskReport>,
) -> PyResult<Bound<'py, PyDict>> {
    let phases = PyList::empty(py);
    for (name, d) in &r.phases {
        phases.append(dict!(py, { "name" => name, "seconds" => d.as_secs_f64() }))?;
    }
    let d = dict!(py, {
        "schema" => SCHEMA,
        "operation" => r.operation.name(),
        "path" => path_str(py, &r.path)?,
        "blocks_total" => r.blocks_total,
        "blocks_copied" => r.blocks_copied,
        "blocks_zero" => r.blocks_zero,
        "blocks_released" => r.blocks_released,
        "blocks_deduplicated" => r.blocks_deduplicated,
        "blocks_unused" => r.blocks_unused,
        "bytes_unused" => r.bytes_unused,
        "blocks_moved" => r.blocks_moved,
        "blocks_composed" => r.blocks_composed,
        "bytes_written" => r.bytes_written,
        "bytes_cloned" => r.bytes_cloned,
        "file_size_before" => r.file_size_before,
        "file_size_after" => r.file_size_after,
        "verified" => r.verified,
        "dry_run" => r.dry_run,
        "elapsed" => r.elapsed.as_secs_f64(),
        "phases" => phases,
    });
    if let Some(f) = &r.resize {
        d.set_item("size_before", f.size_before)?;
        d.set_item("size_after", f.size_after)?;
        d.set_item("nonzero_bytes_cut", f.nonzero_bytes_cut)?;
        d.set_item("bat", f.bat.name())?;
    }
    if let Some(v) = volumes {
        let released = UnusedRanges::new(r.unused_released.iter().cloned());
        d.set_item("partition_table", table_name(v.table))?;
        d.set_item("partitions", partitions(py, v, &released)?)?;
        d.set_item("partition_table_warnings", v.warnings.clone())?;
    }
    Ok(d)
}

/// The `partition_table` value: `mbr`, `gpt`, `none` (a file system spanning the
/// disk) or `unrecognised`.
fn table_name(kind: TableKind) -> &'static str {
    match kind {
        TableKind::Mbr => "mbr",
        TableKind::Gpt => "gpt",
        TableKind::WholeDisk => "none",
        TableKind::Unrecognised => "unrecognised",
    }
}

/// The `left_alone_reason` value: the kind of a [`Reason`].
fn reason_kind(r: &Reason) -> &'static str {
    match r {
        Reason::UnknownPartitionType => "unknown_partition_type",
        Reason::Container => "container",
        Reason::NoFileSystem => "no_file_system",
        Reason::Ambiguous(_) => "ambiguous",
        Reason::Unsupported(_) => "unsupported",
        Reason::NotClean(_) => "not_clean",
        Reason::SizeMismatch { .. } => "size_mismatch",
        Reason::Corrupt(_) => "corrupt",
        Reason::BadExtent(_) => "bad_extent",
    }
}

/// The `partitions` array of an `fs_aware` report: each partition, with the bytes of
/// its free space the operation released (or left out).
fn partitions<'py>(
    py: Python<'py>,
    v: &DiskReport,
    released: &UnusedRanges,
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for p in &v.partitions {
        list.append(dict!(py, {
            "index" => p.index,
            "start" => p.start,
            "length" => p.length,
            "type" => p.type_name,
            "name" => &p.name,
            "fs" => p.fs.name(),
            "fs_size" => p.fs_size,
            "used_bytes" => p.used_bytes,
            "free_bytes" => p.free_bytes,
            "released_bytes" => released.overlap_bytes(&p.free),
            "left_alone" => p.left_alone.as_ref().map(ToString::to_string),
            "left_alone_reason" => p.left_alone.as_ref().map(reason_kind),
            "warnings" => &p.warnings,
        }))?;
    }
    Ok(list)
}

/// `measure()`: the fields of `measure --json` for the source `path`.
pub fn measure<'py>(py: Python<'py>, path: &Path, m: &Measure) -> PyResult<Bound<'py, PyDict>> {
    Ok(dict!(py, {
        "schema" => SCHEMA,
        "path" => path_str(py, path)?,
        "target" => m.target.name(),
        "source_size" => m.source_size,
        "virtual_size" => m.virtual_size,
        "required_bytes" => m.required_bytes,
        "block_size" => m.block_size,
        "blocks_total" => m.blocks_total,
        "allocated_blocks" => m.allocated_blocks,
        "blocks_scanned" => m.blocks_scanned,
    }))
}

/// One row of `map()` (a row of `map --json`): where a run of virtual bytes lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub start: u64,
    pub length: u64,
    /// The chain level holding the bytes; `None` for bytes stored nowhere (zeros).
    pub layer: Option<usize>,
    pub file_offset: Option<u64>,
}

impl Row {
    /// The row of extent `e` starting at virtual offset `start`.
    pub fn of(e: &Extent, start: u64) -> Row {
        match *e {
            Extent::Data {
                layer,
                file_offset,
                len,
            } => Row {
                start,
                length: len,
                layer: Some(layer),
                file_offset: Some(file_offset),
            },
            Extent::Zero { len } => Row {
                start,
                length: len,
                layer: None,
                file_offset: None,
            },
        }
    }

    /// Extends this row by `next` when it continues it (same level, contiguous in the
    /// disk and in the file); returns whether it did.
    pub fn absorb(&mut self, next: &Row) -> bool {
        let contiguous = self.start + self.length == next.start
            && self.layer == next.layer
            && match (self.file_offset, next.file_offset) {
                (Some(a), Some(b)) => a + self.length == b,
                (None, None) => true,
                _ => false,
            };
        if contiguous {
            self.length += next.length;
        }
        contiguous
    }

    /// The row as a dict: `start`, `length`, `kind` (`allocated`, `parent`, `zero`),
    /// and for stored bytes `layer`, `file`, `file_offset`.
    pub fn to_dict<'py>(&self, py: Python<'py>, disk: &Disk) -> PyResult<Bound<'py, PyDict>> {
        let kind = match self.layer {
            None => "zero",
            Some(0) => "allocated",
            Some(_) => "parent",
        };
        let d = dict!(py, {
            "start" => self.start,
            "length" => self.length,
            "kind" => kind,
        });
        if let (Some(layer), Some(offset)) = (self.layer, self.file_offset) {
            d.set_item("layer", layer)?;
            d.set_item("file", path_str(py, disk.layers()[layer].path())?)?;
            d.set_item("file_offset", offset)?;
        }
        Ok(d)
    }
}
