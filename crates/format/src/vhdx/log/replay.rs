//! Finding the active sequence and replaying it, as pure functions over the log's
//! bytes (MS-VHDX 2.3.2, 2.3.3).
//!
//! **An entry** is valid when its header has the `loge` signature, a length that is a
//! non-zero multiple of 4 KiB no longer than the log, a non-zero sequence number and
//! the header's log GUID; when its descriptors (signature, sequence number, 4 KiB
//! alignment) and data sectors (signature, sequence number) check out; when its length
//! is exactly its descriptor sectors plus one sector per data descriptor (what qemu and
//! the specification's layout produce; a longer claim would let one hostile header
//! make every later sector expensive); and when its CRC-32C matches. An entry may wrap
//! around the end of the log.
//!
//! **The active sequence**: the log is scanned from its start. At each position a
//! valid entry starts a run, extended by the entries that follow it with sequence
//! numbers one higher, until an invalid one or until the run would cover the whole
//! log; the scan resumes after the run (or one sector on, when no entry starts there)
//! and stops once a run wraps past the end. A run whose last entry (the head) names as
//! its tail the position of one of the run's entries is a complete sequence from that
//! entry to the head (a head whose tail lies elsewhere is dropped, and the entry before
//! it tried as head); of all complete sequences, the one whose head has the highest
//! sequence number is active. qemu ignores the tail and replays whole runs; following
//! the tail replays less when old, already applied entries precede it, with the same
//! result.
//!
//! **Replay** writes every descriptor of every entry from tail to head, in order: a
//! data descriptor's 4 KiB (8 bytes from the descriptor, 4084 from the data sector, 4
//! from the descriptor), a zero descriptor's range of zeros. The file then has at least
//! the head's last file offset as its length. A file shorter than any entry's flushed
//! file offset lost data the log relies on, and is refused (as qemu does).

use uuid::Uuid;

use super::entry::{
    check_data_sector, descriptor_sectors, descriptor_slot, Descriptor, RawEntryHeader,
    DATA_OFFSET, DATA_SECTOR_PAYLOAD, DESCRIPTOR_SIZE, ENTRY_CHECKSUM_OFFSET, ENTRY_SIGNATURE,
    LEADING_BYTES, LOG_SECTOR_SIZE,
};
use crate::vhdx::error::{need, Structure, VhdxError};
use crate::vhdx::header::Header;
use crate::vhdx::layout::FileAreas;
use crate::vhdx::{crc32c_with_zeroed_field, HEADER_SECTION_SIZE};

/// How far past its real length a replay may grow the file: four blocks of the largest
/// size (a log covers metadata updates for a few new blocks at a time). A log asking
/// for more is refused.
pub const MAX_REPLAY_GROWTH: u64 = 1 << 30;

/// The scan reads at most this many times the log's length (plus 64 KiB) before it
/// gives up: an honest log is read about once; one whose every sector starts a long
/// entry that fails only at its checksum would take quadratic time.
pub const SCAN_WORK_FACTOR: u64 = 8;

const SECTOR: u64 = LOG_SECTOR_SIZE as u64;

/// One valid entry found in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Its offset in the log.
    pub position: u64,
    /// Its length in bytes.
    pub length: u64,
    /// Its sequence number.
    pub sequence_number: u64,
    /// The offset in the log of its sequence's first entry.
    pub tail: u64,
    /// File length known stable when it was written.
    pub flushed_file_offset: u64,
    /// File length its writes assume.
    pub last_file_offset: u64,
    /// Its descriptors in order.
    pub descriptors: Vec<Descriptor>,
}

/// A complete sequence of entries, tail first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSequence {
    /// The entries from tail to head.
    pub entries: Vec<LogEntry>,
    /// The log's length.
    pub log_length: u64,
}

impl ActiveSequence {
    /// The newest entry.
    pub fn head(&self) -> &LogEntry {
        self.entries
            .last()
            .expect("a sequence has at least one entry")
    }

    /// Where in the log the next entry goes.
    pub fn next_position(&self) -> u64 {
        (self.head().position + self.head().length) % self.log_length
    }

    /// The sequence number of the next entry.
    pub fn next_sequence_number(&self) -> u64 {
        self.head().sequence_number.wrapping_add(1).max(1)
    }
}

/// One write the log asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogWrite {
    /// 4096 bytes at `offset`.
    Data {
        /// File offset (a multiple of 4 KiB).
        offset: u64,
        /// The sector's bytes (exactly 4096).
        bytes: Vec<u8>,
    },
    /// `length` zero bytes at `offset`.
    Zero {
        /// File offset (a multiple of 4 KiB).
        offset: u64,
        /// Bytes to zero (a multiple of 4 KiB).
        length: u64,
    },
}

