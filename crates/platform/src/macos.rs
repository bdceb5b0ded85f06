//! macOS (and the other Unix systems that are not Linux): no unnamed files (a hidden
//! temporary name in the same folder instead), `F_PREALLOCATE` for allocation, no
//! range clones (APFS clones whole files only, and only into a new name:
//! `fclonefileat`, which a conversion whose result is its source's bytes uses), no
//! read-ahead advice.

use std::fs::File;
use std::io;
use std::path::Path;

pub(crate) fn open_unnamed(_: &Path, _: u32) -> io::Result<File> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn unnamed_unsupported(_: &io::Error) -> bool {
    false
}

pub(crate) fn link_unnamed(_: &File, _: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Allocates `len` bytes past the current end of `file` (`F_PREALLOCATE`, contiguous
/// if it can, else in pieces); false where the file system cannot.
#[cfg(target_os = "macos")]
fn preallocate(file: &File, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let mut store = libc::fstore_t {
        fst_flags: libc::F_ALLOCATECONTIG | libc::F_ALLOCATEALL,
        fst_posmode: libc::F_PEOFPOSMODE,
        fst_offset: 0,
        fst_length: len as libc::off_t,
        fst_bytesalloc: 0,
    };
    // SAFETY: F_PREALLOCATE reads and writes one `fstore_t`, which `store` is, during
    // the call; the descriptor is open (borrowed from `file`).
    let ok = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PREALLOCATE, &mut store) } != -1;
    if ok {
        return true;
    }
    store.fst_flags = libc::F_ALLOCATEALL;
    // SAFETY: as above.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PREALLOCATE, &mut store) != -1 }
}

#[cfg(not(target_os = "macos"))]
fn preallocate(_: &File, _: u64) -> bool {
    false
}

pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    let have = file.metadata()?.len();
    if len > have && !preallocate(file, len - have) {
        super::unix::check_room(file, len - have)?;
    }
    if len > have {
        file.set_len(len)?;
    }
    Ok(())
}

pub(crate) fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let have = file.metadata()?.len();
    let end = offset.saturating_add(len);
    if end > have && preallocate(file, end - have) {
        return Ok(());
    }
    super::unix::check_room(file, len)
}

pub(crate) fn zero_device_range(_: &File, _: u64, _: u64) -> bool {
    false
}

/// `F_PUNCHHOLE` over the file system blocks `offset..offset + len` covers entirely;
/// zeros written over the pieces of blocks at either end (APFS frees whole blocks only
/// and wants the range aligned to them).
#[cfg(target_os = "macos")]
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let block = file.metadata()?.blksize().max(512);
    let end = offset + len;
    let first = offset.div_ceil(block) * block;
    let last = end / block * block;
    if first >= last {
        return Err(io::ErrorKind::Unsupported.into());
    }
    let args = libc::fpunchhole_t {
        fp_flags: 0,
        reserved: 0,
        fp_offset: first as libc::off_t,
        fp_length: (last - first) as libc::off_t,
    };
    // SAFETY: F_PUNCHHOLE reads one `fpunchhole_t`, which `args` is, during the call;
    // the descriptor is open (borrowed from `file`).
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PUNCHHOLE, &args) } == -1 {
        return Err(io::Error::last_os_error());
    }
    let zeros = vec![0u8; block as usize];
    for (a, b) in [(offset, first), (last, end)] {
        if b > a {
            crate::FileExt::write_all_at(file, &zeros[..(b - a) as usize], a)?;
        }
    }
    Ok(true)
}

#[cfg(not(target_os = "macos"))]
pub(crate) fn punch_hole(_: &File, _: u64, _: u64) -> io::Result<bool> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Errors of `F_PUNCHHOLE` meaning "not on this file system" (HFS+): the caller writes
/// zeros.
pub(crate) fn punch_refused(e: &io::Error) -> bool {
    [libc::ENOTSUP, libc::EINVAL, libc::ENOSYS]
        .iter()
        .any(|&n| e.raw_os_error() == Some(n))
}

pub(crate) fn will_need(_: &File, _: u64, _: u64) {}

pub(crate) fn populate(_: &memmap2::Mmap, _: std::ops::Range<usize>) -> io::Result<()> {
    Ok(())
}

