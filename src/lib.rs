//! # vhdkit
//!
//! A Rust engine for VHD ("conectix") virtual disks — fixed, dynamic, differencing and
//! host-drive — and the `vhdkit` command line on top of it. This crate re-exports the
//! libraries:
//!
//! - [`format`](mod@format) (`vhdkit-format`): on-disk structures, images, chains, create, check.
//! - [`task`] (`vhdkit-task`): IVMTask2-style background tasks with progress and cancel.
//! - [`serve`] (`vhdkit-serve`): an NBD server for any disk or chain.
//!
//! ```
//! use vhdkit::format::{CreateOptions, Disk, DiskKind};
//! # let dir = tempfile::tempdir().unwrap();
//! let base = dir.path().join("base.vhd");
//! Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 16 << 20)).unwrap();
//! let child = dir.path().join("child.vhd");
//! Disk::create(&child, &CreateOptions::differencing(&base)).unwrap();
//! let disk = Disk::open_rw(&child).unwrap();
//! disk.write_at(b"written in the child", 4096).unwrap();
//! disk.flush().unwrap();
//! assert_eq!(disk.layers().len(), 2);
//! ```

pub use vhdkit_format as format;
pub use vhdkit_serve as serve;
pub use vhdkit_task as task;

/// The README's library example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
