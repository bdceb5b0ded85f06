//! One VHD file: its footer, and for dynamic and differencing disks its header, BAT and
//! locators; or a host-drive stub and its device; or a raw image. Answers "where do the
//! bytes of this virtual range live in this file" and writes into it crash-safely.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::spec::bitmap::{set_range, SectorBitmap};
use crate::spec::footer::{DISK_TYPE_HOST_DRIVE_STUB, POISON_COOKIE};
use crate::spec::header::check_block_size;
use crate::spec::hostdrive::HOST_DRIVE_HEADER_SIZE;
use crate::spec::layout::BAT_CHUNK_BYTES;
use crate::spec::{
    Bat, DiskType, DynamicHeader, Footer, HostDriveHeader, Severity, SparseLayout,
    BAT_ENTRY_UNUSED, FOOTER_COOKIE, FOOTER_SIZE, HEADER_SIZE, SECTOR_SIZE,
};

use super::backend::{Backend, FileBackend};
use super::hostdrive;
use super::open::{open_file, Accept};
use super::OpenOptions;

/// Where a range of one file's virtual bytes lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerExtent {
    /// Stored in this file (or its host device) at `file_offset`.
    Data {
        /// Byte offset in the file (or device).
        file_offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Not stored here: reads as zeros in a parentless disk.
    Zero {
        /// Length in bytes.
        len: u64,
    },
    /// Not stored here: comes from the parent.
    Parent {
        /// Length in bytes.
        len: u64,
    },
}

impl LayerExtent {
    /// Length of the extent.
    pub fn len(&self) -> u64 {
        match *self {
            LayerExtent::Data { len, .. }
            | LayerExtent::Zero { len }
            | LayerExtent::Parent { len } => len,
        }
    }

    /// Whether the extent is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which footer copy an image was opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FooterSource {
    /// The footer at the end of the file (the normal case).
    End,
    /// The 511-byte footer of Virtual PC before 2004.
    ShortEnd,
    /// The copy at offset 0, because the footer at the end is damaged.
    Copy,
}

/// The layout-specific part of an open file.
#[derive(Debug)]
pub(crate) enum Layout {
    Raw,
    Fixed,
    Sparse(Box<Sparse>),
    HostDrive(HostDrive),
}

#[derive(Debug)]
pub(crate) struct Sparse {
    pub header: DynamicHeader,
    pub header_offset: u64,
    pub bat: RwLock<Bat>,
    pub block_size: u64,
    pub bitmap_size: u64,
    /// Byte ranges taken by metadata: footer copy, header, BAT, locator payloads, Xen's
    /// batmap.
    pub metadata: Vec<(u64, u64)>,
    pub state: Mutex<SparseState>,
    /// Xen's batmap, for files blktap wrote.
    pub batmap: Mutex<Option<super::batmap::Batmap>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SparseState {
    /// Where the next block's bitmap may start (before alignment).
    pub next_free: u64,
    /// Where the trailing footer is.
    pub footer_at: u64,
    /// The trailing footer is missing or damaged (opened from the copy at offset 0): the
    /// next write rewrites it at `footer_at` even when no block is allocated past it.
    pub footer_stale: bool,
}

#[derive(Debug)]
pub(crate) struct HostDrive {
    pub header: Mutex<HostDriveHeader>,
    pub device: Arc<dyn Backend>,
    pub device_path: PathBuf,
    pub dirty_identity: Mutex<bool>,
}

/// One open VHD file (one level of a chain).
#[derive(Debug)]
pub struct VhdFile {
    path: PathBuf,
    backend: Arc<dyn Backend>,
    writable: bool,
    footer: Footer,
    footer_source: FooterSource,
    file_len: u64,
    pub(crate) layout: Layout,
    warnings: Vec<String>,
    /// Stored ranges of a read-only raw or fixed file (`SEEK_DATA`/`SEEK_HOLE`, found once).
    data_map: std::sync::OnceLock<Vec<(u64, u64)>>,
}

/// Block data is placed so that it starts on this boundary (bitmap just before it), as
/// Windows and blktap do: page-aligned data for the page cache and memory maps.
pub const DATA_ALIGNMENT: u64 = 4096;

impl VhdFile {
    /// Opens `path` as a VHD (read-only unless `opts.writable`).
    /// Regular files and block devices are accepted (the caller named the path); use
    /// [`VhdFile::open_regular`] for paths found inside an image.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<VhdFile> {
        let file = open_file(path, opts.writable, Accept::RegularOrBlock)?;
        let backend: Arc<dyn Backend> = Arc::new(FileBackend::with_path(file, path));
        VhdFile::from_backend(path, backend, opts)
    }

