//! Creating disks: fixed, dynamic, differencing and host-drive.
//!
//! Every disk is written as an unnamed file in the target's directory (or under a
//! temporary name where the file system cannot), made durable, then given the target's
//! name without replacing anything, and the directory is synced: the target name appears
//! only when the file is complete.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::layout::{NewParent, NewSparse};
use crate::spec::locator::PlatformCode;
use crate::spec::{
    DiskType, Footer, VhdTime, DEFAULT_BLOCK_SIZE, FOOTER_SIZE, MAX_CREATE_SIZE, MIN_CREATE_SIZE,
    SECTOR_SIZE,
};

use super::backend::{Backend, FileBackend};
use super::chain::Disk;
use super::newfile::{allocate, write_new};
use super::newvhdx::{self, ContainerFormat};
use super::output::DEFAULT_MODE;
use super::{DiskKind, HostDrives, OpenOptions};

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Kind of disk.
    pub kind: DiskKind,
    /// Virtual size in bytes (fixed and dynamic; a multiple of 512 from 3 MiB to 2040 GiB).
    pub size: u64,
    /// Block size of dynamic and differencing disks: a power of two from 4 KiB to
    /// 256 MiB. `None`: 2 MiB for a dynamic disk, the parent's block size for a
    /// differencing disk (2 MiB under a fixed parent), as Virtual Server and Windows do —
    /// azure-vhd-utils fails on, and Xen Orchestra's vhd-lib misreads, chains whose
    /// levels differ. Fixed disks have no blocks: ignored.
    pub block_size: Option<u32>,
    /// Parent of a differencing disk; a relative path is looked up next to the child
    /// first, then from the current directory.
    pub parent: Option<PathBuf>,
    /// Host device (or file) of a host-drive disk.
    pub host_drive: Option<PathBuf>,
    /// Create the host-drive link read-only.
    pub read_only: bool,
    /// Fixed disks: leave the data area a hole instead of allocating it. By default a
    /// fixed disk's space is allocated up front (`fallocate`, no zeros written), as
    /// Virtual Server and Hyper-V do: a volume too small fails at once with
    /// `ERROR_DISK_FULL` and leaves nothing, instead of failing on some later write.
    pub sparse: bool,
    /// Permission bits of the new file, before the umask. `None`: a differencing disk
    /// takes its parent chain's (see [`super::output::source_mode`]: the child receives
    /// the writes meant for a disk only its owner may read), any other disk 0666.
    pub mode: Option<u32>,
    /// The container: VHD or VHDX. `None`: by the path's extension (`.vhdx` and
    /// `.avhdx` make a VHDX, anything else a VHD; see [`ContainerFormat::for_path`]).
    /// A VHDX's block size defaults to 32 MiB (Hyper-V's; a differencing disk's to its
    /// parent's) and may be a power of two from 1 MiB to 256 MiB; its size may reach
    /// 64 TiB. A differencing VHDX needs a VHDX parent, a differencing VHD a VHD parent.
    pub format: Option<ContainerFormat>,
    /// A VHDX's logical sector size, 512 or 4096 (`None`: 512; a differencing disk's
    /// is its parent's). The physical sector size is 4096, as Hyper-V writes it (a
    /// differencing disk's is its parent's). A VHD has 512-byte sectors only.
    pub logical_sector_size: Option<u32>,
}

impl CreateOptions {
    /// A fixed or dynamic disk of `size` bytes.
    pub fn new(kind: DiskKind, size: u64) -> CreateOptions {
        CreateOptions {
            kind,
            size,
            block_size: None,
            parent: None,
            host_drive: None,
            read_only: false,
            sparse: false,
            mode: None,
            format: None,
            logical_sector_size: None,
        }
    }

    /// A differencing disk over `parent`.
    pub fn differencing(parent: impl AsRef<Path>) -> CreateOptions {
        CreateOptions {
            parent: Some(parent.as_ref().to_owned()),
            ..CreateOptions::new(DiskKind::Differencing, 0)
        }
    }

