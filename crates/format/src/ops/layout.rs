//! The container and block layout asked of a new file (convert, merge-to, and measure of
//! what they would write), checked once here for the command line and Python: which
//! options apply to which result, and the block sizes each container takes.
//!
//! ```
//! use vhdkit_format::ops::layout::{LayoutMisuse, LayoutRequest};
//! use vhdkit_format::ops::Target;
//!
//! let mut ask = LayoutRequest::new(Target::Dynamic, Some("disk.vhdx".as_ref()));
//! ask.block_size = Some(1 << 20);
//! let layout = ask.check().unwrap();
//! assert!(layout.vhdx);
//! assert_eq!(layout.vhdx_block_size, 1 << 20);
//!
//! let mut ask = LayoutRequest::new(Target::Fixed, Some("disk.vhd".as_ref()));
//! ask.logical_sector = Some(4096);
//! let misuse = ask.check().unwrap_err();
//! assert_eq!(misuse, LayoutMisuse::LogicalSectorNotVhdx);
//! let flag = |name: &str| format!("--{}", name.replace('_', "-"));
//! assert!(misuse.message(flag).starts_with("--logical-sector applies to a VHDX"));
//! ```

use std::path::Path;

use super::{OpsOptions, Target};
use crate::image::{check_vhdx_block_size, ContainerFormat};
use crate::DEFAULT_BLOCK_SIZE;

/// The layout options given for a new file.
#[derive(Debug, Clone, Copy)]
pub struct LayoutRequest<'a> {
    /// The kind of result.
    pub target: Target,
    /// The container asked for (`--format`); `None`: the destination's extension says,
    /// VHD without a destination.
    pub format: Option<ContainerFormat>,
    /// The destination, whose extension chooses the container; `None` (measure).
    pub path: Option<&'a Path>,
    /// The block size asked for.
    pub block_size: Option<u32>,
    /// A VHDX result's logical sector size asked for.
    pub logical_sector: Option<u32>,
    /// A fixed result allocated as written, not up front.
    pub sparse: bool,
}

/// The layout a [`LayoutRequest`] comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The result is a VHDX file.
    pub vhdx: bool,
    /// A dynamic VHD result's block size ([`OpsOptions::block_size`]).
    pub block_size: u32,
    /// A VHDX result's block size ([`OpsOptions::vhdx_block_size`]).
    pub vhdx_block_size: u32,
    /// A VHDX result's logical sector size ([`OpsOptions::logical_sector_size`]).
    pub logical_sector_size: u32,
}

/// An option given where it does not apply, or a block size the container refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutMisuse {
    /// A container asked of a raw result.
    FormatOnRaw,
    /// A logical sector size asked of a VHD result.
    LogicalSectorNotVhdx,
    /// A block size asked of a fixed VHD or raw result.
    BlockSizeNotDynamic,
    /// `sparse` asked of a result that is not fixed.
    SparseNotFixed,
    /// A VHDX block size out of its range (the reason).
    VhdxBlockSize(String),
}

impl LayoutMisuse {
    /// What is wrong, naming the options as `flag` spells them (given `format`,
    /// `logical_sector`, `block_size`, `sparse`: `--block-size` on the command line,
    /// `block_size=` in Python).
    pub fn message(&self, flag: impl Fn(&str) -> String) -> String {
        match self {
            LayoutMisuse::FormatOnRaw => format!(
                "{} applies to a fixed or dynamic result (a raw image has no container)",
                flag("format")
            ),
            LayoutMisuse::LogicalSectorNotVhdx => format!(
                "{} applies to a VHDX result (a VHD has 512-byte sectors)",
                flag("logical_sector")
            ),
            LayoutMisuse::BlockSizeNotDynamic => {
                format!("{} applies to a dynamic or VHDX result", flag("block_size"))
            }
            LayoutMisuse::SparseNotFixed => {
                format!("{} applies to a fixed result", flag("sparse"))
            }
            LayoutMisuse::VhdxBlockSize(why) => format!("{}: {why}", flag("block_size")),
        }
    }
}

impl<'a> LayoutRequest<'a> {
    /// A request of `target` at `path` with nothing else asked.
    pub fn new(target: Target, path: Option<&'a Path>) -> LayoutRequest<'a> {
        LayoutRequest {
            target,
            format: None,
            path,
            block_size: None,
            logical_sector: None,
            sparse: false,
        }
    }

    /// The layout, or the first option that does not apply.
    pub fn check(&self) -> Result<Layout, LayoutMisuse> {
        let container = match (self.format, self.path) {
            (Some(f), _) => f,
            (None, Some(p)) => ContainerFormat::for_path(p),
            (None, None) => ContainerFormat::Vhd,
        };
        let vhdx = self.target != Target::Raw && container == ContainerFormat::Vhdx;
        if self.target == Target::Raw && self.format.is_some() {
            return Err(LayoutMisuse::FormatOnRaw);
        }
        if self.logical_sector.is_some() && !vhdx {
            return Err(LayoutMisuse::LogicalSectorNotVhdx);
        }
        if self.block_size.is_some() && self.target != Target::Dynamic && !vhdx {
            return Err(LayoutMisuse::BlockSizeNotDynamic);
        }
        if self.sparse && self.target != Target::Fixed {
            return Err(LayoutMisuse::SparseNotFixed);
        }
        let defaults = OpsOptions::default();
        let (block_size, vhdx_block_size) = match self.block_size {
            Some(b) if vhdx => {
                check_vhdx_block_size(b).map_err(|e| LayoutMisuse::VhdxBlockSize(e.to_string()))?;
                (DEFAULT_BLOCK_SIZE, b)
            }
            Some(b) => (b, defaults.vhdx_block_size),
            None => (DEFAULT_BLOCK_SIZE, defaults.vhdx_block_size),
        };
        Ok(Layout {
            vhdx,
            block_size,
            vhdx_block_size,
            logical_sector_size: self.logical_sector.unwrap_or(512),
        })
    }
}

impl Layout {
    /// `opts` with this layout's block and sector sizes and `format`.
    pub fn apply(&self, opts: OpsOptions, format: Option<ContainerFormat>) -> OpsOptions {
        OpsOptions {
            block_size: self.block_size,
            vhdx_block_size: self.vhdx_block_size,
            logical_sector_size: self.logical_sector_size,
            format,
            ..opts
        }
    }
}
