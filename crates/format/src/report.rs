//! An operation's report, its progress events and a measurement as serializable
//! documents: the `--json` report, the `--progress json` lines and `measure --json` of
//! the command line (docs/json.md), and the dicts Python returns, built once here for
//! both.
//!
//! ```
//! use vhdkit_format::{ops, report, CreateOptions, Disk, DiskKind};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let src = dir.path().join("in.vhd");
//! Disk::create(&src, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).unwrap();
//! let out = dir.path().join("out.vhd");
//! let opts = ops::OpsOptions::default();
//! let task = ops::convert_task(&src, &out, ops::Target::Dynamic, &opts).unwrap();
//! let done = task.join().unwrap();
//! let doc = serde_json::to_value(report::ReportDoc::new(&done, None)).unwrap();
//! assert_eq!(doc["operation"], "convert");
//! assert_eq!(doc["blocks_copied"], 0);
//! ```

use std::path::Path;

use serde::Serialize;
use vhdkit_task::VMTaskResult;

use crate::ops::{Measure, Report, UnusedRanges};
use crate::volume::{DiskReport, Partition, Reason, TableKind};
use crate::ProgressEvent;

/// One `--progress json` line (docs/json.md). `percent` is the task's (weighted across
/// its phases, never decreasing, 100 only in the final event of a success); every
/// `phase_*` field is the current phase's, starting again from 0 in each phase; `lost`
/// counts the events this listener missed just before.
#[derive(Debug, Serialize)]
pub struct EventDoc {
    task_id: u32,
    phase: &'static str,
    percent: u32,
    phase_percent: u32,
    phase_blocks_done: u64,
    phase_blocks_total: u64,
    phase_bytes_done: u64,
    phase_bytes_total: u64,
    block_index: Option<u64>,
    lost: u64,
    #[serde(rename = "final")]
    is_final: bool,
    /// The task's outcome in the final event (`success`, `cancelled`,
    /// `disk_related_error`, …), else `None`.
    result: Option<VMTaskResult>,
}

impl From<&ProgressEvent> for EventDoc {
    fn from(e: &ProgressEvent) -> EventDoc {
        EventDoc {
            task_id: e.task_id,
            phase: e.phase.name(),
            percent: e.task_percent,
            phase_percent: e.phase_percent,
            phase_blocks_done: e.phase_blocks_done,
            phase_blocks_total: e.phase_blocks_total,
            phase_bytes_done: e.phase_bytes_done,
            phase_bytes_total: e.phase_bytes_total,
            block_index: e.block_index,
            lost: e.lost,
            is_final: e.is_final,
            result: e.result,
        }
    }
}

/// The final report of `--json` (docs/json.md): the engine's [`Report`] with its
/// phases as an array in the order they ran.
#[derive(Debug, Serialize)]
pub struct ReportDoc<'a> {
    operation: &'a str,
    path: &'a Path,
    /// The blocks the operation examined; see docs/json.md for what a block is in
    /// each operation. Each is counted once in the outcome counters that follow.
    blocks_total: u64,
    /// Convert, merge-to: of `blocks_total`, those read and composed (the metadata says
    /// they may hold data); the rest are known empty without a read.
    blocks_composed: u64,
    blocks_copied: u64,
    blocks_zero: u64,
    blocks_released: u64,
    blocks_deduplicated: u64,
    /// Blocks released (compact) or left out (convert, merge-to) because no file system
    /// uses any byte of them (`--fs-aware`).
    blocks_unused: u64,
    bytes_unused: u64,
    blocks_moved: u64,
    bytes_written: u64,
    bytes_cloned: u64,
    file_size_before: u64,
    file_size_after: u64,
    verified: bool,
    /// Compact `--dry-run`: nothing was written; the counts are what a run would do.
    dry_run: bool,
    /// Wall time, seconds.
    elapsed: f64,
    phases: Vec<PhaseDoc<'a>>,
    /// Resize only: the sizes, the non-zero bytes a shrink cut, what became of the BAT.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    resize: Option<ResizeDoc>,
    /// `--fs-aware` only: the partition table and the partitions found.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    volumes: Option<VolumesDoc>,
}

