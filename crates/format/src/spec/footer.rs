//! The hard disk footer: 512 bytes at the end of every VHD (and a copy at offset 0 of
//! dynamic and differencing disks).

use byteorder::{BigEndian, ByteOrder};
use uuid::Uuid;

use super::{
    fixed, fourcc_to_string, ones_complement_checksum, Geometry, LengthError, Problem, Severity,
    VhdTime, FORMAT_VERSION, SECTOR_SIZE,
};

/// Size of the footer on disk.
pub const FOOTER_SIZE: usize = 512;
/// Magic at offset 0 of the footer.
pub const FOOTER_COOKIE: [u8; 8] = *b"conectix";
/// Cookie XenServer writes over a footer to disable a VHD on purpose.
pub const POISON_COOKIE: [u8; 8] = *b"v_poison";
/// Feature bit 0: temporary disk (a candidate for deletion on shutdown).
pub const FEATURE_TEMPORARY: u32 = 0x1;
/// Feature bit 1: reserved, must always be set.
pub const FEATURE_RESERVED: u32 = 0x2;
/// Data offset of a fixed disk: no further structure.
pub const DATA_OFFSET_NONE: u64 = u64::MAX;
/// The 32-bit "no further structure" value old writers stored in a 64-bit field.
pub const DATA_OFFSET_NONE_32: u64 = 0xFFFF_FFFF;

/// Offsets of the footer's fields.
pub mod off {
    /// Cookie, 8 bytes.
    pub const COOKIE: usize = 0;
    /// Features, u32.
    pub const FEATURES: usize = 8;
    /// File format version, u32.
    pub const VERSION: usize = 12;
    /// Data offset, u64.
    pub const DATA_OFFSET: usize = 16;
    /// Time stamp, u32.
    pub const TIMESTAMP: usize = 24;
    /// Creator application, 4 bytes.
    pub const CREATOR_APP: usize = 28;
    /// Creator version, u32.
    pub const CREATOR_VERSION: usize = 32;
    /// Creator host OS, 4 bytes.
    pub const CREATOR_HOST_OS: usize = 36;
    /// Original size, u64.
    pub const ORIGINAL_SIZE: usize = 40;
    /// Current size, u64.
    pub const CURRENT_SIZE: usize = 48;
    /// Geometry, 4 bytes.
    pub const GEOMETRY: usize = 56;
    /// Disk type, u32.
    pub const DISK_TYPE: usize = 60;
    /// Checksum, u32.
    pub const CHECKSUM: usize = 64;
    /// Unique id, 16 bytes.
    pub const UNIQUE_ID: usize = 68;
    /// Saved state, 1 byte.
    pub const SAVED_STATE: usize = 84;
    /// First reserved byte (XenServer's `hidden` flag lives here).
    pub const RESERVED: usize = 85;
}

/// The footer's disk type field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskType {
    /// 0: none.
    None,
    /// 2: fixed hard disk.
    Fixed,
    /// 3: dynamic hard disk.
    Dynamic,
    /// 4: differencing hard disk.
    Differencing,
    /// 1, 5 or 6: reserved (deprecated); vhdkit's host-drive stub uses 5.
    Reserved(u32),
    /// Any other value.
    Unknown(u32),
}

/// Footer disk type vhdkit writes into a host-drive stub: a "reserved (deprecated)" code,
/// so that qemu-img and libvhdi refuse the stub instead of reading it as a disk.
pub const DISK_TYPE_HOST_DRIVE_STUB: u32 = 5;

impl DiskType {
    /// Decodes the on-disk code.
    pub fn from_code(code: u32) -> DiskType {
        match code {
            0 => DiskType::None,
            2 => DiskType::Fixed,
            3 => DiskType::Dynamic,
            4 => DiskType::Differencing,
            1 | 5 | 6 => DiskType::Reserved(code),
            other => DiskType::Unknown(other),
        }
    }

    /// The on-disk code.
    pub fn code(self) -> u32 {
        match self {
            DiskType::None => 0,
            DiskType::Fixed => 2,
            DiskType::Dynamic => 3,
            DiskType::Differencing => 4,
            DiskType::Reserved(c) | DiskType::Unknown(c) => c,
        }
    }

