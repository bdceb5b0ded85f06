//! What Linux and the other Unix systems share: positional I/O, file kinds and
//! identities, mode bits, `flock`, qemu's OFD locks, `SEEK_DATA`. The calls that differ
//! come from `linux.rs` or `macos.rs` (as `os`).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::{FileId, FileKind};

#[cfg(target_os = "linux")]
use super::linux as os;
#[cfg(not(target_os = "linux"))]
use super::macos as os;

pub(crate) use os::{
    allocate, clone_file, clone_file_to, clone_range, clone_refused, offload_volume, open_unnamed,
    populate, punch_hole, punch_refused, reserve, unnamed_unsupported, whole_clone_volume,
    will_need, zero_device_range,
};

pub(crate) fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, offset)
}

pub(crate) fn write_at(f: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(f, buf, offset)
}

pub(crate) fn kind(meta: &Metadata) -> FileKind {
    let t = meta.file_type();
    if t.is_file() {
        FileKind::Regular
    } else if t.is_dir() {
        FileKind::Directory
    } else if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_fifo() {
        FileKind::Fifo
    } else if t.is_socket() {
        FileKind::Socket
    } else if t.is_char_device() {
        FileKind::CharDevice
    } else if t.is_block_device() {
        FileKind::BlockDevice
    } else {
        FileKind::Other
    }
}

pub(crate) fn kind_of(file: &File) -> io::Result<FileKind> {
    Ok(kind(&file.metadata()?))
}

fn id(meta: &Metadata) -> FileId {
    match kind(meta) {
        FileKind::BlockDevice | FileKind::CharDevice => FileId::Device(meta.rdev()),
        _ => FileId::File(meta.dev(), meta.ino()),
    }
}

pub(crate) fn file_id(file: &File) -> Option<FileId> {
    file.metadata().ok().map(|m| id(&m))
}

pub(crate) fn path_id(path: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(path).ok().map(|m| id(&m))
}

pub(crate) fn volume_of(file: &File) -> Option<u64> {
    file.metadata().ok().map(|m| m.dev())
}

pub(crate) fn owned_by_me(meta: &Metadata) -> bool {
    meta.uid() == rustix::process::geteuid().as_raw()
}

pub(crate) fn mode(meta: &Metadata) -> u32 {
    meta.mode() & 0o7777
}

pub(crate) fn new_file_permissions(mode: u32) -> Option<std::fs::Permissions> {
    Some(std::fs::Permissions::from_mode(mode))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

pub(crate) fn still_linked(file: &File) -> bool {
    file.metadata().is_ok_and(|m| m.nlink() > 0)
}

pub(crate) fn open_nonblocking(path: &Path, writable: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)
}

pub(crate) fn clear_nonblocking(file: &File) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(file)?;
    rustix::fs::fcntl_setfl(file, flags - OFlags::NONBLOCK)?;
    Ok(())
}

