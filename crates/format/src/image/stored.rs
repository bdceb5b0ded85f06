//! A layer's stored bytes, read where they lie: through a read-only map that never
//! leaves the call (no copy), or into the caller's buffer.

use super::VhdFile;
use crate::error::Result;

impl VhdFile {
    /// Calls `f` with the `len` stored bytes at `file_offset` (a `Data` extent's range)
    /// and returns what it returns. In a file opened read-only the bytes are read
    /// through a read-only map of exactly that range, unmapped when `f` returns: no
    /// copy, pages fault in as `f` reads them. Otherwise (a file opened for writing,
    /// data not in a file, a length that does not fit in memory) they are read into
    /// `buf`, grown as needed and reused across calls.
    ///
    /// The map never outlives the call: nothing outside this crate holds a mapping, and
    /// a read-only `VhdFile` holds a shared lock that no vhdkit writer of the file gets
    /// past, so nothing vhdkit does writes the range while `f` reads it. (As for every
    /// map, a file truncated under it by a process ignoring the locks raises SIGBUS.)
    ///
    /// ```
    /// use vhdkit_format::image::Extent;
    /// use vhdkit_format::{CreateOptions, Disk, DiskKind};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("d.vhd");
    /// let disk = Disk::create_and_open(&path, &CreateOptions::new(DiskKind::Dynamic, 8 << 20))?;
    /// disk.write_at(b"hello", 4096)?;
    /// disk.flush()?;
    /// drop(disk);
    /// let disk = Disk::open(&path)?;
    /// let mut buf = Vec::new();
    /// for e in disk.extents(0, 8 << 20)? {
    ///     if let Extent::Data { layer, file_offset, len } = e {
    ///         let stored = &disk.layers()[layer];
    ///         let found = stored.with_stored(file_offset, len as usize, &mut buf, |b| {
    ///             b.windows(5).any(|w| w == b"hello")
    ///         })?;
    ///         assert!(found);
    ///     }
    /// }
    /// # Ok::<(), vhdkit_format::Error>(())
    /// ```
    pub fn with_stored<R>(
        &self,
        file_offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        if let Some(window) = self.map_range(file_offset, len as u64, false) {
            return Ok(f(&window?));
        }
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let dst = &mut buf[..len];
        self.read_data(dst, file_offset)?;
        Ok(f(dst))
    }
}
