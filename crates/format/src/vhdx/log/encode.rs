//! Building log entries: the writer's half of the log. The container writes metadata
//! updates crash-safely as the format intends: set the header's log GUID (through the
//! two-header update), write the entry at the cursor and flush, apply the writes in
//! place and flush, and only then move on. Each entry vhdkit writes is its own tail
//! (a sequence of one), so that replay after a crash at any point applies either
//! nothing or the whole entry.

use std::ops::Range;

use uuid::Uuid;

use super::entry::{
    descriptor_sectors, descriptor_slot, encode_data_sector, Descriptor, RawEntryHeader,
    DESCRIPTOR_SIZE, ENTRY_CHECKSUM_OFFSET, ENTRY_HEADER_SIZE, ENTRY_SIGNATURE, LEADING_BYTES,
    LOG_SECTOR_SIZE, TRAILING_BYTES,
};
use super::replay::{ActiveSequence, LogWrite};
use crate::vhdx::error::{Structure, VhdxError};
use crate::vhdx::seal;

const SECTOR: u64 = LOG_SECTOR_SIZE as u64;

/// The header fields of an entry to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryParams {
    /// The header's log GUID.
    pub log_guid: Uuid,
    /// The entry's sequence number (non-zero).
    pub sequence_number: u64,
    /// Offset in the log of the sequence's first entry.
    pub tail: u32,
    /// File length known stable (flushed) before the entry is written.
    pub flushed_file_offset: u64,
    /// File length the writes assume (at least the flushed one).
    pub last_file_offset: u64,
}

/// Builds the entry that performs `writes` (in order): a data descriptor and data
/// sector per [`LogWrite::Data`] (exactly 4096 bytes at a 4 KiB-aligned offset), a
/// zero descriptor per [`LogWrite::Zero`] (4 KiB-aligned offset and length).
pub fn encode_entry(params: &EntryParams, writes: &[LogWrite]) -> Result<Vec<u8>, VhdxError> {
    let s = Structure::LogWrite;
    if params.sequence_number == 0 {
        return Err(VhdxError::field(
            Structure::LogEntry,
            0,
            "sequence number",
            0,
            "non-zero",
        ));
    }
    let mut descriptors = Vec::with_capacity(writes.len());
    let mut sectors: Vec<[u8; LOG_SECTOR_SIZE]> = Vec::new();
    for w in writes {
        if !w.offset().is_multiple_of(SECTOR) {
            return Err(VhdxError::field(
                s,
                w.offset(),
                "offset",
                format_args!("{:#x}", w.offset()),
                "a multiple of 4 KiB",
            ));
        }
        match w {
            LogWrite::Data { offset, bytes } => {
                let sector: [u8; LOG_SECTOR_SIZE] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| VhdxError::field(s, *offset, "length", bytes.len(), "4096"))?;
                let mut leading = [0; LEADING_BYTES];
                leading.copy_from_slice(&sector[..LEADING_BYTES]);
                let mut trailing = [0; TRAILING_BYTES];
                trailing.copy_from_slice(&sector[LOG_SECTOR_SIZE - TRAILING_BYTES..]);
                descriptors.push(Descriptor::Data {
                    file_offset: *offset,
                    leading,
                    trailing,
                });
                sectors.push(encode_data_sector(&sector, params.sequence_number));
            }
            LogWrite::Zero { offset, length } => {
                if !length.is_multiple_of(SECTOR) {
                    return Err(VhdxError::field(
                        s,
                        *offset,
                        "length",
                        length,
                        "a multiple of 4 KiB",
                    ));
                }
                descriptors.push(Descriptor::Zero {
                    file_offset: *offset,
                    length: *length,
                });
            }
        }
    }
    let count = u32::try_from(descriptors.len()).map_err(|_| {
        VhdxError::field(s, 0, "write count", descriptors.len(), "at most 2^32 - 1")
    })?;
    let dsec = descriptor_sectors(count);
    let total = (dsec + sectors.len() as u64) * SECTOR;
    let entry_length = u32::try_from(total)
        .map_err(|_| VhdxError::field(s, 0, "entry length", total, "at most 4 GiB"))?;
    let mut b = vec![0u8; total as usize];
    RawEntryHeader {
        signature: ENTRY_SIGNATURE,
        checksum: 0,
        entry_length,
        tail: params.tail,
        sequence_number: params.sequence_number,
        descriptor_count: count,
        reserved: 0,
        log_guid: params.log_guid,
        flushed_file_offset: params.flushed_file_offset,
        last_file_offset: params.last_file_offset,
    }
    .encode_into(&mut b[..ENTRY_HEADER_SIZE]);
    for (k, d) in descriptors.iter().enumerate() {
        let (sec, off) = descriptor_slot(k as u64);
        let at = sec as usize * LOG_SECTOR_SIZE + off;
        b[at..at + DESCRIPTOR_SIZE].copy_from_slice(&d.encode(params.sequence_number));
    }
    for (j, sector) in sectors.iter().enumerate() {
        let at = (dsec as usize + j) * LOG_SECTOR_SIZE;
        b[at..at + LOG_SECTOR_SIZE].copy_from_slice(sector);
    }
    seal(&mut b, ENTRY_CHECKSUM_OFFSET);
    Ok(b)
}

