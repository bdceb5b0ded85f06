//! Unused ranges: byte ranges of a virtual disk that no file system uses, which
//! [`compact`](super::compact) may release and [`convert`](super::convert) may leave
//! out.
//!
//! The operations know no partition table and no file system. Whoever does hands them
//! the ranges, either as a list ([`Unused::Ranges`]) or as a function the operation
//! calls on the disk it opened, while it holds the disk's locks ([`Unused::Scan`]):
//! [`FsScan`](crate::volume::FsScan) is that function for the file systems
//! `vhdkit-volume` reads (what `--fs-aware` uses). Either way the rule is
//! the same and conservative: **a block is released (or left out) only when each of its
//! bytes is free or zero** — it lies in an unused range, or it reads as it would without
//! the block anyway (zero; in a differencing disk, the parent's byte): free space beside
//! a file system's zero-filled metadata, say. A block holding one used byte that differs
//! is kept with all its bytes, free or not.

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use vhdkit_task::{Phase, Progress};

use crate::error::{Error, Result};
use crate::image::Disk;

/// A sorted list of disjoint, non-touching, non-empty byte ranges of a virtual disk.
///
/// ```
/// use vhdkit_format::ops::UnusedRanges;
///
/// // Overlapping, touching, empty and unordered ranges are merged.
/// let u = UnusedRanges::new([4096..8192, 0..1024, 1024..2048, 7000..9000, 50..50]);
/// assert_eq!(u.ranges(), &[0..2048, 4096..9000]);
/// assert_eq!(u.total_bytes(), 2048 + 4904);
/// assert!(u.covers(&(4096..9000)));
/// assert!(!u.covers(&(2000..4096)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnusedRanges {
    ranges: Vec<Range<u64>>,
}

impl UnusedRanges {
    /// Sorts and merges `ranges` (overlapping or touching ranges become one; empty ones
    /// are dropped).
    pub fn new(ranges: impl IntoIterator<Item = Range<u64>>) -> UnusedRanges {
        let mut all: Vec<Range<u64>> = ranges.into_iter().filter(|r| r.start < r.end).collect();
        all.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(all.len());
        for r in all {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        UnusedRanges { ranges: merged }
    }

    /// The ranges: sorted, disjoint, not touching, none empty.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Whether there is no unused byte at all.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The unused bytes, in total.
    pub fn total_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.end - r.start))
    }

    /// Whether every byte of the non-empty `span` is unused. An empty span is not
    /// covered (there is nothing in it to release).
    pub fn covers(&self, span: &Range<u64>) -> bool {
        if span.start >= span.end {
            return false;
        }
        // The last range starting at or before the span: the only one that can hold
        // its first byte, and (ranges being merged) then the whole span or nothing.
        let i = self.ranges.partition_point(|r| r.start <= span.start);
        i > 0 && self.ranges[i - 1].end >= span.end
    }

    /// The bytes that these ranges and `other` (disjoint ranges, in any order) both
    /// hold, in total.
    ///
    /// ```
    /// use vhdkit_format::ops::UnusedRanges;
    ///
    /// let released = UnusedRanges::new([0..100, 200..300]);
    /// assert_eq!(released.overlap_bytes(&[50..250]), 100);
    /// ```
    pub fn overlap_bytes(&self, other: &[Range<u64>]) -> u64 {
        let mut sum = 0u64;
        for o in other {
            let first = self.ranges.partition_point(|r| r.end <= o.start);
            for r in &self.ranges[first..] {
                if r.start >= o.end {
                    break;
                }
                sum = sum.saturating_add(r.end.min(o.end) - r.start.max(o.start));
            }
        }
        sum
    }

    /// The unused bytes of `span`: the ranges' intersections with it, in order.
    pub(crate) fn within(&self, span: &Range<u64>) -> Vec<Range<u64>> {
        let first = self.ranges.partition_point(|r| r.end <= span.start);
        self.ranges[first..]
            .iter()
            .take_while(|r| r.start < span.end)
            .map(|r| r.start.max(span.start)..r.end.min(span.end))
            .filter(|r| r.start < r.end)
            .collect()
    }

    /// The pieces of `span` that are wholly unused, where `span` is cut into pieces of
    /// `grain` bytes from its start (the last piece ends at `span.end` and may be
    /// shorter). Touching pieces are returned merged, in order.
    pub(crate) fn whole_pieces(&self, span: &Range<u64>, grain: u64) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        if span.start >= span.end || grain == 0 {
            return out;
        }
        let first = self.ranges.partition_point(|r| r.end <= span.start);
        for r in &self.ranges[first..] {
            if r.start >= span.end {
                break;
            }
            let (a, b) = (r.start.max(span.start), r.end.min(span.end));
            // The first piece starting at or after `a`.
            let mut at = span.start + (a - span.start).div_ceil(grain) * grain;
            while at < b {
                let end = at.saturating_add(grain).min(span.end);
                if end > b {
                    break;
                }
                match out.last_mut() {
                    Some(last) if last.end == at => last.end = end,
                    _ => out.push(at..end),
                }
                at = end;
            }
        }
        out
    }
}

