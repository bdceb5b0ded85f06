//! Where an output goes: what may already stand at its path (nothing; a regular file the
//! caller lets vhdkit replace; a device written in place), which permission bits a new
//! file gets, and the temporary names [`super::NewFile`] uses where a file system cannot
//! hold an unnamed file. The one place these rules live: `create`, `convert`, `merge-to`,
//! `read --output` and `serve --undo` all go through [`super::NewFile::create`].

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use vhdkit_platform::FileKind;

use super::chain::Disk;

/// Permission bits a new file gets when nothing says otherwise (before the umask).
pub const DEFAULT_MODE: u32 = 0o666;

/// The suffix of the temporary names of new files (`.NAME.XXXXXX.vhdkit-tmp`).
pub(crate) const TEMP_SUFFIX: &str = ".vhdkit-tmp";

/// What may already stand at an output's path, and the permission bits of a new file.
///
/// By default an output must not exist: a new file is written beside its destination and
/// given its name only when complete and durable, without replacing anything.
///
/// ```
/// use vhdkit_format::image::OutputOptions;
/// let opts = OutputOptions::new().replace(true).devices(true).mode(0o600);
/// assert!(opts.replace && opts.devices);
/// assert_eq!(opts.mode, Some(0o600));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputOptions {
    /// Replace a regular file that exists at the path, atomically: the new file is
    /// written beside it and renamed over it once complete and durable, so the old file
    /// stays whole under its name until then (and after a failure or cancel). A symbolic
    /// link is never replaced nor followed; a directory, FIFO or socket is never
    /// replaced.
    pub replace: bool,
    /// Write a character or block device that stands at the path in place (as `dd` and
    /// `qemu-img convert -n` do). A block device must hold the output (checked before any
    /// write) and is opened exclusively (`O_EXCL`: a mounted one is refused); bytes past
    /// the output are left as they are. A device cannot be replaced atomically: a failed
    /// or cancelled run leaves it partly written.
    pub devices: bool,
    /// Permission bits of a new file, before the umask. `None`: those of the source —
    /// the bits every file of its chain allows, as `cp` gives a copy its source's bits
    /// ([`source_mode`]) — or [`DEFAULT_MODE`] where there is no source.
    pub mode: Option<u32>,
}

impl OutputOptions {
    /// A new file that must not exist, with the source's permission bits.
    pub fn new() -> OutputOptions {
        OutputOptions::default()
    }

    /// Sets [`OutputOptions::replace`].
    pub fn replace(mut self, yes: bool) -> OutputOptions {
        self.replace = yes;
        self
    }

    /// Sets [`OutputOptions::devices`].
    pub fn devices(mut self, yes: bool) -> OutputOptions {
        self.devices = yes;
        self
    }

    /// Sets [`OutputOptions::mode`].
    pub fn mode(mut self, mode: u32) -> OutputOptions {
        self.mode = Some(mode);
        self
    }

    /// The permission bits a new file gets: [`OutputOptions::mode`], else `source`'s
    /// ([`source_mode`]), else [`DEFAULT_MODE`].
    pub fn mode_for(&self, source: Option<&Disk>) -> u32 {
        self.mode
            .or_else(|| source.map(source_mode))
            .unwrap_or(DEFAULT_MODE)
            & 0o777
    }
}

/// The permission bits a copy of `disk`'s content gets: those that every file it reads
/// from (each level of its chain, a host drive's device) allows — a 0600 parent under a
/// 0644 child gives 0600, since the copy holds the parent's bytes. Only the read, write
/// and execute bits (no set-id, no sticky bit), as `cp` copies them; a file that cannot
/// be asked (memory) restricts nothing, and a disk with no file at all gives
/// [`DEFAULT_MODE`].
pub fn source_mode(disk: &Disk) -> u32 {
    disk.layers()
        .iter()
        .filter_map(|layer| layer.backend().as_file())
        .filter_map(|f| f.metadata().ok())
        .map(|m| vhdkit_platform::mode(&m) & 0o777)
        .reduce(|a, b| a & b)
        .unwrap_or(DEFAULT_MODE)
}