    /// A host-drive stub linking `device`.
    pub fn host_drive(device: impl AsRef<Path>, read_only: bool) -> CreateOptions {
        CreateOptions {
            host_drive: Some(device.as_ref().to_owned()),
            read_only,
            ..CreateOptions::new(DiskKind::HostDrive, 0)
        }
    }

    /// Sets the block size.
    pub fn block_size(mut self, block_size: u32) -> CreateOptions {
        self.block_size = Some(block_size);
        self
    }

    /// Sets the container (see [`CreateOptions::format`]).
    ///
    /// ```
    /// use vhdkit_format::image::ContainerFormat;
    /// use vhdkit_format::{CreateOptions, Disk, DiskKind};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let opts = CreateOptions::new(DiskKind::Dynamic, 64 << 20).format(ContainerFormat::Vhdx);
    /// Disk::create(dir.path().join("disk.img"), &opts).unwrap();
    /// let bytes = std::fs::read(dir.path().join("disk.img")).unwrap();
    /// assert_eq!(&bytes[..8], b"vhdxfile");
    /// ```
    pub fn format(mut self, format: ContainerFormat) -> CreateOptions {
        self.format = Some(format);
        self
    }

    /// The container `path` gets: [`CreateOptions::format`], else by its extension.
    pub fn format_for(&self, path: impl AsRef<Path>) -> ContainerFormat {
        ContainerFormat::choose(self.format, path)
    }
}

/// The number of BAT entries a disk of `size` bytes in blocks of `block_size` needs, if
/// vhdkit creates tables that large (see [`crate::spec::MAX_CREATE_BAT_ENTRIES`]).
pub fn check_bat_entries(size: u64, block_size: u32) -> Result<u32> {
    let entries = size.div_ceil(u64::from(block_size));
    if entries > crate::spec::MAX_CREATE_BAT_ENTRIES {
        return Err(Error::InvalidArgument(format!(
            "block size {block_size} is too small for a {size}-byte disk: the BAT would have {entries} entries (at most {}); use a larger --block-size",
            crate::spec::MAX_CREATE_BAT_ENTRIES
        )));
    }
    // Fits: at most 2^26.
    Ok(entries as u32)
}

/// Checks what can be checked of `opts` before anything is written: the size of a
/// fixed or dynamic disk, the block size, that a differencing disk has a parent and a
/// host-drive disk a device.
pub fn check_create_options(opts: &CreateOptions) -> Result<()> {
    check_create_options_for(opts, opts.format.unwrap_or_default())
}

/// [`check_create_options`] for a disk of the container `format` (a VHDX has other
/// limits: see [`CreateOptions::format`]).
pub fn check_create_options_for(opts: &CreateOptions, format: ContainerFormat) -> Result<()> {
    if format == ContainerFormat::Vhdx {
        return check_vhdx_options(opts);
    }
    if opts.logical_sector_size.is_some_and(|l| l != 512) {
        return Err(Error::InvalidArgument(
            "a VHD has 512-byte sectors; a 4096-byte logical sector needs a VHDX".into(),
        ));
    }
    if matches!(opts.kind, DiskKind::Fixed | DiskKind::Dynamic) {
        check_create_size(opts.size)?;
    }
    if let (DiskKind::Dynamic | DiskKind::Differencing, Some(bs)) = (opts.kind, opts.block_size) {
        crate::spec::header::check_create_block_size(bs).map_err(Error::InvalidArgument)?;
    }
    match opts.kind {
        DiskKind::Differencing if opts.parent.is_none() => Err(Error::InvalidArgument(
            "a differencing disk needs a parent".into(),
        )),
        DiskKind::HostDrive if opts.host_drive.is_none() => Err(Error::InvalidArgument(
            "a host-drive disk needs a host drive".into(),
        )),
        DiskKind::Raw => Err(Error::InvalidArgument(
            "vhdkit creates VHDs, not raw images".into(),
        )),
        _ => Ok(()),
    }
}

