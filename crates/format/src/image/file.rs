//! One open disk file: what every file has (`core.rs`) and its container's side of it
//! (`container.rs`: a raw image, a fixed disk, a dynamic or differencing disk, a
//! host-drive stub). Opening decides the container from the footer; everything after
//! goes through the container trait: "where do the bytes of this virtual range live in
//! this file", reads, crash-safe writes, discard, flush, resize, metadata.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::spec::footer::DISK_TYPE_HOST_DRIVE_STUB;
use crate::spec::{
    Bat, DiskType, DynamicHeader, Footer, HostDriveHeader, Severity, SparseLayout, SECTOR_SIZE,
};

use super::backend::{Backend, FileBackend};
use super::container::{Container, ResizeJob, ResizePlan, ResizeSteps};
use super::core::FileCore;
pub use super::extent::LayerExtent;
use super::fixed::Fixed;
pub use super::footer::FooterSource;
use super::footer::{looks_like_vhd, other_format, read_footer};
use super::hostdrive::{self, HostDrive};
use super::open::{open_file, Accept};
use super::raw::Raw;
use super::sparse::{open_sparse, Sparse};
use super::vhdx::{self, Vhdx};
use super::OpenOptions;

/// Whether the backend starts with the VHDX file type identifier (`vhdxfile`).
fn is_vhdx(b: &dyn Backend) -> bool {
    let mut sig = [0u8; 8];
    b.read_exact_at(&mut sig, 0).is_ok() && crate::vhdx::parse::is_vhdx(&sig)
}

/// One open VHD file (one level of a chain).
#[derive(Debug)]
pub struct VhdFile {
    core: FileCore,
    container: Box<dyn Container>,
}

