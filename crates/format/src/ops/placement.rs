//! Where the blocks of a new file go and how long it ends up: the one piece of
//! arithmetic that [`super::convert`] writes by and [`super::measure()`] counts by.

use std::path::Path;

use crate::error::{Error, Result};
use crate::image::newvhdx::vhdx_layout;
use crate::spec::layout::NewSparse;
use crate::spec::{Bat, BAT_ENTRY_UNUSED, SECTOR_SIZE};
use crate::vhdx::{self, NewVhdx, PayloadState, VhdxLayout};

use super::Target;

/// A footer's length, as a file offset.
pub(crate) const FOOTER_SIZE: u64 = crate::spec::FOOTER_SIZE as u64;

/// Unit of work of fixed and raw outputs (their "blocks"): 2 MiB.
pub(crate) const FLAT_UNIT: u64 = 2 << 20;

/// Where the blocks of a new file of kind `target` go and how long the file ends up:
/// the one piece of arithmetic that convert writes by and [`super::measure()`] counts by,
/// so that a measure is the length the conversion then writes. Blocks are the units
/// `compose_chunk` composes; only those holding data are placed, in index order.
pub(crate) struct Placement {
    target: Target,
    size: u64,
    /// A dynamic result: its layout (from [`NewSparse`], the one builder of the dynamic
    /// files vhdkit writes), the BAT being filled, where the next block goes.
    dynamic: Option<(NewSparse, Bat, u64)>,
    /// A VHDX result (fixed or dynamic): its layout, the BAT being filled, where the
    /// next block of a dynamic one goes.
    vhdx: Option<VhdxPlacement>,
}

/// The state of a VHDX result's [`Placement`].
pub(crate) struct VhdxPlacement {
    /// The layout (from `vhdx::NewVhdx`, the one builder of new VHDX files).
    pub layout: VhdxLayout,
    /// The BAT: a fixed result's every block in order; a dynamic result's blocks as
    /// placed (the others not present: they read as zeros).
    pub bat: vhdx::bat::Bat,
    /// Where the next block of a dynamic result goes.
    next: u64,
}

/// Where [`Placement::place`] put a block.
pub(crate) struct Placed {
    /// The block's sector bitmap (dynamic results only).
    pub bitmap: Option<u64>,
    /// The block's data.
    pub data: u64,
    /// Whether the block's all-zero pages are left as holes (fixed, raw and VHDX
    /// results) rather than written (a dynamic VHD's block is written whole).
    pub flat: bool,
}

impl Placement {
    /// The placement of a new file of `size` virtual bytes; `block_size` is a dynamic
    /// result's (validated by [`check_target`]).
    pub(crate) fn new(target: Target, size: u64, block_size: u32) -> Result<Placement> {
        let dynamic = match target {
            Target::Dynamic => {
                let new = NewSparse::new(size, block_size, None).map_err(Error::InvalidArgument)?;
                let bat = Bat::new_unused(new.header.max_table_entries);
                let next = new.first_block();
                Some((new, bat, next))
            }
            Target::Fixed | Target::Raw => None,
        };
        Ok(Placement {
            target,
            size,
            dynamic,
            vhdx: None,
        })
    }

    /// The placement of a new fixed or dynamic VHDX of `size` virtual bytes in blocks
    /// of `block_size` with `logical_sector`-byte sectors. Both are composed in pieces
    /// of [`FLAT_UNIT`] (at most the block): a fixed result's data area is contiguous
    /// (block `b` at `first_payload + b · block_size`), and a dynamic result's block is
    /// allocated when its first piece holding data arrives — a block whose pieces are
    /// all zero is never allocated (not present).
    pub(crate) fn vhdx(
        target: Target,
        size: u64,
        block_size: u32,
        logical_sector: u32,
    ) -> Result<Placement> {
        let disk_type = match target {
            Target::Fixed => vhdx::DiskType::Fixed,
            Target::Dynamic => vhdx::DiskType::Dynamic,
            Target::Raw => {
                return Err(Error::InvalidArgument(
                    "a raw image has no container: it cannot be a VHDX".into(),
                ))
            }
        };
        let mut new = NewVhdx::new(disk_type, size);
        new.block_size = block_size;
        new.logical_sector_size = logical_sector;
        let layout = vhdx_layout(&new)?;
        let bat = layout.initial_bat();
        let next = layout.first_payload;
        Ok(Placement {
            target,
            size,
            dynamic: None,
            vhdx: Some(VhdxPlacement { layout, bat, next }),
        })
    }

    /// A VHDX result's layout and BAT as placed so far; `None` for a VHD or raw one.
    pub(crate) fn vhdx_state(&self) -> Option<&VhdxPlacement> {
        self.vhdx.as_ref()
    }

