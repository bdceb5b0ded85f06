//! The log's on-disk records (MS-VHDX 2.3.1): an entry is a run of 4 KiB sectors —
//! first the descriptor sectors (a 64-byte entry header, then 32-byte descriptors), then
//! one data sector per data descriptor. A data sector carries 4084 of the 4096 bytes it
//! writes; the descriptor carries the first 8 and the last 4, so that the sector's
//! signature and sequence number can stand where they are.

use uuid::Uuid;

use crate::vhdx::error::{need, Structure, VhdxError};
use crate::vhdx::{guid_at, put_guid, put_u32, put_u64, u32_at, u64_at};

/// Bytes of a log sector: the log's unit.
pub const LOG_SECTOR_SIZE: usize = 4096;
/// `loge`: the entry header signature.
pub const ENTRY_SIGNATURE: [u8; 4] = *b"loge";
/// Bytes of the entry header.
pub const ENTRY_HEADER_SIZE: usize = 64;
/// Offset of the entry's CRC-32C (over the whole entry, this field zeroed).
pub const ENTRY_CHECKSUM_OFFSET: usize = 4;
/// Offset of the entry length (a multiple of 4 KiB).
pub const ENTRY_LENGTH_OFFSET: usize = 8;
/// Offset of the tail: where, in the log, the sequence this entry ends starts.
pub const ENTRY_TAIL_OFFSET: usize = 12;
/// Offset of the sequence number (never 0).
pub const ENTRY_SEQUENCE_OFFSET: usize = 16;
/// Offset of the descriptor count.
pub const ENTRY_DESCRIPTOR_COUNT_OFFSET: usize = 24;
/// Offset of the log GUID (must equal the header's).
pub const ENTRY_LOG_GUID_OFFSET: usize = 32;
/// Offset of the flushed file offset: the file length known stable when the entry
/// was written; a shorter file lost data and cannot be replayed.
pub const ENTRY_FLUSHED_OFFSET: usize = 48;
/// Offset of the last file offset: the file length the entry's writes assume.
pub const ENTRY_LAST_OFFSET: usize = 56;
/// Bytes of a descriptor.
pub const DESCRIPTOR_SIZE: usize = 32;
/// Descriptor slots per sector (the first sector's first two hold the entry header).
pub const DESCRIPTORS_PER_SECTOR: u64 = (LOG_SECTOR_SIZE / DESCRIPTOR_SIZE) as u64;
/// `desc`: a data descriptor (one data sector follows for it).
pub const DATA_DESCRIPTOR_SIGNATURE: [u8; 4] = *b"desc";
/// `zero`: a zero descriptor (a range to fill with zeros; no data sector).
pub const ZERO_DESCRIPTOR_SIGNATURE: [u8; 4] = *b"zero";
/// `data`: the data sector signature.
pub const DATA_SECTOR_SIGNATURE: [u8; 4] = *b"data";
/// Offset of the sequence number's high half in a data sector.
pub const DATA_SEQUENCE_HIGH_OFFSET: usize = 4;
/// Offset of the data a data sector carries.
pub const DATA_OFFSET: usize = 8;
/// Bytes of data a data sector carries.
pub const DATA_SECTOR_PAYLOAD: usize = 4084;
/// Offset of the sequence number's low half in a data sector.
pub const DATA_SEQUENCE_LOW_OFFSET: usize = 4092;
/// Bytes of the written sector the descriptor carries before the data sector's part.
pub const LEADING_BYTES: usize = 8;
/// Bytes of the written sector the descriptor carries after the data sector's part.
pub const TRAILING_BYTES: usize = 4;

/// Sectors that hold the entry header and `count` descriptors.
pub fn descriptor_sectors(count: u32) -> u64 {
    (u64::from(count) + 2).div_ceil(DESCRIPTORS_PER_SECTOR)
}

/// Where descriptor `k` of an entry lies: (sector of the entry, byte offset in it).
pub fn descriptor_slot(k: u64) -> (u64, usize) {
    let slot = k + 2;
    (
        slot / DESCRIPTORS_PER_SECTOR,
        (slot % DESCRIPTORS_PER_SECTOR) as usize * DESCRIPTOR_SIZE,
    )
}

