//! Creating disks: fixed, dynamic, differencing and host-drive.
//!
//! Every disk is written as an unnamed file in the target's directory (or under a
//! temporary name where the file system cannot), made durable, then given the target's
//! name without replacing anything, and the directory is synced: the target name appears
//! only when the file is complete.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::layout::{NewParent, NewSparse};
use crate::spec::locator::PlatformCode;
use crate::spec::{
    DiskType, Footer, VhdTime, DEFAULT_BLOCK_SIZE, FOOTER_SIZE, MAX_CREATE_SIZE, MIN_CREATE_SIZE,
    SECTOR_SIZE,
};

use super::backend::{Backend, FileBackend};
use super::chain::Disk;
use super::{DiskKind, OpenOptions};

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Kind of disk.
    pub kind: DiskKind,
    /// Virtual size in bytes (fixed and dynamic; a multiple of 512 from 3 MiB to 2040 GiB).
    pub size: u64,
    /// Block size of dynamic and differencing disks: a power of two from 4 KiB to
    /// 256 MiB. `None`: 2 MiB for a dynamic disk, the parent's block size for a
    /// differencing disk (2 MiB under a fixed parent), as Virtual Server and Windows do —
    /// azure-vhd-utils fails on, and Xen Orchestra's vhd-lib misreads, chains whose
    /// levels differ. Fixed disks have no blocks: ignored.
    pub block_size: Option<u32>,
    /// Parent of a differencing disk; a relative path is looked up next to the child
    /// first, then from the current directory.
    pub parent: Option<PathBuf>,
    /// Host device (or file) of a host-drive disk.
    pub host_drive: Option<PathBuf>,
    /// Create the host-drive link read-only.
    pub read_only: bool,
    /// Fixed disks: leave the data area a hole instead of allocating it. By default a
    /// fixed disk's space is allocated up front (`fallocate`, no zeros written), as
    /// Virtual Server and Hyper-V do: a volume too small fails at once with
    /// `ERROR_DISK_FULL` and leaves nothing, instead of failing on some later write.
    pub sparse: bool,
}

impl CreateOptions {
    /// A fixed or dynamic disk of `size` bytes.
    pub fn new(kind: DiskKind, size: u64) -> CreateOptions {
        CreateOptions {
            kind,
            size,
            block_size: None,
            parent: None,
            host_drive: None,
            read_only: false,
            sparse: false,
        }
    }

    /// A differencing disk over `parent`.
    pub fn differencing(parent: impl Into<PathBuf>) -> CreateOptions {
        CreateOptions {
            parent: Some(parent.into()),
            ..CreateOptions::new(DiskKind::Differencing, 0)
        }
    }

    /// A host-drive stub linking `device`.
    pub fn host_drive(device: impl Into<PathBuf>, read_only: bool) -> CreateOptions {
        CreateOptions {
            host_drive: Some(device.into()),
            read_only,
            ..CreateOptions::new(DiskKind::HostDrive, 0)
        }
    }

    /// Sets the block size.
    pub fn block_size(mut self, block_size: u32) -> CreateOptions {
        self.block_size = Some(block_size);
        self
    }
}

/// Parses a size: bytes, or a number with a K/M/G/T suffix (powers of 1024; `KiB`,
/// `KB` and `k` mean the same).
///
/// ```
/// use vhdkit_format::image::parse_size;
/// assert_eq!(parse_size("3M"), Ok(3 << 20));
/// assert_eq!(parse_size("2GiB"), Ok(2 << 30));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// assert!(parse_size("12X").is_err());
/// ```
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid size {s:?}: expected a number of bytes with an optional K/M/G/T suffix"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: number too large"))?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unknown suffix {suffix:?} (use K, M, G or T)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// The number of BAT entries a disk of `size` bytes in blocks of `block_size` needs, if
/// vhdkit creates tables that large (see [`crate::spec::MAX_CREATE_BAT_ENTRIES`]).
pub fn check_bat_entries(size: u64, block_size: u32) -> Result<u32> {
    let entries = size.div_ceil(u64::from(block_size));
    if entries > crate::spec::MAX_CREATE_BAT_ENTRIES {
        return Err(Error::InvalidArgument(format!(
            "block size {block_size} is too small for a {size}-byte disk: the BAT would have {entries} entries (at most {}); use a larger --block-size",
            crate::spec::MAX_CREATE_BAT_ENTRIES
        )));
    }
    // Fits: at most 2^26.
    Ok(entries as u32)
}

