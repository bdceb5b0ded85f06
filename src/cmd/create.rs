//! `vhdkit create`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use vhdkit_format::image::ContainerFormat;
use vhdkit_format::{CreateOptions, DiskKind};

use super::runner::{self, RunArgs};
use super::{block_size_arg, size_arg, CliError};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CreateType {
    Fixed,
    Dynamic,
    Differencing,
    HostDrive,
}

/// The container of a new disk (`--format`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Vhd,
    Vhdx,
}

impl FormatArg {
    pub fn container(self) -> ContainerFormat {
        match self {
            FormatArg::Vhd => ContainerFormat::Vhd,
            FormatArg::Vhdx => ContainerFormat::Vhdx,
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The disk to create (must not exist).
    path: PathBuf,
    /// Kind of disk.
    #[arg(long = "type", value_enum)]
    kind: CreateType,
    /// Virtual size (fixed and dynamic): bytes or K/M/G/T, fractions allowed (`1.5G`,
    /// rounded up to a 512-byte sector); 3 MiB to 2040 GiB (a VHDX: to 64 TiB).
    #[arg(long, value_parser = size_arg)]
    size: Option<u64>,
    /// Block size of dynamic and differencing disks: a power of two from 4K to 256M
    /// (default: 2M for dynamic disks, the parent's for differencing disks). qemu,
    /// libvhdi, Windows and Hyper-V read every such size; Xen's blktap only 2M. A VHDX
    /// (any type): 1M to 256M, default 32M as Hyper-V (a differencing disk: the parent's).
    #[arg(long, value_parser = block_size_arg)]
    block_size: Option<u32>,
    /// Container of the new disk (default: by the extension: `.vhdx`/`.avhdx` make a
    /// VHDX, anything else a VHD).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Logical sector size of a VHDX: 512 (default) or 4096 (the physical sector size is
    /// 4096, as Hyper-V writes it). A differencing VHDX has its parent's.
    #[arg(long, value_name = "BYTES", value_parser = logical_sector_arg)]
    logical_sector: Option<u32>,
    /// Parent of a differencing disk (a relative path is looked up next to the new disk
    /// first).
    #[arg(long)]
    parent: Option<PathBuf>,
    /// Host block device (or file) a host-drive disk links to.
    #[arg(long, value_name = "DEVICE")]
    host_drive: Option<PathBuf>,
    /// Link the host drive read-only.
    #[arg(long)]
    read_only: bool,
    /// A fixed disk: leave its data area sparse instead of allocating it up front.
    #[arg(long)]
    sparse: bool,
    #[command(flatten)]
    pub(super) run: RunArgs,
}

fn usage(msg: &str) -> CliError {
    super::usage_error(msg)
}

/// `--logical-sector`: 512 or 4096.
pub fn logical_sector_arg(s: &str) -> Result<u32, String> {
    match s {
        "512" => Ok(512),
        "4096" | "4K" | "4k" => Ok(4096),
        _ => Err(format!("{s}: a logical sector is 512 or 4096 bytes")),
    }
}

pub fn run(a: CreateArgs) -> Result<u8, CliError> {
    let format = ContainerFormat::choose(a.format.map(FormatArg::container), &a.path);
    let vhdx = format == ContainerFormat::Vhdx;
    if a.logical_sector.is_some() && !vhdx {
        return Err(usage(
            "--logical-sector applies to a VHDX (a VHD has 512-byte sectors)",
        ));
    }
    if let (true, Some(bs)) = (vhdx, a.block_size) {
        if let Err(e) = vhdkit_format::image::check_vhdx_block_size(bs) {
            return Err(usage(&format!("--block-size: {e}")));
        }
    }
    let opts = match a.kind {
        CreateType::Fixed | CreateType::Dynamic => {
            let Some(size) = a.size else {
                return Err(usage("--size is required for fixed and dynamic disks"));
            };
            // Out-of-range sizes are usage mistakes (exit 2); 0 too.
            let checked = if vhdx {
                vhdkit_format::image::check_vhdx_size(size, a.logical_sector.unwrap_or(512))
            } else {
                vhdkit_format::image::check_create_size(size)
            };
            if let Err(e) = checked {
                return Err(usage(&format!("--size: {e}")));
            }
            if a.parent.is_some() || a.host_drive.is_some() {
                return Err(usage("--parent and --host-drive go with other disk types"));
            }
            let kind = if matches!(a.kind, CreateType::Fixed) {
                DiskKind::Fixed
            } else {
                DiskKind::Dynamic
            };
            if kind == DiskKind::Fixed && a.block_size.is_some() && !vhdx {
                return Err(usage("a fixed disk has no blocks; drop --block-size"));
            }
            if kind == DiskKind::Dynamic && a.sparse {
                return Err(usage(
                    "--sparse applies to fixed disks (a dynamic disk is sparse)",
                ));
            }
            CreateOptions {
                sparse: a.sparse,
                block_size: a.block_size,
                ..CreateOptions::new(kind, size)
            }
        }
        CreateType::Differencing => {
            let Some(parent) = a.parent else {
                return Err(usage("--parent is required for a differencing disk"));
            };
            if a.size.is_some() {
                return Err(usage(
                    "a differencing disk takes its size from its parent; drop --size",
                ));
            }
            CreateOptions {
                block_size: a.block_size,
                ..CreateOptions::differencing(parent)
            }
        }
        CreateType::HostDrive => {
            let Some(device) = a.host_drive else {
                return Err(usage(
                    "--host-drive DEVICE is required for a host-drive disk",
                ));
            };
            if a.size.is_some() || a.block_size.is_some() {
                return Err(usage(
                    "a host-drive disk takes its size from the drive and has no blocks; drop --size and --block-size",
                ));
            }
            CreateOptions::host_drive(device, a.read_only)
        }
    };
    if a.sparse && !matches!(a.kind, CreateType::Fixed | CreateType::Dynamic) {
        return Err(usage("--sparse applies to fixed disks"));
    }
    if a.read_only && !matches!(a.kind, CreateType::HostDrive) {
        return Err(usage("--read-only applies to host-drive disks"));
    }
    if vhdx && matches!(a.kind, CreateType::HostDrive) {
        return Err(usage("a host-drive disk is a VHD; drop --format vhdx"));
    }
    let opts = CreateOptions {
        format: Some(format),
        logical_sector_size: a.logical_sector,
        ..opts
    };
    let allocated = opts.kind == DiskKind::Fixed && !opts.sparse;
    let task = vhdkit_format::ops::create_task(&a.path, &opts)?;
    runner::hint_sparse(
        runner::run(task, &a.run, runner::Leaves::NewFile),
        allocated,
    )
}