/// Computes the unused ranges of the disk an operation opened
/// ([`FsScan::unused`](crate::volume::FsScan::unused) reads the partition table and the
/// file systems' allocation maps with `vhdkit-volume`). It is
/// called once, as the operation's first step, while the operation holds the disk's
/// locks; it may report progress (the phase is [`Phase::Prepare`]) and should stop early
/// when [`Progress::is_cancelled`] says so (any error it then returns is reported as the
/// cancel).
pub type UnusedScan = Arc<dyn Fn(&Disk, &Progress) -> io::Result<UnusedRanges> + Send + Sync>;

/// Where an operation gets the unused ranges of its disk ([`super::OpsOptions::unused_ranges`]).
///
/// ```
/// use std::sync::Arc;
/// use vhdkit_format::ops::{OpsOptions, Unused, UnusedRanges};
///
/// // A list computed beforehand from the same content...
/// let listed = OpsOptions {
///     unused_ranges: Some(Unused::ranges([1 << 20..8 << 20])),
///     ..OpsOptions::default()
/// };
/// // ...or a function run on the disk once the operation has opened it.
/// let scanned = OpsOptions {
///     unused_ranges: Some(Unused::Scan(Arc::new(|_disk, _progress| {
///         Ok(UnusedRanges::new([1 << 20..8 << 20]))
///     }))),
///     ..OpsOptions::default()
/// };
/// # let _ = (listed, scanned);
/// ```
#[derive(Clone)]
pub enum Unused {
    /// Ranges known in advance. They must describe the content the operation will
    /// read: the caller keeps the disk from changing in between (e.g. holds a shared
    /// lock on a convert's source).
    Ranges(Arc<UnusedRanges>),
    /// Ranges computed on the disk the operation opened, under its locks: nothing can
    /// change the disk between the scan and the release.
    Scan(UnusedScan),
}

impl Unused {
    /// [`Unused::Ranges`] of `ranges`, sorted and merged.
    pub fn ranges(ranges: impl IntoIterator<Item = Range<u64>>) -> Unused {
        Unused::Ranges(Arc::new(UnusedRanges::new(ranges)))
    }
}

impl fmt::Debug for Unused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unused::Ranges(r) => f
                .debug_tuple("Ranges")
                .field(&format_args!(
                    "{} ranges, {} bytes",
                    r.ranges().len(),
                    r.total_bytes()
                ))
                .finish(),
            Unused::Scan(_) => f.write_str("Scan(..)"),
        }
    }
}

