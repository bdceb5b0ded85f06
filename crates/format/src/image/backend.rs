//! The small storage interface the image layer talks to: positional reads and writes,
//! length, truncation, sync. Files in production, memory in unit and fuzz tests.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::RwLock;

/// Positional storage under an image. Implementations must be usable from many threads.
#[allow(clippy::len_without_is_empty)] // a length that can fail; emptiness is never asked
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; a short read is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the storage if needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends (with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync for files).
    fn sync(&self) -> io::Result<()>;
    /// The file underneath, when there is one (used for locks and memory maps).
    fn as_file(&self) -> Option<&File> {
        None
    }
}

/// A file (or block device) on the host.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
}

impl FileBackend {
    /// Wraps an open file.
    pub fn new(file: File) -> FileBackend {
        FileBackend { file }
    }
}

impl Backend for FileBackend {
    fn len(&self) -> io::Result<u64> {
        // Block devices report 0 in their metadata; seeking to the end works for both.
        let meta = self.file.metadata()?;
        if meta.is_file() {
            Ok(meta.len())
        } else {
            (&self.file).seek(SeekFrom::End(0))
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn as_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}

/// An image held in memory, for tests and fuzzing.
#[derive(Debug, Default)]
pub struct MemBackend {
    data: RwLock<Vec<u8>>,
    max_len: u64,
}

impl MemBackend {
    /// Wraps bytes; the backend may grow up to 1 GiB.
    pub fn new(data: Vec<u8>) -> MemBackend {
        MemBackend::with_limit(data, 1 << 30)
    }

    /// Wraps bytes; growing past `max_len` fails with `StorageFull`, like a full volume.
    pub fn with_limit(data: Vec<u8>, max_len: u64) -> MemBackend {
        MemBackend {
            data: RwLock::new(data),
            max_len,
        }
    }

    /// A copy of the current bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn grow_to(&self, data: &mut Vec<u8>, len: u64) -> io::Result<()> {
        if len > self.max_len {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "memory backend limit reached",
            ));
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("length overflow"))?;
        if data.len() < len {
            data.resize(len, 0);
        }
        Ok(())
    }
}

impl Backend for MemBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.data.read().unwrap_or_else(|e| e.into_inner()).len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = data.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::other("offset overflow"))?;
        self.grow_to(&mut data, end)?;
        // Both fit in usize: grow_to converted `end`.
        let start = offset as usize;
        data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        if len < data.len() as u64 {
            data.truncate(len as usize);
            Ok(())
        } else {
            self.grow_to(&mut data, len)
        }
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the image",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_backend_reads_back_writes_and_refuses_short_reads() {
        let b = MemBackend::new(vec![0; 4]);
        b.write_all_at(b"abc", 2).expect("write");
        assert_eq!(b.len().expect("len"), 5);
        let mut buf = [0u8; 3];
        b.read_exact_at(&mut buf, 2).expect("read");
        assert_eq!(&buf, b"abc");
        let err = b.read_exact_at(&mut buf, 3).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(b.read_exact_at(&mut buf, u64::MAX).is_err());
    }

    #[test]
    fn mem_backend_past_its_limit_is_full() {
        let b = MemBackend::with_limit(Vec::new(), 10);
        let err = b.write_all_at(&[0; 11], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }
}
