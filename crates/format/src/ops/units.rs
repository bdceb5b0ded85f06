//! Which units of a source's view go through the pipeline: those the metadata says may
//! hold data, in runs of unit indexes, chunk by chunk, with the metadata of the chunks
//! ahead read in advance; and what a mask of unused ranges leaves out of the whole view,
//! counted without composing anything.

use std::ops::Range;

use crate::image::Disk;

use super::source::Mask;

/// The units of `unit` bytes of the view of `disk` that is `size` bytes long (its
/// virtual size, or more: padded with zeros) that may hold data, as runs of unit
/// indexes in order: those that meet [`Disk::stored_ranges`] (allocated blocks, a flat
/// file's stored extents, from metadata alone), less those whose every byte lies in the
/// `mask`'s unused ranges. Every other unit reads as zeros — composing it would give
/// `None` — so the operations hand only these to their pipeline: a run of empty units
/// costs one step, and the work follows the data, not the virtual size.
pub(crate) fn data_units(
    disk: &Disk,
    size: u64,
    unit: u64,
    mask: Option<Mask<'_>>,
) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut push = |r: Range<u64>| match out.last_mut() {
        Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
        _ => out.push(r),
    };
    for r in disk.stored_ranges() {
        let units = r.start / unit..r.end.div_ceil(unit).min(size.div_ceil(unit));
        match mask {
            None => push(units),
            Some(m) => {
                // Units wholly unused are left out (each checked: the work follows the
                // stored units).
                let mut run: Option<Range<u64>> = None;
                for u in units {
                    let span = u * unit..((u + 1) * unit).min(size);
                    if m.unused.covers(&span) {
                        if let Some(r) = run.take() {
                            push(r);
                        }
                    } else {
                        run = Some(run.map_or(u..u + 1, |r| r.start..u + 1));
                    }
                }
                if let Some(r) = run {
                    push(r);
                }
            }
        }
    }
    out.retain(|r| r.start < r.end);
    out
}

/// Units and virtual bytes in `runs` of units of `unit` bytes of a view `size` long (the
/// last unit clipped).
pub(crate) fn units_and_bytes(runs: &[Range<u64>], unit: u64, size: u64) -> (u64, u64) {
    runs.iter().fold((0, 0), |(n, b), r| {
        let bytes = (r.end * unit).min(size).saturating_sub(r.start * unit);
        (n + (r.end - r.start), b + bytes)
    })
}

/// The unit indexes of `runs`, `per_chunk` at a time, in order: the chunks the
/// pipeline composes.
pub(crate) fn chunks_of(
    runs: &[Range<u64>],
    per_chunk: u64,
) -> impl Iterator<Item = Vec<u64>> + '_ {
    let mut units = runs.iter().flat_map(|r| r.clone()).peekable();
    let per_chunk = per_chunk.max(1) as usize;
    std::iter::from_fn(move || {
        units.peek()?;
        Some(units.by_ref().take(per_chunk).collect())
    })
}

/// How many chunks ahead of the one being composed the pipeline asks for their metadata
/// (the sector bitmaps it will read; see [`chunks_ahead`]).
const LOOKAHEAD_CHUNKS: usize = 16;

/// [`chunks_of`], asking the kernel to read ahead the metadata of the chunks
/// [`LOOKAHEAD_CHUNKS`] ahead of the one handed out (`Disk::will_need`): the bitmaps of
/// a sparse source are then read many at a time, not one block after another (from a
/// cold cache, a raw result whose data is cloned reads nothing else).
pub(crate) fn chunks_ahead<'a>(
    disk: &'a Disk,
    runs: &'a [Range<u64>],
    per_chunk: u64,
    unit: u64,
) -> impl Iterator<Item = Vec<u64>> + 'a {
    let mut ahead = chunks_of(runs, per_chunk);
    let mut first = true;
    chunks_of(runs, per_chunk).inspect(move |_| {
        let n = if std::mem::take(&mut first) {
            LOOKAHEAD_CHUNKS + 1
        } else {
            1
        };
        for c in ahead.by_ref().take(n) {
            if let (Some(&a), Some(&b)) = (c.first(), c.last()) {
                disk.will_need(a * unit..(b + 1) * unit);
            }
        }
    })
}

/// What a mask leaves out of a whole view `size` long cut into units of `unit` bytes,
/// whatever the units hold: the wholly unused pieces (merged, in order), their bytes,
/// and the units every byte of which is unused. Computed from the unused ranges alone
/// (one step per range), the same as the masks of all the units composed one by one.
pub(crate) fn masked_totals(mask: &Mask<'_>, size: u64, unit: u64) -> (Vec<Range<u64>>, u64, u64) {
    let pieces = mask.unused.whole_pieces(&(0..size), mask.grain);
    let bytes = pieces.iter().map(|r| r.end - r.start).sum();
    let units = mask
        .unused
        .ranges()
        .iter()
        .filter(|r| r.start < size)
        .map(|r| {
            let first = r.start.div_ceil(unit);
            let last = if r.end >= size {
                size.div_ceil(unit)
            } else {
                r.end / unit
            };
            last.saturating_sub(first)
        })
        .sum();
    (pieces, bytes, units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::UnusedRanges;

    /// The totals counted from the ranges alone are those of every unit's own mask.
    #[test]
    fn masked_totals_match_the_units_one_by_one() {
        let size = 10 * 4096 + 512; // the last unit is short
        let unit = 4096;
        let unused = UnusedRanges::new([
            0..100,
            4096..3 * 4096 + 7,
            5 * 4096 + 1..7 * 4096,
            10 * 4096..size,
        ]);
        for grain in [512, 4096] {
            let mask = Mask {
                unused: &unused,
                grain,
            };
            let (ranges, bytes, units) = masked_totals(&mask, size, unit);
            let mut want_ranges = Vec::new();
            let mut want_units = 0;
            for u in 0..size.div_ceil(unit) {
                let span = u * unit..((u + 1) * unit).min(size);
                want_ranges.extend(unused.whole_pieces(&span, grain));
                want_units += u64::from(unused.covers(&span));
            }
            let want = UnusedRanges::new(want_ranges);
            assert_eq!(ranges, want.ranges(), "grain {grain}");
            assert_eq!(bytes, want.total_bytes(), "grain {grain}");
            assert_eq!(units, want_units, "grain {grain}");
        }
    }

    #[test]
    fn chunks_of_cuts_the_runs_in_order() {
        let runs = [2..5, 9..10, 20..23];
        let chunks: Vec<Vec<u64>> = chunks_of(&runs, 3).collect();
        assert_eq!(chunks, vec![vec![2, 3, 4], vec![9, 20, 21], vec![22]]);
        assert_eq!(units_and_bytes(&runs, 10, 225), (7, 65));
    }
}
