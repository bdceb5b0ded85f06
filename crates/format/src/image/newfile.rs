//! New files that appear only when complete and durable: written unnamed (`O_TMPFILE`)
//! beside their destination, or under a temporary dot-name where the file system (or
//! the system: Windows, macOS) cannot,
//! then linked in without replacing anything — or, where the caller allows it
//! ([`OutputOptions`]), renamed over a regular file atomically, or written in place onto
//! a device. Every new file vhdkit makes goes through here (create, convert, merge-to,
//! `read --output`, `serve --undo`), with the permission bits of its source.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::backend::{Backend, FileBackend};
use super::chain::Disk;
use super::output::{self, Existing, OutputOptions, TEMP_SUFFIX};

/// A new file being written beside its destination, under no name at all where the file
/// system allows (`O_TMPFILE`: ext4, xfs, btrfs, tmpfs…), else under a temporary dot-name
/// `.NAME.XXXXXX.vhdkit-tmp` — or a device written in place, when the options allow it.
/// Dropping it (on cancel or error) deletes the new file; [`NewFile::persist`] makes it
/// durable and gives it its name. An unnamed file also vanishes when the process is
/// killed; a named one stays behind until the next run for the same destination, which
/// recognises it (this process's exclusive `flock` on it is gone) and removes it.
///
/// ```
/// use vhdkit_format::image::NewFile;
/// use vhdkit_platform::FileExt;
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
    /// destination's when the file is unnamed or a device, the temporary name otherwise.
    pub(crate) backend: FileBackend,
    dir: PathBuf,
}

enum Inner {
    /// `O_TMPFILE`; `replace`: renamed over an existing regular file at the end.
    Unnamed { file: File, replace: bool },
    /// A temporary dot-name (`name`: the destination's file name, which the temporary
    /// names are made from).
    Named {
        tmp: tempfile::NamedTempFile,
        name: String,
        replace: bool,
    },
    /// A device, written in place.
    Device { block: bool },
}

impl NewFile {
    /// Creates the file in the destination's directory, mode 0666 less the umask.
    /// Fails at once with [`Error::AlreadyExists`] if `path` exists (even as a dangling
    /// symbolic link): the name is never replaced, so that work is not done for nothing.
    pub fn beside(path: impl AsRef<Path>) -> Result<NewFile> {
        NewFile::create(path, &OutputOptions::new(), None, 0)
    }

    /// Creates the output `path` of a copy of `source` (when there is one): checks what
    /// stands at `path` against `opts` ([`OutputOptions`]: nothing, a regular file to
    /// replace, a device to write in place; never one of `source`'s files), removes what
    /// killed earlier runs left for the same destination, and opens the new file with
    /// `opts`' permission bits (by default `source`'s, see
    /// [`super::output::source_mode`]) less the umask. `len` is how many bytes will be
    /// written: a block device that holds fewer is refused here, before any write.
    pub fn create(
        path: impl AsRef<Path>,
        opts: &OutputOptions,
        source: Option<&Disk>,
        len: u64,
    ) -> Result<NewFile> {
        let path = path.as_ref();
        let dir = output::folder_of(path).to_owned();
        let replace = match output::inspect(path, opts, source)? {
            Existing::Device { block } => {
                let file = output::open_device(path, block, len)?;
                return Ok(NewFile {
                    inner: Inner::Device { block },
                    backend: FileBackend::with_path(file, path),
                    dir,
                });
            }
            Existing::Regular => true,
            Existing::Nothing => false,
        };
        output::remove_leftovers(path);
        NewFile::beside_with(path, opts.mode_for(source), replace, open_unnamed)
    }

    /// The file, for writing and reading at positions.
    pub fn file(&self) -> &File {
        self.backend.file()
    }

    /// Whether the output is a device written in place: its bytes that are not written
    /// keep their old content (a new file reads zeros there), see
    /// [`NewFile::write_zeros`].
    pub fn is_device(&self) -> bool {
        matches!(self.inner, Inner::Device { .. })
    }

    /// The block-device flag of a device output (`None` for a new file).
    pub(crate) fn device(&self) -> Option<bool> {
        match self.inner {
            Inner::Device { block } => Some(block),
            _ => None,
        }
    }

    /// Makes `len` bytes at `offset` read as zeros: nothing to do in a new file (they are
    /// a hole already), zeroed on a device.
    pub fn write_zeros(&self, offset: u64, len: u64) -> Result<()> {
        match self.device() {
            None => Ok(()),
            Some(block) => output::zero_range(&self.backend, offset, len, block)
                .map_err(|e| Error::io(self.shown_path(), "writing zeros", offset, e)),
        }
    }

