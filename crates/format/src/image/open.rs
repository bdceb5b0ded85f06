//! Opening files: only the kinds of file the caller accepts, never blocking on a FIFO,
//! and under locks that both vhdkit and qemu honour.
//!
//! - **File types.** Every path is opened with `O_NONBLOCK | O_NOCTTY` and checked with
//!   `fstat` before a byte is read: directories, FIFOs, sockets and character devices
//!   are refused at once (a FIFO named by a crafted locator would otherwise block the
//!   first read forever); block devices only where the caller accepts them (a device
//!   named on the command line, a host drive the user allowed). `O_NONBLOCK` is cleared
//!   again before the file is used.
//! - **Locks.** vhdkit's own: a shared `flock` for readers, an exclusive one for the
//!   writer. qemu's: open-file-description (OFD) byte-range locks at bytes 100+p ("holds
//!   permission p") and 200+p ("does not share permission p"), p = 0 consistent read,
//!   1 write, 2 write-unchanged, 3 resize. The two kinds ignore each other on Linux, so
//!   vhdkit takes both: a reader holds "consistent read" and does not share "write" or
//!   "resize"; a writer holds read, write and resize and shares nothing. After taking
//!   them it looks for conflicting locks of other programs, as qemu does, so whichever
//!   of the two opens second sees the other. See `docs/security.md`. Every call goes
//!   through `vhdkit-platform`: on Windows the lock is `LockFileEx` and there are no
//!   qemu locks (qemu takes none there); on macOS as on Linux where the kernel has OFD
//!   locks.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Which kinds of file a caller accepts at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accept {
    /// Regular files only (parents, stubs, files found through an image).
    Regular,
    /// Regular files and block devices (a path the user named, a host drive allowed).
    RegularOrBlock,
}

/// Opens `path` for reading (and writing when `writable`), refusing every kind of file
/// `accept` does not name, and takes vhdkit's and qemu's locks.
pub(crate) fn open_file(path: &Path, writable: bool, accept: Accept) -> Result<File> {
    let file = open_checked(path, writable, accept)?;
    // A read-only file stays read-only even for a user (root) the OS would let write.
    if writable {
        let meta = file
            .metadata()
            .map_err(|e| Error::file(path, "reading metadata", e))?;
        if meta.permissions().readonly() {
            return Err(Error::ReadOnly {
                path: path.to_owned(),
                detail: "the file is read-only".into(),
            });
        }
    }
    lock(&file, path, writable)?;
    Ok(file)
}

/// Opens `path` as [`open_file`] does but takes no lock: for reading a file's own bytes
/// (checking it) while another handle of this process may hold its locks.
pub(crate) fn open_unlocked(path: &Path, accept: Accept) -> Result<File> {
    open_checked(path, false, accept)
}

/// Opens a host drive's device: a regular file or block device, read-write when asked,
/// without locks (a block device may be used by anything).
pub(crate) fn open_unlocked_rw(path: &Path, writable: bool) -> Result<File> {
    open_checked(path, writable, Accept::RegularOrBlock)
}

fn open_checked(path: &Path, writable: bool, accept: Accept) -> Result<File> {
    use vhdkit_platform::FileKind;
    let file = vhdkit_platform::open_nonblocking(path, writable).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied if writable => Error::ReadOnly {
            path: path.to_owned(),
            detail: "no write permission".into(),
        },
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_owned(),
        },
        _ => Error::file(path, "opening", e),
    })?;
    let kind =
        vhdkit_platform::kind_of(&file).map_err(|e| Error::file(path, "reading metadata", e))?;
    let what = match kind {
        FileKind::Regular => None,
        FileKind::BlockDevice if accept == Accept::RegularOrBlock => None,
        FileKind::Directory => Some("a directory"),
        FileKind::Fifo => Some("a FIFO"),
        FileKind::Socket => Some("a socket"),
        FileKind::CharDevice => Some("a character device"),
        FileKind::BlockDevice => Some("a block device"),
        FileKind::Symlink | FileKind::Other => Some("not a regular file"),
    };
    if let Some(what) = what {
        return Err(Error::WrongFileType {
            path: path.to_owned(),
            what,
            accepted: match accept {
                Accept::Regular => "regular files",
                Accept::RegularOrBlock => "regular files and block devices",
            },
        });
    }
    vhdkit_platform::clear_nonblocking(&file).map_err(|e| Error::file(path, "opening", e))?;
    Ok(file)
}

/// qemu's lock byte for "holds permission p".
const QEMU_PERM_BASE: u64 = 100;
/// qemu's lock byte for "does not share permission p".
const QEMU_SHARED_BASE: u64 = 200;
/// qemu's permissions: consistent read, write, write-unchanged, resize.
const PERM_READ: u64 = 0;
const PERM_WRITE: u64 = 1;
const PERM_RESIZE: u64 = 3;

/// The permissions a vhdkit reader or writer holds and does not share.
fn perms(writable: bool) -> (&'static [u64], &'static [u64]) {
    if writable {
        (&[PERM_READ, PERM_WRITE, PERM_RESIZE], &[0, 1, 2, 3])
    } else {
        (&[PERM_READ], &[PERM_WRITE, PERM_RESIZE])
    }
}

fn lock(file: &File, path: &Path, writable: bool) -> Result<()> {
    // A lock can be held for a moment by a copy of the descriptor that a fork() of this
    // process (another thread spawning a program) keeps until its exec: retry briefly
    // before calling the file busy.
    let mut wait = Duration::from_millis(2);
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        match vhdkit_platform::try_lock(file, writable) {
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::InUse {
                    path: path.to_owned(),
                })
            }
            _ => break,
        }
    }
    let (held, unshared) = perms(writable);
    for &p in held {
        vhdkit_platform::qemu_lock_byte(file, QEMU_PERM_BASE + p);
    }
    for &p in unshared {
        vhdkit_platform::qemu_lock_byte(file, QEMU_SHARED_BASE + p);
    }
    // Conflicts: another program holds a permission this one does not share, or does
    // not share one this one holds.
    let conflict = unshared
        .iter()
        .any(|&p| vhdkit_platform::qemu_byte_held_elsewhere(file, QEMU_PERM_BASE + p))
        || held
            .iter()
            .any(|&p| vhdkit_platform::qemu_byte_held_elsewhere(file, QEMU_SHARED_BASE + p));
    if conflict {
        return Err(Error::InUse {
            path: path.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &p,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .expect("mkfifo");
        let t = Instant::now();
        let e = open_file(&p, false, Accept::RegularOrBlock).expect_err("a FIFO");
        assert!(
            matches!(e, Error::WrongFileType { what: "a FIFO", .. }),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn directory_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = open_file(dir.path(), false, Accept::Regular).expect_err("a directory");
        assert!(
            matches!(
                e,
                Error::WrongFileType {
                    what: "a directory",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn reader_and_writer_of_one_file_conflict_through_either_lock() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f");
        std::fs::write(&p, [0u8; 4096]).expect("write");
        let r1 = open_file(&p, false, Accept::Regular).expect("first reader");
        let _r2 = open_file(&p, false, Accept::Regular).expect("readers share");
        assert!(matches!(
            open_file(&p, true, Accept::Regular),
            Err(Error::InUse { .. })
        ));
        drop(r1);
        drop(_r2);
        let _w = open_file(&p, true, Accept::Regular).expect("writer alone");
        assert!(matches!(
            open_file(&p, false, Accept::Regular),
            Err(Error::InUse { .. })
        ));
    }
}
