//! The small storage interface the image layer talks to: positional reads and writes,
//! length, truncation, sync. Files in production, memory in unit and fuzz tests.

use std::fs::File;
use std::io;
#[cfg(any(test, feature = "testing"))]
use std::sync::RwLock;
use vhdkit_platform::FileExt;

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
    /// Reserves storage for `offset..offset + len` without changing the length or what
    /// any byte reads as (`fallocate` with `FALLOC_FL_KEEP_SIZE`), so that writes there
    /// later cannot fail for want of space. Storage that cannot reserve ahead does
    /// nothing (memory), or checks that the free space would hold it (a file system
    /// without `fallocate`).
    fn reserve(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// The file underneath, when there is one (used for locks and memory maps).
    fn as_file(&self) -> Option<&File> {
        None
    }
    /// Makes `len` bytes at `offset` (inside the storage) read as zeros, giving their
    /// space back where it can (a hole punched in a file: `fallocate`'s
    /// `FALLOC_FL_PUNCH_HOLE`, `F_PUNCHHOLE`, `FSCTL_SET_ZERO_DATA`); the length never
    /// changes. True when the space was released, false when zeros were written (memory,
    /// devices, file systems without holes).
    fn punch(&self, offset: u64, len: u64) -> io::Result<bool> {
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let n = (end - pos).min(zeros.len() as u64);
            self.write_all_at(&zeros[..n as usize], pos)?;
            pos += n;
        }
        Ok(false)
    }
}

/// A file (or block device) on the host.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    path: std::path::PathBuf,
}

impl FileBackend {
    /// Wraps an open file.
    pub fn new(file: File) -> FileBackend {
        FileBackend {
            file,
            path: std::path::PathBuf::new(),
        }
    }

    /// Wraps an open file, remembering its path (which fault injection matches on).
    pub fn with_path(file: File, path: impl AsRef<std::path::Path>) -> FileBackend {
        FileBackend {
            file,
            path: path.as_ref().to_owned(),
        }
    }

    /// The path this backend names its file by.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Makes `len` bytes at `offset` of this file share the extents of `len` bytes at
    /// `src_offset` of `src`, where the file system can (`FICLONERANGE`; any error:
    /// nothing was cloned); a write as far as fault injection goes.
    pub(crate) fn clone_from(
        &self,
        src: &std::fs::File,
        src_offset: u64,
        len: u64,
        offset: u64,
    ) -> io::Result<()> {
        faults::before(&self.path, faults::FaultOp::Write)?;
        super::map_clone::clone_range(src, src_offset, len, &self.file, offset)
    }

    /// Makes this new, empty file share every extent of `src` (its length then `src`'s),
    /// where the file system can (`FICLONE`; any error: nothing was cloned, though the
    /// length may have changed); a write as far as fault injection goes.
    pub(crate) fn clone_all_from(&self, src: &std::fs::File) -> io::Result<()> {
        faults::before(&self.path, faults::FaultOp::Write)?;
        vhdkit_platform::clone_file(src, &self.file)
    }

    /// Creates a new file at `path` sharing every extent of `src`
    /// ([`vhdkit_platform::clone_file_to`]; any error: no file was left there); a write
    /// to this backend's file as far as fault injection goes (it becomes that file).
    pub(crate) fn clone_to(
        &self,
        src: &std::fs::File,
        path: &std::path::Path,
    ) -> io::Result<std::fs::File> {
        faults::before(&self.path, faults::FaultOp::Write)?;
        vhdkit_platform::clone_file_to(src, path)
    }
}