    /// Whether the disk has a dynamic header and a BAT.
    pub fn is_sparse(self) -> bool {
        matches!(self, DiskType::Dynamic | DiskType::Differencing)
    }
}

impl std::fmt::Display for DiskType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiskType::None => write!(f, "none (0)"),
            DiskType::Fixed => write!(f, "fixed"),
            DiskType::Dynamic => write!(f, "dynamic"),
            DiskType::Differencing => write!(f, "differencing"),
            DiskType::Reserved(c) => write!(f, "reserved ({c})"),
            DiskType::Unknown(c) => write!(f, "unknown ({c})"),
        }
    }
}

/// The decoded footer. Every field is kept as found so that a rewrite preserves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    /// Cookie; `conectix` in a valid footer.
    pub cookie: [u8; 8],
    /// Feature bits.
    pub features: u32,
    /// File format version (0x00010000).
    pub format_version: u32,
    /// Absolute offset of the dynamic header, or all ones.
    pub data_offset: u64,
    /// Creation time.
    pub timestamp: VhdTime,
    /// Creator application, four bytes.
    pub creator_app: [u8; 4],
    /// Creator version (major.minor in 16+16 bits).
    pub creator_version: u32,
    /// Creator host OS, four bytes.
    pub creator_host_os: [u8; 4],
    /// Size at creation, bytes.
    pub original_size: u64,
    /// Virtual size now, bytes.
    pub current_size: u64,
    /// CHS geometry.
    pub geometry: Geometry,
    /// Disk type.
    pub disk_type: DiskType,
    /// Checksum as stored.
    pub checksum: u32,
    /// Unique id of this disk.
    pub unique_id: Uuid,
    /// Saved-state flag (0 or 1).
    pub saved_state: u8,
    /// Bytes 85..512 as found (zero per the specification; byte 85 is XenServer's
    /// `hidden` flag). Preserved on rewrite.
    pub reserved: [u8; FOOTER_SIZE - off::RESERVED],
}

impl Footer {
    /// A new footer for a disk vhdkit creates: vhdkit's creator id, the specification's
    /// geometry for `size`, a fresh unique id, the current time.
    pub fn new(disk_type: DiskType, size: u64) -> Footer {
        let data_offset = if disk_type.is_sparse() {
            512
        } else {
            DATA_OFFSET_NONE
        };
        Footer {
            cookie: FOOTER_COOKIE,
            features: FEATURE_RESERVED,
            format_version: FORMAT_VERSION,
            data_offset,
            timestamp: VhdTime::now(),
            creator_app: super::CREATOR_APP,
            creator_version: super::CREATOR_VERSION,
            creator_host_os: super::CREATOR_HOST_OS,
            original_size: size,
            current_size: size,
            geometry: Geometry::from_total_sectors(size / SECTOR_SIZE),
            disk_type,
            checksum: 0,
            unique_id: Uuid::new_v4(),
            saved_state: 0,
            reserved: [0; FOOTER_SIZE - off::RESERVED],
        }
    }

    /// Decodes 512 bytes. Fails only on length; judging the content is
    /// [`Footer::validate`]'s job.
    pub fn decode(bytes: &[u8]) -> Result<Footer, LengthError> {
        let b: &[u8; FOOTER_SIZE] = fixed(bytes, "footer")?;
        let mut cookie = [0; 8];
        cookie.copy_from_slice(&b[0..8]);
        let mut creator_app = [0; 4];
        creator_app.copy_from_slice(&b[28..32]);
        let mut creator_host_os = [0; 4];
        creator_host_os.copy_from_slice(&b[36..40]);
        let mut id = [0; 16];
        id.copy_from_slice(&b[68..84]);
        let mut reserved = [0; FOOTER_SIZE - off::RESERVED];
        reserved.copy_from_slice(&b[off::RESERVED..]);
        Ok(Footer {
            cookie,
            features: BigEndian::read_u32(&b[8..]),
            format_version: BigEndian::read_u32(&b[12..]),
            data_offset: BigEndian::read_u64(&b[16..]),
            timestamp: VhdTime(BigEndian::read_u32(&b[24..])),
            creator_app,
            creator_version: BigEndian::read_u32(&b[32..]),
            creator_host_os,
            original_size: BigEndian::read_u64(&b[40..]),
            current_size: BigEndian::read_u64(&b[48..]),
            geometry: Geometry::decode([b[56], b[57], b[58], b[59]]),
            disk_type: DiskType::from_code(BigEndian::read_u32(&b[60..])),
            checksum: BigEndian::read_u32(&b[64..]),
            unique_id: Uuid::from_bytes(id),
            saved_state: b[84],
            reserved,
        })
    }

