//! A whole image held in a real file (under `$TMPDIR`; a tmpfs such as /dev/shm keeps it
//! fast) converted by the operations' block pipeline — shared mapped windows, rayon
//! composition, the writer and flusher threads — to raw and to dynamic. Hostile
//! metadata must give an error, never a panic or a hang; a conversion that succeeds
//! must read back exactly as the source reads, and leave no temporary file behind.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vhdkit_format::ops::{convert::convert_disk, OpsOptions, Target};
use vhdkit_format::{Disk, OpenOptions, VhdFile};
use vhdkit_fuzz::NoResolver;
use vhdkit_task::{CancelToken, Progress};

/// Largest virtual size converted (whole-disk read-back per execution).
const MAX_SIZE: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let src = dir.path().join("src.vhd");
    if std::fs::write(&src, data).is_err() {
        return;
    }
    let opts = OpenOptions::new().no_parents(true);
    let Ok(top) = VhdFile::open(&src, &opts) else {
        return;
    };
    if top.host_drive().is_some() {
        return; // A stub names a host device: never read one from fuzz input.
    }
    let Ok(disk) = Disk::resolve(top, &opts, &NoResolver) else {
        return;
    };
    let size = disk.virtual_size();
    if size > MAX_SIZE {
        return;
    }
    let Some(expected) = read_all(&disk) else {
        return; // Unreadable stored data (a short file): nothing to compare with.
    };
    for target in [Target::Raw, Target::Dynamic] {
        let dst = dir.path().join(format!("out-{}", target.name()));
        let ops = OpsOptions {
            block_size: 512 * 1024,
            chunk_bytes: 2 << 20,
            sync_bytes: 1 << 20,
            verify: true,
            ..OpsOptions::default()
        };
        match convert_disk(
            &disk,
            &dst,
            target,
            &ops,
            &Progress::detached(CancelToken::new()),
            vhdkit_format::ops::Operation::Convert,
        ) {
            Ok(_) => check_output(&dst, target, &expected),
            Err(_) => assert!(!dst.exists(), "a failed convert left its destination"),
        }
        let leftovers = std::fs::read_dir(dir.path())
            .map(|d| d.filter_map(|e| e.ok()).count())
            .unwrap_or(0);
        assert!(leftovers <= 3, "a temporary file was left behind");
    }
});

fn read_all(disk: &Disk) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; disk.virtual_size() as usize];
    disk.read_at(&mut buf, 0).ok()?;
    Some(buf)
}

fn check_output(dst: &Path, target: Target, expected: &[u8]) {
    let got = match target {
        Target::Raw => std::fs::read(dst).expect("the raw output reads"),
        _ => {
            let disk = Disk::open(dst).expect("the converted disk opens");
            assert_eq!(disk.virtual_size(), expected.len() as u64, "virtual size");
            read_all(&disk).expect("the converted disk reads")
        }
    };
    assert!(got == expected, "{target:?} output differs from the source");
}
