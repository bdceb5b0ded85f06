//! `check_file` on any bytes: it reports, it never panics, and it fails only on I/O
//! errors other than short reads (a memory backend has none).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::check::check_file;
use vhdkit_format::image::MemBackend;

fuzz_target!(|data: &[u8]| {
    let problems = check_file(&MemBackend::new(data.to_vec())).expect("memory never fails");
    // Render a few: a hostile BAT yields a problem per entry, and formatting tens of
    // thousands of them would only slow the fuzzer down.
    for p in problems.iter().take(64) {
        let _ = p.to_string();
    }
});
