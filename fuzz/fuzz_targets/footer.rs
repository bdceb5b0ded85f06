//! `Footer::decode` / `validate` / `encode` over any 512 bytes; the bytes after the first
//! 512 give the file length validation is told about.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::spec::{Footer, Geometry, FOOTER_SIZE};

fuzz_target!(|data: &[u8]| {
    // Decoding fails only on length.
    assert!(Footer::decode(data).is_ok() == (data.len() == FOOTER_SIZE));
    if data.len() < FOOTER_SIZE {
        return;
    }
    let (raw, rest) = data.split_at(FOOTER_SIZE);
    let footer = Footer::decode(raw).expect("512 bytes");
    let file_len = rest
        .get(..8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
    for p in footer
        .validate(file_len)
        .iter()
        .chain(&footer.validate(None))
    {
        let _ = p.to_string();
    }
    // Every byte is kept: the raw encoding is the input, the decoded form is stable.
    assert_eq!(
        footer.encode_raw()[..],
        raw[..],
        "encode_raw changed the bytes"
    );
    let fixed = footer.encode();
    let again = Footer::decode(&fixed).expect("512 bytes");
    assert!(again.checksum_ok(), "encode() wrote a bad checksum");
    let _ = footer.checksum_ok();
    let _ = footer.creator_app_string();
    let _ = footer.creator_host_os_string();
    let _ = footer.disk_type.to_string();
    let _ = footer.timestamp.to_rfc3339();
    let _ = footer.geometry.capacity();
    let g = Geometry::from_total_sectors(footer.current_size / 512);
    assert_eq!(Geometry::decode(g.encode()), g);
});
