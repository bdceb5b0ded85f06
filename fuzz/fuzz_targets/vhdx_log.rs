//! VHDX log replay: 32 config bytes (file length, flags, the log GUID) then the log's
//! bytes (cut to whole 4 KiB sectors). Replay never panics, reads in bounded work, and
//! keeps memory bounded by the log: at most one 4 KiB buffer per log sector. Every
//! write it asks for lies past the header section, outside the log and inside the new
//! length, which grows at most by the replay bound. What it replays, re-encoded as one
//! entry, replays to the same writes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use vhdkit_format::vhdx::log::replay::{replay, LogWrite, MAX_REPLAY_GROWTH};
use vhdkit_format::vhdx::log::LogCursor;
use vhdkit_format::vhdx::{FileAreas, Header, MIB};

const LOG_AT: u64 = MIB;

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 {
        return;
    }
    let (cfg, rest) = data.split_at(32);
    let log = &rest[..rest.len() / 4096 * 4096];
    if log.is_empty() {
        return;
    }
    let file_len = u64::from_le_bytes(cfg[..8].try_into().expect("8 bytes")) % (1 << 40);
    // Flag bit 0: take the log GUID from the first sector (so mutations keep matching).
    let guid = if cfg[8] & 1 == 1 {
        Uuid::from_bytes_le(log[32..48].try_into().expect("16 bytes"))
    } else {
        Uuid::from_bytes_le(cfg[16..32].try_into().expect("16 bytes"))
    };
    let header = Header {
        sequence_number: 1,
        file_write_guid: Uuid::nil(),
        data_write_guid: Uuid::nil(),
        log_guid: guid,
        log_length: log.len() as u32,
        log_offset: LOG_AT,
    };
    let areas = FileAreas {
        file_len,
        log: (LOG_AT, LOG_AT + log.len() as u64),
        regions: vec![],
    };
    let Ok(Some(plan)) = replay(log, &header, &areas) else {
        return;
    };
    assert!(plan.new_file_len >= file_len);
    assert!(plan.new_file_len <= file_len + MAX_REPLAY_GROWTH);
    let mut data_writes = 0usize;
    for w in &plan.writes {
        let (start, end) = (w.offset(), w.offset() + w.len());
        assert!(start.is_multiple_of(4096) && w.len().is_multiple_of(4096));
        if w.is_empty() {
            continue;
        }
        // The header section takes writes only into the region tables (a BAT moved).
        assert!(
            start >= MIB || vhdkit_format::vhdx::log::replay::in_region_tables(start, end),
            "write into the header section"
        );
        assert!(
            end <= areas.log.0 || start >= areas.log.1,
            "write into the log"
        );
        assert!(end <= plan.new_file_len, "write past the new length");
        if let LogWrite::Data { bytes, .. } = w {
            assert_eq!(bytes.len(), 4096);
            data_writes += 1;
        }
    }
    assert!(
        data_writes <= log.len() / 4096,
        "more data than the log holds"
    );
    let seq = &plan.sequence;
    assert!(seq.entries.iter().all(|e| e.position < log.len() as u64));
    // Re-encode everything as one entry right after the head and replay it.
    let mut cursor = LogCursor::after(seq);
    if let Ok(placed) = cursor.append(guid, file_len, plan.new_file_len, &plan.writes) {
        let mut fresh = vec![0u8; log.len()];
        placed.write_into(&mut fresh);
        let again = replay(&fresh, &header, &areas)
            .expect("a re-encoded entry replays")
            .expect("a sequence");
        assert_eq!(again.writes, plan.writes);
    }
});
