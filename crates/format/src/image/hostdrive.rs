//! Host-drive stubs: opening the device a stub names, checking it is still the drive
//! that was linked, and creating stubs. The byte layout is in `spec::hostdrive` and
//! `docs/host-drive.md`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::ops::Range;

use crate::error::{Error, Result};
use crate::spec::hostdrive::{
    HOST_DRIVE_COOKIE, HOST_DRIVE_FLAG_READ_ONLY, HOST_DRIVE_HEADER_SIZE, HOST_DRIVE_IDENTITY_SPAN,
    HOST_DRIVE_VERSION,
};
use crate::spec::{DiskType, Footer, HostDriveHeader, Severity};

use super::backend::{Backend, FileBackend};
use super::container::Container;
use super::core::FileCore;
use super::extent::LayerExtent;
use super::{DiskKind, HostDrives, OpenOptions};

/// An open host-drive stub: its header and the device it links.
#[derive(Debug)]
pub(crate) struct HostDrive {
    pub header: Mutex<HostDriveHeader>,
    pub device: Arc<dyn Backend>,
    pub device_path: PathBuf,
    pub dirty_identity: Mutex<bool>,
}

impl Container for HostDrive {
    fn kind(&self, _f: &FileCore) -> DiskKind {
        DiskKind::HostDrive
    }

    fn extents(&self, _f: &FileCore, pos: u64, end: u64, out: &mut Vec<LayerExtent>) -> Result<()> {
        if end > pos {
            out.push(LayerExtent::Data {
                file_offset: pos,
                len: end - pos,
            });
        }
        Ok(())
    }

    fn stored_ranges(&self, f: &FileCore) -> Vec<Range<u64>> {
        std::iter::once(0..f.footer.current_size).collect()
    }

    fn data_store<'a>(&'a self, _f: &'a FileCore) -> (&'a Arc<dyn Backend>, &'a Path) {
        (&self.device, &self.device_path)
    }

    fn read(&self, _f: &FileCore, buf: &mut [u8], file_offset: u64) -> Result<()> {
        self.device
            .read_exact_at(buf, file_offset)
            .map_err(|e| Error::io(&self.device_path, "reading the host drive", file_offset, e))
    }

    fn check_writable(&self, f: &FileCore) -> Result<()> {
        if self
            .header
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_only()
        {
            return Err(Error::ReadOnly {
                path: f.path.clone(),
                detail: "the host-drive link was created read-only".into(),
            });
        }
        Ok(())
    }

    fn write_runs(&self, _f: &FileCore, runs: &[(u64, &[u8])]) -> Result<()> {
        for &(offset, data) in runs {
            self.device
                .write_all_at(data, offset)
                .map_err(|e| Error::io(&self.device_path, "writing the host drive", offset, e))?;
            if touches_identity(self, offset, data.len() as u64) {
                *self
                    .dirty_identity
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = true;
            }
        }
        Ok(())
    }

    /// The device first, then the identity record in the stub, then the stub.
    fn flush(&self, f: &FileCore) -> Result<()> {
        self.device
            .sync()
            .map_err(|e| Error::file(&self.device_path, "syncing the host drive", e))?;
        refresh_identity(&f.path, &*f.backend, self)?;
        f.sync("syncing")
    }
}

/// Reads a host-drive stub's header bytes at its data offset.
pub(crate) fn read_host_header(
    path: &Path,
    b: &dyn Backend,
    at: u64,
    len: u64,
) -> Result<[u8; HOST_DRIVE_HEADER_SIZE]> {
    if at.saturating_add(HOST_DRIVE_HEADER_SIZE as u64) > len {
        return Err(Error::corrupt(
            path,
            "footer",
            len.saturating_sub(512),
            format!("data offset {at:#x} points past the end of the file"),
        ));
    }
    let mut raw = [0u8; HOST_DRIVE_HEADER_SIZE];
    b.read_exact_at(&mut raw, at)
        .map_err(|e| Error::io(path, "reading the host-drive header", at, e))?;
    Ok(raw)
}

/// Offset of the host-drive header in a stub.
pub const HOST_DRIVE_HEADER_OFFSET: u64 = 512;

/// CRC32 of the first and last `span` bytes of the device (the whole device if it is
/// smaller than two spans): cheap evidence that the drive is still the one linked.
pub fn identity_crc(device: &dyn Backend, size: u64, span: u32) -> std::io::Result<u32> {
    let span = u64::from(span).min(size);
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; span as usize];
    device.read_exact_at(&mut buf, 0)?;
    h.update(&buf);
    if size > span {
        let tail_at = size - span;
        device.read_exact_at(&mut buf, tail_at)?;
        h.update(&buf);
    }
    Ok(h.finalize())
}

pub(crate) fn open_stub(
    path: &Path,
    b: &dyn Backend,
    footer: &Footer,
    len: u64,
    opts: &OpenOptions,
    warnings: &mut Vec<String>,
) -> Result<HostDrive> {
    let at = footer.data_offset;
    let raw = read_host_header(path, b, at, len)?;
    let header =
        HostDriveHeader::decode(&raw).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    if header.cookie != HOST_DRIVE_COOKIE {
        return Err(Error::Unsupported {
            path: path.to_owned(),
            detail: format!(
                "footer disk type {} (deprecated) without a vhdkit host-drive header",
                footer.disk_type.code()
            ),
        });
    }
    for p in header.validate_for(&raw, footer.current_size) {
        match p.severity {
            Severity::Error => {
                return Err(
                    Error::corrupt(path, "host-drive header", at, p.message).with_field(p.field)
                )
            }
            Severity::Warning => warnings.push(p.detail()),
            Severity::Info => {}
        }
    }
    let device_path = PathBuf::from(&header.device_path);
    let device = open_device(path, &device_path, &header, opts)?;
    Ok(HostDrive {
        header: Mutex::new(header),
        device,
        device_path,
        dirty_identity: Mutex::new(false),
    })
}

