//! `vhdkit_volume::scan` on a hostile sparse disk (see `src/volume.rs`): partition table
//! (MBR, EBR chains, GPT primary and backup) and every file system it leads to. No panic,
//! bounded memory and time, and every free range inside an analysed partition and its
//! file system.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_fuzz::volume::{check_disk, SparseDisk};
use vhdkit_volume::ReadAt;

fuzz_target!(|data: &[u8]| {
    let disk = SparseDisk::decode(data);
    let size = disk.size().expect("size");
    if let Ok(table) = vhdkit_volume::table::read_table(&disk) {
        for e in &table.entries {
            let _ = (e.ptype.name(), e.ptype.holds_fs());
        }
    }
    let report = vhdkit_volume::scan(&disk).expect("a sparse disk never fails to read");
    check_disk(&report, size);
});
