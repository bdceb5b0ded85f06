//! Images on the host: opening VHD files (and raw images), resolving differencing
//! chains, reading and writing any virtual byte range, and creating disks.
//!
//! Each container format has its own room behind one trait (`container.rs`): raw
//! images (`raw.rs`), fixed disks (`fixed.rs`, sharing `flat.rs` with raw), dynamic and
//! differencing disks (`sparse/`), host-drive stubs (`hostdrive.rs`), VHDX files
//! (`vhdx/`). [`VhdFile`]
//! opens a file and holds its container; [`Disk`] stacks files into a chain.

mod allocation;
pub mod backend;
pub(crate) mod batmap;
mod chain;
pub(crate) mod container;
pub(crate) mod core;
pub(crate) mod create;
mod extent;
pub(crate) mod file;
mod fixed;
mod flat;
mod footer;
pub mod hostdrive;
#[allow(unsafe_code)]
// the one module with unsafe: maps files, clones extents; see its SAFETY comments
mod map_clone;
pub(crate) mod newfile;
pub(crate) mod newvhdx;
pub(crate) mod open;
mod options;
pub mod output;
mod parents;
mod raw;
pub(crate) mod sparse;
mod stored;
pub(crate) mod vhdx;
pub(crate) use map_clone::Window;
pub use vhdx::{LocatorEntry as VhdxLocatorEntry, VhdxInfo};

pub use crate::spec::layout::DATA_ALIGNMENT;
#[cfg(any(test, feature = "testing"))]
pub use backend::MemBackend;
pub use backend::{Backend, FileBackend};
pub use chain::{Disk, Extent};
pub use create::{
    check_create_options, check_create_options_for, check_create_size, CreateOptions,
};
pub use file::{FooterSource, LayerExtent, VhdFile};
pub(crate) use newfile::sync_dir;
pub use newfile::NewFile;
pub use newvhdx::{
    check_logical_sector, check_vhdx_block_size, check_vhdx_size, ContainerFormat,
    DEFAULT_VHDX_BLOCK_SIZE, MIN_VHDX_SIZE,
};
pub use output::{source_mode, OutputOptions};
pub use parents::{
    find_children, parent_candidates, FoundBy, FsResolver, ParentCandidate, ParentResolver,
};

pub use options::{DiskKind, HostDrives, OpenOptions, DEFAULT_MAX_DEPTH};
