//! New VHDX files (Hyper-V's format): which container an output gets, creating fixed,
//! dynamic and differencing VHDX files, and the facts a child takes from a VHDX parent.
//!
//! The bytes come from the pure format layer (`vhdx::NewVhdx` → `VhdxLayout`: the
//! identifier, both headers, both region tables, the metadata region and the BAT); this
//! file only decides the parameters and writes them through the same new-file
//! machinery as VHD outputs ([`super::newfile::write_new`]): nobody sees the name until
//! the file is complete and durable.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::vhdx::header::{CurrentHeader, HEADER_1_OFFSET, HEADER_2_OFFSET, HEADER_SIZE};
use crate::vhdx::region::{REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE};
use crate::vhdx::{
    self, DiskType, FileAreas, Metadata, NewVhdx, ParentLocator, RegionTable, VhdxError, VhdxLayout,
};

use super::backend::Backend;
use super::create::{CreateOptions, ParentLink};
use super::newfile::{allocate, write_new};
use super::output::DEFAULT_MODE;
use super::DiskKind;

/// Hyper-V's block size for new VHDX files, vhdkit's default: 32 MiB.
pub const DEFAULT_VHDX_BLOCK_SIZE: u32 = vhdx::metadata::DEFAULT_BLOCK_SIZE;

/// The smallest VHDX vhdkit creates: 3 MiB, as Hyper-V's `New-VHD`.
pub const MIN_VHDX_SIZE: u64 = 3 << 20;

/// The container of a new file: VHD (Virtual PC's and Virtual Server's) or VHDX
/// (Hyper-V's).
///
/// ```
/// use vhdkit_format::image::ContainerFormat;
/// assert_eq!(ContainerFormat::for_path("disk.VHDX"), ContainerFormat::Vhdx);
/// assert_eq!(ContainerFormat::for_path("snap.avhdx"), ContainerFormat::Vhdx);
/// assert_eq!(ContainerFormat::for_path("disk.vhd"), ContainerFormat::Vhd);
/// assert_eq!(ContainerFormat::for_path("disk.img"), ContainerFormat::Vhd);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ContainerFormat {
    /// A VHD (`conectix` footer).
    #[default]
    Vhd,
    /// A VHDX (`vhdxfile` identifier, MS-VHDX).
    Vhdx,
}

impl ContainerFormat {
    /// The container an output named `path` gets when nothing else says: VHDX for the
    /// extensions `.vhdx` and `.avhdx` (in any case), VHD for anything else.
    pub fn for_path(path: impl AsRef<Path>) -> ContainerFormat {
        let ext = path
            .as_ref()
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("vhdx" | "avhdx") => ContainerFormat::Vhdx,
            _ => ContainerFormat::Vhd,
        }
    }

    /// `explicit` if given, else [`ContainerFormat::for_path`].
    pub fn choose(explicit: Option<ContainerFormat>, path: impl AsRef<Path>) -> ContainerFormat {
        explicit.unwrap_or_else(|| ContainerFormat::for_path(path))
    }

    /// Lower-case name: `vhd` or `vhdx`.
    pub fn name(self) -> &'static str {
        match self {
            ContainerFormat::Vhd => "vhd",
            ContainerFormat::Vhdx => "vhdx",
        }
    }
}

impl std::fmt::Display for ContainerFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A format-layer error about `path` as a vhdkit error naming the structure and offset.
pub(crate) fn vhdx_error(path: &Path, e: VhdxError) -> Error {
    Error::Corrupt {
        path: path.to_owned(),
        structure: "VHDX structure",
        offset: e.offset(),
        detail: e.to_string(),
    }
}

