//! What vhdkit asks of the operating system, in one place: every call that differs
//! between Linux, macOS and Windows lives in this crate, one module per system
//! (`linux.rs`, `macos.rs` for the other Unix systems, `unix.rs` for what they share,
//! `windows.rs`), behind the functions below. The rest of vhdkit is portable Rust.
//!
//! Each function says what it does where the system cannot: the plain fallback (write
//! the bytes, check the free space, treat everything as data) is always there, so a
//! file system that says no only costs speed, never correctness.
//!
//! ```
//! use vhdkit_platform::FileExt;
//! # let dir = tempfile::tempdir().unwrap();
//! let f = std::fs::File::options()
//!     .read(true).write(true).create_new(true)
//!     .open(dir.path().join("f")).unwrap();
//! f.write_all_at(b"positional", 4096).unwrap();
//! let mut back = [0u8; 10];
//! f.read_exact_at(&mut back, 4096).unwrap();
//! assert_eq!(&back, b"positional");
//! ```

#![deny(missing_docs)]

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(all(unix, not(target_os = "linux")))]
mod macos;
pub mod net;
pub mod signals;
#[cfg(unix)]
mod unix;
#[cfg(windows)]
mod windows;

#[cfg(unix)]
use unix as sys;
#[cfg(windows)]
use windows as sys;

/// Reads and writes at a position of a file, without a shared cursor (Unix `pread` /
/// `pwrite`; Windows `ReadFile`/`WriteFile` with the offset in an `OVERLAPPED`).
pub trait FileExt {
    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes up to `buf.len()` bytes at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// Reads exactly `buf.len()` bytes at `offset` (`UnexpectedEof` if the file ends).
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "failed to fill whole buffer",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl FileExt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        sys::read_at(self, buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        sys::write_at(self, buf, offset)
    }
}

/// The kind of a file, as `fstat` (or `GetFileType`) tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device (`/dev/null`, a terminal).
    CharDevice,
    /// A block device (`/dev/sdb`; on Windows `\\.\PhysicalDrive1`, `\\.\C:`).
    BlockDevice,
    /// A symbolic link (only from metadata that does not follow links).
    Symlink,
    /// Anything else.
    Other,
}

/// The kind of the file `meta` describes.
pub fn kind(meta: &Metadata) -> FileKind {
    sys::kind(meta)
}

/// The kind of the open file `file`: as [`kind`], but also right for devices opened by
/// a device name on Windows (whose metadata says nothing).
pub fn kind_of(file: &File) -> io::Result<FileKind> {
    sys::kind_of(file)
}

/// What identifies a file: its file system and file number (`st_dev`, `st_ino`; the
/// volume serial number and file index on Windows), or the device for a device node
/// (two nodes can name one device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileId {
    /// A file: (volume, file number).
    File(u64, u64),
    /// A device node: the device number.
    Device(u64),
}

/// The identity of an open file (`None` where the system cannot tell).
pub fn file_id(file: &File) -> Option<FileId> {
    sys::file_id(file)
}

/// The identity of what `path` names, not following a final symbolic link.
pub fn path_id(path: &Path) -> Option<FileId> {
    sys::path_id(path)
}

/// The file system (volume) an open regular file lives on: two files may share extents
/// only within one.
pub fn volume_of(file: &File) -> Option<u64> {
    sys::volume_of(file)
}

/// Whether `meta` is of a file owned by the user running this process (always on
/// Windows, where the ACL decides and the open succeeded).
pub fn owned_by_me(meta: &Metadata) -> bool {
    sys::owned_by_me(meta)
}

/// The permission bits of `meta` (`st_mode & 0o7777`); on Windows 0o444 for a
/// read-only file, else 0o666.
pub fn mode(meta: &Metadata) -> u32 {
    sys::mode(meta)
}

/// The permissions a new file with bits `mode` gets through `tempfile`'s builder
/// (`None` on Windows, where files have no mode bits: the folder's ACL applies).
pub fn new_file_permissions(mode: u32) -> Option<std::fs::Permissions> {
    sys::new_file_permissions(mode)
}

