//! What a disk holds: its partition table and file systems, read with `vhdkit-volume`
//! over the disk's virtual view — for the two checks that are policy, not presentation.
//!
//! - **A shrink must not cut a partition.** [`check_shrink`] reads the partition table
//!   and refuses a new size that ends inside or before the end of any partition (or of a
//!   file system spanning a disk without a table), and a disk whose table cannot be
//!   read; [`shrink_guard`] makes it the [`ShrinkGuard`] of a resize.
//! - **File-system-aware compaction and conversion** (`--fs-aware`): [`FsScan`] gives an
//!   operation the byte ranges no file system uses ([`Unused`]), scanned on the disk the
//!   operation opened, under its locks, and keeps the report of what was found.
//!
//! The format crate itself knows no file system: everything here asks `vhdkit-volume`,
//! whose types are re-exported so that this crate is the one dependency a caller needs.
//! [`DiskView`] is the bridge: a [`Disk`]'s virtual bytes as a [`ReadAt`].
//!
//! ```
//! use vhdkit_format::ops::{self, OpsOptions, ResizeOptions};
//! use vhdkit_format::volume::{self, TableKind};
//! use vhdkit_format::{CreateOptions, Disk, DiskKind, ErrorKind};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("disk.vhd");
//! let disk = Disk::create_and_open(&path, &CreateOptions::new(DiskKind::Dynamic, 64 << 20))?;
//! // An MBR with one Linux partition from 1 MiB to 40 MiB.
//! let mut mbr = [0u8; 512];
//! mbr[446 + 4] = 0x83;
//! mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
//! mbr[446 + 12..446 + 16].copy_from_slice(&(39u32 * 2048).to_le_bytes());
//! mbr[510..].copy_from_slice(&[0x55, 0xAA]);
//! disk.write_at(&mbr, 0)?;
//!
//! let table = volume::check_shrink(&disk, 48 << 20)?; // past the partition: fine
//! assert_eq!(table.kind, TableKind::Mbr);
//! let refusal = volume::check_shrink(&disk, 32 << 20).unwrap_err();
//! assert!(refusal.to_string().contains("would cut partition 1"));
//! drop(disk);
//!
//! // The same check, made by the resize before it writes anything.
//! let resize = ResizeOptions {
//!     size: Some(32 << 20),
//!     allow_shrink: true,
//!     shrink_guard: Some(volume::shrink_guard()),
//!     ..ResizeOptions::default()
//! };
//! let refused = ops::resize_task(&path, &resize, &OpsOptions::default()).unwrap_err();
//! assert_eq!(refused.kind(), ErrorKind::NotAllowed);
//! # Ok(()) }
//! ```

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use vhdkit_task::Progress;

use crate::image::Disk;
use crate::ops::resize::ShrinkGuard;
use crate::ops::{Unused, UnusedRanges};

pub use vhdkit_volume::table::{Entry, Table};
pub use vhdkit_volume::{
    fs, table, DiskReport, Error, FsKind, FsReport, Partition, PartitionType, ReadAt, Reason,
    TableKind,
};

/// A [`Disk`]'s virtual bytes as a [`ReadAt`], for `vhdkit-volume`. With a progress,
/// each read counts its bytes (so a long scan is not silent) and a cancelled task stops
/// the scan at its next read.
///
/// ```
/// use vhdkit_format::volume::{DiskView, ReadAt};
/// use vhdkit_format::{CreateOptions, Disk, DiskKind};
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("disk.vhd");
/// let disk = Disk::create_and_open(&path, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).unwrap();
/// let view = DiskView::new(&disk);
/// assert_eq!(view.size().unwrap(), 8 << 20);
/// // Anything vhdkit-volume reads, it reads through the view.
/// let table = vhdkit_format::volume::table::read_table(&view).unwrap();
/// assert!(table.entries.is_empty());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DiskView<'a> {
    disk: &'a Disk,
    progress: Option<&'a Progress>,
}

impl<'a> DiskView<'a> {
    /// The view of `disk`.
    pub fn new(disk: &'a Disk) -> DiskView<'a> {
        DiskView {
            disk,
            progress: None,
        }
    }

    /// The view of `disk` inside an operation's task: each read counts its bytes on
    /// `progress` and fails once the task is cancelled.
    pub fn with_progress(disk: &'a Disk, progress: &'a Progress) -> DiskView<'a> {
        DiskView {
            disk,
            progress: Some(progress),
        }
    }
}

impl ReadAt for DiskView<'_> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.disk.virtual_size())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(p) = self.progress {
            if p.is_cancelled() {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
            }
            p.add_blocks_done(0, buf.len() as u64);
        }
        self.disk.read_at(buf, offset).map_err(io::Error::other)
    }
}

/// Reads `disk`'s partition table (MBR, GPT, none with a file system spanning the
/// disk, or nothing recognised).
pub fn partition_table(disk: &Disk) -> Result<Table, Error> {
    table::read_table(&DiskView::new(disk))
}

/// Reads `disk`'s partition table and every partition's file system: per partition,
/// the free byte ranges, or why it was left alone (all of it counts as used). Only a
/// failing read of the disk is an error.
pub fn scan(disk: &Disk) -> Result<DiskReport, Error> {
    vhdkit_volume::scan(&DiskView::new(disk))
}

