//! `HostDriveHeader::decode` / `validate` / `encode` over any 1024 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::spec::{HostDriveHeader, HOST_DRIVE_HEADER_SIZE};

fuzz_target!(|data: &[u8]| {
    assert!(HostDriveHeader::decode(data).is_ok() == (data.len() == HOST_DRIVE_HEADER_SIZE));
    if data.len() < HOST_DRIVE_HEADER_SIZE {
        return;
    }
    let raw = &data[..HOST_DRIVE_HEADER_SIZE];
    let h = HostDriveHeader::decode(raw).expect("1024 bytes");
    for p in h.validate(raw) {
        let _ = p.to_string();
    }
    let _ = h.read_only();
    if let Ok(enc) = h.encode() {
        let back = HostDriveHeader::decode(&enc).expect("1024 bytes");
        assert!(back.validate(&enc).iter().all(|p| p.field != "checksum"));
        assert_eq!(back.device_path, h.device_path);
        assert_eq!(back.device_size, h.device_size);
        assert_eq!(back.flags, h.flags);
    }
});
