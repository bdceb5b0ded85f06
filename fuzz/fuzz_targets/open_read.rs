//! A whole image held in memory: open it (no parents), read a bounded sample of the
//! virtual disk in chunks and at once, map the whole disk's extents; then open a copy
//! for writing, write one input-chosen range and read it back. Images that open are
//! also read from a real file (under `$TMPDIR`; set it to a tmpfs such as /dev/shm) so
//! that mapped reads go through `mmap`.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vhdkit_format::image::{Backend, MemBackend};
use vhdkit_format::{Disk, OpenOptions, VhdFile};
use vhdkit_fuzz::{exercise_reads, path_of, write_and_verify, NoResolver, Rng, GROWTH_LIMIT};

fuzz_target!(|data: &[u8]| {
    let mut rng = Rng::from_bytes(data);
    // Only images that open read-only, and are not host-drive stubs, are written to: a
    // stub names a host device, and opening it writable is never wanted here.
    let mut writable_candidate = false;
    for strict in [false, true] {
        let opts = OpenOptions::new().strict(strict).no_parents(true);
        let backend: Arc<dyn Backend> = Arc::new(MemBackend::new(data.to_vec()));
        let Ok(top) = VhdFile::from_backend(path_of(0), backend, &opts) else {
            continue;
        };
        if !strict {
            writable_candidate = top.host_drive().is_none();
        }
        let _ = top.warnings();
        let _ = top.kind();
        let _ = top.header();
        let _ = top.allocated_blocks();
        let _ = top.metadata_ranges();
        let Ok(disk) = Disk::resolve(top, &opts, &NoResolver) else {
            continue;
        };
        exercise_reads(&disk, &mut rng);
        if strict {
            break;
        }
    }

    if !writable_candidate {
        return;
    }
    // The same reads from a real file, so that `read_mapped` goes through the memory
    // maps (the crate's only `unsafe`) rather than the memory backend's copy.
    let file =
        std::env::temp_dir().join(format!("vhdkit-fuzz-open_read-{}.vhd", std::process::id()));
    if std::fs::write(&file, data).is_ok() {
        let opts = OpenOptions::new().no_parents(true);
        if let Ok(top) = VhdFile::open(&file, &opts) {
            if let Ok(disk) = Disk::resolve(top, &opts, &NoResolver) {
                exercise_reads(&disk, &mut rng.clone());
            }
        }
        let _ = std::fs::remove_file(&file);
    }

    // Writing into whatever was accepted must not panic, and what was written reads back.
    let mem = Arc::new(MemBackend::with_limit(
        data.to_vec(),
        data.len() as u64 + GROWTH_LIMIT,
    ));
    let opts = OpenOptions::new().writable(true).no_parents(true);
    let backend: Arc<dyn Backend> = mem.clone();
    let Ok(top) = VhdFile::from_backend(path_of(0), backend, &opts) else {
        return;
    };
    let Ok(disk) = Disk::resolve(top, &opts, &NoResolver) else {
        return;
    };
    let size = disk.virtual_size();
    let off = rng.below(size);
    let len = rng.below(9000).min(size - off) as usize;
    let fill = (rng.next_u64() as u8) | 1;
    if write_and_verify(&disk, &vec![fill; len], off) {
        let _ = disk.flush();
        // The grown file opens again and holds the write.
        let reopened = VhdFile::from_backend(
            path_of(0),
            Arc::new(MemBackend::new(mem.to_vec())),
            &OpenOptions::new().no_parents(true),
        )
        .expect("an image vhdkit wrote to reopens");
        let disk = Disk::resolve(reopened, &OpenOptions::new().no_parents(true), &NoResolver)
            .expect("resolve without parents");
        let mut back = vec![0u8; len];
        disk.read_at(&mut back, off).expect("read after reopen");
        assert!(back.iter().all(|&b| b == fill), "write lost after reopen");
    }
});