/// Opens the device a stub names, as far as the trust policy allows (docs/security.md):
/// only when the caller asked for host drives, only a block device (a regular file when
/// also asked), and never saying anything about the file found there beyond "not the
/// drive that was linked": the stub's author chose the path, so the size, the identity
/// CRC or the contents of whatever is there must not leak through an error.
fn open_device(
    path: &Path,
    device_path: &Path,
    header: &HostDriveHeader,
    opts: &OpenOptions,
) -> Result<Arc<dyn Backend>> {
    let not_allowed = |detail: String| Error::NotAllowed {
        path: path.to_owned(),
        detail,
    };
    if opts.host_drives == HostDrives::Refuse {
        return Err(not_allowed(format!(
            "a host-drive disk linking {}; vhdkit follows host-drive links only when asked (--host-drive)",
            device_path.display()
        )));
    }
    let not_found = |detail: &str| Error::HostDriveNotFound {
        path: path.to_owned(),
        device: device_path.to_owned(),
        detail: detail.to_owned(),
    };
    let writable = opts.writable && !header.read_only();
    let file = super::open::open_unlocked_rw(device_path, writable).map_err(|e| match e {
        Error::WrongFileType { what, .. } => not_allowed(format!(
            "the host drive it links, {}, is {what}, not a block device",
            device_path.display()
        )),
        _ => not_found("cannot open it"),
    })?;
    let is_block =
        vhdkit_platform::kind_of(&file).is_ok_and(|k| k == vhdkit_platform::FileKind::BlockDevice);
    if !is_block && opts.host_drives != HostDrives::BlockDevicesAndFiles {
        return Err(not_allowed(format!(
            "the host drive it links, {}, is a regular file, not a block device; vhdkit follows links to regular files only when asked (--host-drive-file)",
            device_path.display()
        )));
    }
    let device: Arc<dyn Backend> = Arc::new(FileBackend::with_path(file, device_path));
    let same = match device.len() {
        Ok(size) if size == header.device_size => {
            opts.ignore_host_drive_identity
                || identity_crc(&*device, size, header.identity_span)
                    .is_ok_and(|crc| crc == header.identity_crc)
        }
        _ => false,
    };
    if !same {
        return Err(not_found(
            "it is not the drive that was linked (its size or its first and last MiB differ)",
        ));
    }
    Ok(device)
}

/// Whether a write at `offset..offset+len` touches the bytes hashed for the identity.
pub(crate) fn touches_identity(h: &HostDrive, offset: u64, len: u64) -> bool {
    let header = h.header.lock().unwrap_or_else(|e| e.into_inner());
    let span = u64::from(header.identity_span);
    offset < span || offset.saturating_add(len) > header.device_size.saturating_sub(span)
}

/// After writes into the identity regions, records the new identity in the stub (held by
/// `stub` at `path`).
pub(crate) fn refresh_identity(path: &Path, stub: &dyn Backend, h: &HostDrive) -> Result<()> {
    let mut dirty = h.dirty_identity.lock().unwrap_or_else(|e| e.into_inner());
    if !*dirty {
        return Ok(());
    }
    let mut header = h.header.lock().unwrap_or_else(|e| e.into_inner());
    let crc = identity_crc(&*h.device, header.device_size, header.identity_span)
        .map_err(|e| Error::io(&h.device_path, "reading the host drive identity", 0, e))?;
    header.identity_crc = crc;
    let bytes = header.encode().map_err(Error::InvalidArgument)?;
    stub.write_all_at(&bytes, HOST_DRIVE_HEADER_OFFSET)
        .map_err(|e| {
            Error::io(
                path,
                "updating the host-drive header",
                HOST_DRIVE_HEADER_OFFSET,
                e,
            )
        })?;
    stub.sync()
        .map_err(|e| Error::file(path, "syncing the host-drive header", e))?;
    *dirty = false;
    Ok(())
}

/// Builds the 2048 bytes of a stub linking `device` (opened, `size` bytes).
pub(crate) fn stub_bytes(
    device_path: &Path,
    device: &dyn Backend,
    size: u64,
    read_only: bool,
) -> Result<Vec<u8>> {
    let path_str = device_path.to_str().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "host drive path {} is not UTF-8",
            device_path.display()
        ))
    })?;
    let crc = identity_crc(device, size, HOST_DRIVE_IDENTITY_SPAN)
        .map_err(|e| Error::io(device_path, "reading the host drive", 0, e))?;
    let header = HostDriveHeader {
        cookie: HOST_DRIVE_COOKIE,
        version: HOST_DRIVE_VERSION,
        flags: if read_only {
            HOST_DRIVE_FLAG_READ_ONLY
        } else {
            0
        },
        device_size: size,
        identity_crc: crc,
        identity_span: HOST_DRIVE_IDENTITY_SPAN,
        checksum: 0,
        device_path: path_str.to_owned(),
    };
    let hbytes = header.encode().map_err(Error::InvalidArgument)?;
    let mut footer = Footer::new(
        DiskType::Reserved(crate::spec::footer::DISK_TYPE_HOST_DRIVE_STUB),
        size,
    );
    footer.data_offset = HOST_DRIVE_HEADER_OFFSET;
    let fbytes = footer.encode();
    let mut out = Vec::with_capacity(2048);
    out.extend_from_slice(&fbytes);
    out.extend_from_slice(&hbytes);
    out.extend_from_slice(&fbytes);
    Ok(out)
}