/// Sets the permission bits of `path` (a read-only flag on Windows: no write bit).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    sys::set_mode(path, mode)
}

/// Whether the open file still has a name (a link count above zero). On Windows, where
/// an open file cannot lose its last name while it is open without delete sharing,
/// always true.
pub fn still_linked(file: &File) -> bool {
    sys::still_linked(file)
}

/// Opens `path` for reading (and writing when `writable`) without blocking on a FIFO
/// and without making a terminal the controlling one (`O_NONBLOCK | O_NOCTTY`, cleared
/// again by [`clear_nonblocking`] once the file's kind is checked).
pub fn open_nonblocking(path: &Path, writable: bool) -> io::Result<File> {
    sys::open_nonblocking(path, writable)
}

/// Clears `O_NONBLOCK` again on a file [`open_nonblocking`] opened.
pub fn clear_nonblocking(file: &File) -> io::Result<()> {
    sys::clear_nonblocking(file)
}

/// Opens `path` read-only without following a final symbolic link (and without
/// blocking): to look at a file before removing it.
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    sys::open_no_follow(path)
}

/// Opens the device at `path` for writing in place: a block device read-write and
/// exclusively (a mounted one is refused: [`is_busy`]), a character device write-only;
/// never through a symbolic link. On Windows a block device is a `\\.\PhysicalDriveN`
/// or a volume `\\.\C:`.
pub fn open_device(path: &Path, block: bool) -> io::Result<File> {
    sys::open_device(path, block)
}

/// Opens the device at `path` read-only, only to ask its size.
pub fn open_device_read(path: &Path) -> io::Result<File> {
    sys::open_device_read(path)
}

/// The size in bytes of an open file or device (`IOCTL_DISK_GET_LENGTH_INFO` on a
/// Windows disk or volume; the end of the file elsewhere).
pub fn size_of(file: &File) -> io::Result<u64> {
    sys::size_of(file)
}

/// Whether a path names a device in the Windows device namespace (`\\.\…`); never on
/// Unix, where devices live in the file system.
pub fn is_device_name(path: &Path) -> bool {
    sys::is_device_name(path)
}

/// Whether an error means the file or device is in use (`EBUSY`, a sharing
/// violation).
pub fn is_busy(e: &io::Error) -> bool {
    sys::is_busy(e)
}

/// Takes this process's lock on `file` without waiting: exclusive for a writer, shared
/// for readers. Unix: `flock` on the whole file. Windows: `LockFileEx` on one byte far
/// beyond any data (so that the lock, mandatory on Windows, never blocks reading or
/// writing the file's bytes through other handles). Err(`WouldBlock`) when another
/// handle holds a conflicting lock.
pub fn try_lock(file: &File, exclusive: bool) -> Result<(), std::fs::TryLockError> {
    sys::try_lock(file, exclusive)
}

/// Takes the exclusive lock of [`try_lock`], waiting for it.
pub fn lock(file: &File) -> io::Result<()> {
    sys::lock(file)
}

/// Takes qemu's shared lock on one byte of `file` (qemu's image locking: an open file
/// description lock, `F_OFD_SETLK`). File systems without byte-range locks, and
/// systems where qemu takes none (Windows), simply go without, as qemu does.
pub fn qemu_lock_byte(file: &File, byte: u64) {
    sys::qemu_lock_byte(file, byte)
}

/// Whether another open file description (of any process) holds qemu's lock on `byte`
/// of `file` (false where there are no such locks).
pub fn qemu_byte_held_elsewhere(file: &File, byte: u64) -> bool {
    sys::qemu_byte_held_elsewhere(file, byte)
}

