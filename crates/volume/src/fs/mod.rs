//! File systems: recognising one in a byte range of the disk, and reading its allocation
//! map into free byte ranges.
//!
//! Each reader is a set of pure decoders over byte buffers plus a walk that reads the
//! map's blocks through a bounded window of the disk: a pointer outside the
//! file system is corruption (the file system is left alone), never a read elsewhere.

use std::fmt;
use std::ops::Range;

use crate::error::{Error, Fail, Reason};
use crate::ranges;
use crate::region::Region;
use crate::ReadAt;

pub(crate) mod ext;
pub(crate) mod fat;
pub(crate) mod ntfs;
pub(crate) mod other;
pub(crate) mod swap;

/// How many bytes at the start of a partition the signature probes look at: enough for
/// the btrfs superblock at 64 KiB and a 64 KiB-page swap header.
pub const PROBE_BYTES: u64 = 68 * 1024;

/// A file system (or other volume content) recognised by its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FsKind {
    /// ext2 (no journal).
    Ext2,
    /// ext3 (journal, no ext4 features).
    Ext3,
    /// ext4.
    Ext4,
    /// FAT12.
    Fat12,
    /// FAT16.
    Fat16,
    /// FAT32.
    Fat32,
    /// NTFS.
    Ntfs,
    /// A Linux swap area (version 1, `SWAPSPACE2`).
    Swap,
    /// XFS: recognised, allocation map not read.
    Xfs,
    /// exFAT: recognised, allocation map not read.
    ExFat,
    /// btrfs: recognised, allocation map not read.
    Btrfs,
    /// LUKS encrypted volume.
    Luks,
    /// LVM2 physical volume.
    LvmPv,
    /// Linux MD RAID member (superblock 1.1 or 1.2).
    MdRaid,
    /// Nothing recognised.
    Unknown,
}

impl FsKind {
    /// A short lower-case name (`ext4`, `fat32`, `ntfs`, `swap`...).
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
            FsKind::Ntfs => "ntfs",
            FsKind::Swap => "swap",
            FsKind::Xfs => "xfs",
            FsKind::ExFat => "exfat",
            FsKind::Btrfs => "btrfs",
            FsKind::Luks => "luks",
            FsKind::LvmPv => "lvm2_pv",
            FsKind::MdRaid => "linux_raid_member",
            FsKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which reader to run: the families [`analyse_as`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// ext2, ext3 or ext4.
    Ext,
    /// FAT12, FAT16 or FAT32.
    Fat,
    /// NTFS.
    Ntfs,
    /// Linux swap.
    Swap,
}

/// What the analysis of one file system found. Offsets in `free` are absolute disk
/// offsets, sorted, merged, and inside both the analysed byte range and the file system's
/// own extent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FsReport {
    /// What was recognised.
    pub kind: FsKind,
    /// Bytes the file system claims (its own size field), when read.
    pub size: Option<u64>,
    /// The file system's allocation unit in bytes (block or cluster), when read.
    pub unit: Option<u64>,
    /// Free byte ranges (absolute disk offsets); empty when left alone.
    pub free: Vec<Range<u64>>,
    /// Things worth saying that did not stop the analysis.
    pub warnings: Vec<String>,
    /// Why the whole range counts as used, if it does.
    pub left_alone: Option<Reason>,
}

impl FsReport {
    fn new(kind: FsKind) -> Self {
        FsReport {
            kind,
            size: None,
            unit: None,
            free: Vec::new(),
            warnings: Vec::new(),
            left_alone: None,
        }
    }

    /// Free bytes (the sum of `free`).
    pub fn free_bytes(&self) -> u64 {
        ranges::total(&self.free)
    }
}