/// What stands at an output's path, as [`inspect`] accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Nothing: a new file.
    Nothing,
    /// A regular file, to be replaced ([`OutputOptions::replace`]).
    Regular,
    /// A device, written in place ([`OutputOptions::devices`]).
    Device {
        /// A block device (else a character device).
        block: bool,
    },
}

/// Checks an output's path before any work: not empty, in a folder that exists, and
/// whatever stands there allowed by `opts` — nothing, a regular file with
/// [`OutputOptions::replace`], a device with [`OutputOptions::devices`] — and not one
/// of `source`'s own files (an output never overwrites or replaces its input).
/// Anything else, a symbolic link above all (never followed, never replaced), is
/// [`Error::AlreadyExists`].
pub(crate) fn inspect(
    path: &Path,
    opts: &OutputOptions,
    source: Option<&Disk>,
) -> Result<Existing> {
    if path.as_os_str().is_empty() {
        return Err(Error::InvalidArgument(
            "the destination path is empty".into(),
        ));
    }
    // A disk or volume by its Windows device name (`\\.\PhysicalDrive1`, `\\.\E:`).
    if vhdkit_platform::is_device_name(path) {
        return if opts.devices {
            Ok(Existing::Device { block: true })
        } else {
            Err(Error::AlreadyExists {
                path: path.to_owned(),
            })
        };
    }
    let dir = folder_of(path);
    if !dir.is_dir() {
        return Err(Error::PathNotFound {
            path: dir.to_owned(),
        });
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => return Err(Error::file(path, "looking at the destination", e)),
    };
    let kind = vhdkit_platform::kind(&meta);
    let is_device = |k: FileKind| matches!(k, FileKind::BlockDevice | FileKind::CharDevice);
    if kind == FileKind::Symlink && opts.devices {
        // /dev/vg/lv, /dev/disk/by-id/…: say what to name instead of "already exists".
        if let Ok(target) = std::fs::canonicalize(path) {
            let to_device =
                std::fs::metadata(&target).is_ok_and(|m| is_device(vhdkit_platform::kind(&m)));
            if to_device {
                return Err(Error::InvalidArgument(format!(
                    "{}: is a symbolic link to the device {}; vhdkit never writes through a \
                     link: name the device itself",
                    path.display(),
                    target.display()
                )));
            }
        }
    }
    let existing = if kind == FileKind::Regular && opts.replace {
        Existing::Regular
    } else if is_device(kind) && opts.devices {
        Existing::Device {
            block: kind == FileKind::BlockDevice,
        }
    } else {
        return Err(Error::AlreadyExists {
            path: path.to_owned(),
        });
    };
    if let Some(disk) = source {
        if is_source_file(path, disk) {
            return Err(Error::InvalidArgument(format!(
                "{}: is the source (or a file of its chain): an output never overwrites its \
                 own input",
                path.display()
            )));
        }
    }
    Ok(existing)
}

/// Whether `path` (an output's) names one of the files `disk` reads: the same file, or
/// the same device for device nodes (two nodes can name one device).
fn is_source_file(path: &Path, disk: &Disk) -> bool {
    let Some(id) = vhdkit_platform::path_id(path) else {
        return false;
    };
    disk.layers()
        .iter()
        .filter_map(|layer| layer.backend().as_file())
        .filter_map(vhdkit_platform::file_id)
        .any(|f| f == id)
}

