//! Fixed disks: the disk's bytes at their own offsets, then the footer. Reads and
//! writes as a raw image does (`flat.rs`); a resize moves the footer.

use std::ops::Range;

use vhdkit_task::Phase;

use crate::error::{Error, Result};
use crate::spec::FOOTER_SIZE;

use super::container::{Container, ResizeJob, ResizePlan, ResizeSteps};
use super::core::{resized_footer, FileCore};
use super::extent::LayerExtent;
use super::flat::{self, StoredMap};
use super::{DiskKind, FooterSource};

/// An open fixed disk.
#[derive(Debug, Default)]
pub(crate) struct Fixed {
    stored: StoredMap,
}

impl Container for Fixed {
    fn kind(&self, _f: &FileCore) -> DiskKind {
        DiskKind::Fixed
    }

    fn extents(&self, f: &FileCore, pos: u64, end: u64, out: &mut Vec<LayerExtent>) -> Result<()> {
        self.stored.extents(f, pos, end, out);
        Ok(())
    }

    fn stored_ranges(&self, f: &FileCore) -> Vec<Range<u64>> {
        self.stored.stored_ranges(f)
    }

    fn write_runs(&self, f: &FileCore, runs: &[(u64, &[u8])]) -> Result<()> {
        flat::write_runs(f, runs)
    }

    fn discard(&self, f: &FileCore, offset: u64, len: u64) -> Result<u64> {
        flat::discard(f, offset, len)
    }

    /// A new size, or at the same size the padding an interrupted resize left before
    /// the footer: [`ResizePlan::Fixed`].
    fn plan_resize(&self, f: &FileCore, new: u64) -> Result<ResizePlan> {
        let leftover = self.footer_offset(f) > f.footer.current_size;
        Ok(if new == f.footer.current_size && !leftover {
            ResizePlan::Nothing
        } else {
            ResizePlan::Fixed
        })
    }

    fn resize(
        &mut self,
        f: &mut FileCore,
        _plan: ResizePlan,
        job: ResizeJob,
        steps: &mut dyn ResizeSteps,
    ) -> Result<u64> {
        steps.phase(Phase::Zero, job.new.saturating_sub(job.old));
        self.resize_to(f, job.new, job.sparse, &mut |n| steps.tick(n))?;
        steps.lap("resize");
        Ok(0)
    }
}

impl Fixed {
    /// Resizes a fixed disk of `S` bytes whose trailing footer is at `F` (`F > S` only
    /// after an interrupted resize) to `size` (`N`):
    ///
    /// A. when the footer moves forward (`N > F`): the space up to `N + 512` is reserved
    ///    (unless `sparse`); the current footer is written at `N`; sync. The disk still
    ///    reads as before: its size is `S`, the rest is padding before the footer.
    /// B. when it grows: the part of the new space that lay inside the old file
    ///    (`S .. min(N, old end)`: the old footer, any padding) is zeroed where it is
    ///    not zero; sync. Still padding.
    /// C. the footer at `F` is rewritten with the new size and geometry; sync. The disk
    ///    reads as resized (if it shrank, the cut data is padding now).
    /// D. when the footer must come back (`N < F`): the footer at `N`, sync; the file is
    ///    truncated after it, sync.
    ///
    /// `tick` is called with bytes zeroed or skipped in B (it may cancel: B writes only
    /// padding). Returns the file's new length.
    fn resize_to(
        &self,
        f: &mut FileCore,
        size: u64,
        sparse: bool,
        tick: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<u64> {
        let old_size = f.footer.current_size;
        let old_end = f
            .backend
            .len()
            .map_err(|e| Error::file(&f.path, "reading the length", e))?;
        let mut footer_at = self.footer_offset(f);
        let old_footer = f.footer.encode();
        // A.
        if size > footer_at {
            if !sparse {
                let end = size + FOOTER_SIZE as u64;
                if let Err(e) = f.backend.reserve(old_end, end - old_end) {
                    // Give back what was reserved past the end (nothing reads it).
                    let _ = f.backend.set_len(old_end);
                    return Err(Error::io(&f.path, "reserving the new space", old_end, e));
                }
            }
            f.write(&old_footer, size, "writing the footer at the new end")?;
            f.sync("syncing the footer at the new end")?;
            footer_at = size;
            f.file_len = size + FOOTER_SIZE as u64;
            f.footer_source = FooterSource::End;
        }
        // B.
        if size > old_size {
            let end = size.min(old_end);
            if f.zero_range(old_size, end, tick)? {
                f.sync("syncing the zeroed new space")?;
            }
        }
        // C.
        let footer = resized_footer(&f.footer, size);
        let bytes = footer.encode();
        f.write(&bytes, footer_at, "writing the footer")?;
        f.sync("syncing the footer")?;
        f.footer = footer;
        f.file_len = f.file_len.max(footer_at + FOOTER_SIZE as u64);
        f.footer_source = FooterSource::End;
        // D.
        if size < footer_at {
            f.write(&bytes, size, "writing the footer at the new end")?;
            f.sync("syncing the footer at the new end")?;
            f.backend
                .set_len(size + FOOTER_SIZE as u64)
                .map_err(|e| Error::file(&f.path, "truncating", e))?;
            f.sync("syncing the truncation")?;
            f.file_len = size + FOOTER_SIZE as u64;
        }
        Ok(f.file_len)
    }
}