/// Checks what can be checked of `opts` before anything is written: the size of a
/// fixed or dynamic disk, the block size, that a differencing disk has a parent and a
/// host-drive disk a device.
pub fn check_create_options(opts: &CreateOptions) -> Result<()> {
    if matches!(opts.kind, DiskKind::Fixed | DiskKind::Dynamic) {
        check_create_size(opts.size)?;
    }
    if let (DiskKind::Dynamic | DiskKind::Differencing, Some(bs)) = (opts.kind, opts.block_size) {
        crate::spec::header::check_create_block_size(bs).map_err(Error::InvalidArgument)?;
    }
    match opts.kind {
        DiskKind::Differencing if opts.parent.is_none() => Err(Error::InvalidArgument(
            "a differencing disk needs a parent".into(),
        )),
        DiskKind::HostDrive if opts.host_drive.is_none() => Err(Error::InvalidArgument(
            "a host-drive disk needs a host drive".into(),
        )),
        DiskKind::Raw => Err(Error::InvalidArgument(
            "vhdkit creates VHDs, not raw images".into(),
        )),
        _ => Ok(()),
    }
}

/// Checks a fixed or dynamic disk size against the Virtual Server limits.
pub fn check_create_size(size: u64) -> Result<()> {
    if size == 0 {
        // Virtual Server: a size of zero or less is an invalid argument, not a small disk.
        return Err(Error::InvalidArgument(
            "a disk of size 0: give a size".into(),
        ));
    }
    if size < MIN_CREATE_SIZE {
        return Err(Error::SizeTooSmall {
            size,
            detail: format!("the smallest disk is 3 MiB ({MIN_CREATE_SIZE} bytes)"),
        });
    }
    if size > MAX_CREATE_SIZE {
        return Err(Error::SizeTooLarge {
            size,
            detail: format!("the largest disk is 2040 GiB ({MAX_CREATE_SIZE} bytes)"),
        });
    }
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::InvalidArgument(format!(
            "size {size} is not a multiple of 512 bytes"
        )));
    }
    Ok(())
}

impl Disk {
    /// Creates a disk at `path`, which must not exist.
    pub fn create(path: impl AsRef<Path>, opts: &CreateOptions) -> Result<()> {
        let path = path.as_ref();
        if path.symlink_metadata().is_ok() {
            return Err(Error::AlreadyExists {
                path: path.to_owned(),
            });
        }
        match opts.kind {
            DiskKind::Fixed => {
                check_create_options(opts)?;
                let footer = Footer::new(DiskType::Fixed, opts.size);
                write_new(path, |b| {
                    if !opts.sparse {
                        allocate(b.file(), opts.size + FOOTER_SIZE as u64)?;
                    }
                    b.set_len(opts.size)?;
                    b.write_all_at(&footer.encode(), opts.size)
                })
            }
            DiskKind::Dynamic => {
                check_create_options(opts)?;
                let block_size = opts.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
                let bytes = sparse_image(opts.size, block_size, None)?;
                write_new(path, |b| b.write_all_at(&bytes, 0))
            }
            DiskKind::Differencing => {
                check_create_options(opts)?;
                let parent = opts.parent.as_deref().ok_or_else(|| {
                    Error::InvalidArgument("a differencing disk needs a parent".into())
                })?;
                let link = ParentLink::resolve(path, parent)?;
                let block_size = opts
                    .block_size
                    .or(link.block_size)
                    .unwrap_or(DEFAULT_BLOCK_SIZE);
                let bytes = sparse_image(link.size, block_size, Some(&link))?;
                write_new(path, |b| b.write_all_at(&bytes, 0))
            }
            DiskKind::HostDrive => {
                let device = opts.host_drive.as_deref().ok_or_else(|| {
                    Error::InvalidArgument("a host-drive disk needs a host drive".into())
                })?;
                let device =
                    std::fs::canonicalize(device).map_err(|e| Error::HostDriveNotFound {
                        path: path.to_owned(),
                        device: device.to_owned(),
                        detail: format!("cannot find it: {e}"),
                    })?;
                let f = File::open(&device).map_err(|e| Error::HostDriveNotFound {
                    path: path.to_owned(),
                    device: device.clone(),
                    detail: format!("cannot open it: {e}"),
                })?;
                let dev = FileBackend::new(f);
                let size = dev
                    .len()
                    .map_err(|e| Error::file(&device, "reading the size", e))?;
                if size == 0 || size % SECTOR_SIZE != 0 {
                    return Err(Error::InvalidArgument(format!(
                        "host drive {} is {size} bytes: not a positive multiple of 512",
                        device.display()
                    )));
                }
                let bytes = super::hostdrive::stub_bytes(&device, &dev, size, opts.read_only)?;
                write_new(path, |b| b.write_all_at(&bytes, 0))
            }
            DiskKind::Raw => Err(Error::InvalidArgument(
                "vhdkit creates VHDs, not raw images".into(),
            )),
        }
    }
}

