//! # vhdkit-format
//!
//! The VHD ("conectix") format: fixed, dynamic, differencing and host-drive disks.
//!
//! - `spec` (public with the `testing` feature, for the fuzz targets and tests): pure
//!   on-disk structures over byte slices (footer, dynamic header, parent locators, BAT,
//!   sector bitmaps, CHS geometry, checksum, host-drive stub header, Xen's batmap) and
//!   the one description of a sparse file's layout. No I/O, no `unsafe`. What a caller
//!   meets of it is re-exported here: [`Footer`], [`DynamicHeader`], [`ParentLocator`],
//!   [`Geometry`], [`Problem`], …, the limits [`DEFAULT_BLOCK_SIZE`],
//!   [`MIN_CREATE_SIZE`], [`MAX_CREATE_SIZE`] and [`check_create_block_size`].
//! - [`image`]: opening files (under the trust policy of `docs/security.md`), resolving
//!   differencing chains, reading and writing any virtual byte range crash-safely,
//!   creating disks, new files that appear only when complete.
//! - [`ops`]: the long operations as IVMTask2-style tasks ([`OpTask`]) — convert,
//!   compact, merge, merge-to, create, resize — and repair.
//! - [`volume`]: what a disk holds — partition tables and file systems, read with
//!   `vhdkit-volume` — for the shrink guard of a resize and file-system-aware
//!   operations.
//! - [`check`]: validation that reports every problem found; [`azure`]: the rules Azure
//!   applies to an uploaded VHD; [`info`]: what a disk is, the document of `vhdkit info
//!   --json` and Python's `info()`.
//! - [`error`]: the one error type, each kind mapped to a Virtual Server HRESULT.
//! - `vhdx` (public with the `testing` feature): the VHDX structures over byte slices,
//!   on which the VHDX container (`image/vhdx/`) and new VHDX files are built; the fuzz
//!   targets and tests use them.
//!
//! This crate is the one dependency a program needs: what a caller of the tasks meets
//! comes from `vhdkit-task` and is re-exported here ([`HResult`], [`TaskFailure`],
//! [`VMTaskResult`], [`TaskHandle`], [`ProgressEvent`], …; the whole crate as
//! [`task`]), as are the partition-table and file-system types of `vhdkit-volume`
//! (in [`volume`]).
//!
//! `unsafe` is denied everywhere but in the one module that memory-maps files and clones
//! extents (`image/map_clone.rs`, each block with its `// SAFETY:` argument); nothing it
//! maps is handed out of the crate.
//!
//! ```
//! use vhdkit_format::{CreateOptions, Disk, DiskKind};
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("disk.vhd");
//! let disk = Disk::create_and_open(&path, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).unwrap();
//! disk.write_at(b"hello", 1_000_000).unwrap();
//! disk.flush().unwrap();
//! let mut buf = [0u8; 5];
//! disk.read_at(&mut buf, 1_000_000).unwrap();
//! assert_eq!(&buf, b"hello");
//! assert_eq!(disk.virtual_size(), 8 << 20);
//! ```

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod azure;
pub mod check;
pub mod error;
pub mod image;
pub mod info;
pub mod ops;
pub mod report;
#[cfg(feature = "testing")]
pub mod spec;
// Complete descriptions of the structures: a few of their helpers and offsets only the
// tests, benches and fuzz targets call (with `testing`).
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unused_imports)]
mod spec;
#[cfg(feature = "testing")]
pub mod vhdx;
// The VHDX structures: the containers (`image/vhdx`, `image/newvhdx.rs`) use them;
// public only with `testing`, as `spec`.
#[cfg(not(feature = "testing"))]
#[allow(dead_code, unused_imports)]
mod vhdx;
pub mod volume;

pub use error::{Error, ErrorKind, Result};
pub use image::{CreateOptions, Disk, DiskKind, HostDrives, OpenOptions, VhdFile};
pub use ops::OpTask;
pub use spec::header::check_create_block_size;
pub use spec::locator::LocatorPath;
pub use spec::{
    Bat, DiskType, DynamicHeader, Footer, Geometry, HostDriveHeader, LengthError, ParentLocator,
    PlatformCode, Problem, Severity, VhdTime, DEFAULT_BLOCK_SIZE, MAX_BLOCK_SIZE, MAX_CREATE_SIZE,
    MIN_CREATE_BLOCK_SIZE, MIN_CREATE_SIZE,
};

/// The task crate (`vhdkit-task`), for what the re-exports below leave out: writing
/// a worker of your own ([`task::TaskBuilder`], [`task::TaskError`]), the
/// [`task::TaskRegistry`] of running tasks.
pub use vhdkit_task as task;
pub use vhdkit_task::{
    CancelToken, Cancelled, HResult, Phase, Progress, ProgressEvent, ProgressSnapshot,
    Subscription, TaskFailure, TaskHandle, VMTaskResult,
};
