//! One VHD file: its footer, and for dynamic and differencing disks its header, BAT and
//! locators; or a host-drive stub and its device; or a raw image. Answers "where do the
//! bytes of this virtual range live in this file" and writes into it crash-safely.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::spec::footer::DISK_TYPE_HOST_DRIVE_STUB;
use crate::spec::{
    Bat, DiskType, DynamicHeader, Footer, HostDriveHeader, Severity, FOOTER_SIZE, SECTOR_SIZE,
};

use super::backend::{Backend, FileBackend};
pub use super::extent::LayerExtent;
use super::flat::{data_ranges, map_extents};
pub use super::footer::FooterSource;
use super::footer::{looks_like_vhd, other_format, read_footer};
use super::hostdrive::{self, HostDrive};
use super::open::{open_file, Accept};
use super::sparse::{open_sparse, Sparse};
use super::OpenOptions;

/// The layout-specific part of an open file.
#[derive(Debug)]
pub(crate) enum Layout {
    Raw,
    Fixed,
    Sparse(Box<Sparse>),
    HostDrive(HostDrive),
}

/// One open VHD file (one level of a chain).
#[derive(Debug)]
pub struct VhdFile {
    pub(super) path: PathBuf,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) writable: bool,
    pub(super) footer: Footer,
    pub(super) footer_source: FooterSource,
    pub(super) file_len: u64,
    pub(crate) layout: Layout,
    pub(super) warnings: Vec<String>,
    /// Stored ranges of a read-only raw or fixed file (`SEEK_DATA`/`SEEK_HOLE`, found once).
    pub(super) data_map: std::sync::OnceLock<Vec<(u64, u64)>>,
}

