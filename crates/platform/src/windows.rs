//! Windows: positional I/O through `OVERLAPPED` offsets, `LockFileEx`, sparse files
//! (`FSCTL_SET_SPARSE`, `FSCTL_QUERY_ALLOCATED_RANGES`), allocation information,
//! ReFS block cloning (`FSCTL_DUPLICATE_EXTENTS_TO_FILE`), disks and volumes by device
//! name with their size from `IOCTL_DISK_GET_LENGTH_INFO`. No unnamed files: new files
//! are written under a hidden temporary name in the same folder.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::windows::fs::{FileExt as _, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::Path;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_BLOCK_TOO_MANY_REFERENCES, ERROR_INVALID_FUNCTION,
    ERROR_INVALID_HANDLE, ERROR_INVALID_PARAMETER, ERROR_LOCK_VIOLATION, ERROR_MORE_DATA,
    ERROR_NOT_SAME_DEVICE, ERROR_NOT_SUPPORTED, ERROR_SHARING_VIOLATION, HANDLE,
};
use windows_sys::Win32::Storage::FileSystem as fs;
use windows_sys::Win32::System::Ioctl;
use windows_sys::Win32::System::IO::{DeviceIoControl, OVERLAPPED};

use super::{FileId, FileKind};

fn handle(f: &File) -> HANDLE {
    f.as_raw_handle() as HANDLE
}

fn win32_in(e: &io::Error, set: &[u32]) -> bool {
    e.raw_os_error()
        .is_some_and(|c| set.iter().any(|&n| c == n as i32))
}

pub(crate) fn read_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    match f.seek_read(buf, offset) {
        // Reading at or past the end of a file: nothing more.
        Err(e) if e.raw_os_error() == Some(38) => Ok(0), // ERROR_HANDLE_EOF
        other => other,
    }
}

pub(crate) fn write_at(f: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    f.seek_write(buf, offset)
}