    /// Encodes the footer with a freshly computed checksum (the `checksum` field is
    /// ignored).
    pub fn encode(&self) -> [u8; FOOTER_SIZE] {
        let mut b = self.encode_raw();
        let sum = ones_complement_checksum(&b, off::CHECKSUM);
        BigEndian::write_u32(&mut b[off::CHECKSUM..], sum);
        b
    }

    /// Encodes the footer with the stored `checksum` field as is.
    pub fn encode_raw(&self) -> [u8; FOOTER_SIZE] {
        let mut b = [0u8; FOOTER_SIZE];
        b[0..8].copy_from_slice(&self.cookie);
        BigEndian::write_u32(&mut b[8..], self.features);
        BigEndian::write_u32(&mut b[12..], self.format_version);
        BigEndian::write_u64(&mut b[16..], self.data_offset);
        BigEndian::write_u32(&mut b[24..], self.timestamp.0);
        b[28..32].copy_from_slice(&self.creator_app);
        BigEndian::write_u32(&mut b[32..], self.creator_version);
        b[36..40].copy_from_slice(&self.creator_host_os);
        BigEndian::write_u64(&mut b[40..], self.original_size);
        BigEndian::write_u64(&mut b[48..], self.current_size);
        b[56..60].copy_from_slice(&self.geometry.encode());
        BigEndian::write_u32(&mut b[60..], self.disk_type.code());
        BigEndian::write_u32(&mut b[64..], self.checksum);
        b[68..84].copy_from_slice(self.unique_id.as_bytes());
        b[84] = self.saved_state;
        b[off::RESERVED..].copy_from_slice(&self.reserved);
        b
    }

    /// The checksum the footer's content calls for.
    pub fn computed_checksum(&self) -> u32 {
        ones_complement_checksum(&self.encode_raw(), off::CHECKSUM)
    }

    /// Whether the stored checksum is right, accepting blktap's early `tap` footers that
    /// flipped the `hidden` byte without recomputing it.
    pub fn checksum_ok(&self) -> bool {
        if self.checksum == self.computed_checksum() {
            return true;
        }
        if &self.creator_app == b"tap\0" && self.reserved[0] != 0 {
            let mut copy = self.clone();
            copy.reserved[0] = 0;
            return copy.checksum == copy.computed_checksum();
        }
        false
    }

    /// Whether the cookie is `conectix`.
    pub fn cookie_ok(&self) -> bool {
        self.cookie == FOOTER_COOKIE
    }

    /// Creator application as text.
    pub fn creator_app_string(&self) -> String {
        fourcc_to_string(self.creator_app)
    }

    /// Creator host OS as text.
    pub fn creator_host_os_string(&self) -> String {
        fourcc_to_string(self.creator_host_os)
    }

