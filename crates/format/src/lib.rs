//! # vhdkit-format
//!
//! The VHD ("conectix") format: fixed, dynamic, differencing and host-drive disks.
//!
//! - [`spec`]: pure on-disk structures over byte slices (footer, dynamic header, parent
//!   locators, BAT, sector bitmaps, CHS geometry, checksum, host-drive stub header).
//! - [`image`]: opening files, resolving differencing chains, reading and writing any
//!   virtual byte range, creating disks.
//! - [`check`]: validation that reports every problem found.
//!
//! ```
//! use vhdkit_format::{CreateOptions, Disk, DiskKind};
//! # let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("disk.vhd");
//! Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).unwrap();
//! let disk = Disk::open_rw(&path).unwrap();
//! disk.write_at(b"hello", 1_000_000).unwrap();
//! disk.flush().unwrap();
//! let mut buf = [0u8; 5];
//! disk.read_at(&mut buf, 1_000_000).unwrap();
//! assert_eq!(&buf, b"hello");
//! assert_eq!(disk.virtual_size(), 8 << 20);
//! ```

#![warn(missing_docs)]

pub mod check;
pub mod error;
pub mod image;
pub mod ops;
pub mod spec;

pub use error::{Error, ErrorKind, Result};
pub use image::{CreateOptions, Disk, DiskKind, HostDrives, OpenOptions, VhdFile};