impl<'a> ReportDoc<'a> {
    /// The document of `r`; with the disk's partitions when `volumes` holds what a
    /// file-system scan (`--fs-aware`) found.
    pub fn new(r: &'a Report, volumes: Option<&DiskReport>) -> ReportDoc<'a> {
        let released = UnusedRanges::new(r.unused_released.iter().cloned());
        ReportDoc {
            operation: r.operation.name(),
            path: &r.path,
            blocks_total: r.blocks_total,
            blocks_composed: r.blocks_composed,
            blocks_copied: r.blocks_copied,
            blocks_zero: r.blocks_zero,
            blocks_released: r.blocks_released,
            blocks_deduplicated: r.blocks_deduplicated,
            blocks_unused: r.blocks_unused,
            bytes_unused: r.bytes_unused,
            blocks_moved: r.blocks_moved,
            bytes_written: r.bytes_written,
            bytes_cloned: r.bytes_cloned,
            file_size_before: r.file_size_before,
            file_size_after: r.file_size_after,
            verified: r.verified,
            dry_run: r.dry_run,
            elapsed: r.elapsed.as_secs_f64(),
            phases: r
                .phases
                .iter()
                .map(|(name, d)| PhaseDoc {
                    name,
                    seconds: d.as_secs_f64(),
                })
                .collect(),
            resize: r.resize.as_ref().map(|f| ResizeDoc {
                size_before: f.size_before,
                size_after: f.size_after,
                nonzero_bytes_cut: f.nonzero_bytes_cut,
                bat: f.bat.name(),
            }),
            volumes: volumes.map(|d| VolumesDoc {
                partition_table: table_name(d.table),
                partitions: partition_docs(d, &released),
                partition_table_warnings: d.warnings.clone(),
            }),
        }
    }
}

/// The document of `measure --json` (docs/json.md): the source measured and the
/// library's [`Measure`].
#[derive(Debug, Serialize)]
pub struct MeasureDoc<'a> {
    path: &'a Path,
    #[serde(flatten)]
    measure: &'a Measure,
}

impl<'a> MeasureDoc<'a> {
    /// The document of `measure`, made of the source at `path`.
    pub fn new(path: &'a Path, measure: &'a Measure) -> MeasureDoc<'a> {
        MeasureDoc { path, measure }
    }
}

/// The fields only a `--fs-aware` report has (docs/json.md).
#[derive(Debug, Serialize)]
pub struct VolumesDoc {
    partition_table: &'static str,
    partitions: Vec<PartitionDoc>,
    /// Remarks about the table (a backup GPT used, a broken EBR chain…).
    partition_table_warnings: Vec<String>,
}

/// The fields only a resize report has (docs/json.md).
#[derive(Debug, Serialize)]
pub struct ResizeDoc {
    size_before: u64,
    size_after: u64,
    nonzero_bytes_cut: u64,
    bat: &'static str,
}

/// One phase of an operation and its wall time.
#[derive(Debug, Serialize)]
pub struct PhaseDoc<'a> {
    name: &'a str,
    seconds: f64,
}

/// One partition in the `partitions` array of a `--fs-aware` document (docs/json.md).
#[derive(Debug, Serialize)]
pub struct PartitionDoc {
    index: u32,
    start: u64,
    length: u64,
    #[serde(rename = "type")]
    type_name: &'static str,
    name: String,
    fs: &'static str,
    fs_size: Option<u64>,
    used_bytes: u64,
    free_bytes: u64,
    /// The bytes of the partition's free space the operation released (or left out).
    released_bytes: u64,
    left_alone: Option<String>,
    left_alone_reason: Option<&'static str>,
    warnings: Vec<String>,
}

/// The `partitions` array: each partition of `report` with the bytes of `released`
/// (the operation's [`Report::unused_released`]) in its free space.
pub fn partition_docs(report: &DiskReport, released: &UnusedRanges) -> Vec<PartitionDoc> {
    report
        .partitions
        .iter()
        .map(|p: &Partition| PartitionDoc {
            index: p.index,
            start: p.start,
            length: p.length,
            type_name: p.type_name,
            name: p.name.clone(),
            fs: p.fs.name(),
            fs_size: p.fs_size,
            used_bytes: p.used_bytes,
            free_bytes: p.free_bytes,
            released_bytes: released.overlap_bytes(&p.free),
            left_alone: p.left_alone.as_ref().map(ToString::to_string),
            left_alone_reason: p.left_alone.as_ref().map(reason_kind),
            warnings: p.warnings.clone(),
        })
        .collect()
}

/// The `partition_table` value of a document: `mbr`, `gpt`, `none` (a file system
/// spanning the disk) or `unrecognised`.
pub fn table_name(kind: TableKind) -> &'static str {
    match kind {
        TableKind::Mbr => "mbr",
        TableKind::Gpt => "gpt",
        TableKind::WholeDisk => "none",
        TableKind::Unrecognised => "unrecognised",
    }
}

/// The `left_alone_reason` value: the kind of [`Reason`], in snake_case.
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
