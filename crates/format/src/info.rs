//! What a disk is, as one serializable value: the document of `vhdkit info --json`
//! (docs/json.md) and of Python's `info()`, built once here for both.
//!
//! ```
//! use vhdkit_format::{info, CreateOptions, Disk, DiskKind, OpenOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("disk.vhdx");
//! Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).unwrap();
//! let (disk, chain_error) = info::open(&path, &OpenOptions::default()).unwrap();
//! let described = info::describe(&disk, chain_error.as_ref(), &path);
//! assert_eq!(described.container, "vhdx");
//! assert_eq!(described.block_size, Some(32 << 20));
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::image::{FooterSource, ParentCandidate, VhdFile, VhdxInfo};
use crate::{Disk, DiskKind, Error, OpenOptions, Result};

/// Opens `path` to be described: with its chain, or — when the chain is broken (a
/// parent missing or not matching, a loop, too deep) — the file alone and the error
/// that broke the chain, so that a broken chain is still described.
pub fn open(path: &Path, opts: &OpenOptions) -> Result<(Disk, Option<Error>)> {
    match Disk::open_with(path, opts) {
        Ok(d) => Ok((d, None)),
        Err(
            e @ (Error::ParentNotFound { .. }
            | Error::ParentIdMismatch { .. }
            | Error::ChainLoop { .. }
            | Error::ChainTooDeep { .. }),
        ) => {
            let alone = opts.clone().no_parents(true);
            Disk::open_with(path, &alone).map(|d| (d, Some(e)))
        }
        Err(e) => Err(e),
    }
}

/// What `vhdkit info --json` says about a disk (docs/json.md), and Python's `info()`.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// The path the disk was opened by.
    pub path: PathBuf,
    /// The file's format: `vhd`, `vhdx` or `raw`.
    pub container: &'static str,
    /// `fixed`, `dynamic`, `differencing`, `host-drive` or `raw`.
    pub disk_type: &'static str,
    /// Virtual Server's `VMHardDiskType` number of the disk type.
    pub vm_hard_disk_type: Option<u32>,
    /// Size of the virtual disk in bytes.
    pub virtual_size: u64,
    /// The file's length on disk now (not where the footer should be).
    pub file_size: u64,
    /// Block size of a dynamic or differencing disk (a VHDX's payload block size).
    pub block_size: Option<u64>,
    /// Bytes of a VHD block's sector bitmap.
    pub bitmap_size: Option<u64>,
    /// Blocks the file stores.
    pub allocated_blocks: Option<u64>,
    /// Entries of a VHD's block allocation table.
    pub max_table_entries: Option<u32>,
    /// The application that made the file (a VHDX's creator string).
    pub creator_app: String,
    /// The creator's version, `major.minor`.
    pub creator_version: String,
    /// The creator's host OS (`Wi2k`, `Mac `; empty for a VHDX).
    pub creator_host_os: String,
    /// The footer's time stamp, RFC 3339.
    pub timestamp: String,
    /// The size the disk was created with.
    pub original_size: u64,
    /// The footer's CHS geometry.
    pub geometry: Geometry,
    /// The footer's disk type code.
    pub footer_disk_type: u32,
    /// The footer's unique id (a VHDX's data write GUID).
    pub unique_id: String,
    /// The footer's saved-state flag.
    pub saved_state: bool,
    /// Which copy of the footer was used.
    pub footer_source: FooterSource,
    /// Free bytes on the volume holding the file, where known.
    pub host_free_disk_space: Option<u64>,
    /// A differencing disk's parent.
    pub parent: Option<Parent>,
    /// A host-drive stub's device.
    pub host_drive: Option<HostDrive>,
    /// A VHDX file's own facts (`null` for other files).
    pub vhdx: Option<VhdxInfo>,
    /// The chain's levels, the disk itself first.
    pub chain: Vec<Layer>,
    /// What opening the chain warned of.
    pub warnings: Vec<String>,
}

/// A footer's CHS geometry.
#[derive(Debug, Clone, Serialize)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
    /// Bytes the geometry addresses.
    pub capacity: u64,
}

/// A differencing disk's parent: what the child records and what was found.
#[derive(Debug, Clone, Serialize)]
pub struct Parent {
    /// The parent's name as the child records it (a VHDX: its relative path).
    pub name: String,
    /// The parent's id the child records.
    pub unique_id: String,
    /// The parent's time stamp the child records (empty for a VHDX).
    pub timestamp: String,
    /// Where the parent was found.
    pub path: Option<PathBuf>,
    /// Whether it was found.
    pub found: bool,
    /// Why the chain could not be opened.
    pub error: Option<String>,
    /// A VHD child's parent locators.
    pub locators: Vec<Locator>,
    /// Where the parent was looked for, in order.
    pub candidates: Vec<ParentCandidate>,
}

/// One used parent locator of a VHD child.
#[derive(Debug, Clone, Serialize)]
pub struct Locator {
    /// Platform code (`W2ku`, `W2ru`, `Mac `, `MacX`, …).
    pub code: String,
    /// Where its data lies in the file.
    pub data_offset: u64,
    /// Bytes of data.
    pub data_length: u32,
    /// Space reserved for it.
    pub data_space: u32,
}

/// A host-drive stub's link.
#[derive(Debug, Clone, Serialize)]
pub struct HostDrive {
    /// The device (or file) it names.
    pub device: PathBuf,
    /// Whether it links read-only.
    pub read_only: bool,
    /// The device's size as recorded.
    pub device_size: u64,
    /// CRC-32 of the device's identity, hex.
    pub identity_crc32: String,
}