/// An entry placed in the ring: its bytes and the pieces to write where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedEntry {
    /// The whole entry.
    pub bytes: Vec<u8>,
    /// Its offset in the log.
    pub position: u64,
    /// `(offset in the log, range of bytes)`: one piece, or two when it wraps.
    pub pieces: Vec<(u64, Range<usize>)>,
}

/// Where the next entry goes and which sequence number it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    /// The log's length (a multiple of 4 KiB).
    pub log_length: u64,
    /// Offset in the log of the next entry.
    pub position: u64,
    /// Sequence number of the next entry.
    pub sequence_number: u64,
}

impl LogCursor {
    /// The cursor of an empty log (header log GUID nil): position 0, sequence 1.
    pub fn new(log_length: u64) -> LogCursor {
        LogCursor {
            log_length,
            position: 0,
            sequence_number: 1,
        }
    }

    /// The cursor after a sequence found in (and replayed from) the log: entries
    /// continue after its head with higher sequence numbers, so that an old entry
    /// never outranks a new one.
    pub fn after(sequence: &ActiveSequence) -> LogCursor {
        LogCursor {
            log_length: sequence.log_length,
            position: sequence.next_position(),
            sequence_number: sequence.next_sequence_number(),
        }
    }

    /// Builds the entry for `writes` as a sequence of its own (its tail is itself) and
    /// advances the cursor past it. The file is `flushed_len` bytes long and stable;
    /// the writes assume `last_len`.
    pub fn append(
        &mut self,
        log_guid: Uuid,
        flushed_len: u64,
        last_len: u64,
        writes: &[LogWrite],
    ) -> Result<PlacedEntry, VhdxError> {
        if self.log_length == 0
            || !self.log_length.is_multiple_of(SECTOR)
            || self.position >= self.log_length
            || !self.position.is_multiple_of(SECTOR)
        {
            return Err(VhdxError::field(
                Structure::Log,
                0,
                "cursor",
                format_args!(
                    "position {:#x} in {:#x} bytes",
                    self.position, self.log_length
                ),
                "a 4 KiB-aligned position inside a log of whole 4 KiB sectors",
            ));
        }
        let tail = u32::try_from(self.position).map_err(|_| {
            VhdxError::field(Structure::Log, 0, "position", self.position, "below 4 GiB")
        })?;
        let bytes = encode_entry(
            &EntryParams {
                log_guid,
                sequence_number: self.sequence_number,
                tail,
                flushed_file_offset: flushed_len,
                last_file_offset: last_len.max(flushed_len),
            },
            writes,
        )?;
        let len = bytes.len() as u64;
        if len > self.log_length {
            return Err(VhdxError::field(
                Structure::LogEntry,
                0,
                "entry length",
                len,
                format!("at most the log's {} bytes", self.log_length),
            ));
        }
        let first = (self.log_length - self.position).min(len) as usize;
        let mut pieces = vec![(self.position, 0..first)];
        if first < bytes.len() {
            pieces.push((0, first..bytes.len()));
        }
        let placed = PlacedEntry {
            bytes,
            position: self.position,
            pieces,
        };
        self.position = (self.position + len) % self.log_length;
        self.sequence_number = self.sequence_number.checked_add(1).unwrap_or(1);
        Ok(placed)
    }
}

