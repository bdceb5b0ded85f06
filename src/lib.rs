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
/// `KB` and `k` mean the same). A number with a unit may have a decimal fraction
/// (`1.5G`, as `qemu-img` takes): the bytes it comes to are rounded up to a whole
/// 512-byte sector. A count of bytes is whole.
///
/// ```
/// use vhdkit::parse_size;
/// assert_eq!(parse_size("3M"), Ok(3 << 20));
/// assert_eq!(parse_size("2GiB"), Ok(2 << 30));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// assert_eq!(parse_size("1.5G"), Ok(3 << 29));
/// // 10.3 MiB is 21094.4 sectors: rounded up to 21095.
/// assert_eq!(parse_size("10.3M"), Ok(21095 * 512));
/// assert!(parse_size("12X").is_err());
/// assert!(parse_size("1.5").is_err());
/// assert!(parse_size("99999999999999999999.5T").is_err());
/// ```
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    const SECTOR: u128 = 512;
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let (whole, fraction) = match num.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (num, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(format!(
            "invalid size {s:?}: expected a number of bytes, or a number with an optional decimal fraction and a K/M/G/T suffix (1.5G)"
        ));
    }
    let n: u64 = whole
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
    let too_large = || format!("invalid size {s:?}: too large");
    let Some(fraction) = fraction else {
        return n.checked_mul(1u64 << shift).ok_or_else(too_large);
    };
    if shift == 0 {
        return Err(format!(
            "invalid size {s:?}: bytes are whole; a fraction needs a unit (K, M, G or T)"
        ));
    }
    // Exact decimal arithmetic: (whole + fraction / 10^k) × unit, in sectors, rounded
    // up. 18 digits keep every product inside u128.
    let k = u32::try_from(fraction.len())
        .ok()
        .filter(|&k| k <= 18)
        .ok_or_else(|| format!("invalid size {s:?}: more than 18 decimals"))?;
    let f: u128 = fraction.parse().map_err(|_| too_large())?;
    let scale = 10u128.pow(k);
    let scaled = u128::from(n)
        .checked_mul(scale)
        .and_then(|v| v.checked_add(f))
        .and_then(|v| v.checked_mul(1u128 << shift))
        .ok_or_else(too_large)?;
    let sectors = scaled.div_ceil(scale * SECTOR);
    u64::try_from(sectors * SECTOR).map_err(|_| too_large())
}

/// The README's library example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
