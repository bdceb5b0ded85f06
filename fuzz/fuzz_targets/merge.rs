//! Two files from one input, in the `chain` target's format (a flags byte, then files
//! split at `FILE_SEP`): file 0 a differencing child, file 1 its parent, written to real
//! files and merged in place (parent named explicitly, ids not compared). Whatever the
//! metadata, merge either succeeds or fails with an error; either way the child still
//! opens and reads exactly as before (its view never changes), and after a success the
//! parent alone reads as the chain did.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vhdkit_format::ops::{merge::merge, OpsOptions};
use vhdkit_format::{Disk, DiskKind, OpenOptions};
use vhdkit_fuzz::split_files;
use vhdkit_task::{CancelToken, Progress};

/// Largest virtual size merged (whole-disk read-back per execution).
const MAX_SIZE: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((_, rest)) = data.split_first() else {
        return;
    };
    let files = split_files(rest);
    let [child_bytes, parent_bytes] = files.as_slice() else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let child = dir.path().join("child.vhd");
    let parent = dir.path().join("parent.vhd");
    if std::fs::write(&child, child_bytes).is_err()
        || std::fs::write(&parent, parent_bytes).is_err()
    {
        return;
    }
    let open = OpenOptions::new().parent(&parent).ignore_parent_id(true);
    let Some(before) = content(&child, &open, true) else {
        return;
    };
    let opts = OpsOptions {
        open: open.clone(),
        chunk_bytes: 1 << 20,
        ..OpsOptions::default()
    };
    let result = merge(&child, &opts, &Progress::detached(CancelToken::new()));
    let after = content(&child, &open, false)
        .unwrap_or_else(|| panic!("the child no longer opens or reads after merge ({result:?})"));
    assert!(
        after == before,
        "merge changed what the child reads ({result:?})"
    );
    if result.is_ok() {
        let alone = content(&parent, &OpenOptions::new().no_parents(true), false)
            .expect("the merged parent opens and reads alone");
        assert!(
            alone.len() >= before.len() && alone[..before.len()] == before[..],
            "the merged parent does not read as the chain did"
        );
    }
});

/// The virtual content of the disk at `path` (at most MAX_SIZE). With `child_only`,
/// only a differencing disk over a parent that needs no grandparent is accepted.
fn content(path: &Path, open: &OpenOptions, child_only: bool) -> Option<Vec<u8>> {
    let disk = Disk::open_with(path, open).ok()?;
    if disk.virtual_size() > MAX_SIZE {
        return None;
    }
    if child_only && (disk.kind() != DiskKind::Differencing || disk.layers().len() != 2) {
        return None;
    }
    let mut buf = vec![0u8; disk.virtual_size() as usize];
    disk.read_at(&mut buf, 0).ok()?;
    Some(buf)
}
