//! The ordered writer of a new file (convert, merge-to): composed blocks arrive in
//! index order and go where [`Placement`] puts them.
//!
//! On a file system that shares extents between files (XFS with reflink, btrfs), each
//! stored run of a block that lies in a source file on the same file system, at the
//! same offset within a 4 KiB block as its place in the output, is cloned rather than
//! copied (`FICLONERANGE`): no data moves and no space is used. Runs that continue each
//! other in both files are cloned in one call (a fixed disk's whole data area, say).
//! Zero runs of a block are holes. Everything else is written through the page cache;
//! the pages of a raw or fixed result that are all zero stay holes.
//!
//! A device written in place (a raw result, `OutputOptions::devices`) keeps its old bytes
//! where nothing is written: there the writer zeroes what a new file leaves as holes —
//! the zero pages of a block, the blocks composed as zeros, and each run of blocks the
//! metadata knew empty, in one step per run.

use std::path::Path;

use crate::error::{Error, Result};
use crate::image::backend::{Backend, FileBackend};
use crate::image::newvhdx::write_metadata;
use crate::image::output;
use crate::image::{Disk, Extent};
use crate::spec::{DiskType, Footer};

use super::is_zero;
use super::placement::{Placement, FLAT_UNIT};
use super::source::{BlockData, Composed, Offload};
use super::Target;

/// Pages of fixed and raw outputs that are all zero stay holes, at this granularity.
pub(crate) const ZERO_PAGE: usize = 4096;

/// The longest clone issued at once: runs that continue each other are merged into one
/// call up to this length (a cancel waits for at most one such call).
const MAX_CLONE: u64 = 256 << 20;

/// Bytes read at a time when a run that could not be cloned is copied from its file.
const COPY_STEP: u64 = 1 << 20;

/// The file system (`st_dev`) of `out` if it shares extents between files (XFS, btrfs,
/// ReFS): the output of a conversion there may clone its source's data.
pub(crate) fn offload_device(out: &std::fs::File) -> Option<u64> {
    vhdkit_platform::offload_volume(out)
}

/// Errors with which the kernel refuses to clone a pair of files or ranges (nothing was
/// cloned): the writer copies the bytes itself from then on.
fn clone_refused(e: &std::io::Error) -> bool {
    vhdkit_platform::clone_refused(e)
}

/// A clone asked for and not issued yet: runs that continue it are added to it.
struct PendingClone {
    layer: usize,
    src: u64,
    dst: u64,
    len: u64,
}

