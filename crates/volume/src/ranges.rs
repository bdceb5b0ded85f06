//! Sorted, merged byte ranges and the bitmap walk that produces them.

use std::ops::Range;

use byteorder::{ByteOrder, LittleEndian};

/// At most this many separate free runs are kept per file system; past it, further runs
/// are dropped (counted as used) and a warning says so. Bounds memory on a hostile bitmap
/// of alternating bits (16 M runs = 256 MiB of ranges).
pub const MAX_RUNS: usize = 1 << 24;

/// Collects increasing ranges, merging touching ones.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    pub(crate) ranges: Vec<Range<u64>>,
    pub(crate) dropped: bool,
}

impl Runs {
    /// Adds `start..end`; ranges must arrive in increasing, non-overlapping order.
    pub(crate) fn push(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        if let Some(last) = self.ranges.last_mut() {
            if last.end == start {
                last.end = end;
                return;
            }
            if last.end > start {
                // Out of order: never produced by the walkers; drop rather than guess.
                debug_assert!(false, "runs out of order");
                self.dropped = true;
                return;
            }
        }
        if self.ranges.len() >= MAX_RUNS {
            self.dropped = true;
            return;
        }
        self.ranges.push(start..end);
    }
}

/// Walks an allocation bitmap (bit set = used, least significant bit first) covering
/// `units` units of `unit` bytes each; unit `i` is at byte `base + i * unit`. Units past the
/// bitmap's bits are used. Pushes the free runs.
pub(crate) fn bitmap_free(bitmap: &[u8], units: u64, unit: u64, base: u64, out: &mut Runs) {
    let units = units.min((bitmap.len() as u64).saturating_mul(8));
    let mut run_start: Option<u64> = None;
    let mut i: u64 = 0;
    let flush = |out: &mut Runs, s: u64, e: u64| {
        if let (Some(a), Some(b)) = (
            s.checked_mul(unit).and_then(|x| x.checked_add(base)),
            e.checked_mul(unit).and_then(|x| x.checked_add(base)),
        ) {
            out.push(a, b);
        }
    };
    while i < units {
        // Whole words at a time when aligned: a 2 TiB file system's bitmaps are
        // hundreds of millions of bits, nearly all in long runs.
        if i.is_multiple_of(64) && i + 64 <= units {
            let at = (i / 8) as usize;
            let word = LittleEndian::read_u64(&bitmap[at..at + 8]);
            if word == 0 || word == u64::MAX {
                if word == 0 {
                    run_start.get_or_insert(i);
                } else if let Some(s) = run_start.take() {
                    flush(out, s, i);
                }
                i += 64;
                continue;
            }
        }
        let byte = bitmap[(i / 8) as usize];
        // Whole bytes at a time when aligned.
        if i.is_multiple_of(8) && i + 8 <= units && (byte == 0 || byte == 0xff) {
            if byte == 0 {
                run_start.get_or_insert(i);
            } else if let Some(s) = run_start.take() {
                flush(out, s, i);
            }
            i += 8;
            continue;
        }
        let used = byte >> (i % 8) & 1 == 1;
        if used {
            if let Some(s) = run_start.take() {
                flush(out, s, i);
            }
        } else {
            run_start.get_or_insert(i);
        }
        i += 1;
    }
    if let Some(s) = run_start {
        flush(out, s, units);
    }
}

/// Sorts and merges overlapping or touching ranges, dropping empty ones.
pub(crate) fn normalize(ranges: &mut Vec<Range<u64>>) {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    *ranges = out;
}

/// Removes from the sorted, merged `ranges` every byte of `cut`.
pub(crate) fn subtract(ranges: &mut Vec<Range<u64>>, cut: &Range<u64>) {
    if cut.start >= cut.end {
        return;
    }
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for r in ranges.drain(..) {
        if r.end <= cut.start || r.start >= cut.end {
            out.push(r);
            continue;
        }
        if r.start < cut.start {
            out.push(r.start..cut.start);
        }
        if r.end > cut.end {
            out.push(cut.end..r.end);
        }
    }
    *ranges = out;
}

/// Total bytes of the ranges.
pub(crate) fn total(ranges: &[Range<u64>]) -> u64 {
    ranges
        .iter()
        .fold(0u64, |acc, r| acc.saturating_add(r.end - r.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_free_finds_runs_across_words() {
        // 64-bit words all free, all used, mixed; a run crossing word boundaries.
        let mut bm = vec![0u8; 32];
        bm[8..16].fill(0xff);
        bm[16] = 0b0000_0100;
        bm[31] = 0b1000_0000;
        let mut runs = Runs::default();
        bitmap_free(&bm, 256, 1, 0, &mut runs);
        assert_eq!(runs.ranges, vec![0..64, 128..130, 131..255]);
    }

    #[test]
    fn bitmap_free_finds_runs_across_bytes() {
        let bm = [0b1111_0000u8, 0x00, 0xff, 0b0000_0001];
        let mut runs = Runs::default();
        bitmap_free(&bm, 32, 10, 1000, &mut runs);
        assert_eq!(runs.ranges, vec![1000..1040, 1080..1160, 1250..1320]);
    }

    #[test]
    fn bitmap_free_stops_at_units() {
        let bm = [0u8; 4];
        let mut runs = Runs::default();
        bitmap_free(&bm, 13, 1, 0, &mut runs);
        assert_eq!(runs.ranges, vec![0..13]);
    }

    #[test]
    fn subtract_splits_a_range() {
        let mut r = vec![0..100, 200..300];
        subtract(&mut r, &(50..250));
        assert_eq!(r, vec![0..50, 250..300]);
    }

    #[test]
    fn normalize_merges_touching_ranges() {
        let mut r = vec![10..20, 0..10, 15..30, 40..40];
        normalize(&mut r);
        assert_eq!(r, vec![0..30]);
    }
}
