//! What fixed disks (`fixed.rs`) and raw images (`raw.rs`) share: every byte of the
//! disk is stored, at its own offset; a read-only file's holes (`SEEK_DATA`/`SEEK_HOLE`)
//! are reported as zeros so that conversions skip them; writes go straight to their
//! offset.

use std::fs::File;
use std::ops::Range;
use std::sync::OnceLock;

use crate::error::Result;

use super::core::FileCore;
use super::extent::{push, LayerExtent};

/// The stored ranges of a read-only flat file (`SEEK_DATA`/`SEEK_HOLE`, found once).
#[derive(Debug, Default)]
pub(crate) struct StoredMap(OnceLock<Vec<(u64, u64)>>);

impl StoredMap {
    /// The extents of `pos..end`: the file's stored ranges as `Data`, its holes as
    /// `Zero` — for a read-only file; a writable one changes under the map, so it is
    /// read as all data.
    pub fn extents(&self, f: &FileCore, pos: u64, end: u64, out: &mut Vec<LayerExtent>) {
        if end <= pos {
            return;
        }
        match f.backend.as_file().filter(|_| !f.writable) {
            Some(file) => {
                // One pass over the file's data and holes, then lookups: no seek per
                // block (on tmpfs each seek walks the page cache), no shared file
                // position between workers.
                let map = self
                    .0
                    .get_or_init(|| data_ranges(file, f.footer.current_size));
                map_extents(map, pos, end, out);
            }
            None => out.push(LayerExtent::Data {
                file_offset: pos,
                len: end - pos,
            }),
        }
    }

    /// The virtual ranges the file may hold data in: its stored ranges when read-only,
    /// else the whole disk.
    pub fn stored_ranges(&self, f: &FileCore) -> Vec<Range<u64>> {
        let size = f.footer.current_size;
        match f.backend.as_file().filter(|_| !f.writable) {
            Some(file) => self
                .0
                .get_or_init(|| data_ranges(file, size))
                .iter()
                .map(|&(a, b)| a..b)
                .collect(),
            None => std::iter::once(0..size).collect(),
        }
    }
}

/// Writes each run at its own offset (a flat file: virtual offset = file offset).
pub(crate) fn write_runs(f: &FileCore, runs: &[(u64, &[u8])]) -> Result<()> {
    for &(offset, data) in runs {
        f.write(data, offset, "writing disk data")?;
    }
    Ok(())
}

/// Gives back the space of `offset..offset + len` (inside the disk) of a flat file: a
/// hole punched where the file system can, zeros written where it cannot (either way
/// the range reads as zeros, which both trim and write zeroes allow). The footer of a
/// fixed disk lies past the disk's bytes, untouched. Returns `len`; 0 on a device (it
/// has no holes: the caller zeros only what is not zero already, rather than write the
/// whole range).
pub(crate) fn discard(f: &FileCore, offset: u64, len: u64) -> Result<u64> {
    let regular = f
        .backend
        .as_file()
        .is_some_and(|file| file.metadata().is_ok_and(|m| m.is_file()));
    if !regular {
        return Ok(0);
    }
    f.backend
        .punch(offset, len)
        .map_err(|e| crate::error::Error::io(&f.path, "punching a hole", offset, e))?;
    Ok(len)
}

/// The stored (non-hole) ranges of `0..limit` of a flat file, from `SEEK_DATA` and
/// `SEEK_HOLE`. Where the file system cannot tell, everything is data.
pub(crate) fn data_ranges(file: &File, limit: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut p = 0;
    while p < limit {
        match vhdkit_platform::next_data(file, p) {
            Ok(Some(d)) if d >= limit => break,
            Ok(Some(d)) => {
                let start = d.max(p);
                let hole = vhdkit_platform::next_hole(file, start)
                    .unwrap_or(limit)
                    .clamp(start + 1, limit);
                out.push((start, hole));
                p = hole;
            }
            // No data at or after `p`.
            Ok(None) => break,
            Err(_) => {
                out.push((p, limit));
                break;
            }
        }
    }
    out
}

/// Splits `pos..end` into `Data` and `Zero` extents along sorted stored ranges.
pub(crate) fn map_extents(map: &[(u64, u64)], pos: u64, end: u64, out: &mut Vec<LayerExtent>) {
    let mut p = pos;
    // First range that ends after `pos`.
    let mut i = map.partition_point(|&(_, e)| e <= pos);
    while p < end {
        match map.get(i) {
            Some(&(s, e)) if s < end => {
                if s > p {
                    push(out, LayerExtent::Zero { len: s - p });
                    p = s;
                }
                let stop = e.min(end);
                push(
                    out,
                    LayerExtent::Data {
                        file_offset: p,
                        len: stop - p,
                    },
                );
                p = stop;
                i += 1;
            }
            _ => {
                push(out, LayerExtent::Zero { len: end - p });
                p = end;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_extents_splits_a_range_along_stored_ranges() {
        let map = [(4096, 8192), (16384, 20480)];
        let mut out = Vec::new();
        map_extents(&map, 0, 24576, &mut out);
        assert_eq!(
            out,
            vec![
                LayerExtent::Zero { len: 4096 },
                LayerExtent::Data {
                    file_offset: 4096,
                    len: 4096
                },
                LayerExtent::Zero { len: 8192 },
                LayerExtent::Data {
                    file_offset: 16384,
                    len: 4096
                },
                LayerExtent::Zero { len: 4096 },
            ]
        );
        let mut inner = Vec::new();
        map_extents(&map, 5000, 6000, &mut inner);
        assert_eq!(
            inner,
            vec![LayerExtent::Data {
                file_offset: 5000,
                len: 1000
            }]
        );
        let mut none = Vec::new();
        map_extents(&[], 0, 100, &mut none);
        assert_eq!(none, vec![LayerExtent::Zero { len: 100 }]);
    }

    #[test]
    fn data_ranges_of_a_sparse_file_find_the_written_parts() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("sparse.raw");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(8 << 20).expect("len");
        vhdkit_platform::FileExt::write_all_at(&f, &[1u8; 4096], 3 << 20).expect("write");
        let ranges = data_ranges(&f, 8 << 20);
        // File systems without hole reporting call it all data; either way the written
        // page is inside a stored range.
        assert!(ranges
            .iter()
            .any(|&(s, e)| s <= 3 << 20 && (3 << 20) + 4096 <= e));
        assert!(ranges.iter().all(|&(s, e)| s < e && e <= 8 << 20));
    }
}