/// Why a shrink would damage what the disk holds ([`check_shrink`]).
#[derive(Debug, thiserror::Error)]
pub enum ShrinkRefusal {
    /// The partition table cannot be read, so a shrink could cut a partition.
    #[error("its partition table cannot be read ({0}), so a shrink could cut a partition")]
    Unreadable(Error),
    /// Partitions (or a file system spanning a disk without a table) end past the new
    /// size.
    #[error(
        "shrinking to {new_size} bytes would cut {}; shrink the file system and the partition first, then the disk",
        describe_cut(*.table, .cut)
    )]
    CutsPartitions {
        /// The size asked for.
        new_size: u64,
        /// The table's kind ([`TableKind::WholeDisk`]: a file system without a table).
        table: TableKind,
        /// The entries that end past `new_size`, in table order.
        cut: Vec<Entry>,
    },
}

/// `partition 1 (bytes 1048576..41943040, Linux), …`.
fn describe_cut(table: TableKind, cut: &[Entry]) -> String {
    cut.iter()
        .map(|e| {
            let what = if table == TableKind::WholeDisk {
                "a file system without a partition table".to_owned()
            } else {
                format!("partition {}", e.index)
            };
            format!(
                "{what} (bytes {}..{}, {})",
                e.start,
                e.start.saturating_add(e.len),
                e.ptype.name()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that shrinking `disk` to `new_size` bytes cuts no partition: every entry of
/// its partition table (or a file system spanning a disk without one) must end at or
/// before `new_size`. A disk whose table cannot be read is refused (a shrink could cut
/// a partition); a disk with no table recognised has nothing to cut.
///
/// Returns the table, for what the caller says next (a GPT's backup header lies in the
/// table's last sectors, [`Table::reserved`], which a shrink cuts).
pub fn check_shrink(disk: &Disk, new_size: u64) -> Result<Table, ShrinkRefusal> {
    let table = partition_table(disk).map_err(ShrinkRefusal::Unreadable)?;
    let cut: Vec<Entry> = table
        .entries
        .iter()
        .filter(|e| e.start.saturating_add(e.len) > new_size)
        .cloned()
        .collect();
    if cut.is_empty() {
        Ok(table)
    } else {
        Err(ShrinkRefusal::CutsPartitions {
            new_size,
            table: table.kind,
            cut,
        })
    }
}

/// [`check_shrink`] as the [`ShrinkGuard`] of a resize
/// ([`ResizeOptions::shrink_guard`](crate::ops::ResizeOptions::shrink_guard)): the
/// resize asks it, on the disk it opened for writing, before it writes anything, and
/// refuses with [`Error::NotAllowed`](crate::Error::NotAllowed) (`E_ACCESSDENIED`)
/// naming the partitions. The `vhdkit resize` command always sets it.
pub fn shrink_guard() -> ShrinkGuard {
    Arc::new(|disk: &Disk, new_size: u64| {
        check_shrink(disk, new_size)
            .map(drop)
            .map_err(|refusal| refusal.to_string())
    })
}

/// File-system-aware operations (`--fs-aware`): the scan an operation runs on the disk
/// it opened, and the report of what it found there.
///
/// [`unused`](Self::unused) is the [`OpsOptions::unused_ranges`] of a compact, convert,
/// merge-to or measure; once the operation ran, [`report`](Self::report) says what each
/// partition held and why one was left alone. Clones share the report.
///
/// ```
/// use vhdkit_format::ops::{self, OpsOptions};
/// use vhdkit_format::volume::{FsScan, TableKind};
/// use vhdkit_format::{CreateOptions, Disk, DiskKind};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let path = dir.path().join("blank.vhd");
/// Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 16 << 20))?;
/// let fs = FsScan::new();
/// let opts = OpsOptions { unused_ranges: Some(fs.unused()), ..OpsOptions::default() };
/// let report = ops::compact_task(&path, &opts)?.join()?;
/// // A blank disk: no table, no file system, nothing released for one.
/// assert_eq!(fs.report().map(|r| r.table), Some(TableKind::Unrecognised));
/// assert_eq!(report.blocks_unused, 0);
/// # Ok(()) }
/// ```
///
/// [`OpsOptions::unused_ranges`]: crate::ops::OpsOptions::unused_ranges
#[derive(Debug, Clone, Default)]
pub struct FsScan {
    found: Arc<Mutex<Option<DiskReport>>>,
}

impl FsScan {
    /// A scan not run yet.
    pub fn new() -> FsScan {
        FsScan::default()
    }

    /// The unused ranges for an operation: an [`Unused::Scan`] that reads the partition
    /// table and file systems of the disk the operation opens (counting its reads as
    /// progress, stopping when cancelled) and keeps the report for
    /// [`report`](Self::report).
    pub fn unused(&self) -> Unused {
        let found = Arc::clone(&self.found);
        Unused::Scan(Arc::new(move |disk: &Disk, progress: &Progress| {
            let report = vhdkit_volume::scan(&DiskView::with_progress(disk, progress))
                .map_err(io::Error::other)?;
            let ranges = UnusedRanges::new(report.free_ranges());
            *found.lock().unwrap_or_else(PoisonError::into_inner) = Some(report);
            Ok(ranges)
        }))
    }

    /// What the scan found, once an operation ran it.
    pub fn report(&self) -> Option<DiskReport> {
        self.found
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
