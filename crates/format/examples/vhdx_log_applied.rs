//! Makes the VHDX at the path given look as Hyper-V leaves a cleanly closed file
//! (`fixtures/vhdx/hyperv-log-applied.vhdx`, made by `fixtures/make-vhdx-fixtures.sh`):
//! the current header names a log GUID, and the log holds one entry of that GUID that
//! is already applied — it rewrites the BAT's first 4 KiB with the bytes they hold — so
//! a reader that replays it (as the specification asks) changes nothing, and one that
//! ignores the log reads the same. qemu-img instead resets the header's log GUID once
//! its entry is applied.
//!
//! ```sh
//! cargo run -p vhdkit-format --example vhdx_log_applied -- FILE.vhdx
//! ```

use std::error::Error;

use vhdkit_format::vhdx::log::{LogCursor, LogWrite};
use vhdkit_format::vhdx::ParsedVhdx;

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args_os()
        .nth(1)
        .ok_or("usage: vhdx_log_applied FILE.vhdx")?;
    let mut bytes = std::fs::read(&path)?;
    let parsed = ParsedVhdx::decode(&bytes)?;
    let header = parsed.header.header;
    if header.has_log() {
        return Err("the file names a log already".into());
    }
    let bat_at = parsed.regions.bat.offset as usize;
    let sector = bytes[bat_at..bat_at + 4096].to_vec();
    let len = bytes.len() as u64;
    let log_guid = uuid::Uuid::new_v4();
    let placed = LogCursor::new(u64::from(header.log_length)).append(
        log_guid,
        len,
        len,
        &[LogWrite::Data {
            offset: bat_at as u64,
            bytes: sector,
        }],
    )?;
    let (log_at, log_len) = (header.log_offset as usize, header.log_length as usize);
    placed.write_into(&mut bytes[log_at..log_at + log_len]);
    let mut named = header;
    named.log_guid = log_guid;
    let (next, slot) = parsed
        .header
        .next(named)
        .ok_or("sequence number exhausted")?;
    let at = slot.offset() as usize;
    bytes[at..at + 4096].copy_from_slice(&next.encode());
    let replayed = ParsedVhdx::decode(&bytes)?;
    if replayed.bat != parsed.bat || replayed.replay.is_none() {
        return Err("the entry does not replay to the same table".into());
    }
    std::fs::write(&path, &bytes)?;
    Ok(())
}