/// The checks of [`check_create_options`] for a VHDX.
fn check_vhdx_options(opts: &CreateOptions) -> Result<()> {
    if matches!(opts.kind, DiskKind::Fixed | DiskKind::Dynamic) {
        newvhdx::check_vhdx_size(opts.size, opts.logical_sector_size.unwrap_or(512))?;
    }
    if let Some(l) = opts.logical_sector_size {
        newvhdx::check_logical_sector(l)?;
    }
    if let Some(bs) = opts.block_size {
        newvhdx::check_vhdx_block_size(bs)?;
    }
    match opts.kind {
        DiskKind::Differencing if opts.parent.is_none() => Err(Error::InvalidArgument(
            "a differencing disk needs a parent".into(),
        )),
        DiskKind::HostDrive | DiskKind::Raw => Err(Error::InvalidArgument(format!(
            "a VHDX is fixed, dynamic or differencing; a {} disk is a VHD",
            opts.kind
        ))),
        _ => Ok(()),
    }
}

/// Checks a fixed or dynamic disk size against the Virtual Server limits.
pub fn check_create_size(size: u64) -> Result<()> {
    if size == 0 {
        // Virtual Server: a size of zero or less is an invalid argument, not a small disk.
        return Err(Error::InvalidArgument(
            "a disk of size 0: give a size".into(),
        ));
    }
    if size < MIN_CREATE_SIZE {
        return Err(Error::SizeTooSmall {
            size,
            detail: format!("the smallest disk is 3 MiB ({MIN_CREATE_SIZE} bytes)"),
        });
    }
    if size > MAX_CREATE_SIZE {
        return Err(Error::SizeTooLarge {
            size,
            detail: format!("the largest disk is 2040 GiB ({MAX_CREATE_SIZE} bytes)"),
        });
    }
    if !size.is_multiple_of(SECTOR_SIZE) {
        return Err(Error::InvalidArgument(format!(
            "size {size} is not a multiple of 512 bytes"
        )));
    }
    Ok(())
}

impl Disk {
    /// Creates a disk at `path`, which must not exist, and leaves it closed. The name
    /// appears only once the file is complete and durable.
    ///
    /// To write into the new disk at once, [`create_and_open`](Disk::create_and_open)
    /// creates it and returns it opened for writing.
    ///
    /// ```
    /// use vhdkit_format::{CreateOptions, Disk, DiskKind};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let base = dir.path().join("base.vhd");
    /// Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 64 << 20)).unwrap();
    /// Disk::create(dir.path().join("child.vhd"), &CreateOptions::differencing(&base)).unwrap();
    /// ```
    pub fn create(path: impl AsRef<Path>, opts: &CreateOptions) -> Result<()> {
        create_file(path.as_ref(), opts).map(drop)
    }

    /// Creates a disk at `path`, as [`create`](Disk::create) does, and opens it for
    /// writing (as [`open_rw`](Disk::open_rw) would, holding its exclusive lock until
    /// the `Disk` is dropped).
    ///
    /// A differencing disk opens over the parent named in `opts` (wherever it lies: the
    /// caller named it), a host-drive stub over the device named in `opts` (read-only
    /// when the link is). If the disk was created but cannot be opened (another process
    /// took its lock in between, say), the error says so and the new disk stays.
    ///
    /// ```
    /// use vhdkit_format::{CreateOptions, Disk, DiskKind};
    /// # fn main() -> vhdkit_format::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let base = dir.path().join("base.vhd");
    /// Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 64 << 20))?;
    /// let child = Disk::create_and_open(dir.path().join("child.vhd"), &CreateOptions::differencing(&base))?;
    /// child.write_at(b"only in the child", 1 << 20)?;
    /// child.flush()?;
    /// assert_eq!(child.layers().len(), 2);
    /// # Ok(()) }
    /// ```
    pub fn create_and_open(path: impl AsRef<Path>, opts: &CreateOptions) -> Result<Disk> {
        let path = path.as_ref();
        let open = match create_file(path, opts)? {
            Created::Plain => OpenOptions::new(),
            Created::Differencing { parent } => OpenOptions::new().parent(parent),
            Created::HostDrive { device } => OpenOptions::new().host_drives(if device.is_file() {
                HostDrives::BlockDevicesAndFiles
            } else {
                HostDrives::BlockDevices
            }),
        };
        let writable = !(opts.kind == DiskKind::HostDrive && opts.read_only);
        Disk::open_with(path, &open.writable(writable))
    }
}

