//! Errors (the disk could not be read) and reasons (a partition is left alone).

use std::fmt;
use std::io;

/// The disk itself could not be read: the only failure of a scan.
///
/// Anything wrong *inside* the disk (a damaged table, an unknown or inconsistent file
/// system) is not an error: the space is reported as used, with a [`Reason`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk's size could not be learned.
    #[error("reading the disk size: {source}")]
    Size {
        /// What the reader said.
        #[source]
        source: io::Error,
    },
    /// A read inside the disk failed.
    #[error("reading {what} ({len} bytes at disk offset {offset}): {source}")]
    Read {
        /// The structure being read.
        what: &'static str,
        /// Absolute byte offset on the disk.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// What the reader said.
        #[source]
        source: io::Error,
    },
}

/// Why a partition (or the whole disk) was left alone: all of its bytes count as used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "reason", content = "detail", rename_all = "snake_case")
)]
pub enum Reason {
    /// The partition type is not one known to hold a file system directly (LVM, RAID,
    /// encrypted, vendor types...).
    UnknownPartitionType,
    /// An extended MBR partition: a container whose logical partitions are reported on
    /// their own.
    Container,
    /// No file system that this crate reads was recognised.
    NoFileSystem,
    /// More than one file-system signature was found; which one is live is not guessed.
    Ambiguous(String),
    /// The file system was recognised but its allocation map is not read (XFS, exFAT,
    /// btrfs...) or it uses a feature that changes the map's meaning (ext4 bigalloc).
    Unsupported(String),
    /// The file system says it is not clean (needs recovery, dirty, errors, hibernated).
    NotClean(String),
    /// The file system claims more bytes than its partition holds.
    SizeMismatch {
        /// Bytes the file system claims.
        fs_size: u64,
        /// Bytes the partition holds.
        partition_size: u64,
    },
    /// A structure of the file system is inconsistent or points outside it.
    Corrupt(String),
    /// The partition overlaps another partition or the partition table's own sectors, or
    /// lies outside the disk.
    BadExtent(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::UnknownPartitionType => {
                f.write_str("partition type not known to hold a file system directly")
            }
            Reason::Container => {
                f.write_str("extended partition (container of logical partitions)")
            }
            Reason::NoFileSystem => f.write_str("no known file system"),
            Reason::Ambiguous(what) => write!(f, "ambiguous file-system signatures: {what}"),
            Reason::Unsupported(what) => write!(f, "allocation map not read: {what}"),
            Reason::NotClean(what) => write!(f, "file system not clean: {what}"),
            Reason::SizeMismatch {
                fs_size,
                partition_size,
            } => write!(
                f,
                "file system claims {fs_size} bytes but its partition holds {partition_size}"
            ),
            Reason::Corrupt(what) => write!(f, "inconsistent file system: {what}"),
            Reason::BadExtent(what) => write!(f, "bad partition extent: {what}"),
        }
    }
}

/// How a file-system analysis failed: the disk could not be read (an [`Error`]), or the
/// file system is to be left alone (a [`Reason`]).
#[derive(Debug)]
pub(crate) enum Fail {
    Io(Error),
    Left(Reason),
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Io(e)
    }
}

impl From<Reason> for Fail {
    fn from(r: Reason) -> Self {
        Fail::Left(r)
    }
}

/// Shorthand: a [`Reason::Corrupt`] as a failure.
pub(crate) fn corrupt(msg: impl Into<String>) -> Fail {
    Fail::Left(Reason::Corrupt(msg.into()))
}

/// Shorthand: a [`Reason::Unsupported`] as a failure.
pub(crate) fn unsupported(msg: impl Into<String>) -> Fail {
    Fail::Left(Reason::Unsupported(msg.into()))
}
