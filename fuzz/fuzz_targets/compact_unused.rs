//! Compaction with arbitrary unused ranges (what `--fs-aware` hands the engine) over an
//! arbitrary image, held in a real file (under `$TMPDIR`). The input is a header, then
//! the image: byte 0 holds the number of ranges (low nibble, at most 8), `--verify` (bit
//! 4) and `--dry-run` (bit 5); then 8 bytes per range (start, length: u32 little-endian,
//! folded into twice the largest virtual size). Whatever the input, compact succeeds or
//! fails with an error; the file still opens and reads; every byte outside the unused
//! ranges reads as before, and a byte inside them as before or as zero (a released
//! block). A dry run leaves the file byte-identical. A success leaves no allocated block
//! wholly inside the ranges.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use vhdkit_format::ops::{compact::compact, OpsOptions, Unused, UnusedRanges};
use vhdkit_format::{OpenOptions, VhdFile};
use vhdkit_fuzz::dynamic_content;
use vhdkit_task::{CancelToken, Progress};

/// Largest virtual size compacted (whole-disk read-back per execution).
const MAX_SIZE: u64 = 16 << 20;
/// Bytes of one range in the header.
const RANGE_BYTES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(flags & 0x0f).min(8);
    let Some((header, image)) = rest.split_at_checked(count * RANGE_BYTES) else {
        return;
    };
    let ranges = UnusedRanges::new(header.chunks_exact(RANGE_BYTES).map(|c| {
        let start = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])) % (2 * MAX_SIZE);
        let len = u64::from(u32::from_le_bytes([c[4], c[5], c[6], c[7]])) % (MAX_SIZE + 1);
        start..start + len
    }));
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("d.vhd");
    if std::fs::write(&path, image).is_err() {
        return;
    }
    let Some(before) = dynamic_content(&path, MAX_SIZE) else {
        return;
    };
    let dry_run = flags & 0x20 != 0;
    let opts = OpsOptions {
        chunk_bytes: 1 << 20,
        verify: flags & 0x10 != 0 && !dry_run,
        dry_run,
        unused_ranges: Some(Unused::ranges(ranges.ranges().iter().cloned())),
        ..OpsOptions::default()
    };
    let result = compact(&path, &opts, &Progress::detached(CancelToken::new()));
    let after = dynamic_content(&path, MAX_SIZE)
        .unwrap_or_else(|| panic!("the image no longer opens or reads after compact ({result:?})"));
    if dry_run {
        let bytes = std::fs::read(&path).expect("reads");
        assert!(bytes == image, "a dry run changed the file ({result:?})");
    }
    let mut at = 0usize;
    for r in ranges.ranges() {
        let (start, end) = (clamp(r.start, after.len()), clamp(r.end, after.len()));
        assert!(
            after[at..start] == before[at..start],
            "compact changed a byte in use before {r:?} ({result:?})"
        );
        assert!(
            (start..end).all(|i| after[i] == before[i] || after[i] == 0),
            "a byte of {r:?} reads neither as before nor as zero ({result:?})"
        );
        at = end;
    }
    assert!(
        after[at..] == before[at..],
        "compact changed a byte in use at the end ({result:?})"
    );
    if result.is_ok() && !dry_run {
        let file = VhdFile::open(&path, &OpenOptions::new().no_parents(true)).expect("reopens");
        let (Some(bat), Some(block)) = (file.bat(), file.block_size()) else {
            panic!("a compacted dynamic disk has a BAT");
        };
        for (b, _) in bat.allocated() {
            let span: Range<u64> = b * block..((b + 1) * block).min(after.len() as u64);
            assert!(
                span.is_empty() || !ranges.covers(&span),
                "block {b} lies wholly in the unused ranges but is still allocated"
            );
        }
    }
});

fn clamp(x: u64, len: usize) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX).min(len)
}
