//! Xen's batmap in an open file: found and read at open, its area kept as metadata, and
//! its bits cleared when blocks stop being fully written (released by compact). The
//! structure is in `spec::batmap`; `docs/format.md` says where it comes from.

use std::path::Path;

use crate::error::{Error, Result};
use crate::spec::batmap::{self, BatmapHeader, BATMAP_HEADER_SIZE};
use crate::spec::{DynamicHeader, Footer, Severity};

use super::backend::Backend;

/// A file's batmap: where its header is, the header, and the bitmap bytes blktap reads
/// and checksums.
#[derive(Debug, Clone)]
pub(crate) struct Batmap {
    pub header_offset: u64,
    pub header: BatmapHeader,
    pub map: Vec<u8>,
}

/// Finds the batmap of a `tap` file. `Ok(None)` when the file has none (or, for creator
/// version 1.1, no valid one). A batmap that is expected but damaged is a warning and
/// `None`: the file is read as any VHD, and its area is not known to be metadata — so
/// a writable open refuses it (new blocks could land on it).
pub(crate) fn find(
    path: &Path,
    b: &dyn Backend,
    footer: &Footer,
    header: &DynamicHeader,
    footer_at: u64,
    writable: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Batmap>> {
    let expected = match batmap::expects_batmap(footer) {
        Some(false) => return Ok(None),
        e => e == Some(true),
    };
    let at = batmap::header_offset(header.table_offset, header.max_table_entries);
    let len = b
        .len()
        .map_err(|e| Error::file(path, "reading the length", e))?;
    let mut raw = [0u8; BATMAP_HEADER_SIZE];
    let found = at.saturating_add(BATMAP_HEADER_SIZE as u64) <= len
        && b.read_exact_at(&mut raw, at).is_ok();
    let h = BatmapHeader::decode(&raw).filter(|_| found);
    let problems: Vec<String> = match &h {
        Some(h) => h
            .validate(footer.current_size, header.max_table_entries, footer_at)
            .into_iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| p.message)
            .collect(),
        None => vec![format!("no batmap header at {at:#x}")],
    };
    let Some(h) = h.filter(|_| problems.is_empty()) else {
        if !expected {
            return Ok(None);
        }
        if writable {
            return Err(Error::corrupt(
                path,
                "batmap",
                at,
                format!(
                    "{}; a blktap file needs it, and new blocks could land on its area (check --repair cannot rebuild it)",
                    problems.join("; ")
                ),
            ));
        }
        warnings.push(format!(
            "the batmap at {at:#x} is invalid: {}",
            problems.join("; ")
        ));
        return Ok(None);
    };
    let n = batmap::map_bytes(footer.current_size) as usize;
    let mut map = vec![0u8; n];
    b.read_exact_at(&mut map, h.map_offset)
        .map_err(|e| Error::io(path, "reading the batmap", h.map_offset, e))?;
    if batmap::checksum(&map, h.version) != h.checksum {
        warnings.push(format!(
            "the batmap checksum is wrong (stored {:#010x}, computed {:#010x}); Xen's tools refuse the file until `check --repair` recomputes it",
            h.checksum,
            batmap::checksum(&map, h.version)
        ));
    }
    Ok(Some(Batmap {
        header_offset: at,
        header: h,
        map,
    }))
}

impl Batmap {
    /// Clears the bits of `blocks`; if any was set, writes the bitmap sectors that
    /// changed, then the header with the new checksum (the caller syncs). Returns
    /// whether anything was written.
    pub(crate) fn clear(&mut self, path: &Path, b: &dyn Backend, blocks: &[u64]) -> Result<bool> {
        let before = self.map.clone();
        let mut changed = false;
        for &blk in blocks {
            changed |= batmap::clear_bit(&mut self.map, blk);
        }
        if !changed {
            return Ok(false);
        }
        self.write(path, b, &before)?;
        Ok(true)
    }

    /// Recomputes the checksum and writes the bitmap sectors that differ from `before`,
    /// then the header.
    pub(crate) fn write(&mut self, path: &Path, b: &dyn Backend, before: &[u8]) -> Result<()> {
        for (i, (now, was)) in self.map.chunks(512).zip(before.chunks(512)).enumerate() {
            if now != was {
                let at = self.header.map_offset + i as u64 * 512;
                b.write_all_at(now, at)
                    .map_err(|e| Error::io(path, "writing the batmap", at, e))?;
            }
        }
        self.header.checksum = batmap::checksum(&self.map, self.header.version);
        b.write_all_at(&self.header.encode(), self.header_offset)
            .map_err(|e| Error::io(path, "writing the batmap header", self.header_offset, e))
    }
}
