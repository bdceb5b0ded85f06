//! Linux: `O_TMPFILE` + `linkat`, `fallocate` (allocation, hole punching), `FICLONERANGE` on XFS and btrfs,
//! `POSIX_FADV_WILLNEED`, `MADV_POPULATE_READ`.

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::io::Errno;

fn errno_in(e: &io::Error, set: &[Errno]) -> bool {
    set.iter()
        .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

pub(crate) fn open_unnamed(dir: &Path, mode: u32) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode & 0o777),
    )?;
    Ok(File::from(fd))
}

pub(crate) fn unnamed_unsupported(e: &io::Error) -> bool {
    errno_in(
        e,
        &[Errno::OPNOTSUPP, Errno::ISDIR, Errno::INVAL, Errno::NOSYS],
    )
}

pub(crate) fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD};
    use std::os::fd::AsRawFd;
    // Through /proc (any user); without /proc, AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH).
    let by_proc = format!("/proc/self/fd/{}", file.as_raw_fd());
    match rustix::fs::linkat(CWD, by_proc.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW) {
        Err(Errno::NOENT) if !Path::new("/proc/self/fd").exists() => {
            rustix::fs::linkat(file, "", CWD, path, AtFlags::EMPTY_PATH)?;
            Ok(())
        }
        other => Ok(other?),
    }
}

pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    use rustix::fs::FallocateFlags;
    match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP) => super::unix::check_room(file, len),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::FallocateFlags;
    match rustix::fs::fallocate(file, FallocateFlags::KEEP_SIZE, offset, len) {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP) => super::unix::check_room(file, len),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn zero_device_range(file: &File, offset: u64, len: u64) -> bool {
    use rustix::fs::FallocateFlags;
    rustix::fs::fallocate(
        file,
        FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )
    .is_ok()
}

pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use rustix::fs::FallocateFlags;
    rustix::fs::fallocate(
        file,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    )?;
    Ok(true)
}

/// Errors of `FALLOC_FL_PUNCH_HOLE` meaning "not on this file system" (vfat, old
/// kernels): the caller writes zeros.
pub(crate) fn punch_refused(e: &io::Error) -> bool {
    errno_in(e, &[Errno::OPNOTSUPP, Errno::NOSYS])
}

pub(crate) fn will_need(file: &File, offset: u64, len: u64) {
    // Failing advice changes nothing: the reads happen anyway.
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::WillNeed,
    );
}

pub(crate) fn populate(map: &memmap2::Mmap, range: std::ops::Range<usize>) -> io::Result<()> {
    if range.is_empty() {
        return Ok(());
    }
    match map.advise_range(memmap2::Advice::PopulateRead, range.start, range.len()) {
        // EINVAL: the kernel predates MADV_POPULATE_READ.
        Err(e) if errno_in(&e, &[Errno::INVAL]) => Ok(()),
        other => other,
    }
}

pub(crate) fn offload_volume(out: &File) -> Option<u64> {
    const XFS: u64 = 0x5846_5342;
    const BTRFS: u64 = 0x9123_683E;
    let fs = rustix::fs::fstatfs(out).ok()?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let kind = fs.f_type as u64;
    if kind != XFS && kind != BTRFS {
        return None;
    }
    super::unix::volume_of(out)
}

/// `struct file_clone_range` of `<linux/fs.h>`, the argument of `FICLONERANGE`.
#[repr(C)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `FICLONERANGE`: `_IOW(0x94, 13, struct file_clone_range)`.
const FICLONERANGE: rustix::ioctl::Opcode =
    rustix::ioctl::opcode::write::<FileCloneRange>(0x94, 13);

pub(crate) fn clone_range(
    src: &File,
    src_offset: u64,
    len: u64,
    dest: &File,
    dest_offset: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let range = FileCloneRange {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset,
        src_length: len,
        dest_offset,
    };
    // SAFETY: FICLONERANGE reads a `struct file_clone_range`, which `FileCloneRange`
    // matches field for field (repr(C), four 64-bit fields); the kernel only reads it
    // during the call. Both descriptors are open for the call's duration (borrowed).
    // The clone changes `dest`'s extents, never the source's, so the contract of any
    // map of the source (nothing writes the mapped range) holds.
    unsafe {
        let ctl = rustix::ioctl::Setter::<FICLONERANGE, FileCloneRange>::new(range);
        rustix::ioctl::ioctl(dest, ctl)?;
    }
    Ok(())
}

pub(crate) fn clone_file(src: &File, dest: &File) -> io::Result<()> {
    rustix::fs::ioctl_ficlone(dest, src)?;
    Ok(())
}

/// A new file at `path` (`O_EXCL`: nothing there is ever replaced or followed, mode
/// 0o600), then `FICLONE` from `src`; removed again if the clone fails.
pub(crate) fn clone_file_to(src: &File, path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let cloned = clone_file(src, &file);
    crate::kept_or_removed(file, path, cloned)
}

pub(crate) fn whole_clone_volume(out: &File) -> Option<u64> {
    offload_volume(out)
}

pub(crate) fn clone_refused(e: &io::Error) -> bool {
    errno_in(
        e,
        &[
            Errno::XDEV,
            Errno::OPNOTSUPP,
            Errno::INVAL,
            Errno::NOTTY,
            Errno::NOSYS,
            Errno::BADF,
            Errno::PERM,
        ],
    )
}

pub(crate) fn send_more(s: &crate::net::Stream, buf: &[u8]) -> Option<io::Result<usize>> {
    loop {
        match rustix::net::send(s, buf, rustix::net::SendFlags::MORE) {
            Ok(n) => return Some(Ok(n)),
            Err(Errno::INTR) => continue,
            Err(e) => return Some(Err(e.into())),
        }
    }
}

/// `sendfile` until `len` bytes of `file` at `offset` are sent.
pub(crate) fn send_file(
    out: &crate::net::Stream,
    file: &File,
    offset: u64,
    len: u64,
) -> Option<io::Result<()>> {
    let mut off = offset;
    let end = offset + len;
    while off < end {
        let want = usize::try_from(end - off)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        match rustix::fs::sendfile(out, file, Some(&mut off), want) {
            Ok(0) => {
                return Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the image file ended before the data",
                )))
            }
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(e) => return Some(Err(e.into())),
        }
    }
    Some(Ok(()))
}