/// What [`create_file`] made, and what opening it needs.
enum Created {
    /// A fixed or dynamic disk.
    Plain,
    /// A differencing disk over the parent at this (canonical) path.
    Differencing { parent: PathBuf },
    /// A host-drive stub linking this (canonical) device.
    HostDrive { device: PathBuf },
}

/// Creates the disk `opts` describes at `path`, which must not exist.
fn create_file(path: &Path, opts: &CreateOptions) -> Result<Created> {
    if path.symlink_metadata().is_ok() {
        return Err(Error::AlreadyExists {
            path: path.to_owned(),
        });
    }
    if opts.format_for(path) == ContainerFormat::Vhdx {
        check_create_options_for(opts, ContainerFormat::Vhdx)?;
        return Ok(match newvhdx::create_vhdx(path, opts)? {
            Some(parent) => Created::Differencing { parent },
            None => Created::Plain,
        });
    }
    match opts.kind {
        DiskKind::Fixed => {
            check_create_options(opts)?;
            let footer = Footer::new(DiskType::Fixed, opts.size);
            write_new(path, opts.mode.unwrap_or(DEFAULT_MODE), |b| {
                if !opts.sparse {
                    allocate(b.file(), opts.size + FOOTER_SIZE as u64)?;
                }
                b.set_len(opts.size)?;
                b.write_all_at(&footer.encode(), opts.size)
            })?;
            Ok(Created::Plain)
        }
        DiskKind::Dynamic => {
            check_create_options(opts)?;
            let block_size = opts.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
            let bytes = sparse_image(opts.size, block_size, None)?;
            write_new(path, opts.mode.unwrap_or(DEFAULT_MODE), |b| {
                b.write_all_at(&bytes, 0)
            })?;
            Ok(Created::Plain)
        }
        DiskKind::Differencing => {
            check_create_options(opts)?;
            let parent = opts.parent.as_deref().ok_or_else(|| {
                Error::InvalidArgument("a differencing disk needs a parent".into())
            })?;
            let link = ParentLink::resolve(path, parent)?;
            let block_size = opts
                .block_size
                .or(link.block_size)
                .unwrap_or(DEFAULT_BLOCK_SIZE);
            let bytes = sparse_image(link.size, block_size, Some(&link))?;
            write_new(path, opts.mode.unwrap_or(link.mode), |b| {
                b.write_all_at(&bytes, 0)
            })?;
            Ok(Created::Differencing { parent: link.path })
        }
        DiskKind::HostDrive => {
            let device = opts.host_drive.as_deref().ok_or_else(|| {
                Error::InvalidArgument("a host-drive disk needs a host drive".into())
            })?;
            let device = std::fs::canonicalize(device).map_err(|e| Error::HostDriveNotFound {
                path: path.to_owned(),
                device: device.to_owned(),
                detail: format!("cannot find it: {e}"),
            })?;
            let f = File::open(&device).map_err(|e| Error::HostDriveNotFound {
                path: path.to_owned(),
                device: device.clone(),
                detail: format!("cannot open it: {e}"),
            })?;
            let dev = FileBackend::new(f);
            let size = dev
                .len()
                .map_err(|e| Error::file(&device, "reading the size", e))?;
            if size == 0 || size % SECTOR_SIZE != 0 {
                return Err(Error::InvalidArgument(format!(
                    "host drive {} is {size} bytes: not a positive multiple of 512",
                    device.display()
                )));
            }
            let bytes = super::hostdrive::stub_bytes(&device, &dev, size, opts.read_only)?;
            write_new(path, opts.mode.unwrap_or(DEFAULT_MODE), |b| {
                b.write_all_at(&bytes, 0)
            })?;
            Ok(Created::HostDrive { device })
        }
        DiskKind::Raw => Err(Error::InvalidArgument(
            "vhdkit creates VHDs, not raw images".into(),
        )),
    }
}

