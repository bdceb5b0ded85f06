//! The VHDX metadata region: the input is the region's bytes (table at 0, items past
//! 64 KiB). Decoding never panics; a region that decodes re-encodes (unknown items
//! dropped) to one that decodes the same. The parent locator decoder also runs on the
//! input's first bytes as one item.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::vhdx::metadata::{Metadata, RawMetadataTable};
use vhdkit_format::vhdx::{BatGeometry, ParentLocator};

fuzz_target!(|data: &[u8]| {
    let at = 3 << 20;
    if let Ok(raw) = RawMetadataTable::decode(data, at) {
        assert!(raw.entries.len() <= 2047);
        for p in raw.problems(at, data.len() as u64).iter().take(8) {
            assert!(p.offset() >= at);
            let _ = p.to_string();
        }
    }
    if let Ok(md) = Metadata::decode(data, at) {
        let mut region = md.encode();
        region.resize(region.len().max(1 << 16), 0);
        let again = Metadata::decode(&region, at).expect("an encoded region decodes");
        let mut want = md.clone();
        want.other_items.clear();
        assert_eq!(again, want);
        // The geometry of every valid metadata is computable without overflow.
        let g = BatGeometry::from_metadata(&md).expect("valid metadata has a geometry");
        assert!(g.entries >= g.data_blocks);
    }
    let item = &data[..data.len().min(1 << 16)];
    if let Ok(l) = ParentLocator::decode(item, 0) {
        let again = ParentLocator::decode(&l.encode(), 0).expect("an encoded locator decodes");
        assert_eq!(again, l);
        assert!(l.parent_linkage().is_some());
    }
});
