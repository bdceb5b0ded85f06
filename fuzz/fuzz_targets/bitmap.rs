//! `SectorBitmap` queries and `set_range` against a bit-by-bit model. The first 24 bytes
//! choose a start, a limit and a range; the rest is the bitmap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::spec::bitmap::set_range;
use vhdkit_format::spec::SectorBitmap;

fn bit(b: &[u8], i: u64) -> bool {
    usize::try_from(i / 8)
        .ok()
        .and_then(|k| b.get(k))
        .is_some_and(|x| x & (0x80 >> (i % 8)) != 0)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let (cfg, bytes) = data.split_at(24);
    let word = |i: usize| u64::from_be_bytes(cfg[i..i + 8].try_into().expect("8 bytes"));
    let bits = bytes.len() as u64 * 8;
    let bm = SectorBitmap::new(bytes);
    // Any start, even past the bitmap or near u64::MAX; a limit in the range real
    // callers use (at most a block's sectors), so the walk stays cheap.
    let start = word(0);
    let limit = word(8) % (bits + 4096) + 1;
    for s in [start, start % (bits + 1), u64::MAX - (start % 64)] {
        let run = bm.run_length(s, limit);
        assert!(run >= 1 && run <= limit, "run {run} outside 1..={limit}");
        let first = bit(bytes, s);
        let model = (0..limit)
            .take_while(|&n| s.checked_add(n).is_some_and(|i| bit(bytes, i) == first))
            .count() as u64;
        assert_eq!(run, model.max(1), "run_length({s}, {limit})");
        assert_eq!(bm.is_set(s), first);
    }
    let n = word(16) % (bits + 64);
    assert_eq!(
        bm.count_set(n),
        (0..n).filter(|&i| bit(bytes, i)).count() as u64
    );
    assert_eq!(bm.is_empty(n), (0..n).all(|i| !bit(bytes, i)));

    let mut copy = bytes.to_vec();
    let from = start % (bits + 16);
    let count = word(8) >> 1;
    set_range(&mut copy, from, count);
    for i in 0..bits {
        let inside = i >= from && i - from < count;
        assert_eq!(bit(&copy, i), bit(bytes, i) || inside, "set_range bit {i}");
    }
    set_range(&mut copy, u64::MAX - 3, u64::MAX);
});