    /// Every problem with the footer's content, from the structure rules of docs/format.md.
    /// `file_len` is the length of the file it came from, when known.
    pub fn validate(&self, file_len: Option<u64>) -> Vec<Problem> {
        let mut p = Vec::new();
        let s = "footer";
        if self.cookie == POISON_COOKIE {
            p.push(Problem::new(
                Severity::Error,
                s,
                "cookie",
                "cookie is `v_poison`: the disk was disabled on purpose by XenServer",
            ));
            return p;
        }
        if !self.cookie_ok() {
            p.push(Problem::new(
                Severity::Error,
                s,
                "cookie",
                format!(
                    "found {:?}, expected \"conectix\"",
                    String::from_utf8_lossy(&self.cookie)
                ),
            ));
            return p;
        }
        if !self.checksum_ok() {
            p.push(Problem::new(
                Severity::Error,
                s,
                "checksum",
                format!(
                    "stored {:#010x}, computed {:#010x}",
                    self.checksum,
                    self.computed_checksum()
                ),
            ));
        }
        if self.features & FEATURE_RESERVED == 0 || self.features & !0x3 != 0 {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "features",
                format!(
                    "found {:#010x}, expected 0x00000002 (bit 1 set, only bit 0 optional)",
                    self.features
                ),
            ));
        }
        if self.format_version != FORMAT_VERSION {
            p.push(Problem::new(
                Severity::Error,
                s,
                "file format version",
                format!("found {:#010x}, expected 0x00010000", self.format_version),
            ));
        }
        match self.disk_type {
            DiskType::Fixed => {
                if self.data_offset == DATA_OFFSET_NONE_32 {
                    p.push(Problem::new(
                        Severity::Warning,
                        s,
                        "data offset",
                        "fixed disk stores 0x00000000FFFFFFFF, expected all ones",
                    ));
                } else if self.data_offset != DATA_OFFSET_NONE {
                    p.push(Problem::new(
                        Severity::Error,
                        s,
                        "data offset",
                        format!(
                            "fixed disk stores {:#x}, expected 0xFFFFFFFFFFFFFFFF",
                            self.data_offset
                        ),
                    ));
                }
            }
            DiskType::Dynamic | DiskType::Differencing => {
                let bad = self.data_offset < 512 || !self.data_offset.is_multiple_of(SECTOR_SIZE);
                let past_end =
                    file_len.is_some_and(|len| self.data_offset.saturating_add(1024 + 512) > len);
                if bad || past_end {
                    p.push(Problem::new(
                        Severity::Error,
                        s,
                        "data offset",
                        format!(
                            "{:#x} does not point at a dynamic header inside the file",
                            self.data_offset
                        ),
                    ));
                }
            }
            DiskType::Reserved(c) if c == DISK_TYPE_HOST_DRIVE_STUB => {}
            other => p.push(Problem::new(
                Severity::Error,
                s,
                "disk type",
                format!("found {other}, expected fixed (2), dynamic (3) or differencing (4)"),
            )),
        }
        if !self.current_size.is_multiple_of(SECTOR_SIZE) {
            p.push(Problem::new(
                Severity::Error,
                s,
                "current size",
                format!("{} is not a multiple of 512", self.current_size),
            ));
        }
        if self.disk_type.is_sparse() && self.current_size == 0 {
            p.push(Problem::new(
                Severity::Error,
                s,
                "current size",
                "dynamic disk of size 0",
            ));
        }
        if self.disk_type.is_sparse() && self.current_size > super::MAX_CREATE_SIZE {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "current size",
                format!(
                    "{} bytes is over the 2040 GiB limit of dynamic disks",
                    self.current_size
                ),
            ));
        }
        let expected_geometry = Geometry::from_total_sectors(self.current_size / SECTOR_SIZE);
        // Only a geometry holding more sectors than the disk has is wrong; one that
        // holds exactly the current size (bximage: 130/16/63 for 64 MiB) or less is the
        // writer's choice (the specification's algorithm is one of many).
        if self.geometry.total_sectors() > self.current_size / SECTOR_SIZE
            && self.geometry != Geometry::MAX
        {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "geometry",
                format!(
                    "{} describes {} bytes, more than the current size {} (expected {})",
                    self.geometry,
                    self.geometry.capacity(),
                    self.current_size,
                    expected_geometry
                ),
            ));
        } else if self.geometry != expected_geometry && self.geometry != Geometry::MAX {
            p.push(Problem::new(
                Severity::Info,
                s,
                "geometry",
                format!(
                    "{} differs from the specification's {} for this size",
                    self.geometry, expected_geometry
                ),
            ));
        }
        if self.saved_state > 1 {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "saved state",
                format!("found {}, expected 0 or 1", self.saved_state),
            ));
        } else if self.saved_state == 1 {
            p.push(Problem::new(
                Severity::Info,
                s,
                "saved state",
                "the disk is in a saved state; compaction is not allowed",
            ));
        }
        if self.reserved[1..].iter().any(|&b| b != 0) || self.reserved[0] > 1 {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "reserved",
                "reserved bytes 85..512 are not zero",
            ));
        }
        if self.unique_id.is_nil() {
            p.push(Problem::new(
                Severity::Warning,
                s,
                "unique id",
                "the unique id is all zeros",
            ));
        }
        if self.timestamp.unix_seconds() > super::VhdTime::now().unix_seconds().saturating_add(1800)
        {
            p.push(Problem::new(
                Severity::Info,
                s,
                "time stamp",
                format!("{} is in the future", self.timestamp.to_rfc3339()),
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_describing_exactly_the_current_size_is_no_warning() {
        // bximage's 64 MiB disk: 130/16/63 × 512 = 67092480, its current size.
        let mut f = Footer::new(DiskType::Fixed, 67_092_480);
        f.geometry = Geometry {
            cylinders: 130,
            heads: 16,
            sectors_per_track: 63,
        };
        let p = f.validate(None);
        assert!(
            p.iter()
                .all(|x| x.field != "geometry" || x.severity < Severity::Warning),
            "{p:?}"
        );
        f.geometry.cylinders = 131;
        assert!(f
            .validate(None)
            .iter()
            .any(|x| x.field == "geometry" && x.severity == Severity::Warning));
    }

    #[test]
    fn footer_round_trips_through_bytes() {
        let f = Footer::new(DiskType::Dynamic, 5_000_704);
        let bytes = f.encode();
        let back = Footer::decode(&bytes).expect("512 bytes");
        assert!(back.checksum_ok());
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.current_size, 5_000_704);
        assert_eq!(back.disk_type, DiskType::Dynamic);
        assert_eq!(back.data_offset, 512);
    }

    #[test]
    fn footer_of_wrong_length_is_a_length_error() {
        assert_eq!(
            Footer::decode(&[0u8; 511]).unwrap_err(),
            LengthError {
                structure: "footer",
                expected: 512,
                found: 511
            }
        );
    }

    #[test]
    fn new_footer_validates_clean() {
        for t in [DiskType::Fixed, DiskType::Dynamic, DiskType::Differencing] {
            let f = Footer::decode(&Footer::new(t, 1 << 30).encode()).expect("len");
            let errs: Vec<_> = f
                .validate(Some(1 << 31))
                .into_iter()
                .filter(|p| p.severity >= Severity::Warning)
                .collect();
            assert!(errs.is_empty(), "{t}: {errs:?}");
        }
    }

    #[test]
    fn footer_with_bad_checksum_is_rejected() {
        let mut bytes = Footer::new(DiskType::Fixed, 1 << 20).encode();
        bytes[48] ^= 1;
        let f = Footer::decode(&bytes).expect("len");
        assert!(!f.checksum_ok());
        assert!(f
            .validate(None)
            .iter()
            .any(|p| p.field == "checksum" && p.severity == Severity::Error));
    }

    #[test]
    fn footer_with_wrong_cookie_reports_only_the_cookie() {
        let f = Footer::decode(&[0u8; 512]).expect("len");
        let problems = f.validate(None);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "cookie");
    }

    #[test]
    fn footer_with_deprecated_type_is_an_error() {
        let mut f = Footer::new(DiskType::Fixed, 1 << 20);
        f.disk_type = DiskType::Reserved(6);
        let f = Footer::decode(&f.encode()).expect("len");
        assert!(f.validate(None).iter().any(|p| p.field == "disk type"));
    }

    #[test]
    fn tap_footer_with_hidden_byte_flipped_keeps_a_valid_checksum() {
        let mut f = Footer::new(DiskType::Dynamic, 1 << 20);
        f.creator_app = *b"tap\0";
        let mut bytes = f.encode();
        bytes[off::RESERVED] = 1; // flipped without recomputing the checksum
        assert!(Footer::decode(&bytes).expect("len").checksum_ok());
    }

    #[test]
    fn footer_preserves_reserved_bytes_on_rewrite() {
        let mut bytes = Footer::new(DiskType::Fixed, 1 << 20).encode();
        bytes[off::RESERVED] = 1;
        let f = Footer::decode(&bytes).expect("len");
        assert_eq!(f.encode()[off::RESERVED], 1);
    }
}