/// What a child records about its parent.
struct ParentLink {
    size: u64,
    /// The parent's block size (`None` for a fixed parent).
    block_size: Option<u32>,
    unique_id: uuid::Uuid,
    timestamp: VhdTime,
    name: String,
    absolute: String,
    relative: String,
}

impl ParentLink {
    fn resolve(child: &Path, parent: &Path) -> Result<ParentLink> {
        let child_dir = child
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let child_dir = std::fs::canonicalize(child_dir)
            .map_err(|e| Error::file(child_dir, "resolving the child's directory", e))?;
        let parent_path = if parent.is_relative() && child_dir.join(parent).is_file() {
            child_dir.join(parent)
        } else {
            parent.to_owned()
        };
        let parent_abs =
            std::fs::canonicalize(&parent_path).map_err(|_| Error::ParentNotFound {
                child: child.to_owned(),
                name: parent.display().to_string(),
                tried: vec![child_dir.join(parent), parent.to_owned()],
                refused: Vec::new(),
            })?;
        // Host drives are not followed (only a host-drive stub gives `NotAllowed` here),
        // and a host-drive stub cannot be a parent anyway.
        let disk = match Disk::open_with(&parent_abs, &OpenOptions::new()) {
            Err(Error::NotAllowed { .. }) => {
                return Err(Error::WrongDiskType {
                    path: parent_abs,
                    found: DiskKind::HostDrive.to_string(),
                    expected: "a parent must be a fixed, dynamic or differencing VHD".into(),
                })
            }
            other => other?,
        };
        if disk.kind() == DiskKind::HostDrive || disk.kind() == DiskKind::Raw {
            return Err(Error::WrongDiskType {
                path: parent_abs,
                found: disk.kind().to_string(),
                expected: "a parent must be a fixed, dynamic or differencing VHD".into(),
            });
        }
        let mtime = std::fs::metadata(&parent_abs)
            .and_then(|m| m.modified())
            .map_err(|e| Error::file(&parent_abs, "reading the modification time", e))?;
        let rel =
            pathdiff::diff_paths(&parent_abs, &child_dir).unwrap_or_else(|| parent_abs.clone());
        let rel = rel.to_string_lossy().replace('/', "\\");
        let relative = if rel.starts_with("..") {
            rel
        } else {
            format!(".\\{rel}")
        };
        let name = parent_abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(ParentLink {
            size: disk.virtual_size(),
            block_size: disk.top().header().map(|h| h.block_size),
            unique_id: disk.top().footer().unique_id,
            timestamp: VhdTime::from_system_time(mtime),
            name,
            absolute: parent_abs.to_string_lossy().into_owned(),
            relative,
        })
    }
}

/// The bytes of a new dynamic (or, with `parent`, differencing) disk without blocks,
/// built by the one sparse-image builder (`spec::layout::NewSparse`).
fn sparse_image(size: u64, block_size: u32, parent: Option<&ParentLink>) -> Result<Vec<u8>> {
    check_bat_entries(size, block_size)?;
    let parent = parent.map(|link| NewParent {
        unique_id: link.unique_id,
        timestamp: link.timestamp,
        name: link.name.clone(),
        // W2ku first, then W2ru: docs/parent-lookup.md.
        locators: vec![
            (PlatformCode::W2ku, link.absolute.clone()),
            (PlatformCode::W2ru, link.relative.clone()),
        ],
    });
    let new = NewSparse::new(size, block_size, parent.as_ref()).map_err(Error::InvalidArgument)?;
    Ok(new.image())
}

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
    pub fn beside(path: &Path) -> Result<NewFile> {
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
    pub fn persist(self, path: &Path) -> Result<()> {
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
            lifecycle(true, NewFile::beside);
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