impl VhdFile {
    /// Opens `path` as a VHD (read-only unless `opts.writable`).
    /// Regular files and block devices are accepted (the caller named the path); use
    /// [`VhdFile::open_regular`] for paths found inside an image.
    pub fn open(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<VhdFile> {
        let path = path.as_ref();
        let file = open_file(path, opts.writable, Accept::RegularOrBlock)?;
        let backend: Arc<dyn Backend> = Arc::new(FileBackend::with_path(file, path));
        VhdFile::from_backend(path, backend, opts)
    }

    /// Opens `path` as a VHD as [`VhdFile::open`] does, but only if it is a regular file
    /// (parents found through locators).
    pub fn open_regular(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<VhdFile> {
        let path = path.as_ref();
        let file = open_file(path, opts.writable, Accept::Regular)?;
        let backend: Arc<dyn Backend> = Arc::new(FileBackend::with_path(file, path));
        VhdFile::from_backend(path, backend, opts)
    }

    /// Opens `path` as a VHD if it has a footer, else as a raw image — unless its name
    /// says it is a virtual disk (`.vhd`, `.avhd`, `.vhdx`, `.avhdx`): a file named so
    /// without a VHD footer is damaged or something else, never raw bytes, and is refused
    /// as [`Error::NotVhd`] (`opts.force_raw` takes it as raw all the same).
    pub fn open_any(path: impl AsRef<Path>, opts: &OpenOptions) -> Result<VhdFile> {
        let path = path.as_ref();
        let file = open_file(path, opts.writable, Accept::RegularOrBlock)?;
        let backend: Arc<dyn Backend> = Arc::new(FileBackend::with_path(file, path));
        if opts.force_raw {
            return VhdFile::raw(path, backend, opts.writable);
        }
        if looks_like_vhd(&*backend) {
            return VhdFile::from_backend(path, backend, opts);
        }
        // Never take another format (or a VHD that fails to open) for raw bytes.
        if let Some(format) = other_format(&*backend) {
            return Err(Error::NotVhd {
                path: path.to_owned(),
                detail: format!(
                    "it is {format}, not a VHD or a raw image (convert it with qemu-img first, or pass --source-format raw to take its bytes as they are)"
                ),
            });
        }
        if super::footer::named_like_vhd(path) {
            return Err(Error::NotVhd {
                path: path.to_owned(),
                detail: "its name says it is a virtual disk, but it has no VHD footer (no `conectix` cookie at its end or at offset 0); pass --source-format raw to take its bytes as a raw disk".into(),
            });
        }
        VhdFile::raw(path, backend, opts.writable)
    }

    /// Wraps a raw image: every byte is disk data, the file's length is the disk's size.
    pub fn raw(
        path: impl AsRef<Path>,
        backend: Arc<dyn Backend>,
        writable: bool,
    ) -> Result<VhdFile> {
        let path = path.as_ref();
        let len = backend
            .len()
            .map_err(|e| Error::file(path, "reading the length", e))?;
        let mut footer = Footer::new(DiskType::Fixed, len);
        footer.cookie = [0; 8];
        Ok(VhdFile {
            path: path.to_owned(),
            backend,
            writable,
            footer,
            footer_source: FooterSource::End,
            file_len: len,
            layout: Layout::Raw,
            warnings: Vec::new(),
            data_map: std::sync::OnceLock::new(),
        })
    }

    /// Opens a VHD held by any backend (memory in tests and fuzzing).
    pub fn from_backend(
        path: impl AsRef<Path>,
        backend: Arc<dyn Backend>,
        opts: &OpenOptions,
    ) -> Result<VhdFile> {
        let path = path.as_ref();
        let len = backend
            .len()
            .map_err(|e| Error::file(path, "reading the length", e))?;
        let mut warnings = Vec::new();
        let (footer, footer_source, footer_at) =
            read_footer(path, &*backend, len, opts, &mut warnings)?;
        let problems = footer.validate(Some(len));
        for p in &problems {
            if p.field == "checksum" {
                continue; // handled by read_footer
            }
            match p.severity {
                Severity::Error => {
                    if let DiskType::Reserved(code) | DiskType::Unknown(code) = footer.disk_type {
                        if code != DISK_TYPE_HOST_DRIVE_STUB {
                            return Err(Error::Unsupported {
                                path: path.to_owned(),
                                detail: format!(
                                    "footer disk type {code} (a deprecated or unknown type, e.g. a Connectix linked disk) is not supported"
                                ),
                            });
                        }
                    }
                    return Err(
                        Error::corrupt(path, "footer", footer_at, &p.message).with_field(p.field)
                    );
                }
                Severity::Warning => warnings.push(p.detail()),
                Severity::Info => {}
            }
        }
        let layout = match footer.disk_type {
            DiskType::Fixed => {
                let data_len = footer_at;
                if data_len < footer.current_size {
                    return Err(Error::corrupt(
                        path,
                        "footer",
                        footer_at,
                        format!(
                            "fixed disk holds {data_len} bytes of data but its footer says {} (file truncated?)",
                            footer.current_size
                        ),
                    ));
                }
                if data_len > footer.current_size {
                    warnings.push(format!(
                        "fixed disk has {} bytes after its data before the footer",
                        data_len - footer.current_size
                    ));
                }
                Layout::Fixed
            }
            DiskType::Dynamic | DiskType::Differencing => Layout::Sparse(Box::new(open_sparse(
                path,
                &*backend,
                &footer,
                len,
                footer_at,
                footer_source,
                opts,
                &mut warnings,
            )?)),
            _ => Layout::HostDrive(hostdrive::open_stub(
                path,
                &*backend,
                &footer,
                len,
                opts,
                &mut warnings,
            )?),
        };
        Ok(VhdFile {
            path: path.to_owned(),
            backend,
            writable: opts.writable,
            footer,
            footer_source,
            file_len: len,
            layout,
            warnings,
            data_map: std::sync::OnceLock::new(),
        })
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The footer in use.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// Which footer copy was used.
    pub fn footer_source(&self) -> FooterSource {
        self.footer_source
    }

    /// The dynamic header, for dynamic and differencing disks.
    pub fn header(&self) -> Option<&DynamicHeader> {
        match &self.layout {
            Layout::Sparse(s) => Some(&s.header),
            _ => None,
        }
    }

    /// The host-drive header, for host-drive stubs.
    pub fn host_drive(&self) -> Option<(HostDriveHeader, PathBuf)> {
        match &self.layout {
            Layout::HostDrive(h) => Some((
                h.header.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                h.device_path.clone(),
            )),
            _ => None,
        }
    }

    /// A copy of the BAT, for dynamic and differencing disks.
    pub fn bat(&self) -> Option<Bat> {
        match &self.layout {
            Layout::Sparse(s) => Some(s.bat.read().unwrap_or_else(|e| e.into_inner()).clone()),
            _ => None,
        }
    }

    /// Block size of dynamic and differencing disks.
    pub fn block_size(&self) -> Option<u64> {
        match &self.layout {
            Layout::Sparse(s) => Some(s.block_size),
            _ => None,
        }
    }

    /// Bytes of sector bitmap before each block.
    pub fn bitmap_size(&self) -> Option<u64> {
        match &self.layout {
            Layout::Sparse(s) => Some(s.bitmap_size),
            _ => None,
        }
    }

    /// Kind of the file.
    pub fn kind(&self) -> super::DiskKind {
        match &self.layout {
            Layout::Raw => super::DiskKind::Raw,
            Layout::Fixed => super::DiskKind::Fixed,
            Layout::HostDrive(_) => super::DiskKind::HostDrive,
            Layout::Sparse(_) if self.footer.disk_type == DiskType::Differencing => {
                super::DiskKind::Differencing
            }
            Layout::Sparse(_) => super::DiskKind::Dynamic,
        }
    }

    /// Virtual size in bytes: the footer's current size (what Hyper-V, libvhdi and
    /// qemu for every creator but `vpc `/`qemu` present).
    pub fn virtual_size(&self) -> u64 {
        self.footer.current_size
    }

    /// Length of the file when opened, or as grown since.
    pub fn file_len(&self) -> u64 {
        match &self.layout {
            Layout::Sparse(s) => {
                let st = s.state.lock().unwrap_or_else(|e| e.into_inner());
                (st.footer_at + FOOTER_SIZE as u64).max(self.file_len)
            }
            _ => self.file_len,
        }
    }

    /// Whether writes are allowed.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Warnings met while opening (damaged footer used from its copy, bad checksums
    /// accepted, …).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The backend holding the file.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Whether this is a differencing disk.
    pub fn is_differencing(&self) -> bool {
        self.footer.disk_type == DiskType::Differencing && matches!(self.layout, Layout::Sparse(_))
    }

    /// Byte ranges of the file's metadata (footer copy, header, BAT, locator payloads)
    /// for dynamic and differencing disks.
    pub fn metadata_ranges(&self) -> Vec<(u64, u64)> {
        match &self.layout {
            Layout::Sparse(s) => s.metadata.clone(),
            _ => Vec::new(),
        }
    }

    /// Clears Xen's batmap bits of `blocks` (blocks no longer fully written: released)
    /// and rewrites the batmap with its checksum if a bit changed; the caller syncs.
    /// Returns whether anything was written. A file without a batmap: nothing to do.
    pub(crate) fn clear_batmap_bits(&self, blocks: &[u64]) -> Result<bool> {
        let Layout::Sparse(s) = &self.layout else {
            return Ok(false);
        };
        let mut m = s.batmap.lock().unwrap_or_else(|e| e.into_inner());
        match m.as_mut() {
            Some(m) => m.clear(&self.path, &*self.backend, blocks),
            None => Ok(false),
        }
    }

    /// Whether the file carries Xen's batmap.
    pub fn has_batmap(&self) -> bool {
        match &self.layout {
            Layout::Sparse(s) => s.batmap.lock().unwrap_or_else(|e| e.into_inner()).is_some(),
            _ => false,
        }
    }

    /// Number of allocated blocks (dynamic and differencing disks).
    pub fn allocated_blocks(&self) -> u64 {
        match &self.layout {
            Layout::Sparse(s) => s
                .bat
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .allocated_count(),
            _ => 0,
        }
    }

    /// Where the bytes of `offset..offset + len` (within the virtual size) live in this
    /// file, in order. Unstored parts are `Parent` for differencing disks and `Zero`
    /// otherwise.
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<LayerExtent>> {
        let mut out = Vec::new();
        let size = self.virtual_size();
        let end = offset.saturating_add(len).min(size);
        let pos = offset.min(size);
        match &self.layout {
            Layout::Raw | Layout::Fixed => {
                if end > pos {
                    match self.backend.as_file().filter(|_| !self.writable) {
                        Some(f) => {
                            // One pass over the file's data and holes, then lookups: no
                            // seek per block (on tmpfs each seek walks the page cache),
                            // no shared file position between workers. Writable files
                            // change under the map, so they are read as all data.
                            let map = self
                                .data_map
                                .get_or_init(|| data_ranges(f, self.virtual_size()));
                            map_extents(map, pos, end, &mut out);
                        }
                        None => out.push(LayerExtent::Data {
                            file_offset: pos,
                            len: end - pos,
                        }),
                    }
                }
            }
            Layout::HostDrive(_) => {
                if end > pos {
                    out.push(LayerExtent::Data {
                        file_offset: pos,
                        len: end - pos,
                    });
                }
            }
            Layout::Sparse(s) => self.sparse_extents(s, pos, end, &mut out)?,
        }
        Ok(out)
    }

    /// Reads stored bytes at a file offset given by a `Data` extent through a read-only
    /// memory map of that window when the bytes live in a file, by `pread` otherwise.
    pub(crate) fn read_data_mapped(&self, buf: &mut [u8], file_offset: u64) -> Result<()> {
        let (file, path) = match &self.layout {
            Layout::HostDrive(h) => (h.device.as_file(), &h.device_path),
            _ => (self.backend.as_file(), &self.path),
        };
        match file {
            Some(f) => super::map_clone::copy_mapped(f, file_offset, buf)
                .map_err(|e| Error::io(path, "reading mapped disk data", file_offset, e)),
            None => self.read_data(buf, file_offset),
        }
    }

    /// Maps the stored bytes of a `Data` extent read-only, when they live in a file,
    /// faulting them in at once (this crate's own reads, which never write a range they
    /// have mapped; see `map_clone.rs`).
    pub(crate) fn map_data(&self, file_offset: u64, len: u64) -> Option<Result<super::Window>> {
        self.map_window(file_offset, len, true)
    }

    /// The file holding the data of `Data` extents (a host drive's device, else the file
    /// itself), when it is a file.
    pub(crate) fn data_file(&self) -> Option<&std::fs::File> {
        match &self.layout {
            Layout::HostDrive(h) => h.device.as_file(),
            _ => self.backend.as_file(),
        }
    }

    /// The file system (`st_dev`) of [`VhdFile::data_file`]: data may be cloned from it
    /// into an output on the same file system, where that shares extents.
    pub(crate) fn data_device(&self) -> Option<u64> {
        let meta = self.data_file()?.metadata().ok()?;
        meta.is_file()
            .then(|| std::os::unix::fs::MetadataExt::dev(&meta))
    }

    /// Maps `len` bytes at `file_offset` of the file holding the data read-only, when it
    /// is a file opened **read-only**; pages fault in when read, or through
    /// [`super::Window::populate`]. `None` for a file opened for writing, for data that
    /// does not live in a file, and for lengths that do not fit in memory.
    ///
    /// Why only read-only files: a read-only `VhdFile` holds a shared lock that no vhdkit
    /// writer of the same file can get past (its exclusive lock would conflict), so
    /// nothing vhdkit does writes a mapped range while the window lives. A handle that
    /// could `write_at` into its own mapping would void that argument.
    pub(crate) fn map_range(
        &self,
        file_offset: u64,
        len: u64,
        populate: bool,
    ) -> Option<Result<super::Window>> {
        if self.writable {
            return None;
        }
        self.map_window(file_offset, len, populate)
    }

    /// [`VhdFile::map_range`] for this crate, on writable files too: the operations never
    /// write a range while it is mapped (they copy it out and unmap before writing).
    pub(crate) fn map_window(
        &self,
        file_offset: u64,
        len: u64,
        populate: bool,
    ) -> Option<Result<super::Window>> {
        let (file, path) = match &self.layout {
            Layout::HostDrive(h) => (h.device.as_file()?, &h.device_path),
            _ => (self.backend.as_file()?, &self.path),
        };
        let len = usize::try_from(len).ok()?;
        Some(
            super::map_clone::map_window(file, file_offset, len, populate)
                .map_err(|e| Error::io(path, "mapping disk data", file_offset, e)),
        )
    }

    /// Reads stored bytes at a file offset given by a `Data` extent.
    pub fn read_data(&self, buf: &mut [u8], file_offset: u64) -> Result<()> {
        match &self.layout {
            Layout::HostDrive(h) => h
                .device
                .read_exact_at(buf, file_offset)
                .map_err(|e| Error::io(&h.device_path, "reading the host drive", file_offset, e)),
            _ => self
                .backend
                .read_exact_at(buf, file_offset)
                .map_err(|e| Error::io(&self.path, "reading disk data", file_offset, e)),
        }
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
                detail: "opened read-only".into(),
            });
        }
        if let Layout::HostDrive(h) = &self.layout {
            if h.header
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read_only()
            {
                return Err(Error::ReadOnly {
                    path: self.path.clone(),
                    detail: "the host-drive link was created read-only".into(),
                });
            }
        }
        Ok(())
    }