/// Checks a VHDX's virtual size and logical sector size before anything is written.
pub fn check_vhdx_size(size: u64, logical_sector: u32) -> Result<()> {
    if size == 0 {
        return Err(Error::InvalidArgument(
            "a disk of size 0: give a size".into(),
        ));
    }
    if size < MIN_VHDX_SIZE {
        return Err(Error::SizeTooSmall {
            size,
            detail: format!("the smallest VHDX is 3 MiB ({MIN_VHDX_SIZE} bytes)"),
        });
    }
    if size > vhdx::MAX_VIRTUAL_SIZE {
        return Err(Error::SizeTooLarge {
            size,
            detail: format!(
                "the largest VHDX is 64 TiB ({} bytes)",
                vhdx::MAX_VIRTUAL_SIZE
            ),
        });
    }
    check_logical_sector(logical_sector)?;
    if !size.is_multiple_of(u64::from(logical_sector)) {
        return Err(Error::InvalidArgument(format!(
            "size {size} is not a multiple of the {logical_sector}-byte logical sector"
        )));
    }
    Ok(())
}

/// Refuses a logical sector size other than 512 or 4096.
pub fn check_logical_sector(logical_sector: u32) -> Result<()> {
    if logical_sector != 512 && logical_sector != 4096 {
        return Err(Error::InvalidArgument(format!(
            "logical sector size {logical_sector}: a VHDX has 512- or 4096-byte sectors"
        )));
    }
    Ok(())
}

/// Refuses a VHDX block size that is not a power of two from 1 MiB to 256 MiB.
pub fn check_vhdx_block_size(block_size: u32) -> Result<()> {
    vhdx::metadata::check_block_size(block_size)
        .map_err(|e| Error::InvalidArgument(format!("VHDX block size {block_size}: {e}")))
}

/// The layout of a new VHDX, or why these parameters cannot make one.
pub(crate) fn vhdx_layout(new: &NewVhdx) -> Result<VhdxLayout> {
    new.layout()
        .map_err(|e| Error::InvalidArgument(format!("cannot lay out the VHDX: {e}")))
}

/// The metadata bytes (identifier, headers, region tables, metadata, `bat`) of a new
/// file laid out by `layout`, written into `out`.
pub(crate) fn write_metadata(
    out: &dyn Backend,
    layout: &VhdxLayout,
    metadata: &Metadata,
    bat: Option<&vhdx::bat::Bat>,
) -> std::io::Result<()> {
    for (at, bytes) in layout.initial_writes(&layout.header(), metadata) {
        if at == layout.bat.offset {
            if let Some(bat) = bat {
                out.write_all_at(&bat.encode(), at)?;
                continue;
            }
        }
        out.write_all_at(&bytes, at)?;
    }
    Ok(())
}

/// Creates the VHDX `opts` describes at `path` (which must not exist): a fixed or
/// dynamic disk, or a differencing disk over a VHDX parent. Returns the parent's
/// canonical path for a differencing disk.
pub(crate) fn create_vhdx(path: &Path, opts: &CreateOptions) -> Result<Option<PathBuf>> {
    let logical = opts.logical_sector_size;
    let (new, parent, mode) = match opts.kind {
        DiskKind::Fixed | DiskKind::Dynamic => {
            let logical = logical.unwrap_or(512);
            check_vhdx_size(opts.size, logical)?;
            let disk_type = if opts.kind == DiskKind::Fixed {
                DiskType::Fixed
            } else {
                DiskType::Dynamic
            };
            let mut new = NewVhdx::new(disk_type, opts.size);
            new.block_size = opts.block_size.unwrap_or(DEFAULT_VHDX_BLOCK_SIZE);
            new.logical_sector_size = logical;
            (new, None, opts.mode.unwrap_or(DEFAULT_MODE))
        }
        DiskKind::Differencing => {
            let parent = opts.parent.as_deref().ok_or_else(|| {
                Error::InvalidArgument("a differencing disk needs a parent".into())
            })?;
            let p = VhdxParent::resolve(path, parent)?;
            if let Some(l) = logical.filter(|&l| l != p.logical_sector_size) {
                return Err(Error::InvalidArgument(format!(
                    "logical sector size {l}: the parent {} has {}-byte sectors, which its \
                     child must have too",
                    p.path.display(),
                    p.logical_sector_size
                )));
            }
            let mut new = NewVhdx::new(DiskType::Differencing, p.virtual_size);
            new.block_size = opts.block_size.unwrap_or(p.block_size);
            new.logical_sector_size = p.logical_sector_size;
            new.physical_sector_size = p.physical_sector_size;
            let mode = opts.mode.unwrap_or(p.mode);
            (new, Some(p), mode)
        }
        DiskKind::HostDrive | DiskKind::Raw => {
            return Err(Error::InvalidArgument(format!(
                "a VHDX is fixed, dynamic or differencing, not {}",
                opts.kind
            )))
        }
    };
    if let Some(bs) = opts.block_size {
        check_vhdx_block_size(bs)?;
    }
    let layout = vhdx_layout(&new)?;
    let locator = parent.as_ref().map(VhdxParent::locator);
    let metadata = layout.metadata(Uuid::new_v4(), locator);
    let fixed = opts.kind == DiskKind::Fixed;
    let (bat, file_len) = match parent {
        Some(_) => {
            let (bat, len) = differencing_bat(&layout);
            (Some(bat), len)
        }
        None => (None, layout.file_len),
    };
    write_new(path, mode, |b| {
        if fixed && !opts.sparse {
            allocate(b.file(), file_len)?;
        }
        b.set_len(file_len)?;
        write_metadata(b, &layout, &metadata, bat.as_ref())
    })?;
    Ok(parent.map(|p| p.path))
}

