//! Property tests of the VHDX format layer: every encoder's output decodes to the value
//! encoded, and the log encoder's entries replay to the writes they were built from,
//! wherever in the ring they land.

use proptest::prelude::*;
use uuid::Uuid;
use vhdkit_format::vhdx::bat::{Bat, BatEntry, BatGeometry};
use vhdkit_format::vhdx::header::{HeaderSlot, RawHeader};
use vhdkit_format::vhdx::layout::FileAreas;
use vhdkit_format::vhdx::log::replay::{replay, LogWrite};
use vhdkit_format::vhdx::log::LogCursor;
use vhdkit_format::vhdx::metadata::{FileParameters, Metadata};
use vhdkit_format::vhdx::region::{RawRegionTable, Region, RegionTable};
use vhdkit_format::vhdx::{Header, ParentLocator, MIB};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    }
}

fn guid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn header_round_trips(seq in any::<u64>(), a in guid(), b in guid(), l in guid(),
                          log_mib in 1u32..64, log_at in 1u64..1000) {
        let h = Header {
            sequence_number: seq,
            file_write_guid: a,
            data_write_guid: b,
            log_guid: l,
            log_length: log_mib * MIB as u32,
            log_offset: log_at * MIB,
        };
        for slot in [HeaderSlot::First, HeaderSlot::Second] {
            let raw = RawHeader::decode(&h.encode(), slot).unwrap();
            prop_assert_eq!(raw.validate(slot).unwrap(), h);
        }
    }

    #[test]
    fn region_table_round_trips(bat_at in 1u64..100, bat_len in 1u32..8, md_gap in 0u64..10,
                                required in any::<bool>(), extra in proptest::option::of(guid())) {
        let bat = Region { offset: bat_at * MIB, length: bat_len * MIB as u32, required };
        let metadata = Region { offset: bat.end() + md_gap * MIB, length: MIB as u32, required };
        let optional = extra
            .filter(|g| !g.is_nil())
            .map(|g| vec![(g, Region { offset: metadata.end(), length: MIB as u32, required: false })])
            .unwrap_or_default();
        let t = RegionTable { bat, metadata, optional };
        let raw = RawRegionTable::decode(&t.encode(), 1).unwrap();
        // A random extra GUID may collide with a known one; then it is refused, never
        // silently merged.
        match raw.validate(1) {
            Ok(back) => prop_assert_eq!(back, t),
            Err(e) => prop_assert!(!raw.problems(1).is_empty(), "{e}"),
        }
    }

    #[test]
    fn metadata_round_trips(bs_shift in 0u32..9, ls4k in any::<bool>(), ps4k in any::<bool>(),
                            sectors in 1u64..(1 << 20), leave in any::<bool>(), page83 in guid(),
                            parent in proptest::option::of((guid(), "[a-zA-Z0-9 ._\\\\-é]{1,40}"))) {
        let ls = if ls4k { 4096 } else { 512 };
        let md = Metadata {
            file_parameters: FileParameters {
                block_size: (MIB as u32) << bs_shift,
                leave_blocks_allocated: leave,
                has_parent: parent.is_some(),
            },
            virtual_size: sectors * u64::from(ls),
            page83,
            logical_sector_size: ls,
            physical_sector_size: if ps4k { 4096 } else { 512 },
            parent_locator: parent.map(|(g, path)| ParentLocator::new(g, Some(&path), None, Some(&path))),
            other_items: vec![],
        };
        let mut region = md.encode();
        region.resize(MIB as usize, 0);
        prop_assert_eq!(Metadata::decode(&region, 2 * MIB).unwrap(), md);
    }

    #[test]
    fn bat_round_trips(blocks in 1u64..3000, diff in any::<bool>(), raw in proptest::collection::vec(any::<u64>(), 0..64)) {
        let g = BatGeometry::new(blocks * MIB, MIB as u32, 512, diff).unwrap();
        let mut bat = Bat::filled(g, BatEntry::default());
        for (i, v) in raw.iter().enumerate() {
            let n = bat.entries.len();
            bat.entries[(*v as usize ^ i) % n] = BatEntry(*v);
        }
        let bytes = bat.encode();
        prop_assert_eq!(bytes.len() as u64, g.bat_bytes());
        prop_assert_eq!(Bat::decode(&bytes, g, 0).unwrap(), bat);
    }

    #[test]
    fn log_entries_replay_to_their_writes(
        start_sector in 0u64..256,
        writes in proptest::collection::vec((any::<bool>(), 0u64..1024, 1u64..4, any::<u8>()), 0..40),
    ) {
        let log_len = MIB;
        let file_len = 64 * MIB;
        let ws: Vec<LogWrite> = writes
            .iter()
            .map(|&(data, sector, n, seed)| {
                let offset = 4 * MIB + sector * 4096;
                if data {
                    LogWrite::Data { offset, bytes: (0..4096).map(|i| (i as u8) ^ seed).collect() }
                } else {
                    LogWrite::Zero { offset, length: n * 4096 }
                }
            })
            .collect();
        let log_guid = Uuid::from_u128(7);
        let mut cursor = LogCursor { log_length: log_len, position: start_sector * 4096, sequence_number: 41 };
        let placed = cursor.append(log_guid, file_len, file_len, &ws).unwrap();
        let mut log = vec![0u8; log_len as usize];
        placed.write_into(&mut log);
        let header = Header {
            sequence_number: 1,
            file_write_guid: Uuid::nil(),
            data_write_guid: Uuid::nil(),
            log_guid,
            log_length: log_len as u32,
            log_offset: MIB,
        };
        let areas = FileAreas { file_len, log: (MIB, 2 * MIB), regions: vec![] };
        let plan = replay(&log, &header, &areas).unwrap().unwrap();
        prop_assert_eq!(&plan.writes, &ws);
        prop_assert_eq!(plan.sequence.head().sequence_number, 41);
        prop_assert_eq!(LogCursor::after(&plan.sequence), cursor);
    }
}
