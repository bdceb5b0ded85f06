//! The two headers (MS-VHDX 2.2.2): 4 KiB each, at 64 KiB and 128 KiB. The header
//! with the higher sequence number among the valid ones is current; an update writes
//! the other slot with the next sequence number, so a torn write leaves the old one.

use uuid::Uuid;

use super::error::{first, need, Structure, VhdxError};
use super::{
    crc32c_with_zeroed_field, guid_at, put_guid, put_u16, put_u32, put_u64, seal, u16_at, u32_at,
    u64_at, ALIGNMENT, HEADER_SECTION_SIZE, MIB,
};

/// Offset of header 1.
pub const HEADER_1_OFFSET: u64 = 64 * 1024;
/// Offset of header 2.
pub const HEADER_2_OFFSET: u64 = 128 * 1024;
/// Bytes of a header: the checksum covers all of them.
pub const HEADER_SIZE: usize = 4096;
/// `head`: the header signature.
pub const HEADER_SIGNATURE: [u8; 4] = *b"head";
/// Offset of the CRC-32C inside a header.
pub const HEADER_CHECKSUM_OFFSET: usize = 4;
/// Offset of the sequence number.
pub const SEQUENCE_OFFSET: usize = 8;
/// Offset of the file write GUID (changed before the first write of every open).
pub const FILE_WRITE_GUID_OFFSET: usize = 16;
/// Offset of the data write GUID (changed before the first change of what the guest
/// sees; a child's `parent_linkage` names its parent's).
pub const DATA_WRITE_GUID_OFFSET: usize = 32;
/// Offset of the log GUID (nil: no log to replay).
pub const LOG_GUID_OFFSET: usize = 48;
/// Offset of the log format version.
pub const LOG_VERSION_OFFSET: usize = 64;
/// Offset of the file format version.
pub const VERSION_OFFSET: usize = 66;
/// Offset of the log length.
pub const LOG_LENGTH_OFFSET: usize = 68;
/// Offset of the log offset.
pub const LOG_OFFSET_OFFSET: usize = 72;
/// Offset of the reserved bytes (zero) that fill the header.
pub const HEADER_RESERVED_OFFSET: usize = 80;
/// The only file format version: 1.
pub const VHDX_VERSION: u16 = 1;
/// The only log format version: 0.
pub const LOG_VERSION: u16 = 0;
/// Default (and Hyper-V's) log length: 1 MiB.
pub const DEFAULT_LOG_LENGTH: u32 = MIB as u32;

/// Which of the two header slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderSlot {
    /// Header 1, at 64 KiB.
    First,
    /// Header 2, at 128 KiB.
    Second,
}

impl HeaderSlot {
    /// The slot's file offset.
    pub fn offset(self) -> u64 {
        match self {
            HeaderSlot::First => HEADER_1_OFFSET,
            HeaderSlot::Second => HEADER_2_OFFSET,
        }
    }

    /// The other slot: where the next update goes.
    pub fn other(self) -> HeaderSlot {
        match self {
            HeaderSlot::First => HeaderSlot::Second,
            HeaderSlot::Second => HeaderSlot::First,
        }
    }

    fn structure(self) -> Structure {
        match self {
            HeaderSlot::First => Structure::Header(1),
            HeaderSlot::Second => Structure::Header(2),
        }
    }
}

/// A header as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    /// `head` in a valid header.
    pub signature: [u8; 4],
    /// CRC-32C as stored.
    pub checksum: u32,
    /// CRC-32C of the 4 KiB as decoded (checksum field zeroed).
    pub computed_checksum: u32,
    /// Sequence number.
    pub sequence_number: u64,
    /// File write GUID.
    pub file_write_guid: Uuid,
    /// Data write GUID.
    pub data_write_guid: Uuid,
    /// Log GUID.
    pub log_guid: Uuid,
    /// Log format version.
    pub log_version: u16,
    /// File format version.
    pub version: u16,
    /// Log length in bytes.
    pub log_length: u32,
    /// Log offset in the file.
    pub log_offset: u64,
    /// Whether any reserved byte is non-zero.
    pub reserved_nonzero: bool,
}