impl Backend for FileBackend {
    fn len(&self) -> io::Result<u64> {
        // Block devices report 0 in their metadata: their size comes from the system
        // (the end of the device; IOCTL_DISK_GET_LENGTH_INFO on Windows).
        match self.file.metadata() {
            Ok(meta) if meta.is_file() => Ok(meta.len()),
            _ => vhdkit_platform::size_of(&self.file),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        faults::before(&self.path, faults::FaultOp::Write)?;
        write_in_page_phase(buf, offset, |piece, at| {
            FileExt::write_all_at(&self.file, piece, at)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        faults::before(&self.path, faults::FaultOp::Write)?;
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        faults::before(&self.path, faults::FaultOp::Sync)?;
        self.file.sync_data()
    }

    fn reserve(&self, offset: u64, len: u64) -> io::Result<()> {
        faults::before(&self.path, faults::FaultOp::Write)?;
        if len == 0 {
            return Ok(());
        }
        vhdkit_platform::reserve(&self.file, offset, len)
    }

    fn punch(&self, offset: u64, len: u64) -> io::Result<bool> {
        faults::before(&self.path, faults::FaultOp::Write)?;
        vhdkit_platform::punch_hole(&self.file, offset, len)
    }

    fn as_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}

/// The page size whose boundaries a cut-short write may stop at.
const PAGE: usize = 4096;
/// The most one bounced write copies at a time (a multiple of [`PAGE`]).
const BOUNCE: usize = 1 << 20;

thread_local! {
    /// A page-aligned buffer for [`write_in_page_phase`], made on first need per thread.
    static BOUNCE_BUF: std::cell::RefCell<Option<memmap2::MmapMut>> =
        const { std::cell::RefCell::new(None) };
}

/// Writes `buf` at `offset` through `write` so that a write the kernel cuts short stops
/// at a page boundary of the file, never inside a sector.
///
/// A buffered write copies the source into the page cache with page faults disabled;
/// when a source page is not mapped at that instant the copy stops at that *source*
/// page's boundary, the kernel commits the part copied, and a kill -9 arriving before it
/// retries leaves the file with exactly that part written. If the source does not sit at
/// the file's page phase — a large `Vec` from malloc starts 16 bytes into a page — the
/// cut falls inside a file sector, which then reads neither its old nor its new bytes:
/// a torn sector in a disk an in-place operation promised to keep old-or-new. Sources
/// at the file's phase (memory maps of another image, page-aligned buffers), or lying
/// within one page, are written as they are; others are copied, [`BOUNCE`] bytes at a
/// time, into a page-aligned buffer at the file's phase first.
fn write_in_page_phase(
    buf: &[u8],
    offset: u64,
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let phase = (offset % PAGE as u64) as usize;
    let addr = buf.as_ptr() as usize % PAGE;
    if addr == phase || addr + buf.len() <= PAGE {
        return write(buf, offset);
    }
    BOUNCE_BUF.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(memmap2::MmapMut::map_anon(BOUNCE + PAGE)?);
        }
        let bounce = slot.as_mut().expect("the bounce buffer was just made");
        let mut done = 0;
        while done < buf.len() {
            // Every piece starts BOUNCE (a whole number of pages) after the last, so at
            // the same phase.
            let n = (buf.len() - done).min(BOUNCE);
            bounce[phase..phase + n].copy_from_slice(&buf[done..done + n]);
            write(&bounce[phase..phase + n], offset + done as u64)?;
            done += n;
        }
        Ok(())
    })
}

/// An image held in memory, for tests and fuzzing (cargo feature `testing`).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Default)]
pub struct MemBackend {
    data: RwLock<Vec<u8>>,
    max_len: u64,
}

#[cfg(any(test, feature = "testing"))]
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

#[cfg(any(test, feature = "testing"))]
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

/// Without the `testing` feature, the fault-injection hook is nothing at all.
#[cfg(not(any(test, feature = "testing")))]
mod faults {
    /// Which call the hook is asked about.
    pub(super) enum FaultOp {
        Write,
        Sync,
    }

    #[inline(always)]
    pub(super) fn before(_: &std::path::Path, _: FaultOp) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fault injection for tests (cargo feature `testing`): make the N-th write or sync of
/// files under a directory fail with a chosen OS error (ENOSPC, EIO, …), as a full or
/// failing volume would. Unarmed, it costs one relaxed atomic load per write.
#[cfg(any(test, feature = "testing"))]
pub mod faults {
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Which call fails.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum FaultOp {
        /// Writes and length changes.
        Write,
        /// Syncs.
        Sync,
    }

    /// A fault to inject.
    #[derive(Debug, Clone)]
    pub struct FaultPlan {
        /// Only files under this directory are affected.
        pub dir: PathBuf,
        /// The call that fails.
        pub op: FaultOp,
        /// Fail the `nth` such call (1-based); 0 fails none and only counts.
        pub nth: u64,
        /// The OS error number to fail with (28 = ENOSPC, 5 = EIO).
        pub errno: i32,
    }

