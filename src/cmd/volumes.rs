//! How the commands show what a disk's partitions and file systems held: for
//! `--fs-aware` (compact, convert, merge-to, measure) the report of the library's scan
//! (`vhdkit_format::volume`), per partition, in text and JSON. The checks themselves
//! (the scan, `resize`'s shrink guard) are the library's.

use vhdkit_format::ops::UnusedRanges;
use vhdkit_volume::{DiskReport, FsKind, Reason, TableKind};

use super::human::size;

/// `--fs-aware`: the library's scan of the disk an operation opens
/// ([`vhdkit_format::volume::FsScan`]), whose report the command prints.
pub use vhdkit_format::volume::FsScan as FsAware;

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
                    size(released.overlap_bytes(&p.free))
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