    /// Bytes of the virtual disk per block: a dynamic VHD's block size; fixed and raw
    /// results, and VHDX results, are composed in pieces of [`FLAT_UNIT`] (a VHDX block
    /// of 1 MiB: the block), so that a chunk holds several pieces to compose in parallel
    /// and memory stays bounded by the chunk whatever the VHDX block size.
    pub(crate) fn unit(&self) -> u64 {
        match (&self.dynamic, &self.vhdx) {
            (Some((new, _, _)), _) => new.layout.block_size,
            (None, Some(v)) => FLAT_UNIT.min(u64::from(v.layout.new.block_size)),
            _ => FLAT_UNIT,
        }
    }

    /// Blocks covering the virtual size (the last may be short).
    pub(crate) fn blocks(&self) -> u64 {
        self.size.div_ceil(self.unit())
    }

    /// Places block `index`, which holds data. Blocks arrive in index order. `path`
    /// names the file in an error.
    pub(crate) fn place(&mut self, index: u64, path: &Path) -> Result<Placed> {
        let unit = self.unit();
        if let Some(v) = self.vhdx.as_mut() {
            return Ok(Placed {
                bitmap: None,
                data: v.place(self.target, index, unit),
                // Zero pages stay holes, a dynamic VHDX's too: they read as zeros in a
                // new file, and the file stores only the data (measured: no slower
                // than writing the pieces whole, 412 against 493 MiB allocated for
                // the bench's 1 GiB disk).
                flat: true,
            });
        }
        let Some((new, bat, next)) = self.dynamic.as_mut() else {
            return Ok(Placed {
                bitmap: None,
                data: index * FLAT_UNIT,
                flat: true,
            });
        };
        let layout = &new.layout;
        let at = layout.place_block(*next);
        if at / SECTOR_SIZE >= u64::from(BAT_ENTRY_UNUSED) {
            return Err(Error::Unsupported {
                path: path.to_owned(),
                detail: "the file would grow past what a BAT entry addresses".into(),
            });
        }
        *next = at + layout.stride();
        bat.set(index, (at / SECTOR_SIZE) as u32);
        Ok(Placed {
            bitmap: Some(at),
            data: at + layout.bitmap_size,
            flat: false,
        })
    }

    /// The length of the file holding the blocks placed so far, footer included.
    pub(crate) fn file_len(&self) -> u64 {
        if let Some(v) = &self.vhdx {
            return v.file_len(self.target);
        }
        match self.target {
            Target::Raw => self.size,
            Target::Fixed | Target::Dynamic => self.footer_at() + FOOTER_SIZE,
        }
    }

    /// Where the footer of a fixed or dynamic result goes: past the data of a fixed
    /// disk; past the last block and the metadata, on a sector, of a dynamic one.
    pub(crate) fn footer_at(&self) -> u64 {
        if let Some(v) = &self.vhdx {
            return v.file_len(self.target);
        }
        match &self.dynamic {
            Some((new, _, next)) => new.layout.data_end(*next),
            None => self.size,
        }
    }

    /// The kind of file placed.
    pub(crate) fn target(&self) -> Target {
        self.target
    }

    /// The virtual size of the result.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// A dynamic result's metadata as placed so far (footer copy, header, BAT; written
    /// at offset 0) and its footer; `None` for fixed and raw results.
    pub(crate) fn dynamic_metadata(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        self.dynamic
            .as_ref()
            .map(|(new, bat, _)| (new.metadata(Some(bat)), new.footer.encode().to_vec()))
    }
}

impl VhdxPlacement {
    /// Places piece `index` (which holds data; pieces arrive in index order) of a VHDX
    /// result of kind `target`, pieces being `unit` bytes: in place in a fixed file's
    /// data area; in a dynamic file, inside its block, which is allocated (marked fully
    /// present) where the next block goes — after the last, 1 MiB aligned as every block
    /// size is — when its first piece arrives.
    fn place(&mut self, target: Target, index: u64, unit: u64) -> u64 {
        let first = self.layout.first_payload;
        let pos = index * unit;
        if target != Target::Dynamic {
            return first + pos;
        }
        let bs = u64::from(self.layout.new.block_size);
        let block = pos / bs;
        let at = match self.bat.payload(block).and_then(|p| p.file_offset) {
            Some(at) => at,
            None => {
                let at = self.next;
                self.next += bs;
                self.bat.set_payload(block, PayloadState::FullyPresent, at);
                at
            }
        };
        at + pos % bs
    }

    /// The length of the file: a fixed file's whole layout; a dynamic file's metadata
    /// and the blocks placed so far.
    fn file_len(&self, target: Target) -> u64 {
        match target {
            Target::Dynamic => self.next,
            _ => self.layout.file_len,
        }
    }
}