    struct Armed {
        id: u64,
        plan: FaultPlan,
        writes: AtomicU64,
        syncs: AtomicU64,
    }

    static ARMED: AtomicUsize = AtomicUsize::new(0);
    static PLANS: Mutex<Vec<Armed>> = Mutex::new(Vec::new());
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);

    /// An armed fault; dropping it disarms.
    #[derive(Debug)]
    pub struct FaultGuard {
        id: u64,
    }

    impl FaultGuard {
        /// Writes and syncs seen so far under the plan's directory.
        pub fn counts(&self) -> (u64, u64) {
            let plans = PLANS.lock().unwrap_or_else(|e| e.into_inner());
            plans
                .iter()
                .find(|a| a.id == self.id)
                .map(|a| {
                    (
                        a.writes.load(Ordering::SeqCst),
                        a.syncs.load(Ordering::SeqCst),
                    )
                })
                .unwrap_or((0, 0))
        }
    }

    impl Drop for FaultGuard {
        fn drop(&mut self) {
            let mut plans = PLANS.lock().unwrap_or_else(|e| e.into_inner());
            plans.retain(|a| a.id != self.id);
            ARMED.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Arms a fault until the guard is dropped.
    pub fn arm(plan: FaultPlan) -> FaultGuard {
        let id = NEXT_ID.fetch_add(1, Ordering::SeqCst);
        let mut plans = PLANS.lock().unwrap_or_else(|e| e.into_inner());
        plans.push(Armed {
            id,
            plan,
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        });
        ARMED.fetch_add(1, Ordering::SeqCst);
        FaultGuard { id }
    }

    pub(crate) fn before(path: &Path, op: FaultOp) -> io::Result<()> {
        if ARMED.load(Ordering::Relaxed) == 0 || path.as_os_str().is_empty() {
            return Ok(());
        }
        let plans = PLANS.lock().unwrap_or_else(|e| e.into_inner());
        for a in plans.iter().filter(|a| path.starts_with(&a.plan.dir)) {
            let counter = match op {
                FaultOp::Write => &a.writes,
                FaultOp::Sync => &a.syncs,
            };
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if a.plan.op == op && a.plan.nth == n {
                return Err(vhdkit_platform::errno_error(a.plan.errno));
            }
        }
        Ok(())
    }
}

#[cfg(any(test, feature = "testing"))]
fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the image",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece `write_in_page_phase` hands on either sits at its file offset's page
    /// phase or lies within one page (so a copy cut short at a source page boundary
    /// stops at a file page boundary), and the pieces put every byte in its place.
    #[test]
    fn writes_keep_the_source_at_the_file_page_phase() {
        let data: Vec<u8> = (0..(3 * BOUNCE + 5000))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        for (skip, len, offset) in [
            (16, 2 * BOUNCE + 100, 0u64),
            (16, BOUNCE, 512),
            (1, 3 * BOUNCE, 4096 * 3 + 1024),
            (0, 9000, 4096),
            (4000, 200, 7 * 512),
            (4000, 5000, 7 * 512),
            (100, 2 * PAGE, 100),
        ] {
            let src = &data[skip..skip + len];
            let mut file = vec![0u8; offset as usize + len];
            write_in_page_phase(src, offset, |piece, at| {
                let (addr, phase) = (piece.as_ptr() as usize % PAGE, (at % PAGE as u64) as usize);
                assert!(
                    addr == phase || addr + piece.len() <= PAGE,
                    "a piece of {} bytes for {at} starts at page offset {addr}",
                    piece.len()
                );
                file[at as usize..at as usize + piece.len()].copy_from_slice(piece);
                Ok(())
            })
            .expect("write");
            assert_eq!(
                &file[offset as usize..],
                src,
                "skip {skip} len {len} at {offset}"
            );
        }
    }

    #[test]
    fn a_file_backend_writes_misaligned_sources_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let b = FileBackend::new(File::create_new(&path).expect("create"));
        let data: Vec<u8> = (0..(BOUNCE * 2 + 777)).map(|i| (i % 253) as u8).collect();
        b.write_all_at(&data[3..], 1536).expect("write");
        let back = std::fs::read(&path).expect("read");
        assert_eq!(back.len(), 1536 + data.len() - 3);
        assert_eq!(&back[1536..], &data[3..]);
    }

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