/// A valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Sequence number: the higher valid header is current.
    pub sequence_number: u64,
    /// Identifies the file's contents; changed before the first write of every open.
    pub file_write_guid: Uuid,
    /// Identifies what the guest sees; changed before the first change of it.
    pub data_write_guid: Uuid,
    /// Entries of the log with this GUID are to be replayed; nil when there is none.
    pub log_guid: Uuid,
    /// Log length in bytes (a multiple of 1 MiB).
    pub log_length: u32,
    /// Log offset (a multiple of 1 MiB, past the header section).
    pub log_offset: u64,
}

impl RawHeader {
    /// Decodes the first 4 KiB of `bytes`; fails only when shorter. `slot` places the
    /// error.
    pub fn decode(bytes: &[u8], slot: HeaderSlot) -> Result<RawHeader, VhdxError> {
        need(bytes, HEADER_SIZE, slot.structure(), slot.offset())?;
        let b = &bytes[..HEADER_SIZE];
        let mut signature = [0; 4];
        signature.copy_from_slice(&b[..4]);
        Ok(RawHeader {
            signature,
            checksum: u32_at(b, HEADER_CHECKSUM_OFFSET),
            computed_checksum: crc32c_with_zeroed_field(b, HEADER_CHECKSUM_OFFSET),
            sequence_number: u64_at(b, SEQUENCE_OFFSET),
            file_write_guid: guid_at(b, FILE_WRITE_GUID_OFFSET),
            data_write_guid: guid_at(b, DATA_WRITE_GUID_OFFSET),
            log_guid: guid_at(b, LOG_GUID_OFFSET),
            log_version: u16_at(b, LOG_VERSION_OFFSET),
            version: u16_at(b, VERSION_OFFSET),
            log_length: u32_at(b, LOG_LENGTH_OFFSET),
            log_offset: u64_at(b, LOG_OFFSET_OFFSET),
            reserved_nonzero: b[HEADER_RESERVED_OFFSET..].iter().any(|&x| x != 0),
        })
    }

    /// Every problem of the header found in `slot`. Reserved bytes are not checked
    /// (the specification asks writers to zero them, readers to ignore them).
    pub fn problems(&self, slot: HeaderSlot) -> Vec<VhdxError> {
        let s = slot.structure();
        let at = slot.offset();
        let f = |o: usize| at + o as u64;
        let mut p = Vec::new();
        if self.signature != HEADER_SIGNATURE {
            p.push(VhdxError::signature(s, at, &self.signature, "head"));
            return p;
        }
        if self.checksum != self.computed_checksum {
            p.push(VhdxError::Checksum {
                structure: s,
                offset: at,
                stored: self.checksum,
                computed: self.computed_checksum,
            });
            return p;
        }
        if self.version != VHDX_VERSION {
            p.push(VhdxError::field(
                s,
                f(VERSION_OFFSET),
                "version",
                self.version,
                "1",
            ));
        }
        if self.log_version != LOG_VERSION {
            p.push(VhdxError::field(
                s,
                f(LOG_VERSION_OFFSET),
                "log version",
                self.log_version,
                "0",
            ));
        }
        if !u64::from(self.log_length).is_multiple_of(ALIGNMENT) {
            p.push(VhdxError::field(
                s,
                f(LOG_LENGTH_OFFSET),
                "log length",
                self.log_length,
                "a multiple of 1 MiB",
            ));
        }
        if !self.log_offset.is_multiple_of(ALIGNMENT) || self.log_offset < HEADER_SECTION_SIZE {
            p.push(VhdxError::field(
                s,
                f(LOG_OFFSET_OFFSET),
                "log offset",
                format_args!("{:#x}", self.log_offset),
                "a multiple of 1 MiB past the header section",
            ));
        }
        if !self.log_guid.is_nil() && self.log_length == 0 {
            p.push(VhdxError::field(
                s,
                f(LOG_LENGTH_OFFSET),
                "log length",
                0,
                "non-zero when the log GUID is set",
            ));
        }
        p
    }