    /// [`NewFile::create`] of a new file (`mode`: its permission bits; `replace`: rename
    /// it over a regular file at the end), with `unnamed` opening the unnamed file in a
    /// directory (the tests make it fail to exercise the named fallback).
    fn beside_with(
        path: &Path,
        mode: u32,
        replace: bool,
        unnamed: impl FnOnce(&Path, u32) -> std::io::Result<File>,
    ) -> Result<NewFile> {
        let dir = output::folder_of(path).to_owned();
        let (inner, shown) = match unnamed(&dir, mode) {
            Ok(file) => {
                // Held until the file is gone or named: a leftover sweep of another run
                // never takes this file for one (after a rename over a destination, the
                // temporary name it passes through is locked too).
                vhdkit_platform::lock(&file)
                    .map_err(|e| Error::file(&dir, "locking the new file", e))?;
                (Inner::Unnamed { file, replace }, path.to_owned())
            }
            Err(e) if !vhdkit_platform::unnamed_unsupported(&e) => {
                return Err(Error::file(&dir, "creating a temporary file", e))
            }
            Err(_) => {
                let name = file_name_of(path);
                let tmp = named_temporary(&name, &dir, mode)?;
                let shown = tmp.path().to_owned();
                (Inner::Named { tmp, name, replace }, shown)
            }
        };
        let file = match &inner {
            Inner::Unnamed { file, .. } => file,
            Inner::Named { tmp, .. } => tmp.as_file(),
            Inner::Device { .. } => unreachable!("devices are opened by NewFile::create"),
        };
        // Bytes never written stay holes (Windows: the file is marked sparse).
        vhdkit_platform::make_sparse(file);
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

    /// Makes everything written durable (`fdatasync`). A character device that cannot
    /// sync (`/dev/null`: `EINVAL`, `EROFS`) has nothing to make durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        match (self.backend.sync(), self.device()) {
            (Err(e), Some(false)) if vhdkit_platform::sync_unsupported(&e) => Ok(()),
            (r, _) => r,
        }
    }

    /// Makes the still empty new file share every extent of `src` (its length then
    /// `src`'s), where the file system can; any error means nothing was cloned and the
    /// new file is as it was (though an unnamed one's length may have changed). A
    /// device is never cloned into (`Unsupported`).
    ///
    /// An unnamed file is cloned into as it is (`FICLONE`). A named one cannot be on
    /// every system (macOS clones only into a new name), so it is replaced: the clone is
    /// made under a second temporary name beside it
    /// ([`vhdkit_platform::clone_file_to`]), given the permission bits the new file
    /// has, locked as it is, and then becomes the new file (the empty one is removed):
    /// from then on the file, its handle and the path messages name are the clone's.
    /// Fault injection sees this as a write to the new file.
    pub(crate) fn clone_whole_from(&mut self, src: &File) -> std::io::Result<()> {
        let (tmp, name) = match &mut self.inner {
            Inner::Device { .. } => return Err(std::io::ErrorKind::Unsupported.into()),
            Inner::Unnamed { .. } => return self.backend.clone_all_from(src),
            Inner::Named { tmp, name, .. } => (tmp, name.as_str()),
        };
        let permissions = tmp.as_file().metadata()?.permissions();
        let clone = locked_temporary(name, |builder| {
            builder.make_in(&self.dir, |path| self.backend.clone_to(src, path))
        })?;
        clone.as_file().set_permissions(permissions)?;
        self.backend = FileBackend::with_path(clone.as_file().try_clone()?, clone.path());
        // The empty file's name is removed as it is dropped.
        *tmp = clone;
        Ok(())
    }

    /// The path messages name the file by: the destination (unnamed file, device) or
    /// the temporary name.
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

    /// Syncs the file, gives it the name `path` and syncs the directory: the name
    /// appears only once the file is complete and durable. Nothing is replaced (not even
    /// a symbolic link: the link itself is the name, so its target is never written) —
    /// except, where [`OutputOptions::replace`] allowed it, the regular file that stood
    /// there, which the new file is renamed over in one step (so the name holds the old
    /// file or the new one, whole, at every instant). A device is only synced.
    pub fn persist(self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.sync()
            .map_err(|e| Error::file(path, "syncing the new file", e))?;
        let named = match self.inner {
            Inner::Device { .. } => return Ok(()),
            Inner::Unnamed {
                file,
                replace: false,
            } => vhdkit_platform::link_unnamed(&file, path),
            Inner::Unnamed {
                file,
                replace: true,
            } => replace_with_unnamed(&file, path),
            Inner::Named {
                tmp,
                replace: false,
                ..
            } => tmp.persist_noclobber(path).map(drop).map_err(|e| e.error),
            Inner::Named {
                tmp, replace: true, ..
            } => tmp.persist(path).map(drop).map_err(|e| e.error),
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

#[cfg(not(test))]
use vhdkit_platform::open_unnamed;

#[cfg(test)]
thread_local! {
    /// Whether [`NewFile::create`] on this thread makes named files only, as on a file
    /// system without `O_TMPFILE` (and on macOS and Windows): this crate's tests run the
    /// named way of whole operations through it.
    pub(crate) static NAMED_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `vhdkit_platform::open_unnamed`, unless the thread asked for named files only.
#[cfg(test)]
fn open_unnamed(dir: &Path, mode: u32) -> std::io::Result<File> {
    if NAMED_ONLY.get() {
        return Err(std::io::ErrorKind::Unsupported.into());
    }
    vhdkit_platform::open_unnamed(dir, mode)
}

/// A new file under a temporary dot-name for the destination `name` in `dir`
/// (`.NAME.XXXXXX.vhdkit-tmp`, permission bits `mode` less the umask), locked (`flock`)
/// as long as it lives, so that a leftover sweep ([`output::remove_leftovers`]) of
/// another run leaves it alone.
fn named_temporary(name: &str, dir: &Path, mode: u32) -> Result<tempfile::NamedTempFile> {
    locked_temporary(name, |builder| {
        if let Some(permissions) = vhdkit_platform::new_file_permissions(mode) {
            builder.permissions(permissions);
        }
        builder.tempfile_in(dir)
    })
    .map_err(|e| Error::file(dir, "creating a temporary file", e))
}

/// A file `make` creates through a builder of temporary dot-names for the destination
/// `name` (`.NAME.XXXXXX.vhdkit-tmp`, as the leftover sweep knows them), locked as long
/// as it lives. A sweep that took it between its creation and the lock removed it: then
/// another one is made. An error of `make` is returned as it is (the caller may tell a
/// refused clone by it); one of the lock is named as such.
fn locked_temporary(
    name: &str,
    mut make: impl FnMut(&mut tempfile::Builder) -> std::io::Result<tempfile::NamedTempFile>,
) -> std::io::Result<tempfile::NamedTempFile> {
    let mut attempts = 0;
    loop {
        let prefix = output::temporary_prefix(name);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(TEMP_SUFFIX);
        let tmp = make(&mut builder)?;
        vhdkit_platform::lock(tmp.as_file()).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("locking the new file {}: {e}", tmp.path().display()),
            )
        })?;
        let kept = vhdkit_platform::still_linked(tmp.as_file());
        attempts += 1;
        if kept || attempts == 3 {
            return Ok(tmp);
        }
    }
}