    /// Opens `path` as a VHD as [`VhdFile::open`] does, but only if it is a regular file
    /// (parents found through locators).
    pub fn open_regular(path: &Path, opts: &OpenOptions) -> Result<VhdFile> {
        let file = open_file(path, opts.writable, Accept::Regular)?;
        let backend: Arc<dyn Backend> = Arc::new(FileBackend::with_path(file, path));
        VhdFile::from_backend(path, backend, opts)
    }

    /// Opens `path` as a VHD if it has a footer, else as a raw image.
    pub fn open_any(path: &Path, opts: &OpenOptions) -> Result<VhdFile> {
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
        VhdFile::raw(path, backend, opts.writable)
    }

    /// Wraps a raw image: every byte is disk data, the file's length is the disk's size.
    pub fn raw(path: &Path, backend: Arc<dyn Backend>, writable: bool) -> Result<VhdFile> {
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
        path: &Path,
        backend: Arc<dyn Backend>,
        opts: &OpenOptions,
    ) -> Result<VhdFile> {
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
                Severity::Warning => warnings.push(p.to_string()),
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

    /// Reads the bitmap of an allocated block.
    pub(crate) fn read_bitmap(&self, s: &Sparse, block_offset: u64) -> Result<Vec<u8>> {
        let mut bm = vec![0u8; s.bitmap_size as usize];
        self.backend
            .read_exact_at(&mut bm, block_offset)
            .map_err(|e| Error::io(&self.path, "reading a sector bitmap", block_offset, e))?;
        Ok(bm)
    }

    /// Where the bytes of `offset..offset + len` (within the virtual size) live in this
    /// file, in order. Unstored parts are `Parent` for differencing disks and `Zero`
    /// otherwise.
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<LayerExtent>> {
        let mut out = Vec::new();
        let size = self.virtual_size();
        let end = offset.saturating_add(len).min(size);
        let mut pos = offset.min(size);
        let absent = |len| {
            if self.is_differencing() {
                LayerExtent::Parent { len }
            } else {
                LayerExtent::Zero { len }
            }
        };
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
            Layout::Sparse(s) => {
                let bat = s.bat.read().unwrap_or_else(|e| e.into_inner());
                while pos < end {
                    let block = pos / s.block_size;
                    let in_block = pos % s.block_size;
                    let n = (s.block_size - in_block).min(end - pos);
                    match bat.block_offset(block) {
                        None => push(&mut out, absent(n)),
                        Some(boff) => {
                            let bm = self.read_bitmap(s, boff)?;
                            let bitmap = SectorBitmap::new(&bm);
                            let data = boff + s.bitmap_size;
                            let mut p = in_block;
                            let stop = in_block + n;
                            while p < stop {
                                let sector = p / SECTOR_SIZE;
                                let last_sector = (stop - 1) / SECTOR_SIZE;
                                let run = bitmap.run_length(sector, last_sector - sector + 1);
                                let run_end = ((sector + run) * SECTOR_SIZE).min(stop);
                                let l = run_end - p;
                                if bitmap.is_set(sector) {
                                    push(
                                        &mut out,
                                        LayerExtent::Data {
                                            file_offset: data + p,
                                            len: l,
                                        },
                                    );
                                } else {
                                    push(&mut out, absent(l));
                                }
                                p = run_end;
                            }
                        }
                    }
                    pos += n;
                }
            }
        }
        Ok(out)
    }

    /// Reads stored bytes at a file offset given by a `Data` extent through a read-only
    /// memory map of that window when the bytes live in a file, by `pread` otherwise.
    pub fn read_data_mapped(&self, buf: &mut [u8], file_offset: u64) -> Result<()> {
        let (file, path) = match &self.layout {
            Layout::HostDrive(h) => (h.device.as_file(), &h.device_path),
            _ => (self.backend.as_file(), &self.path),
        };
        match file {
            Some(f) => super::mmap::copy_mapped(f, file_offset, buf)
                .map_err(|e| Error::io(path, "reading mapped disk data", file_offset, e)),
            None => self.read_data(buf, file_offset),
        }
    }