/// `DeviceIoControl` with `input` and `output` buffers of plain structures; the bytes
/// returned.
///
/// # Safety
///
/// `input` and `output` must be what the control code `code` reads and writes.
unsafe fn ioctl<I, O>(f: &File, code: u32, input: Option<&I>, output: &mut [O]) -> io::Result<u32> {
    let mut returned = 0u32;
    let (inp, inlen) = match input {
        Some(i) => ((i as *const I).cast(), std::mem::size_of::<I>() as u32),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: the caller's promise; both buffers live for the (synchronous) call.
    let ok = unsafe {
        DeviceIoControl(
            handle(f),
            code,
            inp,
            inlen,
            output.as_mut_ptr().cast(),
            std::mem::size_of_val(output) as u32,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(returned)
    }
}

fn disk_length(f: &File) -> io::Result<u64> {
    let mut out = [Ioctl::GET_LENGTH_INFORMATION { Length: 0 }];
    // SAFETY: IOCTL_DISK_GET_LENGTH_INFO takes no input and writes one
    // GET_LENGTH_INFORMATION.
    unsafe { ioctl::<(), _>(f, Ioctl::IOCTL_DISK_GET_LENGTH_INFO, None, &mut out)? };
    Ok(out[0].Length as u64)
}

pub(crate) fn kind(meta: &Metadata) -> FileKind {
    let t = meta.file_type();
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Directory
    } else if t.is_file() {
        FileKind::Regular
    } else {
        FileKind::Other
    }
}

pub(crate) fn kind_of(file: &File) -> io::Result<FileKind> {
    // SAFETY: GetFileType only reads the handle, which is open.
    match unsafe { fs::GetFileType(handle(file)) } {
        fs::FILE_TYPE_CHAR => return Ok(FileKind::CharDevice),
        fs::FILE_TYPE_PIPE => return Ok(FileKind::Fifo),
        _ => {}
    }
    if disk_length(file).is_ok() {
        return Ok(FileKind::BlockDevice);
    }
    Ok(kind(&file.metadata()?))
}

fn info(file: &File) -> Option<fs::BY_HANDLE_FILE_INFORMATION> {
    // SAFETY: all zeros is a valid BY_HANDLE_FILE_INFORMATION (integers only).
    let mut i: fs::BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: writes one BY_HANDLE_FILE_INFORMATION; the handle is open.
    (unsafe { fs::GetFileInformationByHandle(handle(file), &mut i) } != 0).then_some(i)
}

pub(crate) fn file_id(file: &File) -> Option<FileId> {
    let i = info(file)?;
    Some(FileId::File(
        u64::from(i.dwVolumeSerialNumber),
        (u64::from(i.nFileIndexHigh) << 32) | u64::from(i.nFileIndexLow),
    ))
}

pub(crate) fn path_id(path: &Path) -> Option<FileId> {
    let f = OpenOptions::new()
        .access_mode(0)
        .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
        .ok()?;
    file_id(&f)
}

pub(crate) fn volume_of(file: &File) -> Option<u64> {
    info(file).map(|i| u64::from(i.dwVolumeSerialNumber))
}

pub(crate) fn owned_by_me(_: &Metadata) -> bool {
    true
}

pub(crate) fn mode(meta: &Metadata) -> u32 {
    if meta.permissions().readonly() {
        0o444
    } else {
        0o666
    }
}

pub(crate) fn new_file_permissions(_: u32) -> Option<std::fs::Permissions> {
    None
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let mut p = std::fs::metadata(path)?.permissions();
    p.set_readonly(mode & 0o222 == 0);
    std::fs::set_permissions(path, p)
}

pub(crate) fn still_linked(_: &File) -> bool {
    true
}

pub(crate) fn open_nonblocking(path: &Path, writable: bool) -> io::Result<File> {
    // Backup semantics: a directory opens too, so that it is refused by its kind.
    OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
}

pub(crate) fn clear_nonblocking(_: &File) -> io::Result<()> {
    Ok(())
}

pub(crate) fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(fs::FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

pub(crate) fn open_device(path: &Path, block: bool) -> io::Result<File> {
    // No sharing for a disk or volume written in place: one held by anything else is
    // refused as in use (a sharing violation).
    let mut o = OpenOptions::new();
    if block {
        o.read(true).write(true).share_mode(0);
    } else {
        o.write(true);
    }
    o.open(path)
}

pub(crate) fn open_device_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .share_mode(fs::FILE_SHARE_READ | fs::FILE_SHARE_WRITE)
        .open(path)
}

pub(crate) fn size_of(file: &File) -> io::Result<u64> {
    match disk_length(file) {
        Ok(n) => Ok(n),
        Err(_) => Ok(file.metadata()?.len()),
    }
}

pub(crate) fn is_device_name(path: &Path) -> bool {
    let s = path.as_os_str().to_string_lossy();
    s.starts_with(r"\\.\") || s.starts_with("//./")
}

pub(crate) fn is_busy(e: &io::Error) -> bool {
    win32_in(e, &[ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION])
}

/// Where the writer lock lives: one byte far beyond any disk's data. Windows byte-range
/// locks are mandatory (they block reads and writes of the locked bytes through other
/// handles), so the lock stays clear of every byte a reader or writer touches.
const LOCK_BYTE: u64 = 0x7FFF_FFFF_0000_0000;

fn lock_ex(file: &File, flags: u32) -> io::Result<()> {
    // SAFETY: all zeros is a valid OVERLAPPED (no event, offset set below).
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    ov.Anonymous.Anonymous.Offset = LOCK_BYTE as u32;
    ov.Anonymous.Anonymous.OffsetHigh = (LOCK_BYTE >> 32) as u32;
    // SAFETY: LockFileEx reads the OVERLAPPED during the call (the handle is
    // synchronous, so the call completes before returning).
    let ok = unsafe { fs::LockFileEx(handle(file), flags, 0, 1, 0, &mut ov) };
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(crate) fn try_lock(file: &File, exclusive: bool) -> Result<(), std::fs::TryLockError> {
    let mut flags = fs::LOCKFILE_FAIL_IMMEDIATELY;
    if exclusive {
        flags |= fs::LOCKFILE_EXCLUSIVE_LOCK;
    }
    match lock_ex(file, flags) {
        Ok(()) => Ok(()),
        Err(e) if win32_in(&e, &[ERROR_LOCK_VIOLATION]) => Err(std::fs::TryLockError::WouldBlock),
        Err(e) => Err(std::fs::TryLockError::Error(e)),
    }
}

pub(crate) fn lock(file: &File) -> io::Result<()> {
    lock_ex(file, fs::LOCKFILE_EXCLUSIVE_LOCK)
}

pub(crate) fn qemu_lock_byte(_: &File, _: u64) {}

pub(crate) fn qemu_byte_held_elsewhere(_: &File, _: u64) -> bool {
    false
}

pub(crate) fn open_unnamed(_: &Path, _: u32) -> io::Result<File> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn unnamed_unsupported(_: &io::Error) -> bool {
    false
}

pub(crate) fn link_unnamed(_: &File, _: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

pub(crate) fn sync_dir(_: &Path) -> io::Result<()> {
    Ok(())
}

pub(crate) fn sync_unsupported(e: &io::Error) -> bool {
    win32_in(
        e,
        &[
            ERROR_INVALID_FUNCTION,
            ERROR_INVALID_HANDLE,
            ERROR_INVALID_PARAMETER,
        ],
    )
}

pub(crate) fn make_sparse(file: &File) {
    let mut none: [u8; 0] = [];
    // SAFETY: FSCTL_SET_SPARSE without input marks the file sparse; no output.
    let _ = unsafe { ioctl::<(), _>(file, Ioctl::FSCTL_SET_SPARSE, None, &mut none) };
}

fn set_allocation(file: &File, size: u64) -> io::Result<()> {
    let info = fs::FILE_ALLOCATION_INFO {
        AllocationSize: size as i64,
    };
    // SAFETY: FileAllocationInfo reads one FILE_ALLOCATION_INFO during the call.
    let ok = unsafe {
        fs::SetFileInformationByHandle(
            handle(file),
            fs::FileAllocationInfo,
            (&info as *const fs::FILE_ALLOCATION_INFO).cast(),
            std::mem::size_of::<fs::FILE_ALLOCATION_INFO>() as u32,
        )
    };
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_room(file: &File, len: u64) -> io::Result<()> {
    match free_space(file) {
        Ok(free) if free < len => Err(io::ErrorKind::StorageFull.into()),
        _ => Ok(()),
    }
}

pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    // A new file is sparse (make_sparse): allocated space wants a plain one again
    // (possible while it has no holes; best effort).
    let plain = Ioctl::FILE_SET_SPARSE_BUFFER { SetSparse: false };
    let mut none: [u8; 0] = [];
    // SAFETY: FSCTL_SET_SPARSE reads one FILE_SET_SPARSE_BUFFER; no output.
    let _ = unsafe { ioctl(file, Ioctl::FSCTL_SET_SPARSE, Some(&plain), &mut none) };
    if set_allocation(file, len).is_err() {
        check_room(file, len)?;
    }
    file.set_len(len)
}

pub(crate) fn reserve(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let end = offset.saturating_add(len);
    // An allocation smaller than the file would cut it: only ever grow it.
    if end > file.metadata()?.len() && set_allocation(file, end).is_ok() {
        return Ok(());
    }
    check_room(file, len)
}

pub(crate) fn zero_device_range(_: &File, _: u64, _: u64) -> bool {
    false
}

/// `FSCTL_SET_ZERO_DATA`: the range reads as zeros; in a sparse file its clusters are
/// released (true), in any other the file system writes the zeros itself (false).
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    use std::os::windows::fs::MetadataExt;
    let zero = Ioctl::FILE_ZERO_DATA_INFORMATION {
        FileOffset: offset as i64,
        BeyondFinalZero: offset.saturating_add(len) as i64,
    };
    let mut none: [u8; 0] = [];
    // SAFETY: FSCTL_SET_ZERO_DATA reads one FILE_ZERO_DATA_INFORMATION; no output.
    unsafe { ioctl(file, Ioctl::FSCTL_SET_ZERO_DATA, Some(&zero), &mut none)? };
    Ok(file.metadata()?.file_attributes() & fs::FILE_ATTRIBUTE_SPARSE_FILE != 0)
}

/// Errors of `FSCTL_SET_ZERO_DATA` meaning "not on this file system" (FAT): the
/// caller writes zeros.
pub(crate) fn punch_refused(e: &io::Error) -> bool {
    win32_in(
        e,
        &[
            ERROR_INVALID_FUNCTION,
            ERROR_NOT_SUPPORTED,
            ERROR_INVALID_PARAMETER,
        ],
    )
}

/// The allocated ranges of `file` from `from` to its end, as many as one call returns.
fn allocated_ranges(file: &File, from: u64) -> io::Result<(Vec<(u64, u64)>, bool)> {
    let size = file.metadata()?.len();
    if from >= size {
        return Ok((Vec::new(), false));
    }
    let query = Ioctl::FILE_ALLOCATED_RANGE_BUFFER {
        FileOffset: from as i64,
        Length: (size - from) as i64,
    };
    let mut out = [Ioctl::FILE_ALLOCATED_RANGE_BUFFER {
        FileOffset: 0,
        Length: 0,
    }; 64];
    // SAFETY: FSCTL_QUERY_ALLOCATED_RANGES reads one FILE_ALLOCATED_RANGE_BUFFER and
    // writes an array of them.
    let (n, more) = match unsafe {
        ioctl(
            file,
            Ioctl::FSCTL_QUERY_ALLOCATED_RANGES,
            Some(&query),
            &mut out,
        )
    } {
        Ok(n) => (n, false),
        Err(e) if win32_in(&e, &[ERROR_MORE_DATA]) => (out.len() as u32 * 16, true),
        Err(e) => return Err(e),
    };
    let count = n as usize / std::mem::size_of::<Ioctl::FILE_ALLOCATED_RANGE_BUFFER>();
    let ranges = out[..count.min(out.len())]
        .iter()
        .map(|r| (r.FileOffset as u64, (r.FileOffset + r.Length) as u64))
        .collect();
    Ok((ranges, more))
}

pub(crate) fn next_data(file: &File, from: u64) -> io::Result<Option<u64>> {
    let (ranges, _) = allocated_ranges(file, from)?;
    Ok(ranges.first().map(|&(start, _)| start.max(from)))
}

pub(crate) fn next_hole(file: &File, from: u64) -> io::Result<u64> {
    let size = file.metadata()?.len();
    let mut pos = from;
    loop {
        let (ranges, more) = allocated_ranges(file, pos)?;
        for (start, end) in &ranges {
            if *start > pos {
                return Ok(pos);
            }
            pos = pos.max(*end);
        }
        if !more || ranges.is_empty() || pos >= size {
            return Ok(pos.min(size.max(from)));
        }
    }
}

pub(crate) fn will_need(_: &File, _: u64, _: u64) {}

pub(crate) fn populate(_: &memmap2::Mmap, _: std::ops::Range<usize>) -> io::Result<()> {
    Ok(())
}

pub(crate) fn offload_volume(out: &File) -> Option<u64> {
    let mut name = [0u16; 32];
    let mut serial = 0u32;
    // SAFETY: writes the file system's name into `name` (its length given) and the
    // serial number; the other outputs are not asked for.
    let ok = unsafe {
        fs::GetVolumeInformationByHandleW(
            handle(out),
            std::ptr::null_mut(),
            0,
            &mut serial,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            name.as_mut_ptr(),
            name.len() as u32,
        )
    };
    let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
    (ok != 0 && String::from_utf16_lossy(&name[..len]) == "ReFS").then_some(u64::from(serial))
}

pub(crate) fn clone_range(
    src: &File,
    src_offset: u64,
    len: u64,
    dest: &File,
    dest_offset: u64,
) -> io::Result<()> {
    // ReFS clones only into the file's existing length.
    let end = dest_offset.saturating_add(len);
    if dest.metadata()?.len() < end {
        dest.set_len(end)?;
    }
    let data = Ioctl::DUPLICATE_EXTENTS_DATA {
        FileHandle: handle(src),
        SourceFileOffset: src_offset as i64,
        TargetFileOffset: dest_offset as i64,
        ByteCount: len as i64,
    };
    let mut none: [u8; 0] = [];
    // SAFETY: FSCTL_DUPLICATE_EXTENTS_TO_FILE reads one DUPLICATE_EXTENTS_DATA naming
    // the open source handle; no output.
    unsafe {
        ioctl(
            dest,
            Ioctl::FSCTL_DUPLICATE_EXTENTS_TO_FILE,
            Some(&data),
            &mut none,
        )?
    };
    Ok(())
}

/// The whole file through [`clone_range`]: ReFS clones whole clusters, so the range
/// is rounded up to 64 KiB (the largest ReFS cluster) and the length cut back after.
pub(crate) fn clone_file(src: &File, dest: &File) -> io::Result<()> {
    const CLUSTER: u64 = 64 * 1024;
    let len = src.metadata()?.len();
    if len > 0 {
        clone_range(src, 0, len.div_ceil(CLUSTER) * CLUSTER, dest, 0)?;
    }
    dest.set_len(len)
}

/// A new file at `path` (`CREATE_NEW`: nothing there is ever replaced; shared for
/// reading, writing and deleting, as `tempfile` opens its files, so that it can be
/// renamed while open), then [`clone_file`] from `src`; removed again if that fails.
pub(crate) fn clone_file_to(src: &File, path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .share_mode(fs::FILE_SHARE_READ | fs::FILE_SHARE_WRITE | fs::FILE_SHARE_DELETE)
        .open(path)?;
    make_sparse(&file);
    let cloned = clone_file(src, &file);
    crate::kept_or_removed(file, path, cloned)
}

pub(crate) fn whole_clone_volume(out: &File) -> Option<u64> {
    offload_volume(out)
}

pub(crate) fn clone_refused(e: &io::Error) -> bool {
    win32_in(
        e,
        &[
            ERROR_INVALID_FUNCTION,
            ERROR_NOT_SUPPORTED,
            ERROR_INVALID_PARAMETER,
            ERROR_NOT_SAME_DEVICE,
            ERROR_BLOCK_TOO_MANY_REFERENCES,
            ERROR_ACCESS_DENIED,
        ],
    )
}

pub(crate) fn free_space(file: &File) -> io::Result<u64> {
    let mut path = vec![0u16; 1024];
    // SAFETY: writes at most `path.len()` UTF-16 units of the file's path.
    let n = unsafe {
        fs::GetFinalPathNameByHandleW(handle(file), path.as_mut_ptr(), path.len() as u32, 0)
    } as usize;
    if n == 0 || n >= path.len() {
        return Err(io::Error::last_os_error());
    }
    // The folder holding the file: up to the last separator.
    let cut = path[..n]
        .iter()
        .rposition(|&c| c == u16::from(b'\\'))
        .unwrap_or(n);
    let mut dir = path[..=cut.min(n - 1)].to_vec();
    dir.push(0);
    let mut free = 0u64;
    // SAFETY: `dir` is NUL-terminated; writes one u64, the others not asked for.
    let ok = unsafe {
        fs::GetDiskFreeSpaceExW(
            dir.as_ptr(),
            &mut free,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(free)
    }
}

pub(crate) fn set_send_buffer(_: &crate::net::Stream, _: usize) {}

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

pub(crate) fn wait_readable(
    l: &crate::net::Listener,
    timeout: std::time::Duration,
) -> io::Result<bool> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{WSAPoll, POLLRDNORM, WSAPOLLFD};
    let socket = match l {
        crate::net::Listener::Tcp(t) => t.as_raw_socket(),
        crate::net::Listener::Unix(u) => match u.0 {},
    };
    let mut fd = WSAPOLLFD {
        fd: socket as usize,
        events: POLLRDNORM,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: polls one WSAPOLLFD naming the listener's open socket.
    match unsafe { WSAPoll(&mut fd, 1, ms) } {
        n if n >= 0 => Ok(n > 0),
        _ => Err(io::Error::last_os_error()),
    }
}

pub(crate) fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::create_dir(path)
}

/// No Unix domain sockets here (std has none on Windows): binding one fails, so no
/// value of this type exists; `serve` listens on TCP (`--listen`).
#[derive(Debug)]
pub struct UnixListener(std::convert::Infallible);

/// See [`UnixListener`].
#[derive(Debug)]
pub struct UnixStream(std::convert::Infallible);

fn no_unix_sockets() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "Unix domain sockets are not available on Windows; listen on TCP (--listen)",
    )
}

impl UnixListener {
    /// Fails: no Unix domain sockets on Windows.
    pub fn bind(_: impl AsRef<Path>) -> io::Result<UnixListener> {
        Err(no_unix_sockets())
    }
    /// Never called: no value exists.
    pub fn accept(&self) -> io::Result<(UnixStream, ())> {
        match self.0 {}
    }
}

impl UnixStream {
    /// Fails: no Unix domain sockets on Windows.
    pub fn connect(_: impl AsRef<Path>) -> io::Result<UnixStream> {
        Err(no_unix_sockets())
    }
    /// Never called: no value exists.
    pub fn try_clone(&self) -> io::Result<UnixStream> {
        match self.0 {}
    }
    /// Never called: no value exists.
    pub fn shutdown(&self, _: std::net::Shutdown) -> io::Result<()> {
        match self.0 {}
    }
    /// Never called: no value exists.
    pub fn set_read_timeout(&self, _: Option<std::time::Duration>) -> io::Result<()> {
        match self.0 {}
    }
    /// Never called: no value exists.
    pub fn set_write_timeout(&self, _: Option<std::time::Duration>) -> io::Result<()> {
        match self.0 {}
    }
}

impl io::Read for UnixStream {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        match self.0 {}
    }
}

