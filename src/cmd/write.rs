//! `vhdkit write`.

use std::io::Read;
use std::path::{Path, PathBuf};
use vhdkit_platform::FileExt;

use clap::Args;
use serde::Serialize;
use vhdkit_format::{Disk, OpenOptions};

use super::{json, size_arg, CliError, OpenArgs, EXIT_OK};

/// Bytes written per step, and the alignment of chunk boundaries in the disk.
const CHUNK: u64 = 4 << 20;

#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The disk.
    path: PathBuf,
    /// Virtual byte offset to write at.
    #[arg(long, value_parser = size_arg)]
    offset: u64,
    /// Read the bytes from this file instead of stdin.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Print a JSON report once the bytes are written and flushed.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// What `write --json` prints (docs/json.md).
#[derive(Debug, Serialize)]
struct WriteDoc<'a> {
    operation: &'static str,
    path: &'a Path,
    offset: u64,
    length: u64,
    bytes_written: u64,
    /// The input file, or `stdin`.
    input: &'a Path,
}

pub fn run(a: WriteArgs) -> Result<u8, CliError> {
    let opts = OpenOptions {
        writable: true,
        ..a.open.options_for(&a.path)?
    };
    let disk = Disk::open_with(&a.path, &opts)?;
    let size = disk.virtual_size();
    let room = size.saturating_sub(a.offset);
    // The whole range is known and checked before anything is written: a regular input
    // file by its length, anything else (stdin, a pipe) spooled to an unnamed temporary
    // file first, stopping as soon as it is longer than the disk has room for.
    let input = match &a.input {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| CliError::io_at("opening", p, e))?;
            let meta = f.metadata().map_err(|e| CliError::io_at("reading", p, e))?;
            if meta.is_file() {
                Input {
                    len: meta.len(),
                    file: f,
                }
            } else {
                spool(&mut std::io::BufReader::new(f), room)?
            }
        }
        None => spool(&mut std::io::stdin().lock(), room)?,
    };
    if a.offset.checked_add(input.len).is_none_or(|e| e > size) {
        return Err(vhdkit_format::Error::OutOfRange {
            path: a.path.clone(),
            offset: a.offset,
            len: input.len,
            size,
        }
        .into());
    }
    let mut buf = vec![0u8; CHUNK as usize];
    for (at, n) in chunks(a.offset, input.len) {
        let from = at - a.offset;
        input
            .file
            .read_exact_at(&mut buf[..n], from)
            .map_err(|e| CliError::io("reading the input", e))?;
        disk.write_at(&buf[..n], at)?;
    }
    disk.flush()?;
    if a.json {
        json::print(&json::Doc::new(WriteDoc {
            operation: "write",
            path: &a.path,
            offset: a.offset,
            length: input.len,
            bytes_written: input.len,
            input: a.input.as_deref().unwrap_or(Path::new("stdin")),
        }))?;
    }
    Ok(EXIT_OK)
}

/// The bytes to write, in a file (the input itself, or a spool of it).
struct Input {
    file: std::fs::File,
    len: u64,
}

/// Copies a stream into an unnamed temporary file; fails as soon as it holds more than
/// `room` bytes (more than the disk can take at the offset).
fn spool(r: &mut dyn Read, room: u64) -> Result<Input, CliError> {
    let mut file = tempfile::tempfile().map_err(|e| CliError::io("creating a spool file", e))?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut len = 0u64;
    loop {
        let n = read_full(r, &mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        if len > room {
            return Err(CliError::Other(format!(
                "the input is longer than the {room} bytes the disk holds past the offset; nothing was written"
            )));
        }
        std::io::Write::write_all(&mut file, &buf[..n])
            .map_err(|e| CliError::io("spooling the input", e))?;
    }
    Ok(Input { file, len })
}

/// The pieces `offset..offset + len` is written in: each ends on a multiple of
/// [`CHUNK`] in the disk (or at the end of the range), so chunk boundaries fall on block
/// boundaries for blocks up to `CHUNK` (on sector and granule boundaries always) and a
/// kill between two chunks leaves every sector old or new, never half of each.
fn chunks(offset: u64, len: u64) -> impl Iterator<Item = (u64, usize)> {
    let end = offset + len;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let next = ((at / CHUNK + 1) * CHUNK).min(end);
        let piece = (at, (next - at) as usize);
        at = next;
        Some(piece)
    })
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, CliError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CliError::io("reading the input", e)),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_on_aligned_boundaries_and_cover_the_range() {
        let offset = 3 * CHUNK - 1000;
        let len = 2 * CHUNK + 5000;
        let pieces: Vec<(u64, usize)> = chunks(offset, len).collect();
        assert_eq!(pieces.first(), Some(&(offset, 1000)));
        let mut at = offset;
        for &(o, n) in &pieces {
            assert_eq!(o, at, "contiguous");
            at += n as u64;
            if at != offset + len {
                assert_eq!(at % CHUNK, 0, "a chunk ends on a boundary");
            }
        }
        assert_eq!(at, offset + len);
        assert_eq!(chunks(7, 0).count(), 0);
    }
}
