//! A whole image held in a real file (under `$TMPDIR`), compacted in place. Whatever
//! the metadata, compact either succeeds or fails with an error, and in both cases the
//! file still opens and reads exactly as before: in-place operations keep the image
//! valid and its content unchanged at every instant. A success also leaves no block
//! that is all zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhdkit_format::ops::{compact::compact, OpsOptions};
use vhdkit_format::{OpenOptions, VhdFile};
use vhdkit_fuzz::dynamic_content;
use vhdkit_task::{CancelToken, Progress};

/// Largest virtual size compacted (whole-disk read-back per execution).
const MAX_SIZE: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let path = dir.path().join("d.vhd");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Some(before) = dynamic_content(&path, MAX_SIZE) else {
        return;
    };
    let verify = data.last().is_some_and(|b| b & 1 == 1);
    let opts = OpsOptions {
        chunk_bytes: 1 << 20,
        verify,
        ..OpsOptions::default()
    };
    let result = compact(&path, &opts, &Progress::detached(CancelToken::new()));
    let after = dynamic_content(&path, MAX_SIZE)
        .unwrap_or_else(|| panic!("the image no longer opens or reads after compact ({result:?})"));
    assert!(
        after == before,
        "compact changed the content ({})",
        if result.is_ok() {
            "succeeded"
        } else {
            "failed"
        }
    );
    if result.is_ok() {
        let file = VhdFile::open(&path, &OpenOptions::new().no_parents(true)).expect("reopens");
        let (Some(bat), Some(block)) = (file.bat(), file.block_size()) else {
            panic!("a compacted dynamic disk has a BAT");
        };
        for (b, _) in bat.allocated() {
            let start = (b * block) as usize;
            let end = (start + block as usize).min(after.len());
            assert!(
                start < end && after[start..end].iter().any(|&x| x != 0),
                "block {b} reads as zeros but is still allocated"
            );
        }
    }
});
