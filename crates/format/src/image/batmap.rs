//! Xen's batmap in an open file: read once for open, `check` and repair alike (so that
//! they grade the same damage the same way), its area kept as metadata, and its bits
//! cleared when blocks stop being fully written (released by compact). The structure is
//! in `spec::batmap`; `docs/format.md` says where it comes from and what a strict open
//! makes of a damaged one.

use std::path::Path;

use crate::error::{Error, Result};
use crate::spec::batmap::{self, BatmapHeader, BATMAP_COOKIE, BATMAP_HEADER_SIZE, BATMAP_VERSION};
use crate::spec::{Bat, DynamicHeader, Footer, Problem, Severity, SparseLayout, SECTOR_SIZE};

use super::backend::Backend;
use super::OpenOptions;

/// A file's batmap: where its header is, the header, and the bitmap bytes blktap reads
/// and checksums.
#[derive(Debug, Clone)]
pub(crate) struct Batmap {
    pub header_offset: u64,
    pub header: BatmapHeader,
    pub map: Vec<u8>,
}

/// The fix every batmap problem names: `check --repair` rewrites the header, clears the
/// bits that break the promise and recomputes the checksum (`ops/repair.rs`).
pub(crate) const FIX: &str = "`vhdkit check --repair` rewrites the batmap";

/// What reading a `tap` file's batmap found. One reading serves open, `check` and
/// repair, so that they grade the same damage the same way.
#[derive(Debug)]
pub(crate) struct Found {
    /// Where the header is (or belongs): right after the BAT padded to whole sectors.
    pub header_offset: u64,
    /// The batmap, when its header is valid and its bitmap was read (its checksum may
    /// still be wrong: see `problems`).
    pub batmap: Option<Batmap>,
    /// Every problem of the header and the checksum (errors, located).
    pub problems: Vec<Problem>,
}

/// Reads the batmap of a file of `len` bytes whose trailing footer is at `footer_at`.
/// `None` when the file announces none: not a sparse `tap` file, creator version 0.1,
/// or 1.1 without a header blktap would take (cookie and version, as libvhd's
/// `vhd_has_batmap` decides). Never fails: what cannot be read is a problem.
pub(crate) fn read(
    b: &dyn Backend,
    footer: &Footer,
    header: &DynamicHeader,
    len: u64,
    footer_at: u64,
) -> Option<Found> {
    let expected = batmap::expects_batmap(footer)?;
    let at = batmap::header_offset(header.table_offset, header.max_table_entries);
    let mut raw = [0u8; BATMAP_HEADER_SIZE];
    let h = (at.saturating_add(BATMAP_HEADER_SIZE as u64) <= len
        && b.read_exact_at(&mut raw, at).is_ok())
    .then(|| BatmapHeader::decode(&raw))
    .flatten();
    if !expected
        && h.as_ref()
            .is_none_or(|h| h.cookie != BATMAP_COOKIE || h.version > BATMAP_VERSION)
    {
        return None; // creator 1.1 without one: none is needed
    }
    let mut found = Found {
        header_offset: at,
        batmap: None,
        problems: Vec::new(),
    };
    let Some(h) = h else {
        found.problems.push(
            Problem::new(
                Severity::Error,
                "batmap",
                "header",
                format!("the batmap header lies past the end of the file; {FIX}"),
            )
            .at(at),
        );
        return Some(found);
    };
    found.problems = h
        .validate(footer.current_size, header.max_table_entries, footer_at)
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|mut p| {
            p.message = format!("{}; {FIX}", p.message);
            p.at(at)
        })
        .collect();
    if !found.problems.is_empty() {
        return Some(found);
    }
    let mut map = vec![0u8; batmap::map_bytes(footer.current_size) as usize];
    if b.read_exact_at(&mut map, h.map_offset).is_err() {
        found.problems.push(
            Problem::new(
                Severity::Error,
                "batmap",
                "offset",
                format!("the bitmap cannot be read; {FIX}"),
            )
            .at(h.map_offset),
        );
        return Some(found);
    }
    let computed = batmap::checksum(&map, h.version);
    if computed != h.checksum {
        found.problems.push(
            Problem::new(
                Severity::Error,
                "batmap",
                "checksum",
                format!(
                    "stored {:#010x}, computed {computed:#010x} (Xen's tools refuse the file); {FIX}",
                    h.checksum
                ),
            )
            .at(at + 24),
        );
    }
    found.batmap = Some(Batmap {
        header_offset: at,
        header: h,
        map,
    });
    Some(found)
}