/// The container of `file` when it is a `T` (what only one format has: a dynamic
/// disk's BAT, a host drive's device).
fn container_as<T: Container>(file: &VhdFile) -> Option<&T> {
    let any: &dyn std::any::Any = &*file.container;
    any.downcast_ref::<T>()
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
        if looks_like_vhd(&*backend) || is_vhdx(&*backend) {
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
            core: FileCore {
                path: path.to_owned(),
                backend,
                writable,
                footer,
                footer_source: FooterSource::End,
                file_len: len,
                warnings: Vec::new(),
            },
            container: Box::<Raw>::default(),
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
        if is_vhdx(&*backend) {
            let (core, container) = vhdx::open_vhdx(path, backend, len, opts)?;
            return Ok(VhdFile {
                core,
                container: Box::new(container),
            });
        }
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
        let container: Box<dyn Container> = match footer.disk_type {
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
                Box::<Fixed>::default()
            }
            DiskType::Dynamic | DiskType::Differencing => Box::new(open_sparse(
                path,
                &*backend,
                &footer,
                len,
                footer_at,
                footer_source,
                opts,
                &mut warnings,
            )?),
            _ => Box::new(hostdrive::open_stub(
                path,
                &*backend,
                &footer,
                len,
                opts,
                &mut warnings,
            )?),
        };
        Ok(VhdFile {
            core: FileCore {
                path: path.to_owned(),
                backend,
                writable: opts.writable,
                footer,
                footer_source,
                file_len: len,
                warnings,
            },
            container,
        })
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.core.path
    }

    /// The footer in use.
    pub fn footer(&self) -> &Footer {
        &self.core.footer
    }

    /// Which footer copy was used.
    pub fn footer_source(&self) -> FooterSource {
        self.core.footer_source
    }

    /// The dynamic header, for dynamic and differencing disks.
    pub fn header(&self) -> Option<&DynamicHeader> {
        container_as::<Sparse>(self).map(Sparse::header)
    }

    /// The VHDX side of a VHDX file (`.vhdx`, `.avhdx`).
    pub(crate) fn vhdx(&self) -> Option<&Vhdx> {
        container_as::<Vhdx>(self)
    }

    /// A VHDX file's own facts (block and sector sizes, log state, parent locator),
    /// `None` for VHD files and raw images.
    pub fn vhdx_info(&self) -> Option<super::vhdx::VhdxInfo> {
        self.vhdx().map(Vhdx::info)
    }

    /// A VHDX file's data write GUID as it is now (it changes on the first data write
    /// since opening); `None` for other files.
    pub(crate) fn vhdx_data_write_guid(&self) -> Option<uuid::Uuid> {
        self.vhdx().map(super::vhdx::Vhdx::data_write_guid)
    }

    /// Makes `guid` the data write GUID this VHDX file's first data write gives it.
    pub(crate) fn vhdx_plan_data_write_guid(&self, guid: uuid::Uuid) -> Result<()> {
        match self.vhdx() {
            Some(v) => v.plan_data_write_guid(&self.core, guid),
            None => Ok(()),
        }
    }

    /// Replaces this differencing VHDX file's parent locator, through its log.
    pub(crate) fn vhdx_rewrite_parent_locator(
        &self,
        loc: &crate::vhdx::ParentLocator,
    ) -> Result<()> {
        let v = self.vhdx().ok_or_else(|| Error::WrongDiskType {
            path: self.core.path.clone(),
            found: self.kind().to_string(),
            expected: "a differencing VHDX file".into(),
        })?;
        v.rewrite_parent_locator(&self.core, loc)
    }

    /// Releases stored blocks of this VHDX file (compact), through its log.
    pub(crate) fn vhdx_release_blocks(&self, blocks: &[u64]) -> Result<()> {
        match self.vhdx() {
            Some(v) => v.release_blocks(&self.core, blocks),
            None => Ok(()),
        }
    }

    /// The moves that would fill this VHDX file's holes from its tail once `released`
    /// (payload blocks, sorted) are not stored (compact).
    pub(crate) fn vhdx_plan_moves(&self, released: &[u64]) -> super::vhdx::MovePlan {
        self.vhdx()
            .map(|v| v.plan_moves(released))
            .unwrap_or_default()
    }

    /// Moves a batch of this VHDX file's blocks (compact), their entries through its log.
    pub(crate) fn vhdx_move_blocks(
        &self,
        batch: &[super::vhdx::Move],
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        match self.vhdx() {
            Some(v) => v.move_blocks(&self.core, batch, buf),
            None => Ok(()),
        }
    }

    /// Closes this VHDX file's log and cuts it after what it holds; its new length.
    pub(crate) fn vhdx_shorten(&self) -> Result<u64> {
        match self.vhdx() {
            Some(v) => v.shorten(&self.core),
            None => Ok(self.file_len()),
        }
    }

    /// Whether the file is a VHDX file (`info` names the container).
    pub fn is_vhdx(&self) -> bool {
        self.vhdx().is_some()
    }

    /// The host-drive header, for host-drive stubs.
    pub fn host_drive(&self) -> Option<(HostDriveHeader, PathBuf)> {
        container_as::<HostDrive>(self).map(|h| {
            (
                h.header.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                h.device_path.clone(),
            )
        })
    }

    /// A copy of the BAT, for dynamic and differencing disks.
    pub fn bat(&self) -> Option<Bat> {
        container_as::<Sparse>(self).map(Sparse::bat)
    }

    /// Block size of dynamic and differencing disks.
    pub fn block_size(&self) -> Option<u64> {
        container_as::<Sparse>(self).map(|s| s.layout().block_size)
    }

    /// The unit a dynamic or differencing file allocates, and a discard releases
    /// whole: a VHD's block size, a VHDX's payload block size; `None` for fixed disks,
    /// raw images and host drives.
    ///
    /// ```
    /// use vhdkit_format::{CreateOptions, Disk, DiskKind};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("d.vhd");
    /// Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).unwrap();
    /// let disk = Disk::open(&path).unwrap();
    /// assert_eq!(disk.top().allocation_unit(), Some(2 << 20));
    /// ```
    pub fn allocation_unit(&self) -> Option<u64> {
        self.block_size()
            .or_else(|| container_as::<Vhdx>(self).map(Vhdx::block_size))
    }

    /// Bytes of sector bitmap before each block.
    pub fn bitmap_size(&self) -> Option<u64> {
        container_as::<Sparse>(self).map(|s| s.layout().bitmap_size)
    }

    /// The live layout of a dynamic or differencing file (a copy): what compact plans
    /// with.
    pub(crate) fn sparse_layout(&self) -> Option<SparseLayout> {
        container_as::<Sparse>(self).map(|s| s.layout().clone())
    }

    /// Kind of the file.
    pub fn kind(&self) -> super::DiskKind {
        self.container.kind(&self.core)
    }

    /// Virtual size in bytes: the footer's current size (what Hyper-V, libvhdi and
    /// qemu for every creator but `vpc `/`qemu` present).
    pub fn virtual_size(&self) -> u64 {
        self.core.footer.current_size
    }

    /// Length of the file when opened, or as grown since.
    pub fn file_len(&self) -> u64 {
        self.container.file_len(&self.core)
    }

    /// Whether writes are allowed.
    pub fn is_writable(&self) -> bool {
        self.core.writable
    }

    /// Warnings met while opening (damaged footer used from its copy, bad checksums
    /// accepted, …).
    pub fn warnings(&self) -> &[String] {
        &self.core.warnings
    }

    /// The backend holding the file.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.core.backend
    }

    /// Whether this is a differencing disk.
    pub fn is_differencing(&self) -> bool {
        self.kind() == super::DiskKind::Differencing
    }

    /// Byte ranges of the file's metadata (footer copy, header, BAT, locator payloads)
    /// for dynamic and differencing disks.
    pub fn metadata_ranges(&self) -> Vec<(u64, u64)> {
        self.container.metadata_ranges()
    }

    /// Whether the file carries Xen's batmap.
    pub fn has_batmap(&self) -> bool {
        container_as::<Sparse>(self).is_some_and(Sparse::has_batmap)
    }

    /// Number of allocated blocks (dynamic and differencing disks).
    pub fn allocated_blocks(&self) -> u64 {
        self.container.allocated_blocks()
    }

    /// Where the trailing footer is.
    pub(crate) fn footer_offset(&self) -> u64 {
        self.container.footer_offset(&self.core)
    }

    /// Where the bytes of `offset..offset + len` (within the virtual size) live in this
    /// file, in order. Unstored parts are `Parent` for differencing disks and `Zero`
    /// otherwise.
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<LayerExtent>> {
        let mut out = Vec::new();
        let size = self.virtual_size();
        let end = offset.saturating_add(len).min(size);
        let pos = offset.min(size);
        self.container.extents(&self.core, pos, end, &mut out)?;
        Ok(out)
    }

    /// The virtual byte ranges this file may hold data in — sorted, disjoint, merged,
    /// within the virtual size: a dynamic or differencing disk's allocated blocks
    /// (whole, whatever their sector bitmaps say), a read-only fixed or raw file's
    /// stored extents (its holes left out: `SEEK_DATA`/`SEEK_HOLE`, found once), the
    /// whole disk for other files. Outside them this file holds nothing: those bytes
    /// read as zeros, or (differencing) from the parent. From metadata alone, one step
    /// per run: its cost follows the allocation, not the virtual size.
    pub fn stored_ranges(&self) -> Vec<Range<u64>> {
        self.container
            .stored_ranges(&self.core)
            .into_iter()
            .filter(|r| r.start < r.end)
            .collect()
    }

    /// Asks the kernel to read ahead, asynchronously, the sector bitmaps of the
    /// allocated blocks that meet the virtual `range` (`POSIX_FADV_WILLNEED`): a walk
    /// that will read them one by one then finds them in the page cache instead of
    /// waiting for each in turn (from a cold cache, a conversion that clones its data
    /// reads nothing else). A hint: nothing happens on files that are not files.
    pub(crate) fn will_need_bitmaps(&self, range: Range<u64>) {
        if let (Some(s), Some(f)) = (container_as::<Sparse>(self), self.core.backend.as_file()) {
            s.will_need_bitmaps(f, range);
        }
    }

    /// Reads stored bytes at a file offset given by a `Data` extent through a read-only
    /// memory map of that window when the bytes live in a file, by `pread` otherwise.
    pub(crate) fn read_data_mapped(&self, buf: &mut [u8], file_offset: u64) -> Result<()> {
        let (store, path) = self.container.data_store(&self.core);
        match store.as_file().filter(|_| self.container.direct_reads()) {
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
    /// itself), when it is a file whose bytes are what reads see.
    pub(crate) fn data_file(&self) -> Option<&std::fs::File> {
        if !self.container.direct_reads() {
            return None;
        }
        self.container.data_store(&self.core).0.as_file()
    }

    /// The file system (`st_dev`) of [`VhdFile::data_file`]: data may be cloned from it
    /// into an output on the same file system, where that shares extents.
    pub(crate) fn data_device(&self) -> Option<u64> {
        let file = self.data_file()?;
        let meta = file.metadata().ok()?;
        meta.is_file()
            .then(|| vhdkit_platform::volume_of(file))
            .flatten()
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
        if self.core.writable {
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
        if !self.container.direct_reads() {
            return None;
        }
        let (store, path) = self.container.data_store(&self.core);
        let file = store.as_file()?;
        let len = usize::try_from(len).ok()?;
        Some(
            super::map_clone::map_window(file, file_offset, len, populate)
                .map_err(|e| Error::io(path, "mapping disk data", file_offset, e)),
        )
    }

    /// Reads stored bytes at a file offset given by a `Data` extent.
    pub fn read_data(&self, buf: &mut [u8], file_offset: u64) -> Result<()> {
        self.container.read(&self.core, buf, file_offset)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.core.writable {
            return Err(Error::ReadOnly {
                path: self.core.path.clone(),
                detail: "opened read-only".into(),
            });
        }
        self.container.check_writable(&self.core)
    }

    /// The sparse part of the file, or a "wrong disk type" error for other kinds.
    fn sparse(&self) -> Result<&Sparse> {
        container_as::<Sparse>(self).ok_or_else(|| self.not_sparse())
    }

    /// The sparse part of the file to change, with the rest of it; for other kinds a
    /// "wrong disk type" error naming the footer's type and `expected`.
    fn sparse_mut(&mut self, expected: &str) -> Result<(&mut Sparse, &FileCore)> {
        let any: &mut dyn std::any::Any = &mut *self.container;
        match any.downcast_mut::<Sparse>() {
            Some(s) => Ok((s, &self.core)),
            None => Err(Error::WrongDiskType {
                path: self.core.path.clone(),
                found: self.core.footer.disk_type.to_string(),
                expected: expected.into(),
            }),
        }
    }

    fn not_sparse(&self) -> Error {
        Error::WrongDiskType {
            path: self.core.path.clone(),
            found: self.kind().to_string(),
            expected: "a dynamic or differencing disk".into(),
        }
    }

    /// Writes sector-aligned `data` at sector-aligned virtual `offset`, in the
    /// container's crash-safe order (for dynamic and differencing disks, the one
    /// `image/sparse/write.rs` states: data and bitmaps durable before the BAT entries
    /// that name them; `docs/crash-safety.md` has the full analysis).
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
                    path: self.core.path.clone(),
                    offset,
                    len,
                    size: self.virtual_size(),
                });
            }
        }
        self.container.write_runs(&self.core, runs)
    }

    /// [`crate::Disk::discard`] on this file: releases what the container can of
    /// `offset..offset + len` (inside the disk) — a dynamic disk's blocks the range
    /// covers entirely, in `image/sparse/edit.rs`' order; all of it in a fixed disk or
    /// raw image (a hole punched, `image/flat.rs`) — and returns the virtual bytes
    /// released; 0 on other disk kinds.
    pub(crate) fn discard(&self, offset: u64, len: u64) -> Result<u64> {
        self.check_writable()?;
        self.container.discard(&self.core, offset, len)
    }

    /// Makes all writes durable; for host drives, refreshes the identity record.
    pub fn flush(&self) -> Result<()> {
        if !self.core.writable {
            return Ok(());
        }
        self.container.flush(&self.core)
    }

    /// Releases `blocks` of a dynamic or differencing file in place (compact): see
    /// `Sparse::release_blocks`.
    pub(crate) fn release_blocks(&self, blocks: &[u64]) -> Result<()> {
        self.check_writable()?;
        self.sparse()?.release_blocks(&self.core, blocks)
    }

    /// Moves blocks of a dynamic or differencing file in place (compact), as one batch:
    /// see `Sparse::move_blocks`.
    pub(crate) fn move_blocks(&self, moves: &[(u64, u64, u64)], buf: &mut Vec<u8>) -> Result<()> {
        self.check_writable()?;
        let read = |b: &mut [u8], at: u64| self.read_data_mapped(b, at);
        self.sparse()?.move_blocks(&self.core, moves, buf, &read)
    }

    /// Shortens a dynamic or differencing file to its live blocks and metadata (compact,
    /// repair): see `Sparse::shorten`. Returns where the footer is.
    pub(crate) fn shorten(&self) -> Result<u64> {
        self.check_writable()?;
        self.sparse()?.shorten(&self.core)
    }

    /// Appends `payloads` (locator texts, already encoded) as new metadata of a dynamic
    /// or differencing file: see `Sparse::append_metadata`. Returns their offsets.
    pub(crate) fn append_metadata(&mut self, payloads: &[Vec<u8>]) -> Result<Vec<u64>> {
        self.check_writable()?;
        let (s, core) = self.sparse_mut("a dynamic or differencing disk")?;
        s.append_metadata(core, payloads)
    }

    /// What a resize of this file to `new` bytes will do; refuses what the container
    /// cannot do.
    pub(crate) fn plan_resize(&self, new: u64) -> Result<ResizePlan> {
        self.container.plan_resize(&self.core, new)
    }

    /// Runs a resize [`VhdFile::plan_resize`] planned; returns the blocks released.
    pub(crate) fn resize(
        &mut self,
        plan: ResizePlan,
        job: ResizeJob,
        steps: &mut dyn ResizeSteps,
    ) -> Result<u64> {
        self.check_writable()?;
        self.container.resize(&mut self.core, plan, job, steps)
    }

    /// Rewrites the footer (at the end, and at offset 0 for dynamic and differencing
    /// disks) with new field values, durably: end copy first, sync, then offset 0.
    pub fn rewrite_footer(&mut self, footer: Footer) -> Result<()> {
        self.check_writable()?;
        let bytes = footer.encode();
        let at = self.container.footer_write_offset(&self.core);
        self.core.write(&bytes, at, "writing the footer")?;
        self.core.sync("syncing the footer")?;
        if footer.disk_type.is_sparse() || container_as::<HostDrive>(self).is_some() {
            self.core.write(&bytes, 0, "writing the footer copy")?;
            self.core.sync("syncing the footer copy")?;
        }
        self.core.footer =
            Footer::decode(&bytes).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(())
    }

    /// Rewrites the dynamic header durably (e.g. a new parent timestamp after a merge).
    pub fn rewrite_header(&mut self, header: DynamicHeader) -> Result<()> {
        self.check_writable()?;
        let (s, core) = self.sparse_mut("expected a dynamic or differencing disk")?;
        s.rewrite_header(core, header)
    }
}