/// Opens an unnamed regular file in `dir` that no one sees until [`link_unnamed`]
/// names it, permission bits `mode` less the umask (Linux `O_TMPFILE`). Elsewhere, and
/// on file systems without it, an error that [`unnamed_unsupported`] recognises: the
/// caller then uses a hidden temporary name in the same folder.
pub fn open_unnamed(dir: &Path, mode: u32) -> io::Result<File> {
    sys::open_unnamed(dir, mode)
}

/// Whether an error of [`open_unnamed`] means "no unnamed files here".
pub fn unnamed_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported || sys::unnamed_unsupported(e)
}

/// Gives a file from [`open_unnamed`] the name `path`; fails with `AlreadyExists`
/// rather than replacing anything (`linkat`).
pub fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    sys::link_unnamed(file, path)
}

/// Makes the directory entries of `dir` (a new name, a rename) durable. On Windows a
/// rename is made durable by the file system's journal: nothing to do.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    sys::sync_dir(dir)
}

/// Whether a failed sync of a character device means it has nothing to make durable
/// (`/dev/null`: `EINVAL`, `EROFS`).
pub fn sync_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ReadOnlyFilesystem || sys::sync_unsupported(e)
}

/// Makes a new file sparse, so that ranges never written stay holes (Windows:
/// `FSCTL_SET_SPARSE`; every Unix file is). Best effort.
pub fn make_sparse(file: &File) {
    sys::make_sparse(file)
}

/// Sets the size of `file` to `len` and allocates its space without writing zeros
/// (Linux `fallocate`, macOS `F_PREALLOCATE`, Windows allocation information). Where
/// the file system cannot allocate ahead, checks instead that its free space holds
/// `len` bytes; a volume too small is `StorageFull` either way.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    sys::allocate(file, len)
}

/// Allocates `len` bytes at `offset` of `file` without changing its size (Linux
/// `FALLOC_FL_KEEP_SIZE`; elsewhere allocation past the end where the system has it),
/// so that writes there cannot fail for want of space; where the file system cannot,
/// checks its free space instead (`StorageFull` when short).
pub fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    sys::reserve(file, offset, len)
}

/// Asks a block device to zero `len` bytes at `offset` (Linux
/// `FALLOC_FL_ZERO_RANGE`); false where it cannot, and the caller writes zeros.
pub fn zero_device_range(file: &File, offset: u64, len: u64) -> bool {
    sys::zero_device_range(file, offset, len)
}