/// The folder an output is written in.
pub(crate) fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Opens the device at `path` for writing in place: a block device read-write (so a
/// verification can read it back) and exclusively (`O_EXCL`: a mounted device, or one
/// another program holds exclusively, is refused as in use), a character device
/// write-only. Never through a symbolic link; the node's type is checked again on the
/// open file. A block device must hold `len` bytes.
pub(crate) fn open_device(path: &Path, block: bool, len: u64) -> Result<File> {
    let file = vhdkit_platform::open_device(path, block).map_err(|e| {
        if vhdkit_platform::is_busy(&e) {
            Error::InUse {
                path: path.to_owned(),
            }
        } else {
            Error::file(path, "opening the device", e)
        }
    })?;
    let kind =
        vhdkit_platform::kind_of(&file).map_err(|e| Error::file(path, "reading metadata", e))?;
    let wanted = if block {
        FileKind::BlockDevice
    } else {
        FileKind::CharDevice
    };
    if kind != wanted {
        return Err(Error::AlreadyExists {
            path: path.to_owned(),
        });
    }
    if block {
        require_room(&file, path, len)?;
    }
    Ok(file)
}

/// Checks that the block device at `path` holds `len` bytes, before any work: opened
/// read-only (never through a symbolic link) only to ask its size.
pub(crate) fn check_device_room(path: &Path, len: u64) -> Result<()> {
    let file = vhdkit_platform::open_device_read(path)
        .map_err(|e| Error::file(path, "opening the device", e))?;
    require_room(&file, path, len)
}

/// Refuses the open device `file` if it holds fewer than `len` bytes.
fn require_room(file: &File, path: &Path, len: u64) -> Result<()> {
    let size = vhdkit_platform::size_of(file)
        .map_err(|e| Error::file(path, "reading the device's size", e))?;
    if size < len {
        return Err(Error::File {
            path: path.to_owned(),
            doing: "refused before any write",
            source: std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("the device holds {size} bytes, fewer than the {len} to write"),
            ),
        });
    }
    Ok(())
}

