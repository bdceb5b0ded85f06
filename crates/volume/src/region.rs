//! A bounded window of the disk (a partition): reads outside it are refused before they
//! reach the disk, so a hostile pointer never reads (or frees) past its file system.

use crate::error::{corrupt, Error, Fail};
use crate::ReadAt;

/// Bytes `start..start + len` of `disk`; `start + len` is checked to fit the disk.
pub(crate) struct Region<'a, R: ReadAt + ?Sized> {
    pub(crate) disk: &'a R,
    pub(crate) start: u64,
    pub(crate) len: u64,
}

impl<'a, R: ReadAt + ?Sized> Region<'a, R> {
    pub(crate) fn new(disk: &'a R, start: u64, len: u64) -> Self {
        Region { disk, start, len }
    }

    /// Reads `buf.len()` bytes at `offset` inside the region; outside it is corruption.
    pub(crate) fn read(&self, offset: u64, buf: &mut [u8], what: &'static str) -> Result<(), Fail> {
        let len = buf.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(corrupt(format!(
                    "{what} ({len} bytes at {offset}) lies outside the file system's {} bytes",
                    self.len
                )))
            }
        }
        let abs = self
            .start
            .checked_add(offset)
            .ok_or_else(|| corrupt(format!("{what}: offset overflow")))?;
        self.disk.read_exact_at(buf, abs).map_err(|source| {
            Fail::Io(Error::Read {
                what,
                offset: abs,
                len: buf.len(),
                source,
            })
        })
    }

    /// Reads `len` bytes at `offset` into a new buffer (`len` is bounded by the region).
    pub(crate) fn read_vec(
        &self,
        offset: u64,
        len: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Fail> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(corrupt(format!(
                    "{what} ({len} bytes at {offset}) lies outside the file system's {} bytes",
                    self.len
                )))
            }
        }
        let n = usize::try_from(len).map_err(|_| corrupt(format!("{what}: too large")))?;
        let mut buf = vec![0u8; n];
        self.read(offset, &mut buf, what)?;
        Ok(buf)
    }
}
