//! A VHDX file whose header names a log: the log's active sequence is replayed before
//! anything else is read. A read-only open replays it in memory — the writes become an
//! overlay every read of the file goes through, and the file is never written; a
//! writable open replays it on disk, durably (the writes, `fsync`, then a header in the
//! other slot with the log GUID cleared and the next sequence number, `fsync`), and
//! says so in a warning.

use crate::error::{Error, Result};
use crate::vhdx::header::{HeaderSlot, HEADER_SIZE};
use crate::vhdx::log::{LogWrite, ReplayPlan};
use crate::vhdx::CurrentHeader;

use super::super::core::FileCore;

/// What happened to the log when the file was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogState {
    /// The header names no log (its log GUID is nil).
    Clean,
    /// The header names a log but the ring holds no sequence of it: nothing to replay.
    NothingToReplay,
    /// Replayed in memory (a read-only open): `entries` entries, `writes` writes.
    ReplayedInMemory {
        /// Entries of the active sequence.
        entries: usize,
        /// Writes they made.
        writes: usize,
    },
    /// Replayed into the file (a writable open), and the header's log GUID cleared.
    ReplayedOnDisk {
        /// Entries of the active sequence.
        entries: usize,
        /// Writes they made.
        writes: usize,
    },
}

impl LogState {
    /// The name `info` and JSON use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LogState::Clean => "clean",
            LogState::NothingToReplay => "empty",
            LogState::ReplayedInMemory { .. } => "replayed-in-memory",
            LogState::ReplayedOnDisk { .. } => "replayed-on-disk",
        }
    }
}

/// The writes of an in-memory replay, in order: a later one wins where they overlap.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    writes: Vec<LogWrite>,
    /// Whether the replay makes the file longer than it is: reads past its real end
    /// then give zeros (never an I/O error), whether or not the log writes there.
    grows: bool,
}

impl Overlay {
    /// The overlay of `plan`'s writes over a file of `len` bytes.
    pub(super) fn new(plan: &ReplayPlan, len: u64) -> Overlay {
        Overlay {
            writes: plan.writes.clone(),
            grows: plan.new_file_len > len,
        }
    }

    /// Whether reads see the file as it is.
    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty() && !self.grows
    }

    /// Lays the writes meeting `buf` (the file's bytes at `at`) over it.
    pub(super) fn apply(&self, buf: &mut [u8], at: u64) {
        let end = at + buf.len() as u64;
        for w in &self.writes {
            let (ws, we) = (w.offset(), w.offset() + w.len());
            let (s, e) = (ws.max(at), we.min(end));
            if s >= e {
                continue;
            }
            let dst = &mut buf[(s - at) as usize..(e - at) as usize];
            match w {
                LogWrite::Data { bytes, .. } => {
                    dst.copy_from_slice(&bytes[(s - ws) as usize..(e - ws) as usize])
                }
                LogWrite::Zero { .. } => dst.fill(0),
            }
        }
    }
}

/// Replays `plan` into the file durably, then writes the next header (log GUID
/// cleared) into the other slot and syncs again. Returns the new current header.
pub(super) fn replay_on_disk(
    f: &FileCore,
    current: &CurrentHeader,
    plan: &ReplayPlan,
) -> Result<CurrentHeader> {
    let real = f.file_len;
    if plan.new_file_len > real {
        f.backend
            .set_len(plan.new_file_len)
            .map_err(|e| Error::file(&f.path, "growing the file as its log says", e))?;
    }
    let zeros = vec![0u8; super::super::core::CHUNK as usize];
    for w in &plan.writes {
        match w {
            LogWrite::Data { offset, bytes } => f.write(bytes, *offset, "replaying the log")?,
            LogWrite::Zero { offset, length } => {
                let mut pos = *offset;
                let end = offset + length;
                while pos < end {
                    let n = (end - pos).min(zeros.len() as u64) as usize;
                    f.write(&zeros[..n], pos, "replaying the log (zeroing)")?;
                    pos += n as u64;
                }
            }
        }
    }
    f.sync("syncing the replayed log")?;
    let mut header = current.header;
    header.log_guid = uuid::Uuid::nil();
    let (header, slot) = current.next(header).ok_or_else(|| {
        Error::corrupt(
            &f.path,
            "VHDX header",
            current.slot.offset() + 8,
            "the sequence number cannot grow",
        )
    })?;
    let bytes = header.encode();
    debug_assert_eq!(bytes.len(), HEADER_SIZE);
    f.write(
        &bytes,
        slot.offset(),
        "writing the VHDX header after the replay",
    )?;
    f.sync("syncing the VHDX header")?;
    Ok(CurrentHeader {
        header,
        slot,
        other_valid: true,
    })
}

/// The slot name for messages.
pub(super) fn slot_name(slot: HeaderSlot) -> &'static str {
    match slot {
        HeaderSlot::First => "header 1",
        HeaderSlot::Second => "header 2",
    }
}
