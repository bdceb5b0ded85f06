//! Pure on-disk structures of the VHD format, over byte slices.
//!
//! Nothing in this module does I/O, spawns threads or uses `unsafe`; every decoder is
//! total (it fails only on a wrong input length and never panics), so the whole module
//! can be fuzzed as is. The layering follows one rule: **decode, then validate, then
//! use**. `decode` turns bytes into a domain value without judging it; `validate`
//! returns every problem found, each a [`Problem`] saying what was found and what was
//! expected; `encode` writes the value back, recomputing its checksum.

pub mod bat;
pub mod batmap;
pub mod bitmap;
pub mod checksum;
pub mod footer;
pub mod geometry;
pub mod header;
pub mod hostdrive;
pub mod layout;
pub mod locator;
pub mod sniff;
pub mod time;

pub use bat::{Bat, BAT_ENTRY_UNUSED};
pub use bitmap::SectorBitmap;
pub use checksum::ones_complement_checksum;
pub use footer::{DiskType, Footer, FOOTER_COOKIE, FOOTER_SIZE};
pub use geometry::Geometry;
pub use header::{DynamicHeader, HEADER_COOKIE, HEADER_SIZE};
pub use hostdrive::{HostDriveHeader, HOST_DRIVE_COOKIE, HOST_DRIVE_HEADER_SIZE};
pub use layout::SparseLayout;
pub use locator::{ParentLocator, PlatformCode, LOCATOR_COUNT};
pub use time::VhdTime;

/// Bytes per sector. VHD v1 knows no other sector size.
pub const SECTOR_SIZE: u64 = 512;

/// The smallest disk vhdkit creates: 3 MiB (Virtual Server's `CreateFixedVirtualHardDisk`
/// lower bound).
pub const MIN_CREATE_SIZE: u64 = 3 * 1024 * 1024;

/// The largest fixed or dynamic disk vhdkit creates: 2040 GiB (0xFF000000 sectors), the
/// limit of Virtual Server's API and of qemu's `vpc` driver.
pub const MAX_CREATE_SIZE: u64 = 2040 * 1024 * 1024 * 1024;

/// Default data block size of dynamic and differencing disks: 2 MiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 2 * 1024 * 1024;

/// Smallest block size accepted: one sector.
pub const MIN_BLOCK_SIZE: u32 = 512;

/// Smallest block size vhdkit writes: 4 KiB. Below it a block's bitmap holds less than a
/// byte of bits, and most readers (qemu, dissect, azure-vhd-utils, Bochs, the Rust `vhd`
/// crate) read wrong data while libvhdi refuses the disk. Windows creates only 512 KiB
/// and 2 MiB blocks; blktap only 2 MiB.
pub const MIN_CREATE_BLOCK_SIZE: u32 = 4096;

/// Largest block size accepted on read and create: 256 MiB. The specification only asks
/// for a power of two; larger blocks make every allocation enormous and no known writer
/// produces them.
pub const MAX_BLOCK_SIZE: u32 = 256 * 1024 * 1024;

/// Most BAT entries vhdkit writes into a disk it creates: 2^26 (a 256 MiB table). Reading
/// accepts any table the file holds; creating refuses block sizes so small for the disk
/// that the table alone would take gigabytes of memory and disk.
pub const MAX_CREATE_BAT_ENTRIES: u64 = 1 << 26;

/// Creator application vhdkit writes into every footer it creates.
///
/// qemu-img 10 sizes a disk by its CHS geometry only when the creator is `vpc ` or
/// `qemu`; for every other creator it takes the footer's current size, as libvhdi,
/// Hyper-V and VirtualBox do. An application id of our own therefore lets every reader
/// agree on the exact size while the geometry stays the specification's.
pub const CREATOR_APP: [u8; 4] = *b"vhdk";

/// Creator version vhdkit writes: major in the high 16 bits, minor in the low.
pub const CREATOR_VERSION: u32 = 0x0001_0000;

/// Creator host OS vhdkit writes (`Wi2k`, what every known writer stores).
pub const CREATOR_HOST_OS: [u8; 4] = *b"Wi2k";

/// The one file format version that exists (1.0), in footer and dynamic header alike.
pub const FORMAT_VERSION: u32 = 0x0001_0000;

/// How serious a problem found by validation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; the image is fine.
    Info,
    /// Deviates from the specification but can be read safely.
    Warning,
    /// The structure cannot be trusted; opening refuses it — or, for a link of a chain
    /// that vhdkit opens anyway (a parent of another size, a parent id overridden),
    /// other readers do.
    Error,
}

/// One problem found while validating a structure: what was found, what was expected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// How serious it is.
    pub severity: Severity,
    /// The structure it was found in (`footer`, `dynamic header`, `BAT`, …).
    pub structure: &'static str,
    /// The field, e.g. `checksum`.
    pub field: &'static str,
    /// Byte offset in the file where the structure or field lives, when known.
    pub offset: Option<u64>,
    /// What was found and what was expected, in words.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(
        severity: Severity,
        structure: &'static str,
        field: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            severity,
            structure,
            field,
            offset: None,
            message: message.into(),
        }
    }

    /// The same problem, located at `offset` in the file.
    pub fn at(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{sev}: {}", self.detail())
    }
}

impl Problem {
    /// The problem without its severity — `dynamic header checksum (offset 0x200):
    /// …` — for text that states a severity of its own (an opening warning: "warning:
    /// error: …" would say two things).
    pub fn detail(&self) -> String {
        let at = self
            .offset
            .map(|off| format!(" (offset {off:#x})"))
            .unwrap_or_default();
        format!("{} {}{at}: {}", self.structure, self.field, self.message)
    }
}

/// A structure was handed a byte slice of the wrong length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{structure} needs {expected} bytes, got {found}")]
pub struct LengthError {
    /// The structure being decoded.
    pub structure: &'static str,
    /// Bytes needed.
    pub expected: usize,
    /// Bytes given.
    pub found: usize,
}

/// Rounds `n` up to a multiple of the sector size, or `None` on overflow.
pub fn round_up_to_sector(n: u64) -> Option<u64> {
    n.checked_add(SECTOR_SIZE - 1)
        .map(|v| v / SECTOR_SIZE * SECTOR_SIZE)
}

pub(crate) fn fixed<'a, const N: usize>(
    bytes: &'a [u8],
    structure: &'static str,
) -> Result<&'a [u8; N], LengthError> {
    bytes.try_into().map_err(|_| LengthError {
        structure,
        expected: N,
        found: bytes.len(),
    })
}

/// Renders four raw bytes (a creator application or host OS code) for people: printable
/// ASCII as is, anything else as `\xNN`.
pub fn fourcc_to_string(code: [u8; 4]) -> String {
    let mut s = String::new();
    for b in code {
        if (0x20..0x7f).contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}
