//! `DynamicHeader::decode` / `validate` / `encode` over any 1024 bytes; 17 more bytes
//! give the footer's current size, the file length and the disk type validation sees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::spec::header::{bitmap_size_for, check_block_size};
use vhdkit_format::spec::{DynamicHeader, HEADER_SIZE};

fuzz_target!(|data: &[u8]| {
    assert!(DynamicHeader::decode(data).is_ok() == (data.len() == HEADER_SIZE));
    if data.len() < HEADER_SIZE {
        return;
    }
    let (raw, rest) = data.split_at(HEADER_SIZE);
    let header = DynamicHeader::decode(raw).expect("1024 bytes");
    let u64_at = |i: usize| {
        rest.get(i..i + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    };
    let current_size = u64_at(0).unwrap_or(8 << 20);
    let file_len = u64_at(8);
    let differencing = rest.get(16).is_some_and(|b| b & 1 == 1);
    for p in header.validate(current_size, file_len, differencing) {
        let _ = p.to_string();
    }
    let _ = header.validate(current_size, None, !differencing);
    assert_eq!(
        header.encode_raw()[..],
        raw[..],
        "encode_raw changed the bytes"
    );
    let fixed = DynamicHeader::decode(&header.encode()).expect("1024 bytes");
    assert!(fixed.checksum_ok(), "encode() wrote a bad checksum");
    let name = header.parent_name();
    let mut h2 = header.clone();
    // A name starting with U+FEFF or U+FFFE reads back as a byte-order mark: no real file
    // name does, and none round-trips.
    if !name.starts_with(['\u{feff}', '\u{fffe}']) && h2.set_parent_name(&name).is_ok() {
        assert_eq!(h2.parent_name(), name, "parent name does not round-trip");
    }
    let _ = header.bitmap_size();
    let _ = header.bat_size_on_disk();
    if check_block_size(header.block_size).is_ok() {
        let bm = bitmap_size_for(header.block_size);
        assert!(bm >= 512 && bm.is_multiple_of(512));
        assert!(bm * 8 * 512 >= u64::from(header.block_size));
    }
    for l in &header.locators {
        let _ = l.data_space_bytes();
    }
});