    /// The valid header, or its first problem.
    pub fn validate(&self, slot: HeaderSlot) -> Result<Header, VhdxError> {
        first(self.problems(slot))?;
        Ok(Header {
            sequence_number: self.sequence_number,
            file_write_guid: self.file_write_guid,
            data_write_guid: self.data_write_guid,
            log_guid: self.log_guid,
            log_length: self.log_length,
            log_offset: self.log_offset,
        })
    }
}

impl Header {
    /// The header of a new file: sequence number 0, fresh write GUIDs, no log to replay,
    /// the log at `log_offset`.
    pub fn new(log_offset: u64, log_length: u32) -> Header {
        Header {
            sequence_number: 0,
            file_write_guid: Uuid::new_v4(),
            data_write_guid: Uuid::new_v4(),
            log_guid: Uuid::nil(),
            log_length,
            log_offset,
        }
    }

    /// Whether the log must be searched for entries to replay.
    pub fn has_log(&self) -> bool {
        !self.log_guid.is_nil() && self.log_length > 0
    }

    /// The 4 KiB header with its checksum.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[..4].copy_from_slice(&HEADER_SIGNATURE);
        put_u64(&mut b, SEQUENCE_OFFSET, self.sequence_number);
        put_guid(&mut b, FILE_WRITE_GUID_OFFSET, &self.file_write_guid);
        put_guid(&mut b, DATA_WRITE_GUID_OFFSET, &self.data_write_guid);
        put_guid(&mut b, LOG_GUID_OFFSET, &self.log_guid);
        put_u16(&mut b, LOG_VERSION_OFFSET, LOG_VERSION);
        put_u16(&mut b, VERSION_OFFSET, VHDX_VERSION);
        put_u32(&mut b, LOG_LENGTH_OFFSET, self.log_length);
        put_u64(&mut b, LOG_OFFSET_OFFSET, self.log_offset);
        seal(&mut b, HEADER_CHECKSUM_OFFSET);
        b
    }
}

/// The header in use and the slot it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentHeader {
    /// The current header.
    pub header: Header,
    /// Where it is.
    pub slot: HeaderSlot,
    /// Whether the other slot holds a valid header too (an update leaves both valid;
    /// a torn one leaves one).
    pub other_valid: bool,
}

impl CurrentHeader {
    /// Chooses the current header from both slots' 4 KiB (MS-VHDX 2.2.2.1): the valid
    /// one with the higher sequence number. Two valid headers with the same sequence
    /// number are accepted only when they are identical (the specification names no
    /// current header then; a writer that updates both with one number is read the same
    /// either way).
    pub fn choose(first: &[u8], second: &[u8]) -> Result<CurrentHeader, VhdxError> {
        let one =
            RawHeader::decode(first, HeaderSlot::First).and_then(|r| r.validate(HeaderSlot::First));
        let two = RawHeader::decode(second, HeaderSlot::Second)
            .and_then(|r| r.validate(HeaderSlot::Second));
        match (one, two) {
            (Ok(a), Err(_)) => Ok(CurrentHeader {
                header: a,
                slot: HeaderSlot::First,
                other_valid: false,
            }),
            (Err(_), Ok(b)) => Ok(CurrentHeader {
                header: b,
                slot: HeaderSlot::Second,
                other_valid: false,
            }),
            (Err(a), Err(b)) => Err(VhdxError::NoHeader {
                first: Box::new(a),
                second: Box::new(b),
            }),
            (Ok(a), Ok(b)) => {
                let (header, slot) = match a.sequence_number.cmp(&b.sequence_number) {
                    std::cmp::Ordering::Greater => (a, HeaderSlot::First),
                    std::cmp::Ordering::Less => (b, HeaderSlot::Second),
                    std::cmp::Ordering::Equal if a == b => (a, HeaderSlot::First),
                    std::cmp::Ordering::Equal => {
                        return Err(VhdxError::field(
                            Structure::Headers,
                            HEADER_2_OFFSET + SEQUENCE_OFFSET as u64,
                            "sequence number",
                            b.sequence_number,
                            "different from header 1's when the headers differ",
                        ))
                    }
                };
                Ok(CurrentHeader {
                    header,
                    slot,
                    other_valid: true,
                })
            }
        }
    }