/// The ordered writer of a new file (see the module's doc).
pub(crate) struct Writer<'a> {
    placement: Placement,
    out: &'a FileBackend,
    /// The source whose runs are cloned (or read, for blocks composed unread).
    disk: &'a Disk,
    /// Copy offload: the output's file system and the chain levels'. `None` where the
    /// output shares no extents, and from the first refusal of the kernel on.
    offload: Option<&'a Offload>,
    pending: Option<PendingClone>,
    /// Bytes cloned (or asked to be) so far.
    cloned: u64,
    /// The output is a device written in place (`Some(block)`): what a new file leaves
    /// as holes is zeroed.
    device: Option<bool>,
    /// A device: the first unit neither written nor zeroed yet.
    next_unit: u64,
    path: &'a Path,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(
        placement: Placement,
        out: &'a FileBackend,
        disk: &'a Disk,
        offload: Option<&'a Offload>,
        device: Option<bool>,
        path: &'a Path,
    ) -> Writer<'a> {
        Writer {
            placement,
            out,
            disk,
            offload,
            pending: None,
            cloned: 0,
            device,
            next_unit: 0,
            path,
        }
    }

    /// Makes `len` bytes at `at` of a raw or fixed result read as zeros: a hole of a new
    /// file already does; a device is zeroed there.
    fn zero(&self, at: u64, len: u64) -> Result<()> {
        match self.device {
            None => Ok(()),
            Some(block) => {
                output::zero_range(self.out, at, len, block).map_err(self.io("writing zeros", at))
            }
        }
    }

    /// A device: zeroes the units from the first not yet written up to `unit`
    /// (excluded) — blocks the metadata knew empty, in one step.
    fn zero_units_before(&mut self, unit: u64) -> Result<()> {
        if self.device.is_none() || unit <= self.next_unit {
            return Ok(());
        }
        let from = self.next_unit * FLAT_UNIT;
        let to = (unit * FLAT_UNIT).min(self.placement.size());
        self.next_unit = unit;
        self.zero(from, to.saturating_sub(from))
    }

    /// Bytes cloned so far (they cost no new space and leave nothing to sync).
    pub(crate) fn cloned(&self) -> u64 {
        self.cloned
    }

    fn io(&self, doing: &'static str, at: u64) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |e| Error::io(self.path, doing, at, e)
    }

    /// Writes `buf` at `at` through the page cache.
    fn put(&self, buf: &[u8], at: u64, doing: &'static str) -> Result<()> {
        self.out.write_all_at(buf, at).map_err(self.io(doing, at))
    }

    /// Writes `buf` at `at` of a raw or fixed result, leaving its all-zero 4 KiB pages
    /// (of the output) as holes: less to copy, flush and store; a device is zeroed there
    /// instead, one run of pages at a time.
    fn put_sparse(&self, buf: &[u8], at: u64) -> Result<()> {
        let page = ZERO_PAGE as u64;
        let mut pos = 0usize;
        // The current run of pages alike: where it starts, whether they are zero.
        let mut run: Option<(usize, bool)> = None;
        let flush = |r: usize, zero: bool, end: usize| {
            if zero {
                self.zero(at + r as u64, (end - r) as u64)
            } else {
                self.put(&buf[r..end], at + r as u64, "writing disk data")
            }
        };
        while pos < buf.len() {
            let next = ((at + pos as u64) / page + 1) * page;
            let end = ((next - at) as usize).min(buf.len());
            let zero = is_zero(&buf[pos..end]);
            match run {
                Some((_, z)) if z == zero => {}
                Some((r, z)) => {
                    flush(r, z, pos)?;
                    run = Some((pos, zero));
                }
                None => run = Some((pos, zero)),
            }
            pos = end;
        }
        if let Some((r, z)) = run {
            flush(r, z, buf.len())?;
        }
        Ok(())
    }

    /// Writes a block composed with data (`c.data` is `Some`). Blocks arrive in index
    /// order.
    pub(crate) fn write_block(&mut self, c: &Composed) -> Result<()> {
        self.zero_units_before(c.index)?;
        let Some(data) = &c.data else {
            // All zero: a hole of a new file (a dynamic result leaves it unallocated); a
            // device is zeroed there.
            return self.zero_units_before(c.index + 1);
        };
        self.next_unit = c.index + 1;
        let placed = self.placement.place(c.index, self.path)?;
        let flat = placed.flat;
        if let Some(bitmap_at) = placed.bitmap {
            // Bitmap: fully set, as every real writer of dynamic disks does.
            let bitmap = vec![0xFFu8; (placed.data - bitmap_at) as usize];
            self.put(&bitmap, bitmap_at, "writing a block bitmap")?;
        }
        // Run by run where runs may be cloned (or the block was not read): zero runs stay
        // holes of the new file, stored runs are cloned where they can be.
        if !c.runs.is_empty() && (self.offload.is_some() || matches!(data, BlockData::Unread)) {
            let mut pos = 0u64;
            for e in &c.runs {
                if let Extent::Data {
                    layer,
                    file_offset,
                    len,
                } = *e
                {
                    self.put_run(data, pos, layer, file_offset, len, placed.data + pos, flat)?;
                }
                pos += e.len();
            }
            return Ok(());
        }
        let bytes = data
            .bytes()
            .expect("a block composed unread carries its runs");
        if flat {
            self.put_sparse(bytes, placed.data)
        } else {
            self.put(bytes, placed.data, "writing a block")
        }
    }

    /// Writes the stored run of `len` bytes at `pos` in the block (`file_offset` in chain
    /// level `layer`) at output offset `at`: the whole 4 KiB blocks of it cloned where
    /// copy offload applies, the rest written.
    #[allow(clippy::too_many_arguments)]
    fn put_run(
        &mut self,
        data: &BlockData,
        pos: u64,
        layer: usize,
        file_offset: u64,
        len: u64,
        at: u64,
        flat: bool,
    ) -> Result<()> {
        let align = Offload::ALIGN;
        let (head, middle) = match self.offload {
            Some(o) if o.can_clone(layer, file_offset, at) => {
                let head = (at.next_multiple_of(align) - at).min(len);
                (head, (len - head) / align * align)
            }
            _ => (len, 0),
        };
        self.put_bytes(data, pos, layer, file_offset, head, at, flat)?;
        if middle > 0 {
            self.clone_run(layer, file_offset + head, middle, at + head)?;
        }
        let done = head + middle;
        self.put_bytes(
            data,
            pos + done,
            layer,
            file_offset + done,
            len - done,
            at + done,
            flat,
        )
    }

    /// Writes `len` bytes of the block at `pos` (stored at `file_offset` of `layer`) at
    /// `at`: from the composed bytes, or read from the source for a block composed
    /// unread.
    #[allow(clippy::too_many_arguments)]
    fn put_bytes(
        &self,
        data: &BlockData,
        pos: u64,
        layer: usize,
        file_offset: u64,
        len: u64,
        at: u64,
        flat: bool,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if let Some(bytes) = data.bytes() {
            let b = &bytes[pos as usize..(pos + len) as usize];
            return if flat {
                self.put_sparse(b, at)
            } else {
                self.put(b, at, "writing a block")
            };
        }
        self.copy_from_layer(layer, file_offset, len, at, flat)
    }

    /// Copies `len` bytes at `file_offset` of chain level `layer` to `at`, reading them.
    fn copy_from_layer(
        &self,
        layer: usize,
        file_offset: u64,
        len: u64,
        at: u64,
        flat: bool,
    ) -> Result<()> {
        let file = &self.disk.layers()[layer];
        let mut buf = vec![0u8; len.min(COPY_STEP) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(COPY_STEP) as usize;
            file.read_data(&mut buf[..n], file_offset + done)?;
            if flat {
                self.put_sparse(&buf[..n], at + done)?;
            } else {
                self.put(&buf[..n], at + done, "writing a block")?;
            }
            done += n as u64;
        }
        Ok(())
    }

    /// Asks for `len` bytes at `src` of chain level `layer` to be cloned to `dst`: added
    /// to the pending clone when it continues it in both files, else issued after it.
    fn clone_run(&mut self, layer: usize, src: u64, len: u64, dst: u64) -> Result<()> {
        if let Some(p) = &mut self.pending {
            if p.layer == layer && p.src + p.len == src && p.dst + p.len == dst && p.len < MAX_CLONE
            {
                p.len += len;
                self.cloned += len;
                return Ok(());
            }
        }
        self.flush_clone()?;
        self.pending = Some(PendingClone {
            layer,
            src,
            dst,
            len,
        });
        self.cloned += len;
        Ok(())
    }

    /// Issues the pending clone. Refused by the kernel (nothing cloned): the bytes are
    /// copied instead, and nothing is cloned from then on.
    pub(crate) fn flush_clone(&mut self) -> Result<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let source = &self.disk.layers()[p.layer];
        let result = match source.data_file() {
            Some(f) => self.out.clone_from(f, p.src, p.len, p.dst),
            None => Err(std::io::Error::from(std::io::ErrorKind::Unsupported)),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if clone_refused(&e) || e.kind() == std::io::ErrorKind::Unsupported => {
                self.offload = None;
                self.cloned -= p.len;
                let flat = self.placement.target() != Target::Dynamic;
                self.copy_from_layer(p.layer, p.src, p.len, p.dst, flat)
            }
            Err(e) => Err(Error::io(self.path, "cloning disk data", p.dst, e)),
        }
    }

    /// Issues what is pending and writes the metadata and footers: the file ends where
    /// the placement says.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.flush_clone()?;
        let units = self.placement.blocks();
        self.zero_units_before(units)?;
        let p = &self.placement;
        let end = p.footer_at();
        if let Some(v) = p.vhdx_state() {
            // A VHDX: its length, then everything outside the payload (identifier,
            // headers, region tables, metadata, the BAT of the blocks placed).
            let metadata = v.layout.metadata(uuid::Uuid::new_v4(), None);
            return self
                .out
                .set_len(end)
                .and_then(|_| write_metadata(self.out, &v.layout, &metadata, Some(&v.bat)))
                .map_err(self.io("writing the VHDX metadata", 0));
        }
        match (p.dynamic_metadata(), p.target()) {
            // A device keeps its size; bytes past the result are left as they are.
            (_, Target::Raw) if self.device.is_some() => Ok(()),
            (_, Target::Raw) => self
                .out
                .set_len(p.file_len())
                .map_err(|e| Error::file(self.path, "setting the length", e)),
            (None, _) => {
                self.out
                    .set_len(end)
                    .map_err(|e| Error::file(self.path, "setting the length", e))?;
                let footer = Footer::new(DiskType::Fixed, p.size());
                self.out
                    .write_all_at(&footer.encode(), end)
                    .map_err(self.io("writing the footer", end))
            }
            (Some((metadata, footer)), _) => self
                .out
                .write_all_at(&metadata, 0)
                .and_then(|_| self.out.write_all_at(&footer, end))
                .map_err(self.io("writing the metadata", 0)),
        }
    }
}
