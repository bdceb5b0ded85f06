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

/// Parses a size: bytes, or a number with a K/M/G/T suffix (powers of 1024; `KiB`,
/// `KB` and `k` mean the same).
///
/// ```
/// use vhdkit::parse_size;
/// assert_eq!(parse_size("3M"), Ok(3 << 20));
/// assert_eq!(parse_size("2GiB"), Ok(2 << 30));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// assert!(parse_size("12X").is_err());
/// ```
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid size {s:?}: expected a number of bytes with an optional K/M/G/T suffix"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: number too large"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown suffix {suffix:?} (use K, M, G or T)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// The README's library example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