    /// Maps the stored bytes of a `Data` extent read-only, when they live in a file,
    /// faulting them in at once.
    pub fn map_data(&self, file_offset: u64, len: u64) -> Option<Result<super::Window>> {
        self.map_range(file_offset, len, true)
    }

    /// Maps `len` bytes at `file_offset` of the file holding the data read-only, when it
    /// is a file; pages fault in when read, or through [`super::Window::populate`].
    pub fn map_range(
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
            super::mmap::map_window(file, file_offset, len, populate)
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

    fn check_writable(&self) -> Result<()> {
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

    fn write_sparse(&self, s: &Sparse, runs: &[(u64, &[u8])]) -> Result<()> {
        let io = |doing, at| move |e| Error::io(&self.path, doing, at, e);
        let mut state = s.state.lock().unwrap_or_else(|e| e.into_inner());
        let old_len = state.footer_at + FOOTER_SIZE as u64;
        let stride = s.bitmap_size + s.block_size;

        // Plan: split into block pieces; place new blocks.
        struct Piece<'d> {
            block: u64,
            in_block: u64,
            data: &'d [u8],
            block_offset: u64,
            new: bool,
        }
        let mut pieces = Vec::new();
        let mut next_free = state.next_free;
        {
            let bat = s.bat.read().unwrap_or_else(|e| e.into_inner());
            for &(offset, data) in runs {
                let mut pos = offset;
                let end = offset + data.len() as u64;
                while pos < end {
                    let block = pos / s.block_size;
                    let in_block = pos % s.block_size;
                    let n = (s.block_size - in_block).min(end - pos);
                    let src = &data[(pos - offset) as usize..(pos - offset + n) as usize];
                    let (block_offset, new) = match bat.block_offset(block) {
                        Some(o) => (o, false),
                        None => match pieces.iter().find(|p: &&Piece| p.block == block && p.new) {
                            Some(p) => (p.block_offset, true),
                            None => {
                                let at = align_block(next_free, s.bitmap_size);
                                next_free = at + stride;
                                (at, true)
                            }
                        },
                    };
                    pieces.push(Piece {
                        block,
                        in_block,
                        data: src,
                        block_offset,
                        new,
                    });
                    pos += n;
                }
            }
        }
        let new_blocks: Vec<(u64, u64)> = {
            let mut v: Vec<(u64, u64)> = pieces
                .iter()
                .filter(|p| p.new)
                .map(|p| (p.block, p.block_offset))
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        for &(_, at) in &new_blocks {
            if (at / SECTOR_SIZE) >= u64::from(BAT_ENTRY_UNUSED) {
                return Err(Error::Unsupported {
                    path: self.path.clone(),
                    detail: "the file would grow past 2 TiB, beyond what a BAT entry can address"
                        .into(),
                });
            }
        }

        // Step 1: footer at the new end, durable before any block write can overwrite the
        // old one or extend the file.
        let new_footer_at = next_free.max(state.footer_at);
        if new_footer_at != state.footer_at || state.footer_stale {
            let bytes = self.footer.encode();
            self.backend
                .write_all_at(&bytes, new_footer_at)
                .map_err(io("writing the footer at the new end", new_footer_at))?;
            self.backend
                .sync()
                .map_err(|e| Error::file(&self.path, "syncing the footer at the new end", e))?;
        }
        // The space is taken from here on: if a later step fails, it stays unreferenced
        // (a leak, as after a crash) rather than being handed to another block while the
        // in-memory or on-disk BAT may already point into it.
        state.next_free = next_free.max(state.next_free);
        state.footer_at = new_footer_at;
        state.footer_stale = false;

        // Step 2: new blocks (bitmap + data, zero-filled where old bytes lie) and data of
        // existing blocks.
        let differencing = self.is_differencing();
        for &(block, at) in &new_blocks {
            // A dynamic disk's new block is wholly its own (what is not written is
            // zero-filled or past the old end): every bit set, as Windows, disk2vhd,
            // mkimg and qemu write it, so that every reader reads it alike (libvhdi's bulk
            // reads return zeros for data behind partly set bitmaps of small blocks). A
            // differencing block sets only the bits of the sectors it holds.
            let mut bitmap = vec![if differencing { 0u8 } else { 0xFF }; s.bitmap_size as usize];
            for p in pieces.iter().filter(|p| differencing && p.block == block) {
                let first = p.in_block / SECTOR_SIZE;
                set_range(&mut bitmap, first, p.data.len() as u64 / SECTOR_SIZE);
            }
            self.backend
                .write_all_at(&bitmap, at)
                .map_err(io("writing a new block's bitmap", at))?;
            // Zero whatever of the data area lies inside the old file contents.
            let data_at = at + s.bitmap_size;
            if data_at < old_len {
                let zero_end = (data_at + s.block_size).min(old_len);
                let zeros = vec![0u8; (zero_end - data_at) as usize];
                self.backend
                    .write_all_at(&zeros, data_at)
                    .map_err(io("zero-filling a new block", data_at))?;
            }
        }
        for p in &pieces {
            let at = p.block_offset + s.bitmap_size + p.in_block;
            self.backend
                .write_all_at(p.data, at)
                .map_err(io("writing block data", at))?;
        }
        // Step 3.
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, "syncing block data", e))?;

        // Step 4: bitmap bits of existing blocks, then BAT sectors of new blocks.
        for p in pieces.iter().filter(|p| !p.new) {
            let mut bm = self.read_bitmap(s, p.block_offset)?;
            let before = bm.clone();
            let first = p.in_block / SECTOR_SIZE;
            let count = p.data.len() as u64 / SECTOR_SIZE;
            set_range(&mut bm, first, count);
            if bm != before {
                // Rewrite only the bitmap sectors that changed.
                for (i, (a, b)) in bm.chunks(512).zip(before.chunks(512)).enumerate() {
                    if a != b {
                        let at = p.block_offset + i as u64 * SECTOR_SIZE;
                        self.backend
                            .write_all_at(a, at)
                            .map_err(io("updating a sector bitmap", at))?;
                    }
                }
            }
        }
        if !new_blocks.is_empty() {
            let mut bat = s.bat.write().unwrap_or_else(|e| e.into_inner());
            for &(block, at) in &new_blocks {
                // Fits: checked against BAT_ENTRY_UNUSED above.
                bat.set(block, (at / SECTOR_SIZE) as u32);
            }
            let mut sectors: Vec<u64> = new_blocks
                .iter()
                .map(|&(b, _)| b * 4 / SECTOR_SIZE)
                .collect();
            sectors.dedup();
            for sector in sectors {
                let (_, bytes) = bat.sector_of(sector * SECTOR_SIZE / 4);
                let at = s.header.table_offset + sector * SECTOR_SIZE;
                self.backend
                    .write_all_at(&bytes, at)
                    .map_err(io("writing a BAT sector", at))?;
            }
        }
        // Step 5.
        self.backend
            .sync()
            .map_err(|e| Error::file(&self.path, "syncing the BAT", e))?;
        Ok(())
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
            hostdrive::refresh_identity(self, h)?;
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

/// The stored (non-hole) ranges of `0..limit` of a flat file, from `SEEK_DATA` and
/// `SEEK_HOLE`. Where the file system cannot tell, everything is data.
fn data_ranges(file: &File, limit: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let mut out = Vec::new();
    let mut p = 0;
    while p < limit {
        match seek(file, SeekFrom::Data(p)) {
            Ok(d) if d >= limit => break,
            Ok(d) => {
                let start = d.max(p);
                let hole = seek(file, SeekFrom::Hole(start))
                    .unwrap_or(limit)
                    .clamp(start + 1, limit);
                out.push((start, hole));
                p = hole;
            }
            // ENXIO: no data at or after `p`.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => {
                out.push((p, limit));
                break;
            }
        }
    }
    out
}

/// Splits `pos..end` into `Data` and `Zero` extents along sorted stored ranges.
fn map_extents(map: &[(u64, u64)], pos: u64, end: u64, out: &mut Vec<LayerExtent>) {
    let mut p = pos;
    // First range that ends after `pos`.
    let mut i = map.partition_point(|&(_, e)| e <= pos);
    while p < end {
        match map.get(i) {
            Some(&(s, e)) if s < end => {
                if s > p {
                    push(out, LayerExtent::Zero { len: s - p });
                    p = s;
                }
                let stop = e.min(end);
                push(
                    out,
                    LayerExtent::Data {
                        file_offset: p,
                        len: stop - p,
                    },
                );
                p = stop;
                i += 1;
            }
            _ => {
                push(out, LayerExtent::Zero { len: end - p });
                p = end;
            }
        }
    }
}

fn push(out: &mut Vec<LayerExtent>, e: LayerExtent) {
    if let Some(last) = out.last_mut() {
        match (last, e) {
            (LayerExtent::Zero { len }, LayerExtent::Zero { len: l })
            | (LayerExtent::Parent { len }, LayerExtent::Parent { len: l }) => {
                *len += l;
                return;
            }
            (
                LayerExtent::Data { file_offset, len },
                LayerExtent::Data {
                    file_offset: o,
                    len: l,
                },
            ) if *file_offset + *len == o => {
                *len += l;
                return;
            }
            _ => {}
        }
    }
    out.push(e);
}

/// Where a new block goes at or after `free`: the bitmap ends where the data starts, on
/// a [`DATA_ALIGNMENT`] boundary.
pub(crate) fn align_block(free: u64, bitmap_size: u64) -> u64 {
    let data = (free + bitmap_size).div_ceil(DATA_ALIGNMENT) * DATA_ALIGNMENT;
    data - bitmap_size
}

/// The format another tool's image (or a damaged VHD) starts with, by its signature.
fn other_format(b: &dyn Backend) -> Option<&'static str> {
    let len = b.len().ok()?;
    let mut head = vec![0u8; (len.min(crate::spec::sniff::SNIFF_BYTES as u64)) as usize];
    b.read_exact_at(&mut head, 0).ok()?;
    crate::spec::sniff::identify(&head)
}