impl io::Write for UnixStream {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        match self.0 {}
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.0 {}
    }
}

/// Where the console handler hands its events to the signal thread.
static SIGNALS: std::sync::OnceLock<std::sync::mpsc::SyncSender<u32>> = std::sync::OnceLock::new();

unsafe extern "system" fn console_handler(event: u32) -> windows_sys::core::BOOL {
    use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, CTRL_C_EVENT};
    let Some(tx) = SIGNALS.get() else { return 0 };
    let _ = tx.try_send(event);
    if event != CTRL_C_EVENT && event != CTRL_BREAK_EVENT {
        // Close, logoff, shutdown: the system ends the process when this returns;
        // give the rollback the few seconds it allows (the process exits sooner once
        // it is done).
        std::thread::sleep(std::time::Duration::from_secs(4));
    }
    1
}

pub(crate) fn start_signals(on: Box<dyn Fn(crate::signals::Signal) + Send>) -> bool {
    use crate::signals::Signal;
    use windows_sys::Win32::System::Console::{
        SetConsoleCtrlHandler, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT, CTRL_C_EVENT,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<u32>(16);
    if SIGNALS.set(tx).is_err() {
        return false;
    }
    let started = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(event) = rx.recv() {
                on(match event {
                    CTRL_C_EVENT => Signal::Interrupt,
                    CTRL_CLOSE_EVENT => Signal::Hangup,
                    CTRL_BREAK_EVENT => Signal::Terminate,
                    _ => Signal::Terminate,
                });
            }
        });
    // SAFETY: registers a handler with the right signature for the process's life.
    started.is_ok() && unsafe { SetConsoleCtrlHandler(Some(console_handler), 1) } != 0
}

pub(crate) fn errno_error(errno: i32) -> io::Error {
    let win32 = match errno {
        28 => 112, // ENOSPC: ERROR_DISK_FULL
        30 => 19,  // EROFS: ERROR_WRITE_PROTECT
        27 => 223, // EFBIG: ERROR_FILE_TOO_LARGE
        _ => 1117, // EIO and the rest: ERROR_IO_DEVICE
    };
    io::Error::from_raw_os_error(win32)
}

pub(crate) fn path_from_windows(raw: &str) -> String {
    raw.replace('/', "\\")
}

pub(crate) fn windows_locator_text(path: &Path) -> String {
    let s = path.to_string_lossy();
    if let Some(unc) = s.strip_prefix(r"\\?\UNC\") {
        format!(r"\\{unc}")
    } else if let Some(local) = s.strip_prefix(r"\\?\") {
        local.to_owned()
    } else {
        s.into_owned()
    }
}