    /// Writes sector-aligned `data` at sector-aligned virtual `offset`.
    ///
    /// Crash-safe write order for dynamic and differencing disks (the image stays valid
    /// and reads as either the old or the new data if the process dies between any two
    /// steps; a BAT entry never points at a block whose bitmap and data are not durable):
    ///
    /// 1. If new blocks are needed, write the footer at the new end of the file first
    ///    and `fdatasync`: the file ends with a valid footer at every instant. The new
    ///    space counts as taken from here on, even if a later step fails.
    /// 2. Write every new block's bitmap (bits of the written sectors only) and data,
    ///    zero-filling whatever part of it overlaps the old file contents, and write the
    ///    data of ranges in already allocated blocks.
    /// 3. `fdatasync`.
    /// 4. Set the new bitmap bits of already allocated blocks, and write the BAT sectors
    ///    holding the new entries (one 512-byte sector each).
    /// 5. `fdatasync`.
    ///
    /// A crash before 4 leaves unreferenced space before the footer (`check` reports it;
    /// after reopening, the next allocation reuses it, zero-filling what it does not
    /// write; `check --repair` or `compact` reclaims it) and sectors whose bits are still
    /// clear, which read as before. `docs/crash-safety.md` has the full analysis.
    ///
    /// The order is applied once to all `runs` — sector-aligned `(virtual offset, bytes)`
    /// pairs: one footer move, one barrier after the data, one after the metadata (merge
    /// writes a whole chunk of runs this way).
    pub(crate) fn write_aligned_runs(&self, runs: &[(u64, &[u8])]) -> Result<()> {
        self.check_writable()?;
        for &(offset, data) in runs {
            debug_assert!(
                offset.is_multiple_of(SECTOR_SIZE)
                    && (data.len() as u64).is_multiple_of(SECTOR_SIZE)
            );
            let len = data.len() as u64;
            if offset
                .checked_add(len)
                .is_none_or(|e| e > self.virtual_size())
            {
                return Err(Error::OutOfRange {
                    path: self.path.clone(),
                    offset,
                    len,
                    size: self.virtual_size(),
                });
            }
        }
        match &self.layout {
            Layout::Raw | Layout::Fixed => {
                for &(offset, data) in runs {
                    self.backend
                        .write_all_at(data, offset)
                        .map_err(|e| Error::io(&self.path, "writing disk data", offset, e))?;
                }
                Ok(())
            }
            Layout::HostDrive(h) => {
                for &(offset, data) in runs {
                    h.device.write_all_at(data, offset).map_err(|e| {
                        Error::io(&h.device_path, "writing the host drive", offset, e)
                    })?;
                    if hostdrive::touches_identity(h, offset, data.len() as u64) {
                        *h.dirty_identity.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    }
                }
                Ok(())
            }
            Layout::Sparse(s) => self.write_sparse(s, runs),
        }
    }

