//! macOS (and the other Unix systems that are not Linux): no unnamed files (a hidden
//! temporary name in the same folder instead), `F_PREALLOCATE` for allocation, no
//! range clones (APFS clones whole files only, `clonefile`, which a VHD conversion
//! never is), no read-ahead advice.

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

pub(crate) fn clone_range(_: &File, _: u64, _: u64, _: &File, _: u64) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn clone_file(_: &File, _: &File) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn clone_refused(_: &io::Error) -> bool {
    false
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