/// An entry header as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEntryHeader {
    /// `loge` in a valid entry.
    pub signature: [u8; 4],
    /// CRC-32C as stored.
    pub checksum: u32,
    /// Bytes of the entry.
    pub entry_length: u32,
    /// Offset in the log of the sequence's first entry.
    pub tail: u32,
    /// Sequence number.
    pub sequence_number: u64,
    /// Descriptors that follow.
    pub descriptor_count: u32,
    /// Reserved.
    pub reserved: u32,
    /// The log GUID the entry belongs to.
    pub log_guid: Uuid,
    /// File length known stable when written.
    pub flushed_file_offset: u64,
    /// File length the writes assume.
    pub last_file_offset: u64,
}

impl RawEntryHeader {
    /// Decodes the first 64 bytes of `bytes`; fails only when shorter. `at` is the
    /// entry's file offset.
    pub fn decode(bytes: &[u8], at: u64) -> Result<RawEntryHeader, VhdxError> {
        need(bytes, ENTRY_HEADER_SIZE, Structure::LogEntry, at)?;
        let mut signature = [0; 4];
        signature.copy_from_slice(&bytes[..4]);
        Ok(RawEntryHeader {
            signature,
            checksum: u32_at(bytes, ENTRY_CHECKSUM_OFFSET),
            entry_length: u32_at(bytes, ENTRY_LENGTH_OFFSET),
            tail: u32_at(bytes, ENTRY_TAIL_OFFSET),
            sequence_number: u64_at(bytes, ENTRY_SEQUENCE_OFFSET),
            descriptor_count: u32_at(bytes, ENTRY_DESCRIPTOR_COUNT_OFFSET),
            reserved: u32_at(bytes, ENTRY_DESCRIPTOR_COUNT_OFFSET + 4),
            log_guid: guid_at(bytes, ENTRY_LOG_GUID_OFFSET),
            flushed_file_offset: u64_at(bytes, ENTRY_FLUSHED_OFFSET),
            last_file_offset: u64_at(bytes, ENTRY_LAST_OFFSET),
        })
    }

    /// Writes the header into the first 64 bytes of `b` (checksum as stored).
    pub fn encode_into(&self, b: &mut [u8]) {
        b[..4].copy_from_slice(&self.signature);
        put_u32(b, ENTRY_CHECKSUM_OFFSET, self.checksum);
        put_u32(b, ENTRY_LENGTH_OFFSET, self.entry_length);
        put_u32(b, ENTRY_TAIL_OFFSET, self.tail);
        put_u64(b, ENTRY_SEQUENCE_OFFSET, self.sequence_number);
        put_u32(b, ENTRY_DESCRIPTOR_COUNT_OFFSET, self.descriptor_count);
        put_u32(b, ENTRY_DESCRIPTOR_COUNT_OFFSET + 4, self.reserved);
        put_guid(b, ENTRY_LOG_GUID_OFFSET, &self.log_guid);
        put_u64(b, ENTRY_FLUSHED_OFFSET, self.flushed_file_offset);
        put_u64(b, ENTRY_LAST_OFFSET, self.last_file_offset);
    }
}

/// A valid descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    /// Write one 4 KiB sector at `file_offset`; its data sector holds the middle.
    Data {
        /// Where the sector goes (a multiple of 4 KiB).
        file_offset: u64,
        /// The sector's first 8 bytes.
        leading: [u8; LEADING_BYTES],
        /// The sector's last 4 bytes.
        trailing: [u8; TRAILING_BYTES],
    },
    /// Fill `length` bytes at `file_offset` with zeros (both multiples of 4 KiB).
    Zero {
        /// Where the range starts.
        file_offset: u64,
        /// Its length.
        length: u64,
    },
}

