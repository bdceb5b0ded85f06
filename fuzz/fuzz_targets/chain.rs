//! Two to four files from one input (split at `FILE_SEP`; the first byte holds flags):
//! file 0 opened, its parents resolved over the in-memory set, then bounded reads; then
//! one write into the top of the chain, on copies, read back.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vhdkit_format::image::MemBackend;
use vhdkit_format::{Disk, OpenOptions};
use vhdkit_fuzz::{
    exercise_reads, mem_backend, split_files, write_and_verify, MemResolver, Rng, GROWTH_LIMIT,
};

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
    if disk.top().host_drive().is_some() {
        return; // never open a host device writable
    }
    drop(disk);

    // A write into the top of the chain (differencing writes copy whole granules up from
    // the parents) reads back, on copies of the files.
    let copies: Vec<Arc<MemBackend>> = split_files(rest)
        .into_iter()
        .map(|f| mem_backend(f.to_vec(), GROWTH_LIMIT))
        .collect();
    let resolver = MemResolver::new(copies, flags & 8 == 0);
    let opts = OpenOptions {
        writable: true,
        ..opts
    };
    let Ok(top) = resolver.open_index(0, &opts) else {
        return;
    };
    let Ok(disk) = Disk::resolve(top, &opts, &resolver) else {
        return;
    };
    let size = disk.virtual_size();
    let off = rng.below(size);
    let len = rng.below(6000).min(size - off) as usize;
    let fill = (rng.next_u64() as u8) | 1;
    write_and_verify(&disk, &vec![fill; len], off);
});