/// Whether the backend has a `conectix` cookie at its end or at offset 0.
pub(crate) fn looks_like_vhd(b: &dyn Backend) -> bool {
    let Ok(len) = b.len() else { return false };
    let mut cookie = [0u8; 8];
    let at = |off: u64, c: &mut [u8; 8]| b.read_exact_at(c, off).is_ok() && *c == FOOTER_COOKIE;
    (len >= 512 && at(len - 512, &mut cookie))
        || (len >= 511 && len % 512 == 511 && at(len - 511, &mut cookie))
        || (len >= 512 && at(0, &mut cookie))
}

fn read_footer_at(b: &dyn Backend, at: u64, short: bool) -> Option<Footer> {
    let mut buf = [0u8; FOOTER_SIZE];
    let n = if short { FOOTER_SIZE - 1 } else { FOOTER_SIZE };
    b.read_exact_at(&mut buf[..n], at).ok()?;
    Footer::decode(&buf).ok()
}

/// Picks the footer: the one at the end, the 511-byte one of old Virtual PC, or the copy
/// at offset 0 when the end is damaged. Returns it, where it came from, and where the
/// trailing footer sits (the offset where disk data must end).
fn read_footer(
    path: &Path,
    b: &dyn Backend,
    len: u64,
    opts: &OpenOptions,
    warnings: &mut Vec<String>,
) -> Result<(Footer, FooterSource, u64)> {
    if len < FOOTER_SIZE as u64 {
        return Err(Error::NotVhd {
            path: path.to_owned(),
            detail: format!("the file is {len} bytes, too short to hold a 512-byte footer"),
        });
    }
    let end = read_footer_at(b, len - 512, false);
    let short = if len % 512 == 511 {
        read_footer_at(b, len - 511, true)
    } else {
        None
    };
    let copy = read_footer_at(b, 0, false).filter(|f| f.cookie_ok() && f.disk_type.is_sparse());
    let good = |f: &Option<Footer>| f.as_ref().is_some_and(|f| f.cookie_ok() && f.checksum_ok());
    if good(&end) {
        return Ok((end.expect("checked"), FooterSource::End, len - 512));
    }
    if good(&short) {
        return Ok((short.expect("checked"), FooterSource::ShortEnd, len - 511));
    }
    if end.as_ref().is_some_and(|f| f.cookie == POISON_COOKIE) {
        return Err(Error::Unsupported {
            path: path.to_owned(),
            detail:
                "the footer cookie is `v_poison`: the disk was disabled on purpose by XenServer"
                    .into(),
        });
    }
    let end_state = match &end {
        Some(f) if f.cookie_ok() => format!(
            "the footer at {:#x} has a bad checksum (stored {:#010x}, computed {:#010x})",
            len - 512,
            f.checksum,
            f.computed_checksum()
        ),
        _ => format!("there is no footer at {:#x}", len - 512),
    };
    if let Some(c) = copy.as_ref().filter(|c| c.checksum_ok()) {
        warnings.push(format!(
            "{end_state}; using the footer copy at offset 0 (check --repair restores it)"
        ));
        // Blocks may reach the end of the file when the trailing footer was lost.
        let footer_at = if end.as_ref().is_some_and(|f| f.cookie_ok()) {
            len - 512
        } else {
            len
        };
        return Ok((c.clone(), FooterSource::Copy, footer_at));
    }
    // A footer with the right cookie but a bad checksum, and no better copy: libvhdi and
    // VirtualBox read such files; vhdkit does too unless asked to be strict, and says so.
    for (cand, source, at) in [
        (&end, FooterSource::End, len - 512),
        (&short, FooterSource::ShortEnd, len.saturating_sub(511)),
    ] {
        if let Some(f) = cand.as_ref().filter(|f| f.cookie_ok()) {
            if opts.strict {
                return Err(Error::corrupt(
                    path,
                    "footer",
                    at,
                    format!(
                        "checksum stored {:#010x}, computed {:#010x}",
                        f.checksum,
                        f.computed_checksum()
                    ),
                )
                .with_field("checksum"));
            }
            warnings.push(format!(
                "footer checksum is wrong (stored {:#010x}, computed {:#010x}); reading anyway",
                f.checksum,
                f.computed_checksum()
            ));
            return Ok((f.clone(), source, at));
        }
    }
    if let Some(c) = copy {
        if !opts.strict {
            warnings.push(format!(
                "{end_state}; the footer copy at offset 0 has a bad checksum too; reading it anyway"
            ));
            return Ok((c, FooterSource::Copy, len));
        }
    }
    let what = other_format(b)
        .map(|f| format!("; it is {f}"))
        .unwrap_or_default();
    Err(Error::NotVhd {
        path: path.to_owned(),
        detail: format!(
            "no `conectix` footer at the end ({:#x}) or at offset 0{what}",
            len - 512
        ),
    })
}

