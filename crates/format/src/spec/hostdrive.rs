//! vhdkit's host-drive stub header: the record that links a `.vhd` stub to a host block
//! device (or, for tests, a regular file) whose bytes are the disk.
//!
//! No public source documents the original Virtual Server layout, so vhdkit owns this
//! one; `docs/host-drive.md` in the repository has the byte table. The stub is
//! `[footer copy][this header][footer]`, 2048 bytes; the footer's disk type is the
//! reserved code 5 and its data offset points at this header, whose cookie is not
//! `cxsparse`, so other readers refuse the stub.

use byteorder::{BigEndian, ByteOrder};

use super::{fixed, ones_complement_checksum, LengthError, Problem, Severity};

/// Size of the host-drive header.
pub const HOST_DRIVE_HEADER_SIZE: usize = 1024;
/// Magic at offset 0 of the host-drive header.
pub const HOST_DRIVE_COOKIE: [u8; 8] = *b"vhdkhost";
/// Version of the layout.
pub const HOST_DRIVE_VERSION: u32 = 0x0001_0000;
/// Flag bit 0: the link is read-only.
pub const HOST_DRIVE_FLAG_READ_ONLY: u32 = 0x1;
/// Offset of the checksum field.
pub const HOST_DRIVE_CHECKSUM_OFFSET: usize = 32;
/// Offset of the device path.
pub const HOST_DRIVE_PATH_OFFSET: usize = 64;
/// Largest device path in bytes (UTF-8).
pub const HOST_DRIVE_PATH_MAX: usize = HOST_DRIVE_HEADER_SIZE - HOST_DRIVE_PATH_OFFSET;
/// Bytes hashed at each end of the device for the identity check: 1 MiB.
pub const HOST_DRIVE_IDENTITY_SPAN: u32 = 1024 * 1024;

/// The decoded host-drive header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDriveHeader {
    /// `vhdkhost` in a valid header.
    pub cookie: [u8; 8],
    /// Layout version.
    pub version: u32,
    /// Flags (bit 0: read-only).
    pub flags: u32,
    /// Size of the device when it was linked, bytes.
    pub device_size: u64,
    /// CRC32 of the first and last `identity_span` bytes of the device.
    pub identity_crc: u32,
    /// Bytes hashed at each end.
    pub identity_span: u32,
    /// Checksum as stored.
    pub checksum: u32,
    /// Device path, UTF-8.
    pub device_path: String,
}

impl HostDriveHeader {
    /// Decodes 1024 bytes; fails only on length. A path that is not UTF-8 is decoded
    /// lossily (validation reports it).
    pub fn decode(bytes: &[u8]) -> Result<HostDriveHeader, LengthError> {
        let b: &[u8; HOST_DRIVE_HEADER_SIZE] = fixed(bytes, "host-drive header")?;
        let mut cookie = [0; 8];
        cookie.copy_from_slice(&b[0..8]);
        let len = usize::from(BigEndian::read_u16(&b[36..])).min(HOST_DRIVE_PATH_MAX);
        let path = &b[HOST_DRIVE_PATH_OFFSET..HOST_DRIVE_PATH_OFFSET + len];
        Ok(HostDriveHeader {
            cookie,
            version: BigEndian::read_u32(&b[8..]),
            flags: BigEndian::read_u32(&b[12..]),
            device_size: BigEndian::read_u64(&b[16..]),
            identity_crc: BigEndian::read_u32(&b[24..]),
            identity_span: BigEndian::read_u32(&b[28..]),
            checksum: BigEndian::read_u32(&b[32..]),
            device_path: String::from_utf8_lossy(path).into_owned(),
        })
    }

    /// Encodes with a fresh checksum. Fails if the path is longer than 960 bytes.
    pub fn encode(&self) -> Result<[u8; HOST_DRIVE_HEADER_SIZE], String> {
        let path = self.device_path.as_bytes();
        if path.len() > HOST_DRIVE_PATH_MAX {
            return Err(format!(
                "host drive path is {} bytes, the stub holds {HOST_DRIVE_PATH_MAX}",
                path.len()
            ));
        }
        let mut b = [0u8; HOST_DRIVE_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.cookie);
        BigEndian::write_u32(&mut b[8..], self.version);
        BigEndian::write_u32(&mut b[12..], self.flags);
        BigEndian::write_u64(&mut b[16..], self.device_size);
        BigEndian::write_u32(&mut b[24..], self.identity_crc);
        BigEndian::write_u32(&mut b[28..], self.identity_span);
        // path length fits: checked above against 960
        BigEndian::write_u16(&mut b[36..], path.len() as u16);
        b[HOST_DRIVE_PATH_OFFSET..HOST_DRIVE_PATH_OFFSET + path.len()].copy_from_slice(path);
        let sum = ones_complement_checksum(&b, HOST_DRIVE_CHECKSUM_OFFSET);
        BigEndian::write_u32(&mut b[HOST_DRIVE_CHECKSUM_OFFSET..], sum);
        Ok(b)
    }

