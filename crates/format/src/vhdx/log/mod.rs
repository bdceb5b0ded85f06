//! The log (MS-VHDX 2.3): a circular buffer of 4 KiB sectors holding entries that
//! describe metadata writes. A header whose log GUID is set says the log may hold a
//! sequence of entries not yet applied; it must be replayed before anything else in
//! the file is trusted.
//!
//! - [`entry`]: the on-disk records — entry header, data and zero descriptors, data
//!   sectors — decoded and encoded.
//! - [`mod@replay`]: finding the active sequence (the valid run of entries with the
//!   highest sequence number whose head names its own tail) and turning it into the
//!   list of writes and the file's new length, as a pure function. Every write is
//!   checked against the file's areas: never into the header section (but for its two
//!   region table copies, which a moved BAT region is switched in) or the log,
//!   never past the new length, which may exceed the file's real length by at most
//!   [`replay::MAX_REPLAY_GROWTH`]. The scan's work is bounded by a multiple of the
//!   log's length, so a log built to be slow is refused rather than followed.
//! - [`mod@encode`]: building an entry for a set of sector writes, with its checksums,
//!   and placing it in the ring, so that `replay(encode(w)) == w`.
//!
//! An entry built for two writes and replayed from the ring:
//!
//! ```
//! use vhdkit_format::vhdx::log::{replay, LogCursor, LogWrite};
//! use vhdkit_format::vhdx::{FileAreas, Header};
//!
//! let mib = 1u64 << 20;
//! let header = Header { log_guid: uuid::Uuid::new_v4(), ..Header::new(mib, mib as u32) };
//! let writes = vec![
//!     LogWrite::Data { offset: 3 * mib, bytes: vec![7; 4096] },
//!     LogWrite::Zero { offset: 5 * mib, length: 8192 },
//! ];
//! let mut log = vec![0u8; mib as usize];
//! LogCursor::new(mib)
//!     .append(header.log_guid, 8 * mib, 8 * mib, &writes)
//!     .unwrap()
//!     .write_into(&mut log);
//! let areas = FileAreas { file_len: 8 * mib, log: (mib, 2 * mib), regions: vec![] };
//! let plan = replay(&log, &header, &areas).unwrap().expect("a sequence to replay");
//! assert_eq!(plan.writes, writes);
//! ```
//!
//! The log is used for metadata only (BAT, metadata region, sector bitmaps, zeroing a
//! newly allocated range); guest data is written in place.

pub mod encode;
pub mod entry;
pub mod replay;

pub use encode::{EntryParams, LogCursor, PlacedEntry};
pub use entry::{Descriptor, RawEntryHeader, LOG_SECTOR_SIZE};
pub use replay::{find_active_sequence, replay, ActiveSequence, LogEntry, LogWrite, ReplayPlan};