impl Descriptor {
    /// Decodes and checks the 32 bytes of a descriptor of the entry with sequence
    /// number `sequence`: signature, sequence number, 4 KiB alignment. `at` places the
    /// error.
    pub fn decode(b: &[u8], sequence: u64, at: u64) -> Result<Descriptor, VhdxError> {
        need(b, DESCRIPTOR_SIZE, Structure::LogDescriptor, at)?;
        let s = Structure::LogDescriptor;
        let seq = u64_at(b, 24);
        if seq != sequence {
            return Err(VhdxError::field(
                s,
                at + 24,
                "sequence number",
                seq,
                sequence.to_string(),
            ));
        }
        let file_offset = u64_at(b, 16);
        if !file_offset.is_multiple_of(LOG_SECTOR_SIZE as u64) {
            return Err(VhdxError::field(
                s,
                at + 16,
                "file offset",
                format_args!("{file_offset:#x}"),
                "a multiple of 4 KiB",
            ));
        }
        match [b[0], b[1], b[2], b[3]] {
            DATA_DESCRIPTOR_SIGNATURE => {
                let mut leading = [0; LEADING_BYTES];
                leading.copy_from_slice(&b[8..16]);
                let mut trailing = [0; TRAILING_BYTES];
                trailing.copy_from_slice(&b[4..8]);
                Ok(Descriptor::Data {
                    file_offset,
                    leading,
                    trailing,
                })
            }
            ZERO_DESCRIPTOR_SIGNATURE => {
                let length = u64_at(b, 8);
                if !length.is_multiple_of(LOG_SECTOR_SIZE as u64) {
                    return Err(VhdxError::field(
                        s,
                        at + 8,
                        "zero length",
                        length,
                        "a multiple of 4 KiB",
                    ));
                }
                Ok(Descriptor::Zero {
                    file_offset,
                    length,
                })
            }
            _ => Err(VhdxError::signature(s, at, &b[..4], "desc or zero")),
        }
    }

    /// The 32 bytes of the descriptor in an entry with sequence number `sequence`.
    pub fn encode(&self, sequence: u64) -> [u8; DESCRIPTOR_SIZE] {
        let mut b = [0u8; DESCRIPTOR_SIZE];
        match *self {
            Descriptor::Data {
                file_offset,
                leading,
                trailing,
            } => {
                b[..4].copy_from_slice(&DATA_DESCRIPTOR_SIGNATURE);
                b[4..8].copy_from_slice(&trailing);
                b[8..16].copy_from_slice(&leading);
                put_u64(&mut b, 16, file_offset);
            }
            Descriptor::Zero {
                file_offset,
                length,
            } => {
                b[..4].copy_from_slice(&ZERO_DESCRIPTOR_SIGNATURE);
                put_u64(&mut b, 8, length);
                put_u64(&mut b, 16, file_offset);
            }
        }
        put_u64(&mut b, 24, sequence);
        b
    }

    /// Whether a data sector belongs to it.
    pub fn is_data(&self) -> bool {
        matches!(self, Descriptor::Data { .. })
    }
}

/// Checks a data sector of the entry with sequence number `sequence`: signature and
/// both halves of the sequence number. `at` places the error.
pub fn check_data_sector(b: &[u8], sequence: u64, at: u64) -> Result<(), VhdxError> {
    need(b, LOG_SECTOR_SIZE, Structure::LogDataSector, at)?;
    if b[..4] != DATA_SECTOR_SIGNATURE {
        return Err(VhdxError::signature(
            Structure::LogDataSector,
            at,
            &b[..4],
            "data",
        ));
    }
    let seq = u64::from(u32_at(b, DATA_SEQUENCE_HIGH_OFFSET)) << 32
        | u64::from(u32_at(b, DATA_SEQUENCE_LOW_OFFSET));
    if seq != sequence {
        return Err(VhdxError::field(
            Structure::LogDataSector,
            at + DATA_SEQUENCE_HIGH_OFFSET as u64,
            "sequence number",
            seq,
            sequence.to_string(),
        ));
    }
    Ok(())
}

