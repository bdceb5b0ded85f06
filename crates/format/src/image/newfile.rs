//! New files that appear only when complete and durable: written unnamed (`O_TMPFILE`)
//! beside their destination, or under a temporary dot-name where the file system cannot,
//! then linked in without replacing anything. Every new file vhdkit makes goes through
//! here (create, convert, merge-to, `read --output`).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::backend::{Backend, FileBackend};

/// A new file being written beside its destination, under no name at all where the file
/// system allows (`O_TMPFILE`: ext4, xfs, btrfs, tmpfs…), else under a temporary dot-name.
/// Dropping it (on cancel or error) deletes it; [`NewFile::persist`] makes it durable and
/// gives it its name. An unnamed file also vanishes when the process is killed, where a
/// named one would stay behind as an inert `.NAME.XXXXXX.vhdkit-tmp`.
///
/// ```
/// use std::os::unix::fs::FileExt;
/// use vhdkit_format::image::NewFile;
/// # let dir = tempfile::tempdir().unwrap();
/// let out = dir.path().join("out.raw");
/// let new = NewFile::beside(&out).unwrap();
/// new.file().write_all_at(b"complete", 0).unwrap();
/// assert!(!out.exists()); // no name until it is complete and durable
/// new.persist(&out).unwrap();
/// assert_eq!(std::fs::read(&out).unwrap(), b"complete");
/// ```
pub struct NewFile {
    inner: Inner,
    /// Positional access to the file. Its path (for messages and fault injection) is the
    /// destination's when the file is unnamed, the temporary name otherwise.
    pub(crate) backend: FileBackend,
    dir: PathBuf,
}

enum Inner {
    Unnamed(File),
    Named(tempfile::NamedTempFile),
}

impl NewFile {
    /// Creates the file in the destination's directory, mode 0666 less the umask.
    /// Fails at once with [`Error::AlreadyExists`] if `path` exists (even as a dangling
    /// symbolic link): the name is never replaced, so that work is not done for nothing.
    pub fn beside(path: impl AsRef<Path>) -> Result<NewFile> {
        let path = path.as_ref();
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(Error::AlreadyExists {
                path: path.to_owned(),
            });
        }
        NewFile::beside_with(path, open_unnamed)
    }

    /// The file, for writing and reading at positions.
    pub fn file(&self) -> &File {
        self.backend.file()
    }

    /// [`NewFile::beside`], with `unnamed` opening the unnamed file in a directory (the
    /// tests make it fail to exercise the named fallback).
    fn beside_with(
        path: &Path,
        unnamed: impl FnOnce(&Path) -> std::io::Result<File>,
    ) -> Result<NewFile> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        if !dir.is_dir() {
            return Err(Error::PathNotFound { path: dir });
        }
        let (inner, shown) = match unnamed(&dir) {
            Ok(file) => (Inner::Unnamed(file), path.to_owned()),
            Err(e) if !unnamed_unsupported(&e) => {
                return Err(Error::file(&dir, "creating a temporary file", e))
            }
            Err(_) => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "disk".into());
                let tmp = tempfile::Builder::new()
                    .prefix(&format!(".{name}."))
                    .suffix(".vhdkit-tmp")
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                    .tempfile_in(&dir)
                    .map_err(|e| Error::file(&dir, "creating a temporary file", e))?;
                let shown = tmp.path().to_owned();
                (Inner::Named(tmp), shown)
            }
        };
        let file = match &inner {
            Inner::Unnamed(f) => f,
            Inner::Named(t) => t.as_file(),
        };
        let backend = FileBackend::with_path(
            file.try_clone()
                .map_err(|e| Error::file(&shown, "duplicating a handle", e))?,
            shown,
        );
        Ok(NewFile {
            inner,
            backend,
            dir,
        })
    }

    /// The path messages name the file by: the destination (unnamed file) or the
    /// temporary name.
    pub(crate) fn shown_path(&self) -> &Path {
        self.backend.path()
    }

    /// A second handle on the file, for reading it back.
    pub(crate) fn reopen(&self) -> Result<File> {
        self.backend
            .file()
            .try_clone()
            .map_err(|e| Error::file(self.shown_path(), "duplicating a handle", e))
    }

    /// Syncs the file, links or renames it to `path` without replacing anything (not
    /// even a symbolic link: the link itself is the name, so its target is never
    /// written), and syncs the directory: the name appears only once the file is complete
    /// and durable.
    pub fn persist(self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.backend
            .sync()
            .map_err(|e| Error::file(path, "syncing the new file", e))?;
        let named = match self.inner {
            Inner::Unnamed(file) => link_unnamed(&file, path),
            Inner::Named(tmp) => tmp.persist_noclobber(path).map(drop).map_err(|e| e.error),
        };
        named.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                Error::file(path, "giving the new file its name", e)
            }
        })?;
        sync_dir(&self.dir).map_err(|e| Error::file(&self.dir, "syncing the directory", e))
    }
}