/// The BAT of a new differencing file and the file's length: every payload block not
/// present (read from the parent), and every chunk's sector bitmap block *present*,
/// all zeros, one after the other from the first payload offset — holes of the new
/// file, so they cost no space.
///
/// The specification allows a chunk without a sector bitmap while none of its blocks
/// is partially present, but libvhdi (20210425 and 20260901) reads the bitmap of every
/// block of a differencing file that is not fully present from the chunk's
/// sector-bitmap entry's offset even when that entry says not present (offset 0: it
/// takes the file's first bytes for a bitmap and reads sectors of the parent as this
/// file's). With a bitmap of zeros every such sector comes from the parent, in every
/// reader (docs/vhdx.md).
pub(crate) fn differencing_bat(layout: &VhdxLayout) -> (vhdx::bat::Bat, u64) {
    let mut bat = layout.initial_bat();
    let g = layout.geometry;
    let mut at = layout.first_payload;
    for chunk in 0..g.bitmap_blocks {
        if let Some(i) = g.bitmap_index(chunk) {
            bat.entries[i as usize] = vhdx::BatEntry::new(vhdx::bat::SB_BLOCK_PRESENT, at);
            at += vhdx::bat::SECTOR_BITMAP_BLOCK_SIZE;
        }
    }
    (bat, at)
}

/// What a differencing VHDX records about its VHDX parent.
pub(crate) struct VhdxParent {
    /// The parent's canonical path.
    pub(crate) path: PathBuf,
    /// The locator's `relative_path` and `absolute_win32_path`.
    relative: String,
    absolute: String,
    /// The parent's permission bits (a new child takes them).
    mode: u32,
    /// The parent's data write GUID: the child's `parent_linkage`.
    pub(crate) data_write_guid: Uuid,
    pub(crate) virtual_size: u64,
    pub(crate) block_size: u32,
    pub(crate) logical_sector_size: u32,
    pub(crate) physical_sector_size: u32,
}

impl VhdxParent {
    /// The parent `parent` of a new child at `child` (a relative path is looked up next
    /// to the child first), which must be a VHDX: its current header and metadata, with
    /// a pending log replayed in memory (never written).
    pub(crate) fn resolve(child: &Path, parent: &Path) -> Result<VhdxParent> {
        let (child_dir, abs) = ParentLink::locate(child, parent)?;
        let file = File::open(&abs).map_err(|e| Error::file(&abs, "opening the parent", e))?;
        let facts = read_vhdx_facts(&file, &abs)?;
        let mode = file
            .metadata()
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .map_err(|e| Error::file(&abs, "reading metadata", e))?;
        let (_, absolute, relative) = ParentLink::paths(&child_dir, &abs);
        Ok(VhdxParent {
            path: abs,
            relative,
            absolute,
            mode,
            data_write_guid: facts.header.data_write_guid,
            virtual_size: facts.metadata.virtual_size,
            block_size: facts.metadata.file_parameters.block_size,
            logical_sector_size: facts.metadata.logical_sector_size,
            physical_sector_size: facts.metadata.physical_sector_size,
        })
    }