/// Makes `len` bytes at `offset` of `file` read as zeros and gives
/// their storage back where the file system can (Linux `fallocate` with
/// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`, macOS `F_PUNCHHOLE`, Windows
/// `FSCTL_SET_ZERO_DATA`, which deallocates only in a file already sparse: vhdkit never
/// makes an existing file sparse, as Hyper-V refuses sparse disk files). Where the file
/// system says no, zeros are written instead. The file's length never changes (a range
/// past the end is cut at it). True when the storage was released (as far as the
/// system tells), false when zeros were written (always on a device).
///
/// ```
/// use vhdkit_platform::FileExt;
/// # let dir = tempfile::tempdir().unwrap();
/// let f = std::fs::File::options()
///     .read(true).write(true).create_new(true)
///     .open(dir.path().join("f")).unwrap();
/// f.write_all_at(&[7u8; 1 << 16], 0).unwrap();
/// vhdkit_platform::punch_hole(&f, 4096, 8192).unwrap();
/// let mut back = vec![9u8; 1 << 16];
/// f.read_exact_at(&mut back, 0).unwrap();
/// assert!(back[4096..12288].iter().all(|&b| b == 0));
/// assert!(back[..4096].iter().chain(&back[12288..]).all(|&b| b == 7));
/// assert_eq!(f.metadata().unwrap().len(), 1 << 16);
/// ```
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    let meta = file.metadata()?;
    if kind(&meta) != FileKind::Regular {
        // A device: no holes, and its metadata tells no length to cut the range at.
        write_zeros(file, offset, len)?;
        return Ok(false);
    }
    let size = meta.len();
    let end = offset.saturating_add(len).min(size);
    if offset >= end {
        return Ok(true);
    }
    match sys::punch_hole(file, offset, end - offset) {
        Ok(released) => Ok(released),
        Err(e) if e.kind() == io::ErrorKind::Unsupported || sys::punch_refused(&e) => {
            write_zeros(file, offset, end - offset)?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Writes zeros over `len` bytes at `offset`: the fallback of [`punch_hole`].
fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    const STEP: u64 = 1 << 20;
    let zeros = vec![0u8; STEP.min(len) as usize];
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let n = STEP.min(end - pos) as usize;
        file.write_all_at(&zeros[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// The first offset at or after `from` that holds data (`SEEK_DATA`; Windows
/// `FSCTL_QUERY_ALLOCATED_RANGES`): `Ok(None)` when only a hole follows. An error
/// means the file system cannot tell: the caller treats everything as data.
pub fn next_data(file: &File, from: u64) -> io::Result<Option<u64>> {
    sys::next_data(file, from)
}

/// The first offset at or after `from` in a hole (`SEEK_HOLE`; the end of the file
/// counts as one). An error means the file system cannot tell.
pub fn next_hole(file: &File, from: u64) -> io::Result<u64> {
    sys::next_hole(file, from)
}

/// Asks the system to read `len` bytes at `offset` ahead, asynchronously
/// (`POSIX_FADV_WILLNEED`; nothing where there is no such advice).
pub fn will_need(file: &File, offset: u64, len: u64) {
    sys::will_need(file, offset, len)
}

/// Faults in the pages of `range` of a map at once (Linux `MADV_POPULATE_READ`);
/// elsewhere, and on kernels without it, pages fault in when read.
pub fn populate(map: &memmap2::Mmap, range: std::ops::Range<usize>) -> io::Result<()> {
    sys::populate(map, range)
}

/// The volume of `out` if its file system shares extents between files (Linux XFS
/// with reflink and btrfs; Windows ReFS): an output there may clone its source's data
/// with [`clone_range`]. `None` elsewhere (macOS APFS clones only whole files).
pub fn offload_volume(out: &File) -> Option<u64> {
    sys::offload_volume(out)
}

/// Makes `len` bytes at `dest_offset` of `dest` share the extents that hold `len` bytes
/// at `src_offset` of `src` (Linux `FICLONERANGE`, Windows
/// `FSCTL_DUPLICATE_EXTENTS_TO_FILE`): no data is read or written. Any error means
/// nothing was cloned; [`clone_refused`] tells the errors after which the caller should
/// stop asking and copy.
pub fn clone_range(
    src: &File,
    src_offset: u64,
    len: u64,
    dest: &File,
    dest_offset: u64,
) -> io::Result<()> {
    sys::clone_range(src, src_offset, len, dest, dest_offset)
}

/// Makes the new, empty file `dest` share every extent of `src`: `dest` then reads as
/// `src` and has its length, and no data was read or written (Linux `FICLONE` on XFS
/// with reflink and btrfs; Windows `FSCTL_DUPLICATE_EXTENTS_TO_FILE` over the whole file
/// on ReFS). Any error means nothing was cloned; [`clone_refused`] tells the errors after
/// which the caller copies instead. macOS clones whole files only into a new name
/// (`clonefile`), which an output already open cannot take: there, as on other file
/// systems, `Unsupported` (see [`clone_file_to`]).
pub fn clone_file(src: &File, dest: &File) -> io::Result<()> {
    sys::clone_file(src, dest)
}

/// Creates a new file at `path` that shares every extent of `src` and returns it open
/// for reading and writing: it reads as `src` and has its length, and no data was read
/// or written (macOS `fclonefileat` on APFS; Linux a new file and `FICLONE` on XFS with
/// reflink and btrfs; Windows a new file and `FSCTL_DUPLICATE_EXTENTS_TO_FILE` on
/// ReFS). The name `path` must be free: anything there (even a dangling symbolic link)
/// fails with `AlreadyExists` and is left alone. The new file's permission bits are
/// 0o600 (the caller sets the ones it wants); its owner is this process's user (on
/// macOS the clone keeps `src`'s extended attributes, as `clonefile` does).
///
/// Any error means no file is left at `path` (one that was made is removed again);
/// [`clone_refused`] tells the errors after which the caller copies instead. This is
/// the whole-file clone of systems that clone only into a new name (macOS); where the
/// output is already open without a name, [`clone_file`] clones into it.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let src = dir.path().join("src");
/// std::fs::write(&src, b"extents").unwrap();
/// let src = std::fs::File::open(&src).unwrap();
/// match vhdkit_platform::clone_file_to(&src, &dir.path().join("clone")) {
///     Ok(_) => assert_eq!(std::fs::read(dir.path().join("clone")).unwrap(), b"extents"),
///     // Not on this file system (ext4, tmpfs, NTFS, HFS+): nothing was made.
///     Err(e) if vhdkit_platform::clone_refused(&e) => {
///         assert!(!dir.path().join("clone").exists())
///     }
///     Err(e) => panic!("{e}"),
/// }
/// ```
pub fn clone_file_to(src: &File, path: &Path) -> io::Result<File> {
    sys::clone_file_to(src, path)
}

/// The volume of `out` if its file system clones whole files ([`clone_file`] into an
/// open file, [`clone_file_to`] into a new name): where [`offload_volume`] says so, and
/// on macOS APFS (which clones no ranges). A source on the same volume may be cloned
/// whole; the file system may still refuse ([`clone_refused`]).
pub fn whole_clone_volume(out: &File) -> Option<u64> {
    sys::whole_clone_volume(out)
}

/// Gives `file`, just made at `path`, back when `made` (what was done to it) succeeded;
/// else closes it, removes `path` and returns the error.
#[allow(dead_code)] // not on the Unix systems that have no clone call at all
fn kept_or_removed(file: File, path: &Path, made: io::Result<()>) -> io::Result<File> {
    match made {
        Ok(()) => Ok(file),
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Whether the system refused a clone of a pair of files or ranges (nothing was
/// cloned): the caller copies the bytes itself from then on.
pub fn clone_refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported || sys::clone_refused(e)
}

/// The free space of the volume holding `file`, in bytes, for this user.
pub fn free_space(file: &File) -> io::Result<u64> {
    sys::free_space(file)
}

/// The error this system reports for what the Unix error number `errno` means (fault
/// injection in tests names its faults by errno: 28 `ENOSPC`, 5 `EIO`, 30 `EROFS`,
/// 27 `EFBIG`); on Windows the matching Win32 error (a disk full, a device I/O error, a
/// write-protected medium, a file too large).
pub fn errno_error(errno: i32) -> io::Error {
    sys::errno_error(errno)
}

/// A path read from a Windows parent locator (`W2ku`, `W2ru`, `Wi2k`, `Wi2r`) or a
/// parent name, as this system names files: on Windows as written (`C:\VMs\base.vhd`,
/// `.\base.vhd`, `/` turned into `\`); on Unix with `/` separators and without a drive
/// letter (`/VMs/base.vhd`, `./base.vhd`).
///
/// ```
/// let p = vhdkit_platform::path_from_windows(r"..\base\base.vhd");
/// assert_eq!(std::path::Path::new(&p), std::path::Path::new("..").join("base").join("base.vhd"));
/// ```
pub fn path_from_windows(raw: &str) -> String {
    sys::path_from_windows(raw)
}

/// The text of the `W2ku` (absolute) locator of the absolute path `path`: on Windows the
/// path as Windows itself writes it (`C:\VMs\base.vhd`, `\\server\share\base.vhd`:
/// without the `\\?\` prefix of canonical paths); on Unix the POSIX path, which Windows
/// cannot use (it finds such a parent through the relative `W2ru` locator).
pub fn windows_locator_text(path: &Path) -> String {
    sys::windows_locator_text(path)
}
