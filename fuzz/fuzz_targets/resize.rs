//! A whole image held in a real file (under `$TMPDIR`), resized in place to a size
//! picked from the input (grow, shrink with or without `allow_shrink`, `align`). Whatever
//! the metadata, either the resize succeeds and the disk reads as before up to the
//! smaller size and as zeros after it, at the new size; or it fails and the file is
//! byte for byte what it was. (Crashes part way are the fault and SIGKILL tests' job;
//! here every refusal must come before the first write.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::ops::resize::resize;
use vhdkit_format::ops::{OpsOptions, ResizeOptions};
use vhdkit_format::{Disk, DiskKind, OpenOptions, VhdFile};
use vhdkit_fuzz::NoResolver;
use vhdkit_task::{CancelToken, Progress};

/// Largest virtual size read back, before or after.
const MAX_SIZE: u64 = 24 << 20;
const MIB: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("d.vhd");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Some(before) = content(&path) else {
        return;
    };
    let old = before.len() as u64;
    // The choice comes from a hash of the whole input: any mutation may change it.
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let sizes = [
        old * 2,
        old + 512,
        old + 3 * MIB + 4096,
        old / 2,
        old.saturating_sub(512),
        3 * MIB,
        MAX_SIZE,
        old.next_multiple_of(MIB),
        (h % (MAX_SIZE / 512)) * 512,
    ];
    let size = sizes[(h % sizes.len() as u64) as usize].min(MAX_SIZE);
    let ro = ResizeOptions {
        size: Some(size),
        align: ((h >> 8) % 4 == 0).then_some(MIB),
        allow_shrink: (h >> 16) % 4 != 0,
        shrink_guard: None,
    };
    let opts = OpsOptions {
        sparse: (h >> 24) % 2 == 0,
        ..OpsOptions::default()
    };
    let result = resize(&path, &ro, &opts, &Progress::detached(CancelToken::new()));
    match result {
        Ok(report) => {
            let facts = report.resize.expect("a resize report");
            let after = content(&path).unwrap_or_else(|| {
                panic!("the image no longer opens or reads after a resize ({facts:?})")
            });
            let new = after.len() as u64;
            assert_eq!(new, facts.size_after, "the size reported");
            let keep = old.min(new) as usize;
            assert!(
                after[..keep] == before[..keep],
                "resize changed the data it keeps"
            );
            assert!(
                after[keep..].iter().all(|&b| b == 0),
                "the new space does not read as zeros"
            );
            let cut = before[keep..].iter().filter(|&&b| b != 0).count() as u64;
            assert_eq!(facts.nonzero_bytes_cut, cut, "non-zero bytes cut");
        }
        Err(e) => {
            let now = std::fs::read(&path).expect("read the file back");
            assert!(now == data, "resize failed ({e}) and changed the file");
        }
    }
});

/// The virtual content of a fixed or dynamic disk of at most MAX_SIZE that opens for
/// writing and reads.
fn content(path: &std::path::Path) -> Option<Vec<u8>> {
    let opts = OpenOptions::new().no_parents(true);
    let top = VhdFile::open(path, &opts).ok()?;
    if !matches!(top.kind(), DiskKind::Dynamic | DiskKind::Fixed) || top.virtual_size() > MAX_SIZE {
        return None;
    }
    // What a resize opens: a file that does not open for writing is refused before it.
    VhdFile::open(path, &opts.clone().writable(true)).ok()?;
    let disk = Disk::resolve(top, &opts, &NoResolver).ok()?;
    let mut buf = vec![0u8; disk.virtual_size() as usize];
    disk.read_at(&mut buf, 0).ok()?;
    Some(buf)
}