impl LogWrite {
    /// Where it starts.
    pub fn offset(&self) -> u64 {
        match self {
            LogWrite::Data { offset, .. } | LogWrite::Zero { offset, .. } => *offset,
        }
    }

    /// How many bytes it writes.
    pub fn len(&self) -> u64 {
        match self {
            LogWrite::Data { bytes, .. } => bytes.len() as u64,
            LogWrite::Zero { length, .. } => *length,
        }
    }

    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What replaying the log does to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayPlan {
    /// The sequence replayed.
    pub sequence: ActiveSequence,
    /// The writes, in the order to apply them (a later one wins where they overlap).
    pub writes: Vec<LogWrite>,
    /// The file's length after the replay (never below its length before).
    pub new_file_len: u64,
}

/// The log's sectors as a ring, with the scan's work budget.
struct Ring<'a> {
    log: &'a [u8],
    sectors: u64,
    file_offset: u64,
    guid: Uuid,
    work: u64,
    budget: u64,
}

impl<'a> Ring<'a> {
    fn sector(&self, i: u64) -> &'a [u8] {
        let at = ((i % self.sectors) * SECTOR) as usize;
        &self.log[at..at + LOG_SECTOR_SIZE]
    }

    fn at(&self, i: u64) -> u64 {
        self.file_offset + (i % self.sectors) * SECTOR
    }

    fn charge(&mut self, bytes: u64) -> Result<(), VhdxError> {
        self.work = self.work.saturating_add(bytes);
        if self.work > self.budget {
            return Err(VhdxError::placement(
                Structure::Log,
                self.file_offset,
                format!(
                    "scanning the log took more than {} bytes of reading: refused as built to be slow",
                    self.budget
                ),
            ));
        }
        Ok(())
    }

    /// The entry starting at sector `start`: `Ok(Ok(entry))`, `Ok(Err(why not))`, or
    /// `Err` when the work budget is spent. `expect` is the sequence number it must
    /// have.
    fn entry(
        &mut self,
        start: u64,
        expect: Option<u64>,
    ) -> Result<Result<LogEntry, VhdxError>, VhdxError> {
        let at = self.at(start);
        let s = Structure::LogEntry;
        let first = self.sector(start);
        self.charge(64)?;
        let h = RawEntryHeader::decode(first, at).expect("a log sector holds an entry header");
        if h.signature != ENTRY_SIGNATURE {
            return Ok(Err(VhdxError::signature(s, at, &h.signature, "loge")));
        }
        let len = u64::from(h.entry_length);
        if len == 0 || !len.is_multiple_of(SECTOR) || len > self.sectors * SECTOR {
            return Ok(Err(VhdxError::field(
                s,
                at + 8,
                "entry length",
                len,
                "a non-zero multiple of 4 KiB within the log",
            )));
        }
        if h.sequence_number == 0 || expect.is_some_and(|e| e != h.sequence_number) {
            return Ok(Err(VhdxError::field(
                s,
                at + 16,
                "sequence number",
                h.sequence_number,
                expect.map_or("non-zero".to_string(), |e| e.to_string()),
            )));
        }
        if h.log_guid != self.guid {
            return Ok(Err(VhdxError::field(
                s,
                at + 32,
                "log GUID",
                h.log_guid,
                self.guid.to_string(),
            )));
        }
        let sectors = len / SECTOR;
        let dsec = descriptor_sectors(h.descriptor_count);
        if dsec > sectors {
            return Ok(Err(VhdxError::field(
                s,
                at + 24,
                "descriptor count",
                h.descriptor_count,
                format!("descriptors that fit the entry's {len} bytes"),
            )));
        }
        self.charge(u64::from(h.descriptor_count) * DESCRIPTOR_SIZE as u64)?;
        let mut descriptors = Vec::with_capacity(h.descriptor_count as usize);
        let mut data = 0u64;
        for k in 0..u64::from(h.descriptor_count) {
            let (sec, off) = descriptor_slot(k);
            let dat = self.at(start + sec) + off as u64;
            let b = &self.sector(start + sec)[off..off + DESCRIPTOR_SIZE];
            match Descriptor::decode(b, h.sequence_number, dat) {
                Ok(d) => {
                    data += u64::from(d.is_data());
                    descriptors.push(d);
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        if dsec + data != sectors {
            return Ok(Err(VhdxError::field(
                s,
                at + 8,
                "entry length",
                len,
                format!(
                    "{} ({dsec} descriptor and {data} data sectors)",
                    (dsec + data) * SECTOR
                ),
            )));
        }
        for j in 0..data {
            let i = start + dsec + j;
            if let Err(e) = check_data_sector(self.sector(i), h.sequence_number, self.at(i)) {
                return Ok(Err(e));
            }
        }
        self.charge(len)?;
        let mut crc = crc32c_with_zeroed_field(first, ENTRY_CHECKSUM_OFFSET);
        for i in 1..sectors {
            crc = crc32c::crc32c_append(crc, self.sector(start + i));
        }
        if crc != h.checksum {
            return Ok(Err(VhdxError::Checksum {
                structure: s,
                offset: at,
                stored: h.checksum,
                computed: crc,
            }));
        }
        Ok(Ok(LogEntry {
            position: (start % self.sectors) * SECTOR,
            length: len,
            sequence_number: h.sequence_number,
            tail: u64::from(h.tail),
            flushed_file_offset: h.flushed_file_offset,
            last_file_offset: h.last_file_offset,
            descriptors,
        }))
    }
}

/// The active sequence of the log `log` (its whole bytes, a multiple of 4 KiB) whose
/// entries carry `log_guid`, or `None` when there is none. `log_offset` is the log's
/// file offset (for errors). Fails only on a log of a bad length or when the scan's
/// work budget is spent.
pub fn find_active_sequence(
    log: &[u8],
    log_guid: Uuid,
    log_offset: u64,
) -> Result<Option<ActiveSequence>, VhdxError> {
    let budget = (log.len() as u64)
        .saturating_mul(SCAN_WORK_FACTOR)
        .saturating_add(64 * 1024);
    scan(log, log_guid, log_offset, budget)
}

/// [`find_active_sequence`] with a work budget of `budget` bytes read.
pub(crate) fn scan(
    log: &[u8],
    log_guid: Uuid,
    log_offset: u64,
    budget: u64,
) -> Result<Option<ActiveSequence>, VhdxError> {
    if log.is_empty() || !(log.len() as u64).is_multiple_of(SECTOR) {
        return Err(VhdxError::field(
            Structure::Log,
            log_offset,
            "length",
            log.len(),
            "a non-zero multiple of 4 KiB",
        ));
    }
    let n = log.len() as u64 / SECTOR;
    let mut ring = Ring {
        log,
        sectors: n,
        file_offset: log_offset,
        guid: log_guid,
        work: 0,
        budget,
    };
    let mut best: Option<Vec<LogEntry>> = None;
    let mut pos = 0u64;
    while pos < n {
        let first = match ring.entry(pos, None)? {
            Ok(e) => e,
            Err(_) => {
                pos += 1;
                continue;
            }
        };
        let mut covered = first.length / SECTOR;
        let mut run = vec![first];
        while covered < n {
            let last = run.last().expect("a run is never empty");
            let Some(expect) = last.sequence_number.checked_add(1) else {
                break;
            };
            match ring.entry(pos + covered, Some(expect))? {
                Ok(e) if covered + e.length / SECTOR <= n => {
                    covered += e.length / SECTOR;
                    run.push(e);
                }
                _ => break,
            }
        }
        if let Some((tail, head)) = complete(&run) {
            let better = best.as_ref().is_none_or(|b| {
                run[head].sequence_number > b.last().expect("non-empty").sequence_number
            });
            if better {
                run.truncate(head + 1);
                best = Some(run.split_off(tail));
            }
        }
        pos += covered;
    }
    Ok(best.map(|entries| ActiveSequence {
        entries,
        log_length: log.len() as u64,
    }))
}

/// The longest complete sequence in `run`: `(tail index, head index)` of the last
/// entry whose tail names an entry at or before it. Normally the run's own head; a head
/// whose tail lies elsewhere is dropped and the one before it tried.
fn complete(run: &[LogEntry]) -> Option<(usize, usize)> {
    let index: std::collections::HashMap<u64, usize> = run
        .iter()
        .enumerate()
        .map(|(i, e)| (e.position, i))
        .collect();
    (0..run.len()).rev().find_map(|h| {
        index
            .get(&run[h].tail)
            .filter(|&&t| t <= h)
            .map(|&t| (t, h))
    })
}

/// Replays the log of a file: `log` holds the file's bytes from the header's log
/// offset (at least the log's length), `header` is the current header, `areas` the
/// file's areas (its real length included). `None` when the header names no log or the
/// log holds no complete sequence. Refuses (with the entry or write at fault) a file
/// shorter than an entry's flushed file offset, a growth past
/// [`MAX_REPLAY_GROWTH`], and any write into the header section (the region tables
/// excepted: [`in_region_tables`]) or the log or past the new length.
pub fn replay(
    log: &[u8],
    header: &Header,
    areas: &FileAreas,
) -> Result<Option<ReplayPlan>, VhdxError> {
    if !header.has_log() {
        return Ok(None);
    }
    let len = header.log_length as usize;
    need(log, len, Structure::Log, header.log_offset)?;
    let log = &log[..len];
    let Some(sequence) = find_active_sequence(log, header.log_guid, header.log_offset)? else {
        return Ok(None);
    };
    let entry_at = |e: &LogEntry| header.log_offset + e.position;
    let mut new_len = areas.file_len;
    for e in &sequence.entries {
        if e.flushed_file_offset > areas.file_len {
            return Err(VhdxError::field(
                Structure::LogEntry,
                entry_at(e) + 48,
                "flushed file offset",
                e.flushed_file_offset,
                format!(
                    "at most the file's length {} (the file lost data)",
                    areas.file_len
                ),
            ));
        }
        if e.last_file_offset > areas.file_len.saturating_add(MAX_REPLAY_GROWTH) {
            return Err(VhdxError::field(
                Structure::LogEntry,
                entry_at(e) + 56,
                "last file offset",
                e.last_file_offset,
                format!(
                    "at most {MAX_REPLAY_GROWTH} bytes past the file's length {}",
                    areas.file_len
                ),
            ));
        }
        new_len = new_len.max(e.last_file_offset);
    }
    let n = log.len() as u64 / SECTOR;
    let mut writes = Vec::new();
    for e in &sequence.entries {
        let first_data = e.position / SECTOR + descriptor_sectors(e.descriptors.len() as u32);
        let mut data_index = 0u64;
        for (k, d) in e.descriptors.iter().enumerate() {
            let (sec, off) = descriptor_slot(k as u64);
            let dat = header.log_offset + ((e.position / SECTOR + sec) % n) * SECTOR + off as u64;
            let w = match *d {
                Descriptor::Data {
                    file_offset,
                    leading,
                    trailing,
                } => {
                    let i = ((first_data + data_index) % n) as usize * LOG_SECTOR_SIZE;
                    data_index += 1;
                    let mut bytes = Vec::with_capacity(LOG_SECTOR_SIZE);
                    bytes.extend_from_slice(&leading);
                    bytes.extend_from_slice(
                        &log[i + DATA_OFFSET..i + DATA_OFFSET + DATA_SECTOR_PAYLOAD],
                    );
                    bytes.extend_from_slice(&trailing);
                    debug_assert_eq!(bytes.len(), LEADING_BYTES + DATA_SECTOR_PAYLOAD + 4);
                    LogWrite::Data {
                        offset: file_offset,
                        bytes,
                    }
                }
                Descriptor::Zero {
                    file_offset,
                    length,
                } => LogWrite::Zero {
                    offset: file_offset,
                    length,
                },
            };
            check_write(&w, areas, new_len, dat)?;
            writes.push(w);
        }
    }
    Ok(Some(ReplayPlan {
        sequence,
        writes,
        new_file_len: new_len,
    }))
}

/// Whether `start..end` lies inside the two region table copies (192 KiB to 320 KiB):
/// the one part of the header section a log may update (a BAT region moved to a new
/// place is switched to there; the headers, which locate the log, never go through it).
pub fn in_region_tables(start: u64, end: u64) -> bool {
    use crate::vhdx::region::{REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE};
    start >= REGION_TABLE_1_OFFSET && end <= REGION_TABLE_2_OFFSET + REGION_TABLE_SIZE as u64
}

/// Refuses a write into the header section (but for the region tables, see
/// [`in_region_tables`]) or the log, or past `new_len`. `at` is its descriptor's file
/// offset.
fn check_write(w: &LogWrite, areas: &FileAreas, new_len: u64, at: u64) -> Result<(), VhdxError> {
    let start = w.offset();
    let end = start
        .checked_add(w.len())
        .ok_or_else(|| VhdxError::placement(Structure::LogWrite, at, "write ends past 2^64"))?;
    if w.is_empty() {
        return Ok(());
    }
    let fault = if start < HEADER_SECTION_SIZE && !in_region_tables(start, end) {
        Some("into the header section (other than the region tables)".to_string())
    } else if start < areas.log.1 && areas.log.0 < end {
        Some("into the log".to_string())
    } else if end > new_len {
        Some(format!(
            "past the file's length after replay ({new_len:#x})"
        ))
    } else {
        None
    };
    match fault {
        Some(why) => Err(VhdxError::placement(
            Structure::LogWrite,
            at,
            format!("write {start:#x}..{end:#x} goes {why}"),
        )),
        None => Ok(()),
    }
}