/// Recognises the file system in `len` bytes at `start` of `disk` and reads its
/// allocation map.
///
/// Nothing recognised, more than one signature, a file system larger than `len`, an
/// unclean state, or any inconsistency gives a report with `left_alone` set and no free
/// range. Only a failing read of the disk is an error.
///
/// ```
/// use vhdkit_volume::fs::{analyse, FsKind};
///
/// let blank = vec![0u8; 1 << 20];
/// let report = analyse(&blank, 0, 1 << 20).unwrap();
/// assert_eq!(report.kind, FsKind::Unknown);
/// assert!(report.free.is_empty() && report.left_alone.is_some());
/// ```
pub fn analyse<R: ReadAt + ?Sized>(disk: &R, start: u64, len: u64) -> Result<FsReport, Error> {
    let region = Region::new(disk, start, len);
    let head = match region.read_vec(0, len.min(PROBE_BYTES), "signature probe") {
        Ok(h) => h,
        Err(Fail::Io(e)) => return Err(e),
        Err(Fail::Left(r)) => {
            let mut rep = FsReport::new(FsKind::Unknown);
            rep.left_alone = Some(r);
            return Ok(rep);
        }
    };
    let found = probe(&head);
    match found.as_slice() {
        [] => {
            let mut rep = FsReport::new(FsKind::Unknown);
            rep.left_alone = Some(Reason::NoFileSystem);
            Ok(rep)
        }
        [one] => run(&region, *one),
        many => {
            let mut rep = FsReport::new(FsKind::Unknown);
            let names: Vec<&str> = many.iter().map(|k| k.name()).collect();
            rep.left_alone = Some(Reason::Ambiguous(names.join(", ")));
            Ok(rep)
        }
    }
}

/// Runs one reader on `len` bytes at `start` of `disk` without probing the other
/// signatures (for tests and fuzzing; [`analyse`] is the one to use).
pub fn analyse_as<R: ReadAt + ?Sized>(
    disk: &R,
    start: u64,
    len: u64,
    family: Family,
) -> Result<FsReport, Error> {
    let region = Region::new(disk, start, len);
    let kind = match family {
        Family::Ext => FsKind::Ext4,
        Family::Fat => FsKind::Fat32,
        Family::Ntfs => FsKind::Ntfs,
        Family::Swap => FsKind::Swap,
    };
    run(&region, kind)
}

/// Every signature found in the first [`PROBE_BYTES`] of a partition.
pub fn probe(head: &[u8]) -> Vec<FsKind> {
    let mut found = Vec::new();
    if let Some(kind) = ext::detect(head) {
        found.push(kind);
    }
    if let Some(kind) = fat::detect(head) {
        found.push(kind);
    }
    if ntfs::detect(head) {
        found.push(FsKind::Ntfs);
    }
    if swap::detect(head) {
        found.push(FsKind::Swap);
    }
    found.extend(other::detect(head));
    found
}

fn run<R: ReadAt + ?Sized>(region: &Region<'_, R>, kind: FsKind) -> Result<FsReport, Error> {
    let mut rep = FsReport::new(kind);
    let result = match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => ext::analyse(region, &mut rep),
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => fat::analyse(region, &mut rep),
        FsKind::Ntfs => ntfs::analyse(region, &mut rep),
        FsKind::Swap => swap::analyse(region, &mut rep),
        other => other::analyse(region, other, &mut rep),
    };
    match result {
        Ok(runs) => {
            if runs.dropped {
                rep.warnings.push(format!(
                    "more than {} separate free runs; the rest counted as used",
                    ranges::MAX_RUNS
                ));
            }
            // Defence in depth: every free byte lies in the file system's own extent and
            // in the region; anything else means a reader bug, and the file system is
            // then left alone rather than trusted.
            let limit = rep.size.unwrap_or(0).min(region.len);
            if let Some(bad) = runs
                .ranges
                .iter()
                .find(|r| r.start >= r.end || r.end > limit)
            {
                rep.left_alone = Some(Reason::Corrupt(format!(
                    "internal: free run {}..{} outside the file system's {limit} bytes",
                    bad.start, bad.end
                )));
                return Ok(rep);
            }
            let mut free: Vec<Range<u64>> = Vec::with_capacity(runs.ranges.len());
            for r in runs.ranges {
                match (
                    region.start.checked_add(r.start),
                    region.start.checked_add(r.end),
                ) {
                    (Some(a), Some(b)) => free.push(a..b),
                    _ => {
                        rep.left_alone = Some(Reason::Corrupt("offset overflow".into()));
                        return Ok(rep);
                    }
                }
            }
            ranges::normalize(&mut free);
            rep.free = free;
            Ok(rep)
        }
        Err(Fail::Left(reason)) => {
            rep.free.clear();
            rep.left_alone = Some(reason);
            Ok(rep)
        }
        Err(Fail::Io(e)) => Err(e),
    }
}
