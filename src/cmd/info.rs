//! `vhdkit info`: one [`Info`] built from the disk, printed as JSON or as text.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use vhdkit_format::image::{FooterSource, ParentCandidate, VhdFile};
use vhdkit_format::{Disk, DiskKind, Error, OpenOptions};

use super::human::{count, size_and_bytes};
use super::{json, terminal, CliError, OpenArgs, EXIT_OK};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The disk.
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// What `info` says about a disk (`info --json`; docs/json.md).
#[derive(Debug, Serialize)]
struct Info {
    path: PathBuf,
    /// The file's format: `vhd`, `vhdx` or `raw`.
    container: &'static str,
    disk_type: &'static str,
    vm_hard_disk_type: Option<u32>,
    virtual_size: u64,
    /// The file's length on disk now (not where the footer should be).
    file_size: u64,
    block_size: Option<u64>,
    bitmap_size: Option<u64>,
    allocated_blocks: Option<u64>,
    max_table_entries: Option<u32>,
    creator_app: String,
    creator_version: String,
    creator_host_os: String,
    timestamp: String,
    original_size: u64,
    geometry: Geometry,
    footer_disk_type: u32,
    unique_id: String,
    saved_state: bool,
    footer_source: FooterSource,
    host_free_disk_space: Option<u64>,
    parent: Option<Parent>,
    host_drive: Option<HostDrive>,
    /// A VHDX file's own facts (`null` for other files).
    vhdx: Option<vhdkit_format::image::VhdxInfo>,
    chain: Vec<Layer>,
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Geometry {
    cylinders: u16,
    heads: u8,
    sectors_per_track: u8,
    capacity: u64,
}

/// A differencing disk's parent: what the child records and what was found.
#[derive(Debug, Serialize)]
struct Parent {
    name: String,
    unique_id: String,
    timestamp: String,
    path: Option<PathBuf>,
    found: bool,
    error: Option<String>,
    locators: Vec<Locator>,
    candidates: Vec<ParentCandidate>,
}

#[derive(Debug, Serialize)]
struct Locator {
    code: String,
    data_offset: u64,
    data_length: u32,
    data_space: u32,
}

#[derive(Debug, Serialize)]
struct HostDrive {
    device: PathBuf,
    read_only: bool,
    device_size: u64,
    identity_crc32: String,
}

/// One level of the chain, the disk itself first.
#[derive(Debug, Serialize)]
struct Layer {
    path: PathBuf,
    disk_type: &'static str,
    virtual_size: u64,
    file_size: u64,
    unique_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    block_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allocated_blocks: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_table_entries: Option<u32>,
}

pub fn run(a: InfoArgs) -> Result<u8, CliError> {
    let opts = a.open.options_for(&a.path)?;
    // A broken chain still gets its info shown: open the file alone and say what is
    // wrong with its parent.
    let (disk, chain_error) = match Disk::open_with(&a.path, &opts) {
        Ok(d) => (d, None),
        Err(
            e @ (Error::ParentNotFound { .. }
            | Error::ParentIdMismatch { .. }
            | Error::ChainLoop { .. }
            | Error::ChainTooDeep { .. }),
        ) => {
            let alone = OpenOptions {
                no_parents: true,
                ..opts.clone()
            };
            (Disk::open_with(&a.path, &alone)?, Some(e))
        }
        Err(e) => return Err(e.into()),
    };
    let info = describe(&disk, chain_error.as_ref(), &a.path);
    if a.json {
        json::print(&json::Doc::new(&info))?;
    } else {
        print_text(&info)?;
    }
    Ok(EXIT_OK)
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

fn describe(disk: &Disk, chain_error: Option<&Error>, path: &Path) -> Info {
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
                candidates: vhdkit_format::image::parent_candidates(top),
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
                candidates: vhdkit_format::image::parent_candidates(top),
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

/// The text form of a VHDX file: its own facts instead of a VHD footer's.
fn print_vhdx(i: &Info, v: &vhdkit_format::image::VhdxInfo) -> Result<(), CliError> {
    let line = |label: &str, value: String| terminal::line(format!("{label:<19}{value}"));
    line(
        "allocated blocks:",
        format!("{} of {}", v.allocated_blocks, v.blocks),
    )?;
    line(
        "sectors:",
        format!(
            "{} bytes logical, {} bytes physical",
            v.logical_sector_size, v.physical_sector_size
        ),
    )?;
    line("creator:", v.creator.clone())?;
    line(
        "header:",
        format!("{} (sequence {})", v.header_slot, v.header_sequence),
    )?;
    line("data write id:", v.data_write_guid.clone())?;
    let log = match v.log_entries_replayed {
        0 => v.log.to_owned(),
        n => format!("{} ({n} entries)", v.log),
    };
    line("log:", log)?;
    for e in &v.parent_locator {
        line("parent locator:", format!("{} = {}", e.key, e.value))?;
    }
    if let Some(p) = &i.parent {
        match (&p.path, &p.error) {
            (Some(path), _) => line("parent path:", path.display().to_string())?,
            (None, Some(e)) => line("parent:", format!("NOT RESOLVED: {e}"))?,
            (None, None) => {}
        }
    }
    print_chain(i)?;
    for w in &i.warnings {
        line("warning:", w.clone())?;
    }
    Ok(())
}

/// The chain's levels, when there are several.
fn print_chain(i: &Info) -> Result<(), CliError> {
    if i.chain.len() > 1 {
        terminal::line("chain:")?;
        for (n, l) in i.chain.iter().enumerate() {
            // Fixed disks have no blocks: say only what they are.
            let blocks = l
                .allocated_blocks
                .map(|b| format!(", {} allocated", count(b, "block")))
                .unwrap_or_default();
            terminal::line(format!(
                "  {n}: {} ({}{blocks})",
                l.path.display(),
                l.disk_type
            ))?;
        }
    }
    Ok(())
}

/// The text form: one `label: value` line per fact, sizes as `4 MiB (4194304 bytes)`.
fn print_text(i: &Info) -> Result<(), CliError> {
    let line = |label: &str, value: String| terminal::line(format!("{label:<19}{value}"));
    line("path:", i.path.display().to_string())?;
    line("container:", i.container.to_owned())?;
    line("disk type:", i.disk_type.to_owned())?;
    line("virtual size:", size_and_bytes(i.virtual_size))?;
    line("file size:", size_and_bytes(i.file_size))?;
    if let Some(b) = i.block_size {
        line("block size:", size_and_bytes(b))?;
    }
    if let (Some(n), Some(max)) = (i.allocated_blocks, i.max_table_entries) {
        line("allocated blocks:", format!("{n} of {max}"))?;
    }
    if let Some(v) = &i.vhdx {
        return print_vhdx(i, v);
    }
    line(
        "creator:",
        format!(
            "{} {} ({})",
            i.creator_app, i.creator_version, i.creator_host_os
        ),
    )?;
    line("created:", i.timestamp.clone())?;
    let g = &i.geometry;
    line(
        "geometry (CHS):",
        format!(
            "{}/{}/{}, capacity {}",
            g.cylinders,
            g.heads,
            g.sectors_per_track,
            size_and_bytes(g.capacity)
        ),
    )?;
    line("unique id:", i.unique_id.clone())?;
    if i.saved_state {
        line("saved state:", "yes".into())?;
    }
    if i.footer_source != FooterSource::End {
        // Spelled as in the JSON.
        let source = serde_json::to_value(i.footer_source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        line("footer used:", source)?;
    }
    if let Some(p) = &i.parent {
        line("parent name:", p.name.clone())?;
        line("parent unique id:", p.unique_id.clone())?;
        match (&p.path, &p.error) {
            (Some(path), _) => line("parent path:", path.display().to_string())?,
            (None, Some(e)) => line("parent:", format!("NOT RESOLVED: {e}"))?,
            (None, None) => {}
        }
    }
    if let Some(h) = &i.host_drive {
        line(
            "host drive:",
            format!(
                "{} ({}{})",
                h.device.display(),
                size_and_bytes(h.device_size),
                if h.read_only { ", read-only" } else { "" }
            ),
        )?;
    }
    print_chain(i)?;
    for w in &i.warnings {
        line("warning:", w.clone())?;
    }
    Ok(())
}
