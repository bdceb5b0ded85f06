//! `Bat::decode` and every accessor, and `check_block_layout` against a brute-force
//! model. The first 32 bytes choose stride, footer position and a metadata range; the
//! rest is the table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::spec::bat::{check_block_layout, BlockLayoutProblem};
use vhdkit_format::spec::{Bat, BAT_ENTRY_UNUSED};

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 {
        let _ = Bat::decode(data);
        return;
    }
    let (cfg, table) = data.split_at(32);
    let bat = Bat::decode(table);
    assert_eq!(bat.len(), table.len() / 4);
    let enc = bat.encode();
    assert_eq!(enc.len() % 512, 0);
    assert_eq!(enc[..bat.len() * 4], table[..bat.len() * 4]);
    assert_eq!(Bat::decode(&enc[..bat.len() * 4]), bat);
    let probe = u64_at(cfg, 24);
    let mut b2 = bat.clone();
    for i in [0, 1, probe, probe % (bat.len() as u64 + 1), u64::MAX] {
        let _ = bat.entry(i);
        let _ = bat.block_offset(i);
        let (sector, bytes) = bat.sector_of(i);
        if let Some(e) = bat.entry(i) {
            let k = (i % 128) as usize * 4;
            assert_eq!(
                u32::from_be_bytes(bytes[k..k + 4].try_into().expect("4")),
                e
            );
            assert_eq!(sector, i / 128);
        }
        assert_eq!(b2.set(i, 7), i < bat.len() as u64);
    }
    let allocated: Vec<(u64, u64)> = bat.allocated().collect();
    assert_eq!(allocated.len() as u64, bat.allocated_count());
    assert!(allocated
        .iter()
        .all(|&(i, _)| bat.entry(i) != Some(BAT_ENTRY_UNUSED)));

    let stride = u64_at(cfg, 0) % (1 << 29) + 1;
    let footer_at = u64_at(cfg, 8);
    let m0 = u64_at(cfg, 16) % (1 << 24);
    let m1 = m0 + u64::from(u32::from_be_bytes(cfg[24..28].try_into().expect("4")) % (1 << 20));
    let metadata = [(0, 512), (m0, m1)];
    let problems = check_block_layout(&bat, stride, &metadata, footer_at);
    if allocated.len() <= 64 {
        // Brute-force model: every pair, every block.
        let mut overlaps = 0;
        for (x, &(_, a)) in allocated.iter().enumerate() {
            for &(_, b) in &allocated[x + 1..] {
                if a < b.saturating_add(stride) && b < a.saturating_add(stride) {
                    overlaps += 1;
                }
            }
            let end = a.saturating_add(stride);
            let into = metadata.iter().any(|&(s, e)| a < e && s < end) || a < 512;
            let found = problems.iter().any(
                |p| matches!(p, BlockLayoutProblem::IntoMetadata { offset, .. } if *offset == a),
            );
            assert_eq!(into, found, "metadata overlap of block at {a:#x}");
            let past = end > footer_at;
            let found = problems
                .iter()
                .any(|p| matches!(p, BlockLayoutProblem::PastEnd { offset, .. } if *offset == a));
            assert_eq!(past, found, "past-end of block at {a:#x}");
        }
        let reported = problems
            .iter()
            .filter(|p| matches!(p, BlockLayoutProblem::Overlap { .. }))
            .count();
        assert_eq!(reported > 0, overlaps > 0, "overlap detection");
    }
    for p in problems.iter().take(16) {
        let _ = p.to_string();
    }
});
