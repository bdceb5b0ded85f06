//! Two to four files from one input (split at `FILE_SEP`; the first byte holds flags):
//! file 0 opened, its parents resolved over the in-memory set, then bounded reads.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vhdkit_format::image::MemBackend;
use vhdkit_format::{Disk, OpenOptions};
use vhdkit_fuzz::{exercise_reads, split_files, MemResolver, Rng};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let files: Vec<Arc<MemBackend>> = split_files(rest)
        .into_iter()
        .map(|f| Arc::new(MemBackend::new(f.to_vec())))
        .collect();
    let opts = OpenOptions {
        ignore_parent_id: flags & 1 != 0,
        strict: flags & 2 != 0,
        max_depth: if flags & 4 != 0 { 1 } else { 64 },
        ..OpenOptions::new()
    };
    let resolver = MemResolver::new(files, flags & 8 == 0);
    let Ok(top) = resolver.open_index(0, &opts) else {
        return;
    };
    let disk = match Disk::resolve(top, &opts, &resolver) {
        Ok(d) => d,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(
        disk.layers().len() <= 4,
        "a chain of 4 files has at most 4 levels"
    );
    let _ = disk.warnings();
    let mut rng = Rng::from_bytes(data);
    exercise_reads(&disk, &mut rng);
});
