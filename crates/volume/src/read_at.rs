//! The one I/O interface of the crate: positional reads of a disk of known size.

use std::io;

/// A disk (or any byte container) read by offset: the virtual view of a VHD, a raw
/// image file, a byte slice.
///
/// Implementations must be positional (no shared cursor), so a `&self` reader can be used
/// from any thread. Reads wholly inside `0..size()` must either fill the buffer or fail;
/// the volume layer never asks for bytes past `size()`.
///
/// ```
/// use vhdkit_volume::ReadAt;
///
/// let disk = vec![7u8; 4096];
/// let mut buf = [0u8; 16];
/// disk.read_exact_at(&mut buf, 100).unwrap();
/// assert_eq!(buf, [7u8; 16]);
/// assert_eq!(ReadAt::size(&disk).unwrap(), 4096);
/// ```
pub trait ReadAt {
    /// The size of the disk in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Reads exactly `buf.len()` bytes starting at byte `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for [u8] {
    fn size(&self) -> io::Result<u64> {
        u64::try_from(self.len()).map_err(|_| io::Error::other("slice longer than u64"))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).ok();
        let src = start
            .and_then(|s| s.checked_add(buf.len()).map(|e| (s, e)))
            .and_then(|(s, e)| self.get(s..e))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} past the end ({} bytes)",
                        buf.len(),
                        self.len()
                    ),
                )
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> io::Result<u64> {
        self.as_slice().size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

/// A raw image file (or block device opened as a file): its length is the disk size.
///
/// For a block device, `metadata().len()` is 0; wrap such a handle in a type of your own
/// that knows the device size.
impl ReadAt for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        vhdkit_platform::FileExt::read_exact_at(self, buf, offset)
    }
}