/// The file name of the destination `path`, which temporary names are made from.
fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into())
}

/// Gives the unnamed `file` the name `path`, replacing the regular file there in one
/// step: linked in under a fresh temporary name (locked, as the file is), then renamed
/// over `path`. A failure removes the temporary name again; a kill between the two
/// steps leaves it for the next run's leftover sweep.
fn replace_with_unnamed(file: &File, path: &Path) -> std::io::Result<()> {
    let name = file_name_of(path);
    let dir = output::folder_of(path);
    let mut attempt = 0;
    let tmp = loop {
        let random = uuid::Uuid::new_v4().simple().to_string();
        let tmp = dir.join(format!(
            "{}{}{TEMP_SUFFIX}",
            output::temporary_prefix(&name),
            &random[..8]
        ));
        match vhdkit_platform::link_unnamed(file, &tmp) {
            Ok(()) => break tmp,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    };
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Allocates `len` bytes of `file` without writing zeros (`fallocate`). Where the file
/// system cannot allocate ahead (`EOPNOTSUPP`), checks instead that its free space holds
/// `len` bytes; a volume too small is `ENOSPC` either way.
pub(crate) fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    vhdkit_platform::allocate(file, len)
}

/// Writes a new file with permission bits `mode` (less the umask) through `fill` beside
/// `path`, then persists it (see [`NewFile`]).
pub(crate) fn write_new(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&FileBackend) -> std::io::Result<()>,
) -> Result<()> {
    let new = NewFile::create(path, &OutputOptions::new().mode(mode), None, 0)?;
    fill(&new.backend).map_err(|e| Error::file(path, "writing the new disk", e))?;
    new.persist(path)
}

