//! The fat reader alone (`analyse_as(.., Family::Fat)`) on a hostile sparse disk, and
//! the probe: no panic, bounded memory and time, free ranges only inside the file system.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_fuzz::volume::{check_fs, SparseDisk};
use vhdkit_volume::fs::{analyse, analyse_as, Family};
use vhdkit_volume::ReadAt;

fuzz_target!(|data: &[u8]| {
    let disk = SparseDisk::decode(data);
    let size = disk.size().expect("size");
    let rep = analyse_as(&disk, 0, size, Family::Fat).expect("a sparse disk never fails to read");
    check_fs(&rep, 0, size);
    // The same bytes as a partition further in: ranges shift, never escape.
    if size > 4096 {
        let rep = analyse(&disk, 4096, size - 4096).expect("reads");
        check_fs(&rep, 4096, size - 4096);
    }
});
