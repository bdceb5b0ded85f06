//! The VHDX BAT: 24 config bytes (virtual size in MiB, block size and sector size
//! choices, differencing flag, file length in MiB, log placement) then the table. The
//! geometry is total; decoding fails only when the table is short, and never allocates
//! before that check; the entry kinds interleave as the chunk ratio says; validation is
//! capped and every placement problem is real (checked by brute force on small tables).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::vhdx::bat::{Bat, EntryKind, MAX_BAT_PROBLEMS};
use vhdkit_format::vhdx::{BatGeometry, FileAreas, VhdxError, MIB};

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let (cfg, table) = data.split_at(24);
    let u32_at = |i: usize| u32::from_le_bytes(cfg[i..i + 4].try_into().expect("4 bytes"));
    let virtual_size = u64::from(u32_at(0) % (64 << 20)).max(1) * MIB;
    let block_size = (MIB as u32) << (cfg[4] % 9);
    let sector = if cfg[5] & 1 == 0 { 512 } else { 4096 };
    let differencing = cfg[6] & 1 == 1;
    let file_len = u64::from(u32_at(8)) * MIB / 16;
    let log_at = u64::from(cfg[12] % 8 + 1) * MIB;
    let Ok(g) = BatGeometry::new(virtual_size, block_size, sector, differencing) else {
        panic!("every generated geometry is valid");
    };
    for b in [0, g.data_blocks / 2, g.data_blocks - 1] {
        let i = g.payload_index(b).expect("block inside the disk");
        assert_eq!(g.kind_of(i), Some(EntryKind::Payload(b)));
    }
    if let Some(i) = g.bitmap_index(0) {
        assert_eq!(g.kind_of(i), Some(EntryKind::SectorBitmap(0)));
    }
    let bat = match Bat::decode(table, g, 2 * MIB) {
        Ok(b) => b,
        Err(VhdxError::Truncated {
            expected, found, ..
        }) => {
            assert!(found < expected && expected == g.bat_bytes());
            return;
        }
        Err(e) => panic!("decode fails only on length: {e}"),
    };
    assert_eq!(bat.encode()[..], table[..g.bat_bytes() as usize]);
    let areas = FileAreas {
        file_len,
        log: (log_at, log_at + MIB),
        regions: vec![
            (16 * MIB, 17 * MIB, "BAT region"),
            (17 * MIB, 18 * MIB, "metadata region"),
        ],
    };
    let problems = bat.problems(&areas, 2 * MIB);
    assert!(problems.len() <= MAX_BAT_PROBLEMS + 1);
    for p in problems.iter().take(4) {
        let _ = p.to_string();
    }
    if problems.is_empty() {
        // Brute force on what validation passed: every block with data lies outside
        // the metadata, inside the file, and apart from the others.
        let mut used = Vec::new();
        for b in 0..g.data_blocks.min(4096) {
            let p = bat.payload(b).expect("inside");
            assert!(p.state.is_some());
            if let Some(off) = p.file_offset {
                let len = u64::from(block_size).min(virtual_size - b * u64::from(block_size));
                assert!(off >= MIB && off + len <= file_len);
                assert!(areas.metadata_overlap(off, off + len).is_none());
                used.push((off, off + len));
            }
        }
        used.sort_unstable();
        assert!(used.windows(2).all(|w| w[0].1 <= w[1].0));
    }
});