#[allow(clippy::too_many_arguments)]
fn open_sparse(
    path: &Path,
    b: &dyn Backend,
    footer: &Footer,
    len: u64,
    footer_at: u64,
    source: FooterSource,
    opts: &OpenOptions,
    warnings: &mut Vec<String>,
) -> Result<Sparse> {
    let hoff = footer.data_offset;
    hoff.checked_add(HEADER_SIZE as u64)
        .filter(|&e| e <= len)
        .ok_or_else(|| {
            Error::corrupt(
                path,
                "footer",
                footer_at,
                format!("data offset {hoff:#x} points past the end of the file ({len:#x})"),
            )
            .with_field("data offset")
        })?;
    let mut raw = [0u8; HEADER_SIZE];
    b.read_exact_at(&mut raw, hoff)
        .map_err(|e| Error::io(path, "reading the dynamic header", hoff, e))?;
    let header = DynamicHeader::decode(&raw).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let differencing = footer.disk_type == DiskType::Differencing;
    for p in header.validate(footer.current_size, Some(len), differencing) {
        match (p.severity, p.field) {
            (Severity::Error, "checksum") if !opts.strict => {
                warnings.push(format!("{p}; reading anyway"))
            }
            (Severity::Error, field) => {
                return Err(
                    Error::corrupt(path, "dynamic header", hoff, p.message).with_field(field)
                )
            }
            (Severity::Warning, _) => warnings.push(p.to_string()),
            (Severity::Info, _) => {}
        }
    }
    check_block_size(header.block_size)
        .map_err(|m| Error::corrupt(path, "dynamic header", hoff + 32, m))?;
    let layout = SparseLayout::new(&header, hoff, footer.current_size, len, footer_at);
    let batmap = super::batmap::find(path, b, footer, &header, footer_at, opts.writable, warnings)?;
    let layout = match &batmap {
        Some(m) => layout.with_batmap(m.header_offset, &m.header),
        None => layout,
    };
    for &slot in &layout.ignored_locators {
        // No path is that long: a damaged entry, ignored rather than taken to claim a
        // region of the file that may well hold blocks.
        warnings.push(format!(
            "parent locator slot {slot}: length {} is absurd; ignored",
            header.locators[slot].data_length
        ));
    }
    if let (true, Some(&slot)) = (opts.writable, layout.clipped_locators.first()) {
        // A payload running past the end of the file is clipped, so growing the file
        // would put new blocks inside it, and the grown file would no longer open.
        let l = &header.locators[slot];
        return Err(Error::corrupt(
            path,
            "parent locator",
            hoff + (crate::spec::header::LOCATORS_OFFSET + slot * crate::spec::locator::LOCATOR_ENTRY_SIZE) as u64,
            format!(
                "slot {slot}: payload at {:#x} ({} bytes) runs past the end of the file ({len:#x}); new blocks would land inside it (open read-only, or repair the locator)",
                l.data_offset, l.data_length
            ),
        )
        .with_field("data offset"));
    }
    // Only the entries that cover the virtual size matter; any beyond are padding.
    let toff = header.table_offset;
    let bat_bytes = layout.used_bat_bytes();
    if toff.saturating_add(bat_bytes) > len {
        return Err(Error::corrupt(
            path,
            "BAT",
            toff,
            format!(
                "{} entries run past the end of the file ({len:#x})",
                layout.used_entries
            ),
        ));
    }
    // Read and validate chunk by chunk: memory follows the entries the file really
    // holds (a BAT in a sparse file's hole reads as zeros, which fail in the first
    // chunk), never the sizes its fields claim.
    let mut bat = Bat::from_entries(Vec::new());
    let mut scan = layout.scan().list_at_most(1);
    let mut chunk = vec![0u8; (bat_bytes as usize).min(BAT_CHUNK_BYTES)];
    let mut done = 0u64;
    while done < bat_bytes && !scan.has_problems() {
        let n = (bat_bytes - done).min(chunk.len() as u64) as usize;
        b.read_exact_at(&mut chunk[..n], toff + done)
            .map_err(|e| Error::io(path, "reading the BAT", toff + done, e))?;
        let first = bat.len() as u64;
        bat.extend_from_bytes(&chunk[..n]);
        scan.push(first, &bat.entries()[first as usize..]);
        done += n as u64;
    }
    let found = scan.finish();
    if let Some(p) = found.problems.first() {
        return Err(Error::corrupt(path, "BAT", p.offset(), p.to_string()));
    }
    let next_free = layout.data_end(found.blocks_end);
    let footer_pos = if source == FooterSource::Copy {
        // The trailing footer is damaged: the next write puts a good one past the data.
        footer_at.max(next_free)
    } else {
        footer_at
    };
    let block_size = layout.block_size;
    let bitmap_size = layout.bitmap_size;
    let metadata = layout.metadata;
    Ok(Sparse {
        header,
        header_offset: hoff,
        bat: RwLock::new(bat),
        block_size,
        bitmap_size,
        metadata,
        batmap: Mutex::new(batmap),
        state: Mutex::new(SparseState {
            next_free,
            footer_at: footer_pos,
            footer_stale: source == FooterSource::Copy,
        }),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_extents_splits_a_range_along_stored_ranges() {
        let map = [(4096, 8192), (16384, 20480)];
        let mut out = Vec::new();
        map_extents(&map, 0, 24576, &mut out);
        assert_eq!(
            out,
            vec![
                LayerExtent::Zero { len: 4096 },
                LayerExtent::Data {
                    file_offset: 4096,
                    len: 4096
                },
                LayerExtent::Zero { len: 8192 },
                LayerExtent::Data {
                    file_offset: 16384,
                    len: 4096
                },
                LayerExtent::Zero { len: 4096 },
            ]
        );
        let mut inner = Vec::new();
        map_extents(&map, 5000, 6000, &mut inner);
        assert_eq!(
            inner,
            vec![LayerExtent::Data {
                file_offset: 5000,
                len: 1000
            }]
        );
        let mut none = Vec::new();
        map_extents(&[], 0, 100, &mut none);
        assert_eq!(none, vec![LayerExtent::Zero { len: 100 }]);
    }

    #[test]
    fn data_ranges_of_a_sparse_file_find_the_written_parts() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("sparse.raw");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(8 << 20).expect("len");
        std::os::unix::fs::FileExt::write_all_at(&f, &[1u8; 4096], 3 << 20).expect("write");
        let ranges = data_ranges(&f, 8 << 20);
        // File systems without hole reporting call it all data; either way the written
        // page is inside a stored range.
        assert!(ranges
            .iter()
            .any(|&(s, e)| s <= 3 << 20 && (3 << 20) + 4096 <= e));
        assert!(ranges.iter().all(|&(s, e)| s < e && e <= 8 << 20));
    }
}