impl PlacedEntry {
    /// Copies the entry into `log` (the log's bytes), wrapping as placed.
    pub fn write_into(&self, log: &mut [u8]) {
        for (at, r) in &self.pieces {
            let at = *at as usize;
            log[at..at + r.len()].copy_from_slice(&self.bytes[r.clone()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhdx::header::Header;
    use crate::vhdx::layout::FileAreas;
    use crate::vhdx::log::replay::{find_active_sequence, replay, scan, MAX_REPLAY_GROWTH};
    use crate::vhdx::MIB;

    const LOG_AT: u64 = MIB;

    fn guid() -> Uuid {
        Uuid::from_u128(0x10c)
    }

    fn header(log_len: u32) -> Header {
        Header {
            sequence_number: 1,
            file_write_guid: Uuid::from_u128(1),
            data_write_guid: Uuid::from_u128(2),
            log_guid: guid(),
            log_length: log_len,
            log_offset: LOG_AT,
        }
    }

    fn areas(file_len: u64, log_len: u64) -> FileAreas {
        FileAreas {
            file_len,
            log: (LOG_AT, LOG_AT + log_len),
            regions: vec![
                (2 * MIB, 3 * MIB, "BAT region"),
                (3 * MIB, 4 * MIB, "metadata region"),
            ],
        }
    }

    fn sector(seed: u8) -> Vec<u8> {
        (0..4096)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn writes() -> Vec<LogWrite> {
        vec![
            LogWrite::Data {
                offset: 2 * MIB,
                bytes: sector(1),
            },
            LogWrite::Zero {
                offset: 3 * MIB + 8192,
                length: 8192,
            },
            LogWrite::Data {
                offset: 2 * MIB + 4096,
                bytes: sector(2),
            },
        ]
    }

    #[test]
    fn encoded_entry_replays_to_the_same_writes() {
        let mut log = vec![0u8; MIB as usize];
        let mut c = LogCursor::new(MIB);
        let placed = c.append(guid(), 8 * MIB, 8 * MIB, &writes()).unwrap();
        assert_eq!(
            placed.bytes.len(),
            3 * 4096,
            "one descriptor and two data sectors"
        );
        placed.write_into(&mut log);
        let plan = replay(&log, &header(MIB as u32), &areas(8 * MIB, MIB))
            .unwrap()
            .unwrap();
        assert_eq!(plan.writes, writes());
        assert_eq!(plan.new_file_len, 8 * MIB);
        assert_eq!(plan.sequence.entries.len(), 1);
        assert_eq!(LogCursor::after(&plan.sequence), c);
    }

    #[test]
    fn cursor_outside_the_log_is_refused() {
        for (len, pos) in [(MIB, MIB), (MIB, 100), (0, 0), (MIB + 1, 0)] {
            let mut c = LogCursor {
                log_length: len,
                position: pos,
                sequence_number: 1,
            };
            assert!(c.append(guid(), 0, 0, &[]).is_err(), "{len} {pos}");
        }
    }

    #[test]
    fn many_descriptors_spill_into_more_descriptor_sectors() {
        let ws: Vec<LogWrite> = (0..300)
            .map(|i| LogWrite::Zero {
                offset: 4 * MIB + i * 4096,
                length: 4096,
            })
            .collect();
        let mut log = vec![0u8; MIB as usize];
        let placed = LogCursor::new(MIB)
            .append(guid(), 8 * MIB, 8 * MIB, &ws)
            .unwrap();
        assert_eq!(placed.bytes.len(), 3 * 4096);
        placed.write_into(&mut log);
        let plan = replay(&log, &header(MIB as u32), &areas(8 * MIB, MIB))
            .unwrap()
            .unwrap();
        assert_eq!(plan.writes, ws);
    }

    #[test]
    fn newest_of_several_entries_wins_and_wraps_around() {
        let log_len = 64 * 1024u64;
        let mut log = vec![0u8; log_len as usize];
        let mut c = LogCursor::new(log_len);
        // Fill the ring: 5 entries of 12 KiB (60 KiB), the sixth wraps.
        for i in 0..6u8 {
            let ws = vec![
                LogWrite::Data {
                    offset: 2 * MIB,
                    bytes: sector(i),
                },
                LogWrite::Data {
                    offset: 2 * MIB + 4096,
                    bytes: sector(100 + i),
                },
            ];
            let placed = c.append(guid(), 8 * MIB, 8 * MIB, &ws).unwrap();
            if i == 5 {
                assert_eq!(placed.pieces.len(), 2, "the sixth entry wraps");
            }
            placed.write_into(&mut log);
        }
        let seq = find_active_sequence(&log, guid(), LOG_AT).unwrap().unwrap();
        assert_eq!(seq.head().sequence_number, 6);
        assert_eq!(seq.head().position, 60 * 1024);
        let plan = replay(&log, &header(log_len as u32), &areas(8 * MIB, log_len))
            .unwrap()
            .unwrap();
        assert_eq!(plan.writes.len(), 2);
        assert_eq!(
            plan.writes[0],
            LogWrite::Data {
                offset: 2 * MIB,
                bytes: sector(5)
            }
        );
    }

    #[test]
    fn sequence_follows_the_heads_tail() {
        let log_len = MIB;
        let mut log = vec![0u8; log_len as usize];
        let w = |seed| {
            vec![LogWrite::Data {
                offset: 2 * MIB,
                bytes: sector(seed),
            }]
        };
        let p = |seq, tail| EntryParams {
            log_guid: guid(),
            sequence_number: seq,
            tail,
            flushed_file_offset: 8 * MIB,
            last_file_offset: 8 * MIB,
        };
        // Entries 1, 2, 3 back to back; 3's tail is entry 2 (at 8 KiB).
        let e1 = encode_entry(&p(1, 0), &w(1)).unwrap();
        let e2 = encode_entry(&p(2, 8192), &w(2)).unwrap();
        let e3 = encode_entry(&p(3, 8192), &w(3)).unwrap();
        log[..8192].copy_from_slice(&e1);
        log[8192..16384].copy_from_slice(&e2);
        log[16384..24576].copy_from_slice(&e3);
        let seq = find_active_sequence(&log, guid(), LOG_AT).unwrap().unwrap();
        let nums: Vec<u64> = seq.entries.iter().map(|e| e.sequence_number).collect();
        assert_eq!(nums, vec![2, 3]);
        // A head whose tail is not in its run is no sequence.
        let e3 = encode_entry(&p(3, 4096), &w(3)).unwrap();
        log[16384..24576].copy_from_slice(&e3);
        let seq = find_active_sequence(&log, guid(), LOG_AT).unwrap().unwrap();
        let nums: Vec<u64> = seq.entries.iter().map(|e| e.sequence_number).collect();
        assert_eq!(nums, vec![2], "3 is dropped; 2 is its own tail");
    }

    #[test]
    fn torn_entry_is_not_replayed() {
        let mut log = vec![0u8; MIB as usize];
        let mut c = LogCursor::new(MIB);
        c.append(guid(), 8 * MIB, 8 * MIB, &writes())
            .unwrap()
            .write_into(&mut log);
        let second = c.append(guid(), 8 * MIB, 8 * MIB, &writes()[..1]).unwrap();
        second.write_into(&mut log);
        // Tear the second entry's data sector.
        let at = second.position as usize + 4096 + 100;
        log[at] ^= 0xff;
        let seq = find_active_sequence(&log, guid(), LOG_AT).unwrap().unwrap();
        assert_eq!(seq.head().sequence_number, 1);
    }

    #[test]
    fn entries_of_another_log_guid_are_ignored() {
        let mut log = vec![0u8; MIB as usize];
        LogCursor::new(MIB)
            .append(Uuid::from_u128(99), 8 * MIB, 8 * MIB, &writes())
            .unwrap()
            .write_into(&mut log);
        assert!(replay(&log, &header(MIB as u32), &areas(8 * MIB, MIB))
            .unwrap()
            .is_none());
    }

    #[test]
    fn header_without_log_guid_replays_nothing() {
        let mut log = vec![0u8; MIB as usize];
        LogCursor::new(MIB)
            .append(guid(), 8 * MIB, 8 * MIB, &writes())
            .unwrap()
            .write_into(&mut log);
        let mut h = header(MIB as u32);
        h.log_guid = Uuid::nil();
        assert!(replay(&log, &h, &areas(8 * MIB, MIB)).unwrap().is_none());
    }

    fn replay_of(
        ws: &[LogWrite],
        flushed: u64,
        last: u64,
        file_len: u64,
    ) -> Result<Option<super::super::ReplayPlan>, VhdxError> {
        let mut log = vec![0u8; MIB as usize];
        LogCursor::new(MIB)
            .append(guid(), flushed, last, ws)
            .unwrap()
            .write_into(&mut log);
        replay(&log, &header(MIB as u32), &areas(file_len, MIB))
    }

    #[test]
    fn writes_into_header_section_or_log_are_refused() {
        for off in [
            0,
            64 * 1024,
            160 * 1024,
            512 * 1024,
            LOG_AT,
            LOG_AT + MIB - 4096,
        ] {
            let err = replay_of(
                &[LogWrite::Data {
                    offset: off,
                    bytes: sector(0),
                }],
                8 * MIB,
                8 * MIB,
                8 * MIB,
            )
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    VhdxError::Placement {
                        structure: Structure::LogWrite,
                        ..
                    }
                ),
                "{err}"
            );
        }
        let err = replay_of(
            &[LogWrite::Zero {
                offset: 2 * MIB - 4096,
                length: 8192,
            }],
            8 * MIB,
            8 * MIB,
            8 * MIB,
        )
        .unwrap_err();
        assert!(err.to_string().contains("into the log"), "{err}");
    }

    #[test]
    fn writes_into_the_region_tables_replay_and_the_rest_of_the_header_section_not() {
        // Both copies, first and last page: a moved BAT region is switched there.
        for off in [192 * 1024, 256 * 1024, 320 * 1024 - 4096] {
            let plan = replay_of(
                &[LogWrite::Data {
                    offset: off,
                    bytes: sector(1),
                }],
                8 * MIB,
                8 * MIB,
                8 * MIB,
            )
            .unwrap()
            .unwrap();
            assert_eq!(plan.writes[0].offset(), off);
        }
        // The identifier, the headers, the reserved space after the tables; and a zero
        // range running out of them.
        for (offset, length) in [
            (0, 4096),
            (128 * 1024, 4096),
            (320 * 1024, 4096),
            (316 * 1024, 8192),
        ] {
            let err = replay_of(
                &[LogWrite::Zero { offset, length }],
                8 * MIB,
                8 * MIB,
                8 * MIB,
            )
            .unwrap_err();
            assert!(err.to_string().contains("header section"), "{err}");
        }
    }

    #[test]
    fn writes_past_the_declared_length_are_refused_and_growth_is_bounded() {
        // Within LastFileOffset: the file grows.
        let plan = replay_of(
            &[LogWrite::Zero {
                offset: 8 * MIB,
                length: MIB,
            }],
            8 * MIB,
            9 * MIB,
            8 * MIB,
        )
        .unwrap()
        .unwrap();
        assert_eq!(plan.new_file_len, 9 * MIB);
        // Past it: refused.
        let err = replay_of(
            &[LogWrite::Zero {
                offset: 8 * MIB,
                length: MIB,
            }],
            8 * MIB,
            8 * MIB,
            8 * MIB,
        )
        .unwrap_err();
        assert!(err.to_string().contains("past the file's length"), "{err}");
        // A huge zero range is refused without allocating.
        let err = replay_of(
            &[LogWrite::Zero {
                offset: 8 * MIB,
                length: 1 << 62,
            }],
            8 * MIB,
            8 * MIB,
            8 * MIB,
        )
        .unwrap_err();
        assert!(matches!(err, VhdxError::Placement { .. }));
        // LastFileOffset beyond the growth bound.
        let err = replay_of(&[], 8 * MIB, 8 * MIB + MAX_REPLAY_GROWTH + 1, 8 * MIB).unwrap_err();
        assert!(
            matches!(
                err,
                VhdxError::Field {
                    field: "last file offset",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn file_shorter_than_flushed_offset_is_refused() {
        let err = replay_of(&writes(), 16 * MIB, 16 * MIB, 8 * MIB).unwrap_err();
        assert!(
            matches!(
                err,
                VhdxError::Field {
                    field: "flushed file offset",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn log_of_bad_entries_at_every_sector_is_scanned_in_linear_work() {
        // Every sector starts an entry whose 126 descriptors all check out and whose
        // checksum is wrong: each start costs a full sector of reading.
        let n = 256usize;
        let mut log = vec![0u8; n * 4096];
        let ws: Vec<LogWrite> = (0..126)
            .map(|i| LogWrite::Zero {
                offset: 4 * MIB + i * 4096,
                length: 4096,
            })
            .collect();
        let params = EntryParams {
            log_guid: guid(),
            sequence_number: 1,
            tail: 0,
            flushed_file_offset: 0,
            last_file_offset: 0,
        };
        let mut entry = encode_entry(&params, &ws).unwrap();
        assert_eq!(entry.len(), 4096);
        entry[4] ^= 1;
        for i in 0..n {
            log[i * 4096..(i + 1) * 4096].copy_from_slice(&entry);
        }
        let budget = 3 * log.len() as u64;
        assert_eq!(scan(&log, guid(), LOG_AT, budget).unwrap(), None);
        let err = scan(&log, guid(), LOG_AT, log.len() as u64).unwrap_err();
        assert!(err.to_string().contains("built to be slow"), "{err}");
    }
}
