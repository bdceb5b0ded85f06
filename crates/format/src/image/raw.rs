//! Raw images: no metadata at all; every byte of the file is disk data and the file's
//! length is the disk's size (the footer [`super::VhdFile`] holds is made up).

use std::ops::Range;

use crate::error::Result;

use super::container::Container;
use super::core::FileCore;
use super::extent::LayerExtent;
use super::flat::{self, StoredMap};
use super::DiskKind;

/// An open raw image.
#[derive(Debug, Default)]
pub(crate) struct Raw {
    stored: StoredMap,
}

impl Container for Raw {
    fn kind(&self, _f: &FileCore) -> DiskKind {
        DiskKind::Raw
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
}