/// One level of the chain, the disk itself first.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    /// The file.
    pub path: PathBuf,
    /// Its disk type.
    pub disk_type: &'static str,
    /// Its virtual size.
    pub virtual_size: u64,
    /// Its length on disk.
    pub file_size: u64,
    /// Its unique id.
    pub unique_id: String,
    /// Its block size (dynamic, differencing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u64>,
    /// Blocks it stores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_blocks: Option<u64>,
    /// Entries of its BAT (a VHD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_table_entries: Option<u32>,
}

/// The length of the file at `f.path()` as the file system has it: the size shown. A
/// file whose footer is missing at the end (opened from its copy at offset 0) is
/// shorter than where its footer belongs; `file_len` would give the latter. Anything
/// but a regular file (a VHD on a block device) falls back to the length opened.
fn real_file_size(f: &VhdFile) -> u64 {
    match std::fs::metadata(f.path()) {
        Ok(m) if m.is_file() => m.len(),
        _ => f.file_len(),
    }
}

fn layer(f: &VhdFile) -> Layer {
    let header = f.header();
    let vhdx = f.vhdx_info();
    Layer {
        path: f.path().to_owned(),
        disk_type: f.kind().name(),
        virtual_size: f.virtual_size(),
        file_size: real_file_size(f),
        unique_id: f.footer().unique_id.to_string(),
        block_size: header
            .map(|h| u64::from(h.block_size))
            .or(vhdx.as_ref().map(|v| v.block_size)),
        allocated_blocks: header
            .map(|_| f.allocated_blocks())
            .or(vhdx.as_ref().map(|v| v.allocated_blocks)),
        max_table_entries: header.map(|h| h.max_table_entries),
    }
}

/// Describes `disk`, opened from `path`; `chain_error` says why its parents could not
/// be opened (then `disk` is the file alone: see [`open`]).
pub fn describe(disk: &Disk, chain_error: Option<&Error>, path: &Path) -> Info {
    let top = disk.top();
    let footer = top.footer();
    let kind = top.kind();
    let parent = match (kind, top.header()) {
        (DiskKind::Differencing, None) => top.vhdx_info().map(|v| {
            let get = |k: &str| {
                v.parent_locator
                    .iter()
                    .find(|e| e.key == k)
                    .map(|e| e.value.clone())
            };
            let found = disk.layers().get(1);
            Parent {
                name: get("relative_path")
                    .or_else(|| get("absolute_win32_path"))
                    .or_else(|| get("volume_path"))
                    .unwrap_or_default(),
                unique_id: get("parent_linkage")
                    .map(|g| g.trim_matches(['{', '}']).to_ascii_lowercase())
                    .unwrap_or_default(),
                timestamp: String::new(),
                path: found.map(|p| p.path().to_owned()),
                found: found.is_some(),
                error: chain_error.map(|e| e.to_string()),
                locators: Vec::new(),
                candidates: crate::image::parent_candidates(top),
            }
        }),
        (DiskKind::Differencing, Some(h)) => {
            let found = disk.layers().get(1);
            Some(Parent {
                name: h.parent_name(),
                unique_id: h.parent_unique_id.to_string(),
                timestamp: h.parent_timestamp.to_rfc3339(),
                path: found.map(|p| p.path().to_owned()),
                found: found.is_some(),
                error: chain_error.map(|e| e.to_string()),
                locators: h
                    .locators
                    .iter()
                    .filter(|l| l.is_used())
                    .map(|l| Locator {
                        code: l.code.to_string(),
                        data_offset: l.data_offset,
                        data_length: l.data_length,
                        data_space: l.data_space,
                    })
                    .collect(),
                candidates: crate::image::parent_candidates(top),
            })
        }
        _ => None,
    };
    let vhdx = top.vhdx_info();
    Info {
        path: path.to_owned(),
        container: if vhdx.is_some() {
            "vhdx"
        } else if kind == DiskKind::Raw {
            "raw"
        } else {
            "vhd"
        },
        disk_type: kind.name(),
        vm_hard_disk_type: kind.vm_hard_disk_type(),
        virtual_size: top.virtual_size(),
        file_size: real_file_size(top),
        block_size: top.block_size().or(vhdx.as_ref().map(|v| v.block_size)),
        bitmap_size: top.bitmap_size(),
        allocated_blocks: top
            .header()
            .map(|_| top.allocated_blocks())
            .or(vhdx.as_ref().map(|v| v.allocated_blocks)),
        max_table_entries: top.header().map(|h| h.max_table_entries),
        creator_app: match &vhdx {
            Some(v) => v.creator.clone(),
            None => footer.creator_app_string(),
        },
        // A VHDX file's made-up footer has version 0 (0.0).
        creator_version: format!(
            "{}.{}",
            footer.creator_version >> 16,
            footer.creator_version & 0xFFFF
        ),
        creator_host_os: match &vhdx {
            Some(_) => String::new(),
            None => footer.creator_host_os_string(),
        },
        timestamp: footer.timestamp.to_rfc3339(),
        original_size: footer.original_size,
        geometry: Geometry {
            cylinders: footer.geometry.cylinders,
            heads: footer.geometry.heads,
            sectors_per_track: footer.geometry.sectors_per_track,
            capacity: footer.geometry.capacity(),
        },
        footer_disk_type: footer.disk_type.code(),
        unique_id: footer.unique_id.to_string(),
        saved_state: footer.saved_state != 0,
        footer_source: top.footer_source(),
        host_free_disk_space: path.parent().and_then(|p| {
            let p = if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            };
            fs4::available_space(p).ok()
        }),
        parent,
        host_drive: top.host_drive().map(|(h, device)| HostDrive {
            device,
            read_only: h.read_only(),
            device_size: h.device_size,
            identity_crc32: format!("{:08x}", h.identity_crc),
        }),
        vhdx,
        chain: disk.layers().iter().map(layer).collect(),
        warnings: disk.warnings(),
    }
}
