//! Which bytes of a virtual disk no file system uses.
//!
//! `vhdkit-volume` reads a disk's partition table (MBR with logical partitions, GPT with
//! its protective MBR, or none) and, in each partition, the allocation map of its file
//! system: ext2/3/4 block bitmaps, the FAT12/16/32 tables, NTFS's `$Bitmap`, and the
//! layout of a Linux swap area. The result is, per partition, the byte ranges that are
//! free, and for the whole disk their union. It knows nothing of VHD: it reads through
//! the small [`ReadAt`] trait, which the caller implements over the disk's virtual view
//! (a chain already resolved), a raw file, or bytes in memory.
//!
//! It is conservative by construction. A byte is free only when a file system that was
//! recognised, found clean, and whose every structure was consistent says so. Unknown
//! partition types, unknown or unsupported file systems (XFS, exFAT, btrfs are recognised
//! but not read), space between partitions, the tables themselves, file-system metadata,
//! anything unreadable or inconsistent, a file system larger than its partition, and a
//! file system whose own state says it is not clean (ext4 needs recovery or was not
//! cleanly unmounted, NTFS dirty or with a live `$LogFile`, FAT dirty bit) all count as
//! used, and the report says why ([`Reason`]).
//!
//! Every number read from the disk is treated as hostile: arithmetic is checked,
//! allocations are bounded by the sizes of real structures inside the disk, loops are
//! bounded (EBR chains, data runs, group counts), and reads outside a file system are
//! refused, so a free range never lies outside the file system that reported it.
//!
//! ```
//! use vhdkit_volume::{scan, TableKind};
//!
//! // A blank disk: no table, nothing free.
//! let disk = vec![0u8; 4 << 20];
//! let report = scan(&disk).unwrap();
//! assert_eq!(report.table, TableKind::Unrecognised);
//! assert!(report.free_ranges().is_empty());
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::ops::Range;

mod bytes;
mod error;
pub mod fs;
mod ranges;
mod read_at;
mod region;
pub mod table;

pub use error::{Error, Reason};
pub use fs::{FsKind, FsReport};
pub use ranges::MAX_RUNS;
pub use read_at::ReadAt;
pub use table::{PartitionType, TableKind};

/// One partition (or the whole disk when there is no table) and what was found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Partition {
    /// The number Linux gives it: MBR primaries 1–4, logicals from 5; GPT entries from 1;
    /// 0 for a file system spanning a disk without a table.
    pub index: u32,
    /// First byte on the disk.
    pub start: u64,
    /// Length in bytes.
    pub length: u64,
    /// The type in the table.
    pub ptype: PartitionType,
    /// The type's name (`"Linux"`, `"Microsoft basic data"`...), or `"unknown"`.
    pub type_name: &'static str,
    /// The GPT partition name (empty for MBR).
    pub name: String,
    /// The file system found ([`FsKind::Unknown`] if none, or if not probed).
    pub fs: FsKind,
    /// Bytes the file system claims, when read.
    pub fs_size: Option<u64>,
    /// The file system's allocation unit in bytes, when read.
    pub fs_unit: Option<u64>,
    /// Bytes counted as used: `length - free_bytes`.
    pub used_bytes: u64,
    /// Bytes in `free`.
    pub free_bytes: u64,
    /// Free byte ranges, absolute disk offsets, sorted and merged; empty when left alone.
    pub free: Vec<Range<u64>>,
    /// Remarks that did not stop the analysis.
    pub warnings: Vec<String>,
    /// Why the whole partition counts as used, if it does.
    pub left_alone: Option<Reason>,
}

/// What [`scan`] found on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DiskReport {
    /// The disk size in bytes.
    pub size: u64,
    /// Which partition table.
    pub table: TableKind,
    /// The partitions in index order (extended containers included, as left alone).
    pub partitions: Vec<Partition>,
    /// Remarks about the table (a backup GPT used, a broken EBR chain...).
    pub warnings: Vec<String>,
}

impl DiskReport {
    /// Every free byte range of the disk: the union of the partitions' ranges, sorted and
    /// merged, absolute offsets. This is what a compaction may release.
    pub fn free_ranges(&self) -> Vec<Range<u64>> {
        let mut all: Vec<Range<u64>> = self
            .partitions
            .iter()
            .flat_map(|p| p.free.iter().cloned())
            .collect();
        ranges::normalize(&mut all);
        all
    }

    /// Total free bytes of the disk.
    pub fn free_bytes(&self) -> u64 {
        self.partitions
            .iter()
            .fold(0u64, |acc, p| acc.saturating_add(p.free_bytes))
    }
}

/// Reads the partition table and every partition's file system.
///
/// Only a failing read of the disk (or of its size) is an error; everything the disk
/// *contains* that is not understood is reported, with its space counted as used.
///
/// ```no_run
/// use vhdkit_volume::scan;
///
/// let file = std::fs::File::open("disk.raw")?;
/// let report = scan(&file)?;
/// for p in &report.partitions {
///     match &p.left_alone {
///         None => println!("#{} {}: {} bytes free", p.index, p.fs, p.free_bytes),
///         Some(why) => println!("#{} left alone: {why}", p.index),
///     }
/// }
/// let release: Vec<std::ops::Range<u64>> = report.free_ranges();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scan<R: ReadAt + ?Sized>(disk: &R) -> Result<DiskReport, Error> {
    let size = disk.size().map_err(|source| Error::Size { source })?;
    let t = table::read_table(disk)?;
    let mut partitions = Vec::with_capacity(t.entries.len());
    for e in t.entries {
        let mut p = Partition {
            index: e.index,
            start: e.start,
            length: e.len,
            ptype: e.ptype,
            type_name: e.ptype.name(),
            name: e.name,
            fs: FsKind::Unknown,
            fs_size: None,
            fs_unit: None,
            used_bytes: e.len,
            free_bytes: 0,
            free: Vec::new(),
            warnings: Vec::new(),
            left_alone: e.problem,
        };
        if p.left_alone.is_none() {
            let r = fs::analyse(disk, p.start, p.length)?;
            p.fs = r.kind;
            p.fs_size = r.size;
            p.fs_unit = r.unit;
            p.warnings = r.warnings;
            if !p.ptype.holds_fs() {
                // Still probed, so the report can say what is there.
                p.left_alone = Some(Reason::UnknownPartitionType);
            } else if let Some(why) = r.left_alone {
                p.left_alone = Some(why);
            } else {
                // Inside the partition, never over the table's own sectors.
                let mut free = r.free;
                let end = p.start.saturating_add(p.length);
                ranges::subtract(&mut free, &(0..p.start));
                ranges::subtract(&mut free, &(end..u64::MAX));
                for t in &t.reserved {
                    ranges::subtract(&mut free, t);
                }
                p.free_bytes = ranges::total(&free);
                p.used_bytes = p.length - p.free_bytes.min(p.length);
                p.free = free;
            }
        }
        partitions.push(p);
    }
    Ok(DiskReport {
        size,
        table: t.kind,
        partitions,
        warnings: t.warnings,
    })
}

/// Shorthand for `scan(disk)?.free_ranges()`: every free byte range of the disk.
pub fn free_ranges<R: ReadAt + ?Sized>(disk: &R) -> Result<Vec<Range<u64>>, Error> {
    Ok(scan(disk)?.free_ranges())
}