/// The batmap of a `tap` file as an open takes it, before the BAT is read (the bits come
/// after it: [`open_bits`]). What `check` calls an error, a strict open refuses, naming
/// the fix. A lenient open warns and reads — reads never trust the batmap — except that
/// a writable one refuses a damaged header: the area is then not known to be metadata,
/// and new blocks could land on it. A wrong checksum alone is a warning for a writable
/// open too (the next rewrite of the batmap recomputes it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn open(
    path: &Path,
    b: &dyn Backend,
    footer: &Footer,
    header: &DynamicHeader,
    len: u64,
    footer_at: u64,
    opts: &OpenOptions,
    warnings: &mut Vec<String>,
) -> Result<Option<Batmap>> {
    let Some(found) = read(b, footer, header, len, footer_at) else {
        return Ok(None);
    };
    let damaged = found.batmap.is_none();
    for p in &found.problems {
        if opts.strict || (opts.writable && damaged) {
            let why = if opts.strict {
                "a strict open refuses an inconsistent batmap"
            } else {
                "a writable open refuses it: new blocks could land on its area"
            };
            return Err(refusal(path, p, why));
        }
        let reading = if damaged {
            "read without it"
        } else {
            "reading anyway"
        };
        warnings.push(format!(
            "the batmap at {:#x} is invalid: {}: {} ({reading})",
            found.header_offset, p.field, p.message
        ));
    }
    Ok(found.batmap)
}

/// The batmap's bits, once the BAT is read: a strict open refuses any set bit that
/// breaks the promise (reading each such block's sector bitmap, as `check` does); a
/// writable one refuses a bit set for an unallocated block (a block vhdkit allocates
/// there would be taken as fully written by Xen before it is); a lenient read-only open
/// warns of those and reads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_bits(
    path: &Path,
    b: &dyn Backend,
    m: &Batmap,
    bat: &Bat,
    layout: &SparseLayout,
    current_size: u64,
    opts: &OpenOptions,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let bitmaps = opts.strict.then_some(b);
    let mut bad = m.bad_bits(layout, current_size, bitmaps, |n| bat.entry(n));
    let Some(first) = bad.next() else {
        return Ok(());
    };
    if opts.strict || opts.writable {
        let why = if opts.strict {
            "a strict open refuses an inconsistent batmap"
        } else {
            "a writable open refuses it: Xen would take a block written there as full"
        };
        return Err(refusal(path, &first.problem(m), why));
    }
    let more = bad.count();
    let others = match more {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    };
    warnings.push(format!(
        "the batmap at {:#x} is invalid: {}{others} (reading anyway)",
        m.header_offset,
        first.problem(m).message
    ));
    Ok(())
}

/// The error of an open that refuses batmap problem `p`.
fn refusal(path: &Path, p: &Problem, why: &str) -> Error {
    Error::corrupt(
        path,
        "batmap",
        p.offset.unwrap_or_default(),
        format!("{}: {} ({why})", p.field, p.message),
    )
}

/// A set bit that breaks the batmap's promise, "allocated and fully written".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadBit {
    /// The block is not allocated (what `vhd-util check` refuses).
    Unallocated(u64),
    /// The block's sector bitmap is not full (tapdisk would read every sector of it
    /// from this file, the parent's and the unwritten ones included).
    NotFull(u64),
}

