//! One 24-byte parent locator entry followed by its payload: `decode`, `validate`,
//! `decode_path`, and the UTF-16 path codec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::spec::locator::{
    decode_utf16_path, encode_utf16le, windows_to_unix, LOCATOR_ENTRY_SIZE,
};
use vhdkit_format::spec::ParentLocator;

fuzz_target!(|data: &[u8]| {
    assert!(ParentLocator::decode(data).is_ok() == (data.len() == LOCATOR_ENTRY_SIZE));
    if data.len() < LOCATOR_ENTRY_SIZE {
        return;
    }
    let (entry, payload) = data.split_at(LOCATOR_ENTRY_SIZE);
    let l = ParentLocator::decode(entry).expect("24 bytes");
    assert_eq!(
        l.encode()[..],
        entry[..],
        "locator entry does not round-trip"
    );
    for p in l.validate(0, Some(payload.len() as u64)) {
        let _ = p.to_string();
    }
    let _ = l.validate(7, None);
    let _ = l.data_space_bytes();
    let _ = l.code.to_string();
    // The payload as the image layer hands it over: at most data_length bytes.
    let n = (l.data_length as usize).min(payload.len());
    for p in [&payload[..n], payload] {
        if let Some(path) = l.decode_path(p) {
            assert!(!path.raw.is_empty());
            let _ = windows_to_unix(&path.raw);
        }
    }
    if let Some(s) = decode_utf16_path(payload) {
        // What decodes as a plausible path encodes back to the same text.
        let plausible = !s.is_empty()
            && s.chars().all(|c| !c.is_control())
            && !s.starts_with(['\u{feff}', '\u{fffe}']);
        if plausible {
            let back = decode_utf16_path(&encode_utf16le(&s));
            assert_eq!(
                back.as_deref(),
                Some(s.as_str()),
                "UTF-16 path does not round-trip"
            );
        }
    }
    let _ = windows_to_unix(&String::from_utf8_lossy(payload));
});