    /// Whether the link is read-only.
    pub fn read_only(&self) -> bool {
        self.flags & HOST_DRIVE_FLAG_READ_ONLY != 0
    }

    /// Every problem with the header. `raw` is the 1024 bytes it was decoded from.
    pub fn validate(&self, raw: &[u8]) -> Vec<Problem> {
        let s = "host-drive header";
        let mut p = Vec::new();
        if self.cookie != HOST_DRIVE_COOKIE {
            p.push(Problem::new(
                Severity::Error,
                s,
                "cookie",
                format!(
                    "found {:?}, expected \"vhdkhost\"",
                    String::from_utf8_lossy(&self.cookie)
                ),
            ));
            return p;
        }
        let computed = ones_complement_checksum(raw, HOST_DRIVE_CHECKSUM_OFFSET);
        if computed != self.checksum {
            p.push(Problem::new(
                Severity::Error,
                s,
                "checksum",
                format!("stored {:#010x}, computed {computed:#010x}", self.checksum),
            ));
        }
        if self.version != HOST_DRIVE_VERSION {
            p.push(Problem::new(
                Severity::Error,
                s,
                "version",
                format!("found {:#010x}, expected 0x00010000", self.version),
            ));
        }
        if self.flags & !HOST_DRIVE_FLAG_READ_ONLY != 0 {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "flags",
                format!("unknown flag bits {:#x}", self.flags),
            ));
        }
        if self.device_path.is_empty() || self.device_path.contains('\u{fffd}') {
            p.push(Problem::new(
                Severity::Error,
                s,
                "device path",
                "the device path is empty or not UTF-8",
            ));
        }
        if !self.device_size.is_multiple_of(super::SECTOR_SIZE) {
            p.push(Problem::new(
                Severity::Error,
                s,
                "device size",
                format!("{} is not a multiple of 512", self.device_size),
            ));
        }
        p
    }

    /// Every problem with the header of a stub whose footer gives the virtual size
    /// `footer_size`: those of [`validate`](Self::validate), and a device size that
    /// differs from the footer's (the one rule open and `check` both apply).
    pub fn validate_for(&self, raw: &[u8], footer_size: u64) -> Vec<Problem> {
        let mut p = self.validate(raw);
        if self.cookie == HOST_DRIVE_COOKIE && self.device_size != footer_size {
            p.push(Problem::new(
                Severity::Error,
                "host-drive header",
                "device size",
                format!(
                    "device size {} differs from the footer's size {footer_size}",
                    self.device_size
                ),
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HostDriveHeader {
        HostDriveHeader {
            cookie: HOST_DRIVE_COOKIE,
            version: HOST_DRIVE_VERSION,
            flags: HOST_DRIVE_FLAG_READ_ONLY,
            device_size: 8 << 20,
            identity_crc: 0xDEAD_BEEF,
            identity_span: HOST_DRIVE_IDENTITY_SPAN,
            checksum: 0,
            device_path: "/dev/sdb".into(),
        }
    }

    #[test]
    fn host_drive_header_round_trips() {
        let bytes = sample().encode().expect("fits");
        let back = HostDriveHeader::decode(&bytes).expect("len");
        assert!(back.validate(&bytes).is_empty());
        assert_eq!(back.device_path, "/dev/sdb");
        assert!(back.read_only());
        assert_eq!(back.encode().expect("fits"), bytes);
    }

    #[test]
    fn host_drive_header_with_bad_checksum_is_rejected() {
        let mut bytes = sample().encode().expect("fits");
        bytes[100] = 1;
        let h = HostDriveHeader::decode(&bytes).expect("len");
        assert!(h.validate(&bytes).iter().any(|p| p.field == "checksum"));
    }

    #[test]
    fn a_device_size_other_than_the_footers_is_an_error() {
        let bytes = sample().encode().expect("fits");
        let h = HostDriveHeader::decode(&bytes).expect("decodes");
        assert!(h.validate_for(&bytes, h.device_size).is_empty());
        let p = h.validate_for(&bytes, 0);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].severity, Severity::Error);
        assert_eq!(p[0].field, "device size");
    }

    #[test]
    fn host_drive_path_too_long_is_refused() {
        let mut h = sample();
        h.device_path = "x".repeat(961);
        assert!(h.encode().is_err());
    }
}