    /// Makes all writes durable; for host drives, refreshes the identity record.
    pub fn flush(&self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        if let Layout::HostDrive(h) = &self.layout {
            h.device
                .sync()
                .map_err(|e| Error::file(&h.device_path, "syncing the host drive", e))?;
            hostdrive::refresh_identity(&self.path, &*self.backend, h)?;
        }
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, "syncing", e))
    }

    /// Rewrites the footer (at the end, and at offset 0 for dynamic and differencing
    /// disks) with new field values, durably: end copy first, sync, then offset 0.
    pub fn rewrite_footer(&mut self, footer: Footer) -> Result<()> {
        self.check_writable()?;
        let bytes = footer.encode();
        let at = match &self.layout {
            Layout::Sparse(s) => s.state.lock().unwrap_or_else(|e| e.into_inner()).footer_at,
            _ => self.file_len.saturating_sub(FOOTER_SIZE as u64),
        };
        self.backend
            .write_all_at(&bytes, at)
            .map_err(|e| Error::io(&self.path, "writing the footer", at, e))?;
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, "syncing the footer", e))?;
        if footer.disk_type.is_sparse() || matches!(self.layout, Layout::HostDrive(_)) {
            self.backend
                .write_all_at(&bytes, 0)
                .map_err(|e| Error::io(&self.path, "writing the footer copy", 0, e))?;
            self.backend
                .sync()
                .map_err(|e| Error::file(&self.path, "syncing the footer copy", e))?;
        }
        self.footer = Footer::decode(&bytes).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(())
    }

    /// Rewrites the dynamic header durably (e.g. a new parent timestamp after a merge).
    pub fn rewrite_header(&mut self, header: DynamicHeader) -> Result<()> {
        self.check_writable()?;
        let Layout::Sparse(s) = &mut self.layout else {
            return Err(Error::WrongDiskType {
                path: self.path.clone(),
                found: self.footer.disk_type.to_string(),
                expected: "expected a dynamic or differencing disk".into(),
            });
        };
        let bytes = header.encode();
        self.backend
            .write_all_at(&bytes, s.header_offset)
            .map_err(|e| Error::io(&self.path, "writing the dynamic header", s.header_offset, e))?;
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, "syncing the dynamic header", e))?;
        s.header =
            DynamicHeader::decode(&bytes).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(())
    }
}