    /// The header an update writes, with its slot: `header` with the next sequence
    /// number, in the slot that is not current.
    pub fn next(&self, mut header: Header) -> Option<(Header, HeaderSlot)> {
        header.sequence_number = self.header.sequence_number.checked_add(1)?;
        Some((header, self.slot.other()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Header {
        Header {
            sequence_number: seq,
            ..Header::new(MIB, DEFAULT_LOG_LENGTH)
        }
    }

    #[test]
    fn header_round_trips() {
        let h = sample(7);
        let raw = RawHeader::decode(&h.encode(), HeaderSlot::First).unwrap();
        assert_eq!(raw.validate(HeaderSlot::First).unwrap(), h);
        assert!(!raw.reserved_nonzero);
    }

    #[test]
    fn header_with_flipped_byte_fails_its_checksum() {
        let mut b = sample(1).encode();
        b[100] ^= 1;
        let err = RawHeader::decode(&b, HeaderSlot::Second)
            .unwrap()
            .validate(HeaderSlot::Second)
            .unwrap_err();
        assert!(
            matches!(err, VhdxError::Checksum { offset, .. } if offset == HEADER_2_OFFSET),
            "{err}"
        );
    }

    #[test]
    fn header_with_unaligned_log_is_rejected() {
        let mut h = sample(1);
        h.log_offset = MIB + 4096;
        let err = RawHeader::decode(&h.encode(), HeaderSlot::First)
            .unwrap()
            .validate(HeaderSlot::First)
            .unwrap_err();
        assert!(
            matches!(
                err,
                VhdxError::Field {
                    field: "log offset",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.offset(), HEADER_1_OFFSET + LOG_OFFSET_OFFSET as u64);
    }

    #[test]
    fn header_with_log_inside_header_section_is_rejected() {
        let mut h = sample(1);
        h.log_offset = 0;
        let raw = RawHeader::decode(&h.encode(), HeaderSlot::First).unwrap();
        assert_eq!(raw.problems(HeaderSlot::First).len(), 1);
    }

    #[test]
    fn higher_sequence_number_is_current() {
        let a = sample(5).encode();
        let b = sample(6).encode();
        let c = CurrentHeader::choose(&a, &b).unwrap();
        assert_eq!(
            (c.slot, c.header.sequence_number, c.other_valid),
            (HeaderSlot::Second, 6, true)
        );
        let c = CurrentHeader::choose(&b, &a).unwrap();
        assert_eq!(c.slot, HeaderSlot::First);
    }

    #[test]
    fn only_valid_header_is_current_even_with_lower_sequence() {
        let a = sample(5).encode();
        let mut b = sample(9).encode();
        b[0] = b'x';
        let c = CurrentHeader::choose(&a, &b).unwrap();
        assert_eq!((c.slot, c.other_valid), (HeaderSlot::First, false));
    }

    #[test]
    fn no_valid_header_names_both_problems() {
        let err = CurrentHeader::choose(&[0; HEADER_SIZE], &[0; 10]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("header 1") && text.contains("header 2"),
            "{text}"
        );
    }

    #[test]
    fn equal_sequence_numbers_with_different_headers_are_refused() {
        let a = sample(3);
        let mut b = a;
        b.log_guid = Uuid::new_v4();
        assert!(CurrentHeader::choose(&a.encode(), &a.encode()).is_ok());
        assert!(CurrentHeader::choose(&a.encode(), &b.encode()).is_err());
    }

    #[test]
    fn next_update_goes_to_the_other_slot() {
        let c = CurrentHeader::choose(&sample(5).encode(), &sample(4).encode()).unwrap();
        let (h, slot) = c.next(c.header).unwrap();
        assert_eq!((h.sequence_number, slot), (6, HeaderSlot::Second));
    }
}