/// The unused ranges of `disk` for an operation: `None` when none were asked for. Runs
/// a [`Unused::Scan`] (a cancel during it is reported as the cancel).
pub(crate) fn resolve(
    unused: Option<&Unused>,
    disk: &Disk,
    progress: &Progress,
) -> Result<Option<Arc<UnusedRanges>>> {
    match unused {
        None => Ok(None),
        Some(Unused::Ranges(r)) => Ok(Some(Arc::clone(r))),
        Some(Unused::Scan(scan)) => {
            progress.check_cancelled()?;
            progress.set_phase(Phase::Prepare, 0, 0);
            let found = scan(disk, progress);
            progress.check_cancelled()?;
            let found = found.map_err(|source| Error::File {
                path: disk.top().path().to_owned(),
                doing: "reading the partition table and the file systems' allocation maps",
                source,
            })?;
            Ok(Some(Arc::new(found)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range lists of ranges, as meant
mod tests {
    use super::*;

    #[test]
    fn new_merges_overlapping_and_touching_ranges() {
        let u = UnusedRanges::new([10..20, 0..10, 15..30, 40..40, 50..60]);
        assert_eq!(u.ranges(), &[0..30, 50..60]);
        assert_eq!(u.total_bytes(), 40);
    }

    #[test]
    fn covers_needs_every_byte() {
        let u = UnusedRanges::new([100..200, 300..400]);
        assert!(u.covers(&(100..200)));
        assert!(u.covers(&(150..160)));
        assert!(!u.covers(&(99..150)));
        assert!(!u.covers(&(150..201)));
        assert!(!u.covers(&(150..350)));
        assert!(!u.covers(&(0..10)));
        assert!(!u.covers(&(500..600)));
        assert!(!u.covers(&(150..150)), "an empty span is never covered");
        assert!(!UnusedRanges::default().covers(&(0..1)));
    }

    #[test]
    fn whole_pieces_keeps_only_pieces_wholly_inside() {
        let u = UnusedRanges::new([1000..9000, 12_288..16_384]);
        // Pieces of 4096 from 0: [0,4096) partly, [4096,8192) wholly, [8192,12288)
        // partly, [12288,16384) wholly.
        assert_eq!(
            u.whole_pieces(&(0..16_384), 4096),
            vec![4096..8192, 12_288..16_384]
        );
        // A short last piece counts when it is wholly unused.
        assert_eq!(
            u.whole_pieces(&(12_288..13_000), 4096),
            vec![12_288..13_000]
        );
        // Pieces are cut from the span's start.
        assert_eq!(u.whole_pieces(&(1000..9000), 4096), vec![1000..9000]);
        assert!(u.whole_pieces(&(0..4096), 4096).is_empty());
        assert!(u.whole_pieces(&(20_000..30_000), 4096).is_empty());
    }

    #[test]
    fn whole_pieces_merges_touching_pieces_across_ranges() {
        // Two ranges that leave no gap at a piece boundary are separate in the list only
        // if they do not touch; pieces from consecutive ranges are merged.
        let u = UnusedRanges::new([0..4096, 4097..12_288]);
        assert_eq!(
            u.whole_pieces(&(0..12_288), 4096),
            vec![0..4096, 8192..12_288]
        );
    }

    #[test]
    fn within_clips_the_ranges_to_the_span() {
        let u = UnusedRanges::new([0..100, 200..300, 400..500]);
        assert_eq!(u.within(&(50..250)), vec![50..100, 200..250]);
        assert_eq!(u.within(&(100..200)), Vec::<Range<u64>>::new());
        assert_eq!(u.within(&(0..1000)), vec![0..100, 200..300, 400..500]);
        assert_eq!(u.within(&(450..460)), vec![450..460]);
    }

    #[test]
    fn overlap_bytes_counts_the_intersection() {
        let u = UnusedRanges::new([0..100, 200..300]);
        assert_eq!(u.overlap_bytes(&[50..250]), 100);
        assert_eq!(u.overlap_bytes(&[0..1000]), 200);
        assert_eq!(u.overlap_bytes(&[100..200]), 0);
        assert_eq!(u.overlap_bytes(&[10..20, 290..310]), 20);
    }
}
