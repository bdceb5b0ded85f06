//! How the commands show what a disk's partitions and file systems held: for
//! `--fs-aware` (compact, convert, merge-to, measure) the report of the library's scan
//! (`vhdkit_format::volume`), per partition, in text and JSON. The checks themselves
//! (the scan, `resize`'s shrink guard) are the library's.

use serde::Serialize;
use vhdkit_format::ops::UnusedRanges;
use vhdkit_volume::{DiskReport, FsKind, Partition, Reason, TableKind};

use super::human::size;

/// `--fs-aware`: the library's scan of the disk an operation opens
/// ([`vhdkit_format::volume::FsScan`]), whose report the command prints.
pub use vhdkit_format::volume::FsScan as FsAware;

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
    released_bytes: u64,
    left_alone: Option<String>,
    left_alone_reason: Option<&'static str>,
    warnings: Vec<String>,
}

/// The bytes of `p`'s free ranges that the operation released (or left out): the
/// part of `released` inside them.
fn released_in(p: &Partition, released: &UnusedRanges) -> u64 {
    released.overlap_bytes(&p.free)
}

/// The `partitions` array: each partition of `report` with the bytes of `released`
/// (the operation's [`vhdkit_format::ops::Report::unused_released`]) in its free space.
pub fn partition_docs(report: &DiskReport, released: &UnusedRanges) -> Vec<PartitionDoc> {
    report
        .partitions
        .iter()
        .map(|p| PartitionDoc {
            index: p.index,
            start: p.start,
            length: p.length,
            type_name: p.type_name,
            name: p.name.clone(),
            fs: p.fs.name(),
            fs_size: p.fs_size,
            used_bytes: p.used_bytes,
            free_bytes: p.free_bytes,
            released_bytes: released_in(p, released),
            left_alone: p.left_alone.as_ref().map(ToString::to_string),
            left_alone_reason: p.left_alone.as_ref().map(reason_kind),
            warnings: p.warnings.clone(),
        })
        .collect()
}

/// The text form: one line for the table, one per partition — its type, file system,
/// size, used and free bytes and the bytes `verb` (`released`, `would be released`,
/// `left out`), or why it was left alone — and the scan's remarks.
pub fn text_lines(report: &DiskReport, released: &UnusedRanges, verb: &str) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(match report.table {
        TableKind::Mbr => "partition table: MBR".to_owned(),
        TableKind::Gpt => "partition table: GPT".to_owned(),
        TableKind::WholeDisk => "partition table: none (a volume spans the disk)".to_owned(),
        TableKind::Unrecognised => format!(
            "partition table: none recognised, and no file system at the start of the disk: \
             the whole disk counts as used; nothing is {verb} for file systems"
        ),
    });
    for w in &report.warnings {
        lines.push(format!("  note: {w}"));
    }
    for p in &report.partitions {
        let what = if p.index == 0 {
            "whole disk".to_owned()
        } else {
            format!("partition {}", p.index)
        };
        let mut kind = p.type_name.to_owned();
        if !p.name.is_empty() {
            kind += &format!(" {:?}", p.name);
        }
        if p.fs != FsKind::Unknown {
            kind += &format!(", {}", p.fs);
        }
        let mut line = format!("{what} ({kind}): {}", size(p.length));
        match &p.left_alone {
            None => {
                line += &format!(
                    ", {} used, {} free; {} {verb}",
                    size(p.used_bytes),
                    size(p.free_bytes),
                    size(released_in(p, released))
                );
            }
            Some(Reason::Container) => line += &format!(": {}", Reason::Container),
            Some(why) => line += &format!(", left alone: {why}; nothing {verb}"),
        }
        lines.push(line);
        for w in &p.warnings {
            lines.push(format!("  note: {w}"));
        }
    }
    lines
}