/// What a child records about its parent (create, set-parent, merge --into).
#[derive(Debug, Clone)]
pub(crate) struct ParentLink {
    /// The parent's canonical path.
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    /// The parent's block size (`None` for a fixed parent).
    pub(crate) block_size: Option<u32>,
    pub(crate) unique_id: uuid::Uuid,
    pub(crate) timestamp: VhdTime,
    pub(crate) name: String,
    pub(crate) absolute: String,
    pub(crate) relative: String,
    /// The permission bits of the parent chain (a new child takes them).
    pub(crate) mode: u32,
}

impl ParentLink {
    /// The locators vhdkit writes for this parent: `W2ku` (absolute) in slot 0, `W2ru`
    /// (relative to the child) in slot 1 — see docs/parent-lookup.md.
    pub(crate) fn locators(&self) -> Vec<(PlatformCode, String)> {
        vec![
            (PlatformCode::W2ku, self.absolute.clone()),
            (PlatformCode::W2ru, self.relative.clone()),
        ]
    }

    /// The link from `child` (which may not exist yet) to `parent` (a path relative to
    /// the child's folder first, then to the current one): opens the parent's chain to
    /// check it is a fixed, dynamic or differencing VHD.
    pub(crate) fn resolve(child: &Path, parent: &Path) -> Result<ParentLink> {
        let (child_dir, parent_abs) = ParentLink::locate(child, parent)?;
        if newvhdx::is_vhdx_file(&parent_abs) {
            return Err(Error::WrongDiskType {
                path: parent_abs,
                found: "a VHDX".into(),
                expected: "a VHD child needs a VHD parent (Hyper-V never mixes VHD and VHDX \
                           in one chain); name the child .avhdx to create a VHDX"
                    .into(),
            });
        }
        // Host drives are not followed (only a host-drive stub gives `NotAllowed` here),
        // and a host-drive stub cannot be a parent anyway.
        let disk = match Disk::open_with(&parent_abs, &OpenOptions::new()) {
            Err(Error::NotAllowed { .. }) => {
                return Err(Error::WrongDiskType {
                    path: parent_abs,
                    found: DiskKind::HostDrive.to_string(),
                    expected: "a parent must be a fixed, dynamic or differencing VHD".into(),
                })
            }
            other => other?,
        };
        ParentLink::of_disk(&child_dir, parent_abs, &disk)
    }

    /// The link from a VHDX child (set-parent of a checkpoint) to `parent`, found as
    /// [`ParentLink::resolve`] finds it, which must be a VHDX file.
    pub(crate) fn resolve_vhdx(child: &Path, parent: &Path) -> Result<ParentLink> {
        let (child_dir, parent_abs) = ParentLink::locate(child, parent)?;
        if !newvhdx::is_vhdx_file(&parent_abs) {
            return Err(Error::WrongDiskType {
                path: parent_abs,
                found: "not a VHDX file".into(),
                expected: "a VHDX child needs a VHDX parent (Hyper-V never mixes VHD and \
                           VHDX in one chain)"
                    .into(),
            });
        }
        let disk = Disk::open_with(&parent_abs, &OpenOptions::new())?;
        ParentLink::of_disk(&child_dir, parent_abs, &disk)
    }

