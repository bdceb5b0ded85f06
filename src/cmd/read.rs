//! `vhdkit read`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use vhdkit_format::image::{Extent, NewFile, OutputOptions};
use vhdkit_format::Disk;

use super::{json, size_arg, usage_error, CliError, OpenArgs, EXIT_OK};

/// Bytes read per step.
const CHUNK: u64 = 4 << 20;

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The disk.
    path: PathBuf,
    /// First virtual byte to read.
    #[arg(long, default_value = "0", value_parser = size_arg)]
    offset: u64,
    /// Bytes to read (default: to the end of the disk).
    #[arg(long, value_parser = size_arg)]
    length: Option<u64>,
    /// Write to this file instead of stdout (zero ranges become holes). A new file
    /// appears only once complete and durable, and nothing is left behind on failure; a
    /// regular file that exists is refused unless --force. A device (block or
    /// character, e.g. /dev/sdX, an LVM volume, /dev/null) is written in place from its
    /// start (a block device smaller than the data is refused before any write).
    /// Symbolic links are never followed.
    #[arg(long)]
    output: Option<PathBuf>,
    /// With --output: replace a regular file that exists there, atomically (the new
    /// data is written beside it and renamed over it once complete and durable; the old
    /// file stays whole until then, and after a failure or cancel).
    #[arg(long, requires = "output")]
    force: bool,
    /// Print a JSON report once done (requires --output: stdout carries the data).
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// What `read --json` prints (docs/json.md).
#[derive(Debug, Serialize)]
struct ReadDoc<'a> {
    operation: &'static str,
    path: &'a Path,
    offset: u64,
    length: u64,
    bytes_read: u64,
    output: &'a Path,
}

pub fn run(a: ReadArgs) -> Result<u8, CliError> {
    if a.json && a.output.is_none() {
        return Err(usage_error(
            "--json needs --output FILE: without it stdout carries the data read",
        ));
    }
    let disk = Disk::open_with(&a.path, &a.open.options_for(&a.path)?)?;
    let size = disk.virtual_size();
    let length = a.length.unwrap_or(size.saturating_sub(a.offset));
    if a.offset.checked_add(length).is_none_or(|e| e > size) {
        return Err(vhdkit_format::Error::OutOfRange {
            path: a.path.clone(),
            offset: a.offset,
            len: length,
            size,
        }
        .into());
    }
    match &a.output {
        Some(out) => {
            // Unnamed until complete, then linked in (or, with --force, renamed over a
            // regular file): never through a symbolic link, never onto an input, nothing
            // half-written under the name. A device is written in place. The new file
            // takes the disk's permission bits.
            let opts = OutputOptions::new().replace(a.force).devices(true);
            let new = NewFile::create(out, &opts, Some(&disk), length)?;
            copy(&disk, a.offset, length, Sink::File(&new))?;
            if !new.is_device() {
                new.file()
                    .set_len(length)
                    .map_err(|e| CliError::io(format!("writing {}", out.display()), e))?;
            }
            new.persist(out)?;
            if a.json {
                json::print(&json::Doc::new(ReadDoc {
                    operation: "read",
                    path: &a.path,
                    offset: a.offset,
                    length,
                    bytes_read: length,
                    output: out,
                }))?;
            }
        }
        None => {
            let mut out = std::io::stdout().lock();
            copy(&disk, a.offset, length, Sink::Stream(&mut out))?;
            out.flush()
                .map_err(|e| CliError::io("writing to stdout", e))?;
        }
    }
    Ok(EXIT_OK)
}

/// Where read bytes go.
enum Sink<'a> {
    /// A fresh regular file (zero chunks are left as holes) or a device (zeroed there).
    File(&'a NewFile),
    /// Any stream.
    Stream(&'a mut dyn Write),
}

/// Copies `length` virtual bytes from `offset` into `sink`.
fn copy(disk: &Disk, offset: u64, length: u64, mut sink: Sink<'_>) -> Result<(), CliError> {
    use vhdkit_platform::FileExt;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0u64;
    while pos < length {
        let n = CHUNK.min(length - pos);
        let at = offset + pos;
        let chunk = &mut buf[..n as usize];
        match &mut sink {
            Sink::File(f) => {
                let all_zero = disk
                    .extents(at, n)?
                    .iter()
                    .all(|e| matches!(e, Extent::Zero { .. }));
                if all_zero {
                    f.write_zeros(pos, n)?;
                } else {
                    disk.read_at(chunk, at)?;
                    f.file()
                        .write_all_at(chunk, pos)
                        .map_err(|e| CliError::io("writing the output", e))?;
                }
            }
            Sink::Stream(w) => {
                disk.read_at(chunk, at)?;
                w.write_all(chunk)
                    .map_err(|e| CliError::io("writing to stdout", e))?;
            }
        }
        pos += n;
    }
    Ok(())
}