/// Makes a directory's entries (a rename, a new file) durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    vhdkit_platform::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use vhdkit_platform::FileExt;

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
        let supported = vhdkit_platform::open_unnamed(&std::env::temp_dir(), 0o600).is_ok();
        if !supported {
            eprintln!("no O_TMPFILE in the temporary directory: only the fallback is tested");
        }
        if supported {
            lifecycle(true, |p| NewFile::beside(p));
        }
        lifecycle(false, |p| NewFile::beside_with(p, 0o666, false, no_tmpfile));
    }

    /// A file system without `O_TMPFILE`, for [`NewFile::beside_with`].
    fn no_tmpfile(_: &Path, _: u32) -> std::io::Result<File> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// How [`NewFile::beside_with`] opens an unnamed file.
    type OpenUnnamed = fn(&Path, u32) -> std::io::Result<File>;

    /// The ways of making a new file this machine has: unnamed (where the temporary
    /// directory's file system has `O_TMPFILE`) and named.
    fn ways() -> Vec<(bool, OpenUnnamed)> {
        let mut ways: Vec<(bool, OpenUnnamed)> = vec![(false, no_tmpfile)];
        if vhdkit_platform::open_unnamed(&std::env::temp_dir(), 0o600).is_ok() {
            ways.push((true, vhdkit_platform::open_unnamed));
        }
        ways
    }

    #[cfg(unix)]
    #[test]
    fn new_file_has_the_mode_asked_for_less_the_umask_named_or_not() {
        use std::os::unix::fs::MetadataExt;
        for (unnamed, open) in ways() {
            let dir = tempfile::tempdir().expect("tmp");
            let dst = dir.path().join("out.vhd");
            let new = NewFile::beside_with(&dst, 0o640, false, open).expect("new file");
            if !unnamed {
                // The temporary name is as private as the file it becomes.
                let tmp = std::fs::metadata(new.shown_path()).expect("temporary file");
                assert_eq!(
                    tmp.mode() & 0o777,
                    0o640 & !vhdkit_testkit::umask(),
                    "temporary name"
                );
            }
            new.persist(&dst).expect("persist");
            let mode = std::fs::metadata(&dst).expect("meta").mode() & 0o777;
            assert_eq!(mode, 0o640 & !vhdkit_testkit::umask(), "unnamed: {unnamed}");
        }
    }

    /// With `replace`, the old file stays whole under its name until the new one is
    /// persisted, then the name holds the new one; dropped instead, the old one stays
    /// and nothing else is left.
    #[test]
    fn a_replacement_is_atomic_and_a_dropped_one_keeps_the_old_file() {
        for (unnamed, open) in ways() {
            let dir = tempfile::tempdir().expect("tmp");
            let dst = dir.path().join("out.vhd");
            std::fs::write(&dst, b"old").expect("old file");

            let new = NewFile::beside_with(&dst, 0o600, true, open).expect("new file");
            new.file().write_all_at(b"new!", 0).expect("write");
            assert_eq!(std::fs::read(&dst).expect("read"), b"old", "{unnamed}");
            drop(new);
            assert_eq!(std::fs::read(&dst).expect("read"), b"old", "{unnamed}");
            assert_eq!(names(dir.path()), ["out.vhd"], "{unnamed}");

            let new = NewFile::beside_with(&dst, 0o600, true, open).expect("new file");
            new.file().write_all_at(b"new!", 0).expect("write");
            new.persist(&dst).expect("persist");
            assert_eq!(std::fs::read(&dst).expect("read"), b"new!", "{unnamed}");
            assert_eq!(names(dir.path()), ["out.vhd"], "{unnamed}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn create_refuses_a_regular_file_unless_replacing_and_a_symlink_always() {
        let dir = tempfile::tempdir().expect("tmp");
        let dst = dir.path().join("out.vhd");
        std::fs::write(&dst, b"old").expect("old file");
        let link = dir.path().join("link.vhd");
        std::os::unix::fs::symlink(&dst, &link).expect("symlink");
        let replace = OutputOptions::new().replace(true).devices(true);

        assert!(matches!(
            NewFile::create(&dst, &OutputOptions::new(), None, 0),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            NewFile::create(&link, &replace, None, 0),
            Err(Error::AlreadyExists { .. })
        ));
        assert!(matches!(
            NewFile::create(dir.path(), &replace, None, 0),
            Err(Error::AlreadyExists { .. })
        ));
        let new = NewFile::create(&dst, &replace, None, 0).expect("replacing");
        new.persist(&dst).expect("persist");
        assert_eq!(std::fs::read(&dst).expect("read"), b"");
        assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink());
    }

    #[test]
    fn create_removes_what_a_killed_run_left_for_the_same_destination() {
        let dir = tempfile::tempdir().expect("tmp");
        let dst = dir.path().join("out.vhd");
        let left = dir.path().join(".out.vhd.Zx81Ab.vhdkit-tmp");
        std::fs::write(&left, b"partial").expect("leftover");

        let new = NewFile::create(&dst, &OutputOptions::new(), None, 0).expect("new file");

        assert!(!left.exists(), "the leftover is removed");
        new.persist(&dst).expect("persist");
        assert_eq!(names(dir.path()), ["out.vhd"]);
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