    /// The link from `child` to `parent` (as [`ParentLink::resolve`] finds it), taken
    /// from `disk`, the parent's chain the caller has open already (merge --into: the
    /// ancestor it wrote into), instead of opening it again.
    pub(crate) fn of_open(child: &Path, parent: &Path, disk: &Disk) -> Result<ParentLink> {
        let (child_dir, parent_abs) = ParentLink::locate(child, parent)?;
        ParentLink::of_disk(&child_dir, parent_abs, disk)
    }

    /// The child's canonical folder and the parent's canonical path: `parent` relative
    /// to the child's folder first, then to the current one.
    pub(crate) fn locate(child: &Path, parent: &Path) -> Result<(PathBuf, PathBuf)> {
        let child_dir = child
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let child_dir = std::fs::canonicalize(child_dir)
            .map_err(|e| Error::file(child_dir, "resolving the child's directory", e))?;
        let parent_path = if parent.is_relative() && child_dir.join(parent).is_file() {
            child_dir.join(parent)
        } else {
            parent.to_owned()
        };
        let parent_abs =
            std::fs::canonicalize(&parent_path).map_err(|_| Error::ParentNotFound {
                child: child.to_owned(),
                name: parent.display().to_string(),
                tried: vec![child_dir.join(parent), parent.to_owned()],
                refused: Vec::new(),
            })?;
        Ok((child_dir, parent_abs))
    }

    /// The link to the parent at `parent_abs`, whose chain `disk` is, from a child in
    /// `child_dir`.
    fn of_disk(child_dir: &Path, parent_abs: PathBuf, disk: &Disk) -> Result<ParentLink> {
        if disk.kind() == DiskKind::HostDrive || disk.kind() == DiskKind::Raw {
            return Err(Error::WrongDiskType {
                path: parent_abs,
                found: disk.kind().to_string(),
                expected: "a parent must be a fixed, dynamic or differencing VHD".into(),
            });
        }
        let mtime = std::fs::metadata(&parent_abs)
            .and_then(|m| m.modified())
            .map_err(|e| Error::file(&parent_abs, "reading the modification time", e))?;
        let (name, absolute, relative) = ParentLink::paths(child_dir, &parent_abs);
        Ok(ParentLink {
            path: parent_abs.clone(),
            size: disk.virtual_size(),
            block_size: disk.top().header().map(|h| h.block_size),
            unique_id: disk.top().footer().unique_id,
            timestamp: VhdTime::from_system_time(mtime),
            name,
            absolute,
            relative,
            mode: super::output::source_mode(disk),
        })
    }
}

impl ParentLink {
    /// The parent's file name, absolute path and path relative to `child_dir` (in
    /// Windows form, `.\name` or `..\…`), as a child's locators record them.
    pub(crate) fn paths(child_dir: &Path, parent_abs: &Path) -> (String, String, String) {
        let rel =
            pathdiff::diff_paths(parent_abs, child_dir).unwrap_or_else(|| parent_abs.to_owned());
        let rel = rel.to_string_lossy().replace('/', "\\");
        let relative = if rel.starts_with("..") {
            rel
        } else {
            format!(".\\{rel}")
        };
        let name = parent_abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (
            name,
            vhdkit_platform::windows_locator_text(parent_abs),
            relative,
        )
    }
}

/// The bytes of a new dynamic (or, with `parent`, differencing) disk without blocks,
/// built by the one sparse-image builder (`spec::layout::NewSparse`).
fn sparse_image(size: u64, block_size: u32, parent: Option<&ParentLink>) -> Result<Vec<u8>> {
    check_bat_entries(size, block_size)?;
    let parent = parent.map(|link| NewParent {
        unique_id: link.unique_id,
        timestamp: link.timestamp,
        name: link.name.clone(),
        locators: link.locators(),
    });
    let new = NewSparse::new(size, block_size, parent.as_ref()).map_err(Error::InvalidArgument)?;
    Ok(new.image())
}