/// The data sector carrying the middle of `sector` for an entry with sequence number
/// `sequence`.
pub fn encode_data_sector(sector: &[u8; LOG_SECTOR_SIZE], sequence: u64) -> [u8; LOG_SECTOR_SIZE] {
    let mut b = [0u8; LOG_SECTOR_SIZE];
    b[..4].copy_from_slice(&DATA_SECTOR_SIGNATURE);
    put_u32(&mut b, DATA_SEQUENCE_HIGH_OFFSET, (sequence >> 32) as u32);
    b[DATA_OFFSET..DATA_OFFSET + DATA_SECTOR_PAYLOAD]
        .copy_from_slice(&sector[LEADING_BYTES..LEADING_BYTES + DATA_SECTOR_PAYLOAD]);
    put_u32(&mut b, DATA_SEQUENCE_LOW_OFFSET, sequence as u32);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_sectors_count_the_header_slots() {
        assert_eq!(descriptor_sectors(0), 1);
        assert_eq!(descriptor_sectors(126), 1);
        assert_eq!(descriptor_sectors(127), 2);
        assert_eq!(descriptor_sectors(254), 2);
        assert_eq!(descriptor_sectors(255), 3);
        assert_eq!(
            descriptor_sectors(u32::MAX),
            (u64::from(u32::MAX) + 2).div_ceil(128)
        );
        assert_eq!(descriptor_slot(0), (0, 64));
        assert_eq!(descriptor_slot(126), (1, 0));
    }

    #[test]
    fn descriptors_round_trip() {
        let d = Descriptor::Data {
            file_offset: 0x20_0000,
            leading: *b"12345678",
            trailing: *b"abcd",
        };
        assert_eq!(Descriptor::decode(&d.encode(9), 9, 0).unwrap(), d);
        let z = Descriptor::Zero {
            file_offset: 0x30_0000,
            length: 8192,
        };
        assert_eq!(Descriptor::decode(&z.encode(9), 9, 0).unwrap(), z);
    }

    #[test]
    fn descriptor_of_another_sequence_or_unaligned_is_refused() {
        let z = Descriptor::Zero {
            file_offset: 0x30_0000,
            length: 8192,
        };
        assert!(Descriptor::decode(&z.encode(9), 10, 0).is_err());
        let mut b = z.encode(9);
        put_u64(&mut b, 16, 0x30_0001);
        assert!(Descriptor::decode(&b, 9, 0).is_err());
        let mut b = z.encode(9);
        put_u64(&mut b, 8, 100);
        assert!(Descriptor::decode(&b, 9, 0).is_err());
        let mut b = z.encode(9);
        b[0] = b'x';
        assert!(matches!(
            Descriptor::decode(&b, 9, 0),
            Err(VhdxError::Signature { .. })
        ));
    }

    #[test]
    fn data_sector_splits_and_checks_sequence() {
        let mut sector = [0u8; LOG_SECTOR_SIZE];
        for (i, b) in sector.iter_mut().enumerate() {
            *b = i as u8;
        }
        let seq = 0x1_0000_0002;
        let d = encode_data_sector(&sector, seq);
        check_data_sector(&d, seq, 0).unwrap();
        assert!(check_data_sector(&d, 2, 0).is_err());
        assert_eq!(
            &d[DATA_OFFSET..DATA_OFFSET + DATA_SECTOR_PAYLOAD],
            &sector[8..4092]
        );
    }

    #[test]
    fn entry_header_round_trips() {
        let h = RawEntryHeader {
            signature: ENTRY_SIGNATURE,
            checksum: 1,
            entry_length: 8192,
            tail: 4096,
            sequence_number: 5,
            descriptor_count: 1,
            reserved: 0,
            log_guid: Uuid::from_u128(3),
            flushed_file_offset: 1 << 24,
            last_file_offset: 1 << 25,
        };
        let mut b = [0u8; ENTRY_HEADER_SIZE];
        h.encode_into(&mut b);
        assert_eq!(RawEntryHeader::decode(&b, 0).unwrap(), h);
    }
}