/// Opens an unnamed regular file in `dir` (`O_TMPFILE`), mode 0666 less the umask.
fn open_unnamed(dir: &Path) -> std::io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )?;
    Ok(File::from(fd))
}

/// Errors of `open_unnamed` that mean "this file system (or kernel) has no O_TMPFILE".
fn unnamed_unsupported(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::OPNOTSUPP, Errno::ISDIR, Errno::INVAL, Errno::NOSYS]
        .iter()
        .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

/// Gives an unnamed file the name `path`; fails with `AlreadyExists` rather than
/// replacing anything.
fn link_unnamed(file: &File, path: &Path) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD};
    use std::os::fd::AsRawFd;
    // Through /proc (any user); without /proc, AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH).
    let by_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    match rustix::fs::linkat(CWD, by_proc.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW) {
        Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").exists() => {
            rustix::fs::linkat(file, "", CWD, path, AtFlags::EMPTY_PATH)?;
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Allocates `len` bytes of `file` without writing zeros (`fallocate`). Where the file
/// system cannot allocate ahead (`EOPNOTSUPP`), checks instead that its free space holds
/// `len` bytes; a volume too small is `ENOSPC` either way.
pub(crate) fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    use rustix::fs::FallocateFlags;
    match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            let st = rustix::fs::fstatvfs(file)?;
            if st.f_bavail.saturating_mul(st.f_frsize) < len {
                Err(std::io::Error::from_raw_os_error(
                    rustix::io::Errno::NOSPC.raw_os_error(),
                ))
            } else {
                Ok(())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes a new file through `fill` under a temporary name beside `path`, then persists
/// it (see [`NewFile`]).
pub(crate) fn write_new(
    path: &Path,
    fill: impl FnOnce(&FileBackend) -> std::io::Result<()>,
) -> Result<()> {
    let new = NewFile::beside(path)?;
    fill(&new.backend).map_err(|e| Error::file(path, "writing the new disk", e))?;
    new.persist(path)
}

/// Makes a directory's entries (a rename, a new file) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// The new file is invisible while written (where the file system has `O_TMPFILE`;
    /// under a dot-name otherwise), appears complete under its name, never replaces a
    /// file, and leaves nothing when dropped.
    #[test]
    fn new_file_appears_only_when_persisted_and_never_replaces() {
        let supported = open_unnamed(&std::env::temp_dir()).is_ok();
        if !supported {
            eprintln!("no O_TMPFILE in the temporary directory: only the fallback is tested");
        }
        if supported {
            lifecycle(true, |p| NewFile::beside(p));
        }
        lifecycle(false, |p| {
            NewFile::beside_with(p, |_| {
                Err(std::io::Error::from_raw_os_error(
                    rustix::io::Errno::OPNOTSUPP.raw_os_error(),
                ))
            })
        });
    }

    fn lifecycle(unnamed: bool, beside: impl Fn(&Path) -> Result<NewFile>) {
        let dir = tempfile::tempdir().expect("tmp");
        let dst = dir.path().join("out.vhd");
        let only_dst = vec!["out.vhd".to_string()];

        let new = beside(&dst).expect("new file");
        new.backend.write_all_at(b"complete", 0).expect("write");
        let during = names(dir.path());
        if unnamed {
            assert!(during.is_empty(), "visible while written: {during:?}");
            assert_eq!(new.shown_path(), dst, "messages name the destination");
        } else {
            assert!(
                during.len() == 1
                    && during[0].starts_with(".out.vhd.")
                    && during[0].ends_with(".vhdkit-tmp"),
                "{during:?}"
            );
        }
        let mut back = [0u8; 8];
        new.reopen()
            .expect("reopen")
            .read_exact_at(&mut back, 0)
            .expect("read back");
        assert_eq!(&back, b"complete");
        new.persist(&dst).expect("persist");
        assert_eq!(std::fs::read(&dst).expect("read"), b"complete");
        assert_eq!(names(dir.path()), only_dst);

        // A second file for the same name is refused before any work.
        assert!(matches!(
            NewFile::beside(&dst),
            Err(Error::AlreadyExists { .. })
        ));
        // One whose name appeared while it was written fails at the end and leaves the
        // first untouched.
        let late = dir.path().join("late.vhd");
        let other = beside(&late).expect("new file");
        other.backend.write_all_at(b"other", 0).expect("write");
        std::fs::write(&late, b"first").expect("someone else's file");
        assert!(matches!(
            other.persist(&late),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(std::fs::read(&late).expect("read"), b"first");
        std::fs::remove_file(&late).expect("rm");
        assert_eq!(names(dir.path()), only_dst);

        // Dropped unpersisted: nothing left.
        let new = beside(&dir.path().join("never.vhd")).expect("new file");
        new.backend.write_all_at(b"x", 0).expect("write");
        drop(new);
        assert_eq!(names(dir.path()), only_dst);
    }
}