pub(crate) fn offload_volume(_: &File) -> Option<u64> {
    None
}

/// APFS: the only file system here that clones (whole files, `clonefile`).
#[cfg(target_os = "macos")]
pub(crate) fn whole_clone_volume(out: &File) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: `statfs` is a plain C struct of integers and characters; all zeros is a
    // valid value to be overwritten.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one `struct statfs`, which `fs` is, during the call; the
    // descriptor is open (borrowed from `out`).
    if unsafe { libc::fstatfs(out.as_raw_fd(), &mut fs) } != 0 {
        return None;
    }
    let name: Vec<u8> = fs
        .f_fstypename
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    if name != b"apfs" {
        return None;
    }
    super::unix::volume_of(out)
}

#[cfg(not(target_os = "macos"))]
pub(crate) fn whole_clone_volume(_: &File) -> Option<u64> {
    None
}

pub(crate) fn clone_range(_: &File, _: u64, _: u64, _: &File, _: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn clone_file(_: &File, _: &File) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// `CLONE_NOOWNERCOPY` of `<sys/clonefile.h>` (macOS 10.13): the clone is owned by
/// this process's user even when it runs as root, as any new file it makes is.
#[cfg(target_os = "macos")]
const CLONE_NOOWNERCOPY: u32 = 0x0002;

/// `fclonefileat` into `path` (it fails with `EEXIST` on anything there, a symbolic
/// link too), then the clone's locking flags cleared and its permission bits set to
/// 0o600 (it got `src`'s, which may not let its owner write), and the clone opened for
/// reading and writing, without following a link; removed again if any of it fails.
#[cfg(target_os = "macos")]
pub(crate) fn clone_file_to(src: &File, path: &Path) -> io::Result<File> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
    // SAFETY: `name` is a NUL-terminated string that lives through the call; the source
    // descriptor is open (borrowed from `src`); AT_FDCWD resolves a relative path as
    // the other calls of this process do.
    let r = unsafe {
        libc::fclonefileat(
            src.as_raw_fd(),
            libc::AT_FDCWD,
            name.as_ptr(),
            CLONE_NOOWNERCOPY,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let opened = unlock(&name, path)
        .and_then(|()| {
            rustix::fs::chmodat(
                rustix::fs::CWD,
                path,
                rustix::fs::Mode::from_raw_mode(0o600),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(io::Error::from)
        })
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
        });
    match opened {
        Ok(file) => Ok(file),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Clears the flags that lock a file (`uchg`, `uappnd`: Finder's "Locked") on the clone
/// at `path` (`name`, as a C string): it carries its source's, and locked it could be
/// neither changed nor removed. Its other flags stay.
#[cfg(target_os = "macos")]
fn unlock(name: &std::ffi::CStr, path: &Path) -> io::Result<()> {
    use std::os::macos::fs::MetadataExt;
    let flags = std::fs::symlink_metadata(path)?.st_flags();
    let locks = libc::UF_IMMUTABLE | libc::UF_APPEND;
    if flags & locks == 0 {
        return Ok(());
    }
    // SAFETY: `name` is a NUL-terminated string that lives through the call.
    if unsafe { libc::lchflags(name.as_ptr(), flags & !locks) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "macos"))]
pub(crate) fn clone_file_to(_: &File, _: &Path) -> io::Result<File> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Errors of `fclonefileat` meaning "no clone here": a file system without clones
/// (`ENOTSUP`: HFS+, FAT, network volumes), another volume (`EXDEV`), a source that is
/// no regular file or flags an old release does not know (`EINVAL`), no such call
/// (`ENOSYS`), a file system that forbids it (`EPERM`).
pub(crate) fn clone_refused(e: &io::Error) -> bool {
    [
        libc::ENOTSUP,
        libc::EOPNOTSUPP,
        libc::EXDEV,
        libc::EINVAL,
        libc::ENOSYS,
        libc::EPERM,
    ]
    .iter()
    .any(|&n| e.raw_os_error() == Some(n))
}

pub(crate) fn send_more(_: &crate::net::Stream, _: &[u8]) -> Option<io::Result<usize>> {
    None
}

pub(crate) fn send_file(
    _: &crate::net::Stream,
    _: &File,
    _: u64,
    _: u64,
) -> Option<io::Result<()>> {
    None
}