/// Makes `len` bytes of a device at `offset` read as zeros: a block device is asked to
/// zero the range (`fallocate(FALLOC_FL_ZERO_RANGE)`, which the kernel turns into the
/// device's write-zeroes or writes of zeros itself); where it cannot (a range not on its
/// logical blocks, a character device), zeros are written.
pub(crate) fn zero_range(
    out: &super::FileBackend,
    offset: u64,
    len: u64,
    block: bool,
) -> std::io::Result<()> {
    use super::Backend;
    if len == 0 {
        return Ok(());
    }
    if block && vhdkit_platform::zero_device_range(out.file(), offset, len) {
        return Ok(());
    }
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZEROS.len() as u64);
        out.write_all_at(&ZEROS[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}

/// A fresh temporary name for a new file whose destination is called `name`, in the
/// form [`is_temporary_of`] recognises: `.NAME.XXXXXX.vhdkit-tmp`.
pub(crate) fn temporary_prefix(name: &str) -> String {
    format!(".{name}.")
}

/// Whether `entry` (a file name) is a temporary name of a new file for `name`:
/// `.NAME.` + random letters and digits + `.vhdkit-tmp`.
pub(crate) fn is_temporary_of(entry: &str, name: &str) -> bool {
    entry
        .strip_prefix(&temporary_prefix(name))
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|random| {
            !random.is_empty() && random.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// Removes what earlier runs left of new files for `dest` in its folder: temporary
/// names (`.NAME.XXXXXX.vhdkit-tmp`) of regular files owned by this user that no
/// process holds any more. A running vhdkit holds an exclusive `flock` on its temporary
/// file from the moment it exists (see [`super::NewFile`]); a killed one holds nothing,
/// so a lock taken here means the file is a leftover. Returns the paths removed. Errors
/// are ignored: a leftover that stays is only clutter.
pub(crate) fn remove_leftovers(dest: &Path) -> Vec<PathBuf> {
    let Some(name) = dest.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let dir = folder_of(dest);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(entry_name) = file_name.to_str() else {
            continue;
        };
        if !is_temporary_of(entry_name, name) {
            continue;
        }
        let path = dir.join(entry_name);
        if remove_if_abandoned(&path) {
            removed.push(path);
        }
    }
    removed
}

/// Removes the temporary file at `path` if it is a regular file owned by this user that
/// no process holds locked, and still the file that was checked when it is removed.
fn remove_if_abandoned(path: &Path) -> bool {
    let Ok(file) = vhdkit_platform::open_no_follow(path) else {
        return false;
    };
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if !meta.is_file()
        || !vhdkit_platform::owned_by_me(&meta)
        || vhdkit_platform::try_lock(&file, true).is_err()
    {
        return false;
    }
    // Locked: its writer is gone. Remove the name only if it still names this file.
    let same = vhdkit_platform::file_id(&file)
        .is_some_and(|id| vhdkit_platform::path_id(path) == Some(id));
    same && std::fs::remove_file(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised_only_for_their_destination() {
        assert!(is_temporary_of(".a.vhd.x7Yz09.vhdkit-tmp", "a.vhd"));
        assert!(!is_temporary_of(".a.vhd.x.y.vhdkit-tmp", "a.vhd"));
        assert!(!is_temporary_of(".a.vhd.x7Yz09.vhdkit-tmp", "a.vh"));
        assert!(!is_temporary_of(".a.vhd.vhdkit-tmp", "a.vhd"));
        assert!(!is_temporary_of("a.vhd.x7Yz09.vhdkit-tmp", "a.vhd"));
        assert!(!is_temporary_of(".a.vhd.x7Yz09.tmp", "a.vhd"));
    }

    #[test]
    fn a_leftover_is_removed_unless_a_process_holds_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let dest = dir.path().join("out.vhd");
        let left = dir.path().join(".out.vhd.AbC123.vhdkit-tmp");
        let held = dir.path().join(".out.vhd.DeF456.vhdkit-tmp");
        let other = dir.path().join(".other.vhd.GhI789.vhdkit-tmp");
        for p in [&left, &held, &other] {
            std::fs::write(p, b"partial").expect("write");
        }
        let holder = File::open(&held).expect("open");
        vhdkit_platform::lock(&holder).expect("lock");

        let removed = remove_leftovers(&dest);

        assert_eq!(removed, vec![left.clone()]);
        assert!(!left.exists());
        assert!(held.exists(), "a running writer's file is kept");
        assert!(other.exists(), "another destination's file is kept");
        drop(holder);
        assert_eq!(remove_leftovers(&dest), vec![held]);
    }

    #[test]
    fn mode_for_prefers_the_option_then_the_source() {
        assert_eq!(OutputOptions::new().mode_for(None), 0o666);
        assert_eq!(OutputOptions::new().mode(0o4640).mode_for(None), 0o640);
    }

    #[cfg(unix)]
    #[test]
    fn source_mode_is_what_every_file_of_the_chain_allows_and_0666_without_files() {
        use crate::image::{CreateOptions, DiskKind, FsResolver, MemBackend, OpenOptions};
        let dir = tempfile::tempdir().expect("tmp");
        let base = dir.path().join("base.vhd");
        let child = dir.path().join("child.vhd");
        Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 4 << 20)).expect("base");
        Disk::create(&child, &CreateOptions::differencing(&base)).expect("child");
        let chmod = |p: &Path, m: u32| vhdkit_platform::set_mode(p, m).expect("chmod");
        chmod(&base, 0o4750);
        chmod(&child, 0o664);
        let disk = Disk::open(&child).expect("open");
        assert_eq!(source_mode(&disk), 0o640);

        let bytes = std::fs::read(&base).expect("read");
        let opts = OpenOptions::new();
        let top = crate::image::VhdFile::from_backend(
            Path::new("memory.vhd"),
            std::sync::Arc::new(MemBackend::new(bytes)),
            &opts,
        )
        .expect("from memory");
        let memory = Disk::resolve(top, &opts, &FsResolver).expect("resolve");
        assert_eq!(source_mode(&memory), DEFAULT_MODE);
    }
}