    /// The parent locator a child writes: `parent_linkage` (`{guid}`), the relative
    /// path and the absolute path, as vhdkit writes a VHD's `W2ru` and `W2ku`.
    pub(crate) fn locator(&self) -> ParentLocator {
        ParentLocator::new(
            self.data_write_guid,
            Some(&self.relative),
            None,
            Some(&self.absolute),
        )
    }
}

/// The largest metadata region or log [`read_vhdx_facts`] reads into memory.
const MAX_READ_IN_MEMORY: u64 = 64 * vhdx::MIB;

/// The current header and metadata of a VHDX file.
pub(crate) struct VhdxFacts {
    pub(crate) header: vhdx::Header,
    pub(crate) metadata: Metadata,
}

/// Reads the current header, the region table and the metadata of the VHDX `file` (at
/// `path`), replaying a pending log over the metadata in memory. Refuses a file that is
/// not a VHDX (a VHD, above all: Hyper-V chains never mix the two).
pub(crate) fn read_vhdx_facts(file: &File, path: &Path) -> Result<VhdxFacts> {
    let len = file
        .metadata()
        .map_err(|e| Error::file(path, "reading metadata", e))?
        .len();
    let read = |at: u64, n: usize| -> Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        let got = read_upto(file, &mut b, at).map_err(|e| Error::io(path, "reading", at, e))?;
        b.truncate(got);
        Ok(b)
    };
    let ident = read(0, 8)?;
    if !vhdx::parse::is_vhdx(&ident) {
        let tail = if len >= 512 {
            read(len - 512, 8)?
        } else {
            Vec::new()
        };
        let vhd = ident == *b"conectix" || tail == *b"conectix";
        return Err(Error::WrongDiskType {
            path: path.to_owned(),
            found: if vhd { "a VHD" } else { "not a VHDX" }.into(),
            expected: "a VHDX child needs a VHDX parent (Hyper-V never mixes VHD and VHDX \
                       in one chain)"
                .into(),
        });
    }
    let err = |e| vhdx_error(path, e);
    let header = CurrentHeader::choose(
        &read(HEADER_1_OFFSET, HEADER_SIZE)?,
        &read(HEADER_2_OFFSET, HEADER_SIZE)?,
    )
    .map_err(err)?
    .header;
    let (regions, _) = RegionTable::choose(
        &read(REGION_TABLE_1_OFFSET, REGION_TABLE_SIZE)?,
        &read(REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE)?,
    )
    .map_err(err)?;
    let areas = FileAreas::new(&header, &regions, len).map_err(err)?;
    let md = regions.metadata;
    // Read whole, in memory: bounded (Hyper-V and qemu-img make 1 MiB of each).
    for (what, at, n) in [
        ("metadata region", md.offset, md.length),
        ("log", header.log_offset, header.log_length),
    ] {
        if u64::from(n) > MAX_READ_IN_MEMORY {
            return Err(Error::Unsupported {
                path: path.to_owned(),
                detail: format!(
                    "the {what} at offset {at:#x} is {n} bytes: vhdkit reads at most \
                     {MAX_READ_IN_MEMORY} (Hyper-V writes 1 MiB)"
                ),
            });
        }
    }
    let mut region = read(md.offset, md.length as usize)?;
    if header.has_log() {
        let log = read(header.log_offset, header.log_length as usize)?;
        if let Some(plan) = vhdx::log::replay(&log, &header, &areas).map_err(err)? {
            overlay(&mut region, md.offset, &plan.writes);
        }
    }
    let metadata = Metadata::decode(&region, md.offset).map_err(err)?;
    Ok(VhdxFacts { header, metadata })
}

/// Applies the log writes that fall inside `region` (at file offset `at`) to it.
fn overlay(region: &mut [u8], at: u64, writes: &[vhdx::log::LogWrite]) {
    let end = at + region.len() as u64;
    for w in writes {
        let (s, e) = (w.offset().max(at), (w.offset() + w.len()).min(end));
        if s >= e {
            continue;
        }
        let dst = &mut region[(s - at) as usize..(e - at) as usize];
        match w {
            vhdx::log::LogWrite::Data { bytes, offset } => {
                let from = (s - offset) as usize;
                dst.copy_from_slice(&bytes[from..from + dst.len()]);
            }
            vhdx::log::LogWrite::Zero { .. } => dst.fill(0),
        }
    }
}

