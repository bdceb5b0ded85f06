//! `vhdkit write`.

use std::io::Read;
use std::path::PathBuf;

use clap::Args;
use vhdkit_format::{Disk, OpenOptions};

use super::{size_arg, CliError, OpenArgs, EXIT_OK};

/// Bytes written per step.
const CHUNK: usize = 4 << 20;

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
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(a: WriteArgs) -> Result<u8, CliError> {
    let opts = OpenOptions {
        writable: true,
        ..a.open.options()
    };
    let disk = Disk::open_with(&a.path, &opts)?;
    let size = disk.virtual_size();
    let mut input: Box<dyn Read> = match &a.input {
        Some(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| CliError::io(format!("opening {}", p.display()), e))?;
            let len = f
                .metadata()
                .map_err(|e| CliError::io(format!("reading {}", p.display()), e))?
                .len();
            // Refuse up front rather than after writing part of it.
            if a.offset.checked_add(len).is_none_or(|e| e > size) {
                return Err(vhdkit_format::Error::OutOfRange {
                    path: a.path.clone(),
                    offset: a.offset,
                    len,
                    size,
                }
                .into());
            }
            Box::new(f)
        }
        None => Box::new(std::io::stdin().lock()),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut at = a.offset;
    loop {
        let n = read_full(&mut *input, &mut buf)?;
        if n == 0 {
            break;
        }
        disk.write_at(&buf[..n], at)?;
        at += n as u64;
    }
    disk.flush()?;
    Ok(EXIT_OK)
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
