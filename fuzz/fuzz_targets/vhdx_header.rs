//! The VHDX header section: the input is the start of a file (zeros past its end, up to
//! the region tables' end at 320 KiB). The identifier, both headers and both region
//! tables decode without panicking; whatever validates re-encodes to a value that
//! decodes and validates the same; choosing the current header and region table is
//! total; the file's areas are judged against a length taken from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::vhdx::header::{
    CurrentHeader, HeaderSlot, RawHeader, HEADER_1_OFFSET, HEADER_2_OFFSET, HEADER_SIZE,
};
use vhdkit_format::vhdx::ident::RawFileIdentifier;
use vhdkit_format::vhdx::region::{
    RawRegionTable, RegionTable, REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE,
};
use vhdkit_format::vhdx::FileAreas;

const HEAD: usize = 320 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut head = vec![0u8; HEAD];
    let n = data.len().min(HEAD);
    head[..n].copy_from_slice(&data[..n]);
    let at = |o: u64, len: usize| &head[o as usize..o as usize + len];

    if let Ok(id) = RawFileIdentifier::decode(&head).and_then(|r| r.validate()) {
        // The creator is cut to whole characters within 255 UTF-16 units; a cut one
        // re-encodes unchanged.
        let back = RawFileIdentifier::decode(&id.encode())
            .unwrap()
            .validate()
            .unwrap();
        assert!(id.creator.starts_with(&back.creator));
        assert!(back.creator.encode_utf16().count() <= 255);
        if id.creator.encode_utf16().count() <= 255 {
            assert_eq!(back, id);
        }
        let again = RawFileIdentifier::decode(&back.encode())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(again, back);
    }
    for (slot, off) in [
        (HeaderSlot::First, HEADER_1_OFFSET),
        (HeaderSlot::Second, HEADER_2_OFFSET),
    ] {
        let raw = RawHeader::decode(at(off, HEADER_SIZE), slot).expect("4 KiB");
        let problems = raw.problems(slot);
        for p in &problems {
            assert!(!p.structure().name().is_empty());
            let _ = p.to_string();
        }
        if let Ok(h) = raw.validate(slot) {
            assert!(problems.is_empty());
            let again = RawHeader::decode(&h.encode(), slot)
                .unwrap()
                .validate(slot)
                .unwrap();
            assert_eq!(again, h);
        }
    }
    let current = CurrentHeader::choose(
        at(HEADER_1_OFFSET, HEADER_SIZE),
        at(HEADER_2_OFFSET, HEADER_SIZE),
    );
    for copy in [1u8, 2] {
        let off = if copy == 1 {
            REGION_TABLE_1_OFFSET
        } else {
            REGION_TABLE_2_OFFSET
        };
        let raw = RawRegionTable::decode(at(off, REGION_TABLE_SIZE), copy).expect("64 KiB");
        assert!(raw.entries.len() <= 2047);
        if let Ok(t) = raw.validate(copy) {
            let again = RawRegionTable::decode(&t.encode(), copy)
                .unwrap()
                .validate(copy)
                .unwrap();
            assert_eq!(again, t);
        }
    }
    let tables = RegionTable::choose(
        at(REGION_TABLE_1_OFFSET, REGION_TABLE_SIZE),
        at(REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE),
    );
    if let (Ok(c), Ok((t, _))) = (current, tables) {
        let file_len = data
            .get(HEAD..HEAD + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(data.len() as u64);
        if let Ok(areas) = FileAreas::new(&c.header, &t, file_len) {
            assert!(areas.log.1 <= file_len);
            assert!(areas
                .regions
                .iter()
                .all(|r| r.1 <= file_len && r.0 >= 1 << 20));
            let _ = areas.metadata_end();
        }
        let _ = c.next(c.header);
    }
});
