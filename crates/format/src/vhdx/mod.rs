//! The VHDX format (MS-VHDX, Hyper-V's disk format since Windows Server 2012) as pure
//! structures over byte slices: decode, validate, encode. No file I/O, no `unsafe`, no
//! threads, so every part is fuzzable as is; the container that opens files and reads
//! and writes through these structures is built on top (it needs the container trait
//! of issue 21).
//!
//! One file per on-disk structure family, in the order they appear in a file:
//!
//! | file | what |
//! |---|---|
//! | [`ident`] | the file type identifier (`vhdxfile`, creator) at offset 0 |
//! | [`header`] | the two headers at 64 KiB and 128 KiB, choosing the current one |
//! | [`region`] | the two region tables at 192 KiB and 256 KiB (BAT, metadata) |
//! | [`metadata`] | the metadata table and its system items (file parameters, sizes, page 83 id) |
//! | [`locator`] | the parent locator item and its key-value pairs |
//! | [`bat`] | BAT entries, payload and sector-bitmap states, the chunk ratio |
//! | [`log`] | log entries, the active sequence, replay as a pure function, the entry encoder |
//! | [`layout`] | where everything lies: a new file's layout and an existing file's areas |
//! | [`parse`] | a whole file in memory decoded in one call (tests, fuzzing, `check`) |
//!
//! Every record has two types (habit 1 of `style.md`): a raw one holding every field as
//! stored (`Raw*`, decoding fails only on length) and a validated domain type built by
//! `validate`, which returns a [`VhdxError`] naming the structure, the file offset, what
//! was found and what was expected; `problems` returns every problem instead of the
//! first. `encode` writes a domain value back with fresh checksums, so that
//! `decode(encode(x)) == x`.
//!
//! Numbers are little-endian; GUIDs are stored in Microsoft's mixed-endian layout (the
//! first three fields little-endian, the last eight bytes as is), which is
//! [`Uuid::from_bytes_le`]. `docs/vhdx.md` says where qemu-img's files differ from
//! Hyper-V's and which decisions were taken here.
//!
//! A new dynamic file, built from its layout and decoded back:
//!
//! ```
//! use vhdkit_format::vhdx::{DiskType, NewVhdx, ParsedVhdx, PayloadState};
//!
//! let layout = NewVhdx::new(DiskType::Dynamic, 64 << 20).layout().unwrap();
//! let mut file = vec![0u8; layout.file_len as usize];
//! let metadata = layout.metadata(uuid::Uuid::new_v4(), None);
//! for (at, bytes) in layout.initial_writes(&layout.header(), &metadata) {
//!     file[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
//! }
//! let parsed = ParsedVhdx::decode(&file).unwrap();
//! assert_eq!(parsed.metadata.virtual_size, 64 << 20);
//! assert_eq!(parsed.metadata.file_parameters.block_size, 32 << 20);
//! assert_eq!(parsed.bat.payload(0).unwrap().state, Some(PayloadState::NotPresent));
//! ```

use byteorder::{ByteOrder, LittleEndian};
use uuid::Uuid;

pub mod bat;
pub mod error;
pub mod header;
pub mod ident;
pub mod layout;
pub mod locator;
pub mod log;
pub mod metadata;
pub mod parse;
pub mod region;

pub use bat::{BatEntry, BatGeometry, PayloadState, SectorBitmapState};
pub use error::{Structure, VhdxError};
pub use header::{CurrentHeader, Header, HeaderSlot};
pub use ident::FileIdentifier;
pub use layout::{DiskType, FileAreas, NewVhdx, VhdxLayout};
pub use locator::ParentLocator;
pub use metadata::{FileParameters, Metadata};
pub use parse::ParsedVhdx;
pub use region::{Region, RegionTable};

/// One kibibyte.
pub const KIB: u64 = 1024;
/// One mebibyte: the unit of region, log and block placement.
pub const MIB: u64 = 1024 * 1024;

/// Every region, the log and every payload and sector-bitmap block start on a multiple
/// of this (MS-VHDX 2.2, 2.5).
pub const ALIGNMENT: u64 = MIB;

/// The header section: file identifier, two headers, two region tables and reserved
/// space fill the first mebibyte. Nothing else may lie there.
pub const HEADER_SECTION_SIZE: u64 = MIB;

/// Largest virtual disk the format allows: 64 TiB.
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;

/// The GUID stored little-endian (mixed-endian) at `b[at..at + 16]`.
pub(crate) fn guid_at(b: &[u8], at: usize) -> Uuid {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&b[at..at + 16]);
    Uuid::from_bytes_le(raw)
}

/// Stores `g` in the VHDX (mixed-endian) layout at `b[at..at + 16]`.
pub(crate) fn put_guid(b: &mut [u8], at: usize, g: &Uuid) {
    b[at..at + 16].copy_from_slice(&g.to_bytes_le());
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    LittleEndian::read_u16(&b[at..at + 2])
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    LittleEndian::read_u32(&b[at..at + 4])
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    LittleEndian::read_u64(&b[at..at + 8])
}

pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) {
    LittleEndian::write_u16(&mut b[at..at + 2], v);
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    LittleEndian::write_u32(&mut b[at..at + 4], v);
}

pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    LittleEndian::write_u64(&mut b[at..at + 8], v);
}

/// CRC-32C (Castagnoli) of `bytes` with the four bytes at `checksum_at` taken as zero,
/// as every VHDX checksum is computed.
pub(crate) fn crc32c_with_zeroed_field(bytes: &[u8], checksum_at: usize) -> u32 {
    let crc = crc32c::crc32c(&bytes[..checksum_at]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &bytes[checksum_at + 4..])
}

/// Stores the CRC-32C of `bytes` (with the field zeroed) at `checksum_at`.
pub(crate) fn seal(bytes: &mut [u8], checksum_at: usize) {
    let crc = crc32c_with_zeroed_field(bytes, checksum_at);
    put_u32(bytes, checksum_at, crc);
}

/// Rounds `n` up to a multiple of `unit` (a power of two), `None` on overflow.
pub(crate) fn round_up(n: u64, unit: u64) -> Option<u64> {
    n.checked_add(unit - 1).map(|v| v & !(unit - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_stored_mixed_endian() {
        let g = Uuid::parse_str("2dc27766-f623-4200-9d64-115e9bfd4a08").unwrap();
        let mut b = [0u8; 16];
        put_guid(&mut b, 0, &g);
        assert_eq!(
            b,
            [
                0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd,
                0x4a, 0x08
            ]
        );
        assert_eq!(guid_at(&b, 0), g);
    }

    #[test]
    fn crc32c_with_zeroed_field_ignores_the_stored_checksum() {
        let mut a = vec![7u8; 64];
        let before = crc32c_with_zeroed_field(&a, 4);
        a[4..8].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(crc32c_with_zeroed_field(&a, 4), before);
        let mut z = vec![7u8; 64];
        z[4..8].fill(0);
        assert_eq!(before, crc32c::crc32c(&z));
        // The check value of CRC-32C ("123456789" → 0xe3069283).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn round_up_rounds_and_refuses_overflow() {
        assert_eq!(round_up(1, MIB), Some(MIB));
        assert_eq!(round_up(MIB, MIB), Some(MIB));
        assert_eq!(round_up(0, MIB), Some(0));
        assert_eq!(round_up(u64::MAX, MIB), None);
    }
}