/// Reads into `buf` at `at` until it is full or the file ends; returns the bytes read.
fn read_upto(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Whether the file at `path` starts with the VHDX identifier (a parent check: a VHD
/// child is never linked to a VHDX).
pub(crate) fn is_vhdx_file(path: &Path) -> bool {
    let mut b = [0u8; 8];
    File::open(path)
        .and_then(|f| read_upto(&f, &mut b, 0))
        .is_ok_and(|n| n == 8 && vhdx::parse::is_vhdx(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhdx::log::LogWrite;
    use crate::vhdx::region::RegionTable;

    /// A new dynamic VHDX's bytes, written to a file of `len` bytes (`len` ≥ the layout's).
    fn file_with(table: Option<RegionTable>, len: u64) -> (tempfile::TempDir, PathBuf) {
        let l = NewVhdx::new(DiskType::Dynamic, 64 * vhdx::MIB)
            .layout()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.vhdx");
        let f = File::create(&path).unwrap();
        f.set_len(len.max(l.file_len)).unwrap();
        let md = l.metadata(Uuid::from_u128(1), None);
        for (at, bytes) in l.initial_writes(&l.header(), &md) {
            f.write_all_at(&bytes, at).unwrap();
        }
        if let Some(t) = table {
            let b = t.encode();
            f.write_all_at(&b, REGION_TABLE_1_OFFSET).unwrap();
            f.write_all_at(&b, REGION_TABLE_2_OFFSET).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn facts_of_a_new_file_are_its_metadata() {
        let (_d, path) = file_with(None, 0);
        let f = File::open(&path).unwrap();
        let facts = read_vhdx_facts(&f, &path).unwrap();
        assert_eq!(facts.metadata.virtual_size, 64 * vhdx::MIB);
        assert_eq!(facts.metadata.page83, Uuid::from_u128(1));
        assert!(!facts.header.data_write_guid.is_nil());
    }

    #[test]
    fn a_huge_metadata_region_is_refused_before_it_is_read() {
        let l = NewVhdx::new(DiskType::Dynamic, 64 * vhdx::MIB)
            .layout()
            .unwrap();
        let mut t = l.region_table();
        // The metadata region moved past everything and made 128 MiB long.
        t.metadata.offset = 16 * vhdx::MIB;
        t.metadata.length = 128 << 20;
        let (_d, path) = file_with(Some(t), 256 * vhdx::MIB);
        let f = File::open(&path).unwrap();
        let err = read_vhdx_facts(&f, &path).err().expect("refused");
        assert!(
            err.to_string().contains("metadata region") && err.to_string().contains("at most"),
            "{err}"
        );
    }

    #[test]
    fn overlay_applies_only_the_part_inside_the_region() {
        let mut region = vec![0u8; 16];
        let writes = [
            LogWrite::Data {
                offset: 96,
                bytes: vec![1; 8],
            },
            LogWrite::Data {
                offset: 110,
                bytes: vec![2; 8],
            },
            LogWrite::Zero {
                offset: 0,
                length: 4096,
            },
            LogWrite::Data {
                offset: 200,
                bytes: vec![3; 8],
            },
        ];
        overlay(&mut region, 100, &writes[..2]);
        assert_eq!(region[..4], [1, 1, 1, 1]);
        assert_eq!(region[4..10], [0; 6]);
        assert_eq!(region[10..], [2; 6]);
        overlay(&mut region, 100, &writes[2..]);
        assert_eq!(region, vec![0; 16]);
    }

    #[test]
    fn a_vhd_is_not_a_vhdx_parent() {
        let dir = tempfile::tempdir().unwrap();
        let vhd = dir.path().join("p.vhd");
        crate::Disk::create(&vhd, &CreateOptions::new(DiskKind::Dynamic, 8 * vhdx::MIB)).unwrap();
        let err = VhdxParent::resolve(&dir.path().join("c.avhdx"), &vhd)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("a VHD"), "{err}");
        assert!(!is_vhdx_file(&vhd));
    }
}
