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
//! - [`ops`]: the long operations as IVMTask2-style tasks — convert, compact, merge,
//!   merge-to, create — and repair.
//! - [`check`]: validation that reports every problem found; [`azure`]: the rules Azure
//!   applies to an uploaded VHD.
//! - [`error`]: the one error type, each kind mapped to a Virtual Server HRESULT.
//!
//! `unsafe` is denied everywhere but in the one module that memory-maps files
//! (`image/mmap.rs`, each block with its `// SAFETY:` argument).
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
#![deny(unsafe_code)]

pub mod azure;
pub mod check;
pub mod error;
pub mod image;
pub mod ops;
pub mod spec;
pub mod vhdx;

pub use error::{Error, ErrorKind, Result};
pub use image::{CreateOptions, Disk, DiskKind, HostDrives, OpenOptions, VhdFile};
