//! # vhdkit-format
//!
//! The VHD ("conectix") format: fixed, dynamic, differencing and host-drive disks.
//!
//! - [`spec`]: pure on-disk structures over byte slices (footer, dynamic header, parent
//!   locators, BAT, sector bitmaps, CHS geometry, checksum, host-drive stub header, Xen's
//!   batmap) and the one description of a sparse file's layout. No I/O, no `unsafe`.
//! - [`image`]: opening files (under the trust policy of `docs/security.md`), resolving
//!   differencing chains, reading and writing any virtual byte range crash-safely,
//!   creating disks, new files that appear only when complete.
//! - [`ops`]: the long operations as IVMTask2-style tasks ([`OpTask`]) — convert,
//!   compact, merge, merge-to, create, resize — and repair.
//! - [`volume`]: what a disk holds — partition tables and file systems, read with
//!   `vhdkit-volume` — for the shrink guard of a resize and file-system-aware
//!   operations.
//! - [`check`]: validation that reports every problem found; [`azure`]: the rules Azure
//!   applies to an uploaded VHD.
//! - [`error`]: the one error type, each kind mapped to a Virtual Server HRESULT.
//!
//! This crate is the one dependency a program needs: what a caller of the tasks meets
//! comes from `vhdkit-task` and is re-exported here ([`HResult`], [`TaskFailure`],
//! [`VMTaskResult`], [`TaskHandle`], [`ProgressEvent`], …; the whole crate as
//! [`task`]), as are the partition-table and file-system types of `vhdkit-volume`
//! (in [`volume`]).
//!
//! `unsafe` is denied everywhere but in the one module that memory-maps files
//! (`image/mmap.rs`, each block with its `// SAFETY:` argument).
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
pub mod ops;
pub mod spec;
pub mod vhdx;
pub mod volume;

pub use error::{Error, ErrorKind, Result};
pub use image::{CreateOptions, Disk, DiskKind, HostDrives, OpenOptions, VhdFile};
pub use ops::OpTask;

/// The task crate (`vhdkit-task`), for what the re-exports below leave out: writing
/// a worker of your own ([`task::TaskBuilder`], [`task::TaskError`]), the
/// [`task::TaskRegistry`] of running tasks.
pub use vhdkit_task as task;
pub use vhdkit_task::{
    CancelToken, Cancelled, HResult, Phase, Progress, ProgressEvent, ProgressSnapshot,
    Subscription, TaskFailure, TaskHandle, VMTaskResult,
};