pub(crate) fn open_no_follow(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

pub(crate) fn open_device(path: &Path, block: bool) -> io::Result<File> {
    let access = if block {
        OFlags::RDWR | OFlags::EXCL
    } else {
        OFlags::WRONLY
    };
    let fd = rustix::fs::open(
        path,
        access | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

pub(crate) fn open_device_read(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

pub(crate) fn size_of(file: &File) -> io::Result<u64> {
    std::io::Seek::seek(&mut &*file, std::io::SeekFrom::End(0))
}

pub(crate) fn is_device_name(_: &Path) -> bool {
    false
}

pub(crate) fn is_busy(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error())
}

pub(crate) fn try_lock(file: &File, exclusive: bool) -> Result<(), std::fs::TryLockError> {
    if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    }
}

pub(crate) fn lock(file: &File) -> io::Result<()> {
    file.lock()
}

fn flock_of(kind: i16, byte: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers; all zeros is a valid value
    // (and the fields that matter are set below; macOS and Linux order them
    // differently, so no struct literal).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    fl
}

#[allow(clippy::unnecessary_cast)] // the constants' widths differ between systems
pub(crate) fn qemu_lock_byte(file: &File, byte: u64) {
    use std::os::fd::AsRawFd;
    let fl = flock_of(libc::F_RDLCK as i16, byte);
    // SAFETY: F_OFD_SETLK reads one `struct flock`, which `fl` is, during the call; the
    // descriptor is open (borrowed from `file`). An error (no byte-range locks on this
    // file system, an old macOS without OFD locks) leaves the file unlocked.
    unsafe {
        libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl);
    }
}

#[allow(clippy::unnecessary_cast)] // as above
pub(crate) fn qemu_byte_held_elsewhere(file: &File, byte: u64) -> bool {
    use std::os::fd::AsRawFd;
    let mut fl = flock_of(libc::F_WRLCK as i16, byte);
    // SAFETY: F_OFD_GETLK reads and writes one `struct flock`, which `fl` is, during
    // the call; the descriptor is open.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    r != -1 && fl.l_type != libc::F_UNLCK as i16
}

pub(crate) fn link_unnamed(file: &File, path: &Path) -> io::Result<()> {
    os::link_unnamed(file, path)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn sync_unsupported(e: &io::Error) -> bool {
    use rustix::io::Errno;
    [Errno::INVAL, Errno::ROFS]
        .iter()
        .any(|n| e.raw_os_error() == Some(n.raw_os_error()))
}

pub(crate) fn make_sparse(_: &File) {}

pub(crate) fn next_data(file: &File, from: u64) -> io::Result<Option<u64>> {
    use rustix::fs::{seek, SeekFrom};
    match seek(file, SeekFrom::Data(from)) {
        Ok(d) => Ok(Some(d)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn next_hole(file: &File, from: u64) -> io::Result<u64> {
    use rustix::fs::{seek, SeekFrom};
    Ok(seek(file, SeekFrom::Hole(from))?)
}

pub(crate) fn free_space(file: &File) -> io::Result<u64> {
    let st = rustix::fs::fstatvfs(file)?;
    #[allow(clippy::unnecessary_cast)] // the fields' widths differ between systems
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// `StorageFull` unless the volume of `file` has `len` bytes free: the fallback where
/// a file system cannot allocate ahead.
pub(crate) fn check_room(file: &File, len: u64) -> io::Result<()> {
    if free_space(file)? < len {
        Err(io::Error::from_raw_os_error(
            rustix::io::Errno::NOSPC.raw_os_error(),
        ))
    } else {
        Ok(())
    }
}

impl std::os::fd::AsFd for super::net::Stream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            super::net::Stream::Unix(s) => s.as_fd(),
            super::net::Stream::Tcp(s) => s.as_fd(),
        }
    }
}

impl std::os::fd::AsFd for super::net::Listener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            super::net::Listener::Unix(l) => l.as_fd(),
            super::net::Listener::Tcp(l) => l.as_fd(),
        }
    }
}

pub(crate) fn set_send_buffer(s: &super::net::Stream, bytes: usize) {
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(s, bytes);
}

pub(crate) fn send_more(s: &super::net::Stream, buf: &[u8]) -> Option<io::Result<usize>> {
    os::send_more(s, buf)
}

pub(crate) fn send_file(
    s: &super::net::Stream,
    file: &File,
    offset: u64,
    len: u64,
) -> Option<io::Result<()>> {
    os::send_file(s, file, offset, len)
}

pub(crate) fn wait_readable(
    l: &super::net::Listener,
    timeout: std::time::Duration,
) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    use std::os::fd::AsFd;
    let t = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let fd = l.as_fd();
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    match poll(&mut fds, Some(&t)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// SIGINT, SIGTERM and SIGHUP.
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset adds valid signals.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        libc::sigaddset(&mut s, libc::SIGINT);
        libc::sigaddset(&mut s, libc::SIGTERM);
        libc::sigaddset(&mut s, libc::SIGHUP);
        s
    }
}

fn mask(how: libc::c_int) -> bool {
    let set = signal_set();
    // SAFETY: changes this thread's mask with a valid set; the old mask is not asked.
    unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) == 0 }
}

pub(crate) fn start_signals(on: Box<dyn Fn(super::signals::Signal) + Send>) -> bool {
    use super::signals::Signal;
    if !mask(libc::SIG_BLOCK) {
        return false;
    }
    let started = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let set = signal_set();
            let mut sig: libc::c_int = 0;
            // SAFETY: waits for one of the signals of a valid set, blocked in every
            // thread; writes its number.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            on(match sig {
                libc::SIGINT => Signal::Interrupt,
                libc::SIGHUP => Signal::Hangup,
                _ => Signal::Terminate,
            });
        });
    if started.is_err() {
        mask(libc::SIG_UNBLOCK);
        return false;
    }
    true
}

pub(crate) fn errno_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

pub(crate) fn path_from_windows(raw: &str) -> String {
    let s = raw.replace('\\', "/");
    let b = s.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        s[2..].to_owned()
    } else {
        s
    }
}

pub(crate) fn windows_locator_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
