//! What every open disk file has, whatever its container: its path, the backend holding
//! it, whether it was opened for writing, its footer (read, or made up for a raw
//! image), the length it had and the warnings met opening it — and the small I/O
//! helpers every container's writer shares (sync, zeroing a range, the footer of a
//! resized disk).

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::spec::{Footer, Geometry, SECTOR_SIZE};

use super::backend::Backend;
use super::footer::FooterSource;

/// Bytes read or written at a time by the edits that stream (zeroing, a new table).
pub(crate) const CHUNK: u64 = 1 << 20;

/// The part of an open file that does not depend on its container.
#[derive(Debug)]
pub(crate) struct FileCore {
    pub path: PathBuf,
    pub backend: Arc<dyn Backend>,
    pub writable: bool,
    pub footer: Footer,
    pub footer_source: FooterSource,
    /// Length of the file when opened (flat containers keep it up to date on resize).
    pub file_len: u64,
    pub warnings: Vec<String>,
}

impl FileCore {
    /// `fsync`s the file; `doing` names the step in the error.
    pub fn sync(&self, doing: &'static str) -> Result<()> {
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, doing, e))
    }

    /// Writes `data` at `at`; `doing` names the step in the error.
    pub fn write(&self, data: &[u8], at: u64, doing: &'static str) -> Result<()> {
        self.backend
            .write_all_at(data, at)
            .map_err(|e| Error::io(&self.path, doing, at, e))
    }

    /// Reads `buf.len()` bytes at `at`; `doing` names the step in the error.
    pub fn read(&self, buf: &mut [u8], at: u64, doing: &'static str) -> Result<()> {
        self.backend
            .read_exact_at(buf, at)
            .map_err(|e| Error::io(&self.path, doing, at, e))
    }

    /// Writes zeros over every non-zero byte of the file in `start..end`, skipping holes,
    /// calling `tick` with the bytes covered after each chunk; the caller syncs. Returns
    /// whether anything was written.
    pub fn zero_range(
        &self,
        start: u64,
        end: u64,
        tick: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<bool> {
        let mut wrote = false;
        let mut pos = start;
        let mut buf = vec![0u8; CHUNK.min(end.saturating_sub(start)) as usize];
        while pos < end {
            let data = next_data(self.backend.as_file(), pos)
                .unwrap_or(end)
                .min(end);
            if data > pos {
                tick(data - pos)?;
                pos = data;
                continue;
            }
            let n = (end - pos).min(CHUNK) as usize;
            let chunk = &mut buf[..n];
            self.read(chunk, pos, "reading the space a resize clears")?;
            if !all_zero(chunk) {
                chunk.fill(0);
                self.write(chunk, pos, "zeroing the space a resize clears")?;
                wrote = true;
            }
            tick(n as u64)?;
            pos += n as u64;
        }
        Ok(wrote)
    }
}

/// The footer of `footer`'s disk at `size`: current size, original size and CHS
/// geometry (the specification's algorithm) change; everything else stays. The
/// specification calls the original size "the size at creation time", for information;
/// but libvhdi takes a disk's size from it (its "disk size"), so it follows the current
/// size, or libvhdi would keep showing the old size.
pub(crate) fn resized_footer(footer: &Footer, size: u64) -> Footer {
    let mut f = footer.clone();
    f.current_size = size;
    f.original_size = size;
    f.geometry = Geometry::from_total_sectors(size / SECTOR_SIZE);
    f
}

fn all_zero(buf: &[u8]) -> bool {
    let mut words = buf.chunks_exact(8);
    let zero_words = words
        .by_ref()
        .all(|w| u64::from_ne_bytes(w.try_into().unwrap_or([1; 8])) == 0);
    zero_words && words.remainder().iter().all(|&b| b == 0)
}

/// The first offset at or after `from` that holds data, by `SEEK_DATA` (`None`: a hole
/// up to the end of the file). Without a file or `SEEK_DATA`, `from` itself.
fn next_data(file: Option<&std::fs::File>, from: u64) -> Option<u64> {
    let Some(f) = file else { return Some(from) };
    vhdkit_platform::next_data(f, from).unwrap_or(Some(from))
}