impl BadBit {
    /// The block.
    pub(crate) fn block(self) -> u64 {
        match self {
            BadBit::Unallocated(n) | BadBit::NotFull(n) => n,
        }
    }

    /// The problem `check` reports, located at the bit's byte.
    pub(crate) fn problem(self, m: &Batmap) -> Problem {
        let msg = match self {
            BadBit::Unallocated(n) => {
                format!("block {n}'s bit is set, but the block is not allocated; {FIX}")
            }
            BadBit::NotFull(n) => {
                format!("block {n}'s bit is set, but its sector bitmap is not full; {FIX}")
            }
        };
        Problem::new(Severity::Error, "batmap", "bit", msg)
            .at(m.header.map_offset + self.block() / 8)
    }
}

impl Batmap {
    /// A batmap to replace one whose header is damaged: a new header where blktap puts
    /// one (right after the padded BAT, the bitmap right after it) and every bit clear
    /// — a clear bit is always safe.
    pub(crate) fn fresh(header_offset: u64, header: &DynamicHeader, current_size: u64) -> Batmap {
        Batmap {
            header_offset,
            header: BatmapHeader::new(header_offset, header.max_table_entries),
            map: vec![0u8; batmap::map_bytes(current_size) as usize],
        }
    }

    /// Where the header and bitmap lie: `[header_offset, end of the bitmap area)`.
    pub(crate) fn area(&self) -> (u64, u64) {
        let end = self
            .header
            .map_offset
            .saturating_add(self.header.map_area());
        (
            self.header_offset,
            end.max(self.header_offset + BATMAP_HEADER_SIZE as u64),
        )
    }

    /// Writes the whole bitmap area (the bits, zeros after them), then the header with
    /// its checksum (the caller syncs): what replaces a damaged batmap.
    pub(crate) fn write_whole(&mut self, path: &Path, b: &dyn Backend) -> Result<()> {
        let mut area = vec![0u8; self.header.map_area() as usize];
        let n = self.map.len().min(area.len());
        area[..n].copy_from_slice(&self.map[..n]);
        b.write_all_at(&area, self.header.map_offset)
            .map_err(|e| Error::io(path, "writing the batmap", self.header.map_offset, e))?;
        self.header.checksum = batmap::checksum(&self.map, self.header.version);
        b.write_all_at(&self.header.encode(), self.header_offset)
            .map_err(|e| Error::io(path, "writing the batmap header", self.header_offset, e))
    }

    /// The set bits of the blocks the BAT covers that break the batmap's promise, in
    /// block order. `entry(n)` is block `n`'s BAT entry (`None`: unknown, skipped). With
    /// `bitmaps`, each allocated block's sector bitmap is read from it (one small read
    /// per set bit) and must be full — except the last block's when the disk ends
    /// inside it; without, only allocation is looked at (no I/O).
    pub(crate) fn bad_bits<'a>(
        &'a self,
        layout: &'a SparseLayout,
        current_size: u64,
        bitmaps: Option<&'a dyn Backend>,
        entry: impl Fn(u64) -> Option<u32> + 'a,
    ) -> impl Iterator<Item = BadBit> + 'a {
        let full_bytes = (layout.block_size / SECTOR_SIZE / 8) as usize;
        batmap::set_bits(&self.map, layout.used_entries).filter_map(move |n| {
            let e = entry(n)?;
            if e == crate::spec::BAT_ENTRY_UNUSED {
                return Some(BadBit::Unallocated(n));
            }
            let b = bitmaps?;
            if (n + 1).saturating_mul(layout.block_size) > current_size {
                return None; // the last block, partly past the disk's end
            }
            let mut bm = vec![0u8; full_bytes];
            let full = b
                .read_exact_at(&mut bm, u64::from(e) * SECTOR_SIZE)
                .is_err()
                || bm.iter().all(|&x| x == 0xFF);
            (!full).then_some(BadBit::NotFull(n))
        })
    }
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
