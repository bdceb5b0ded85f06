//! The chain operations on crafted files (the `chain` target's format: a flags byte, then
//! files split at `FILE_SEP`), written to real files `0.vhd`, `1.vhd`, `2.vhd` so the
//! seeds' relative locators resolve:
//!
//! - set-parent of `0.vhd` to a byte copy of its parent (the file the chain resolved one
//!   level up) under another name: whatever the metadata, it succeeds or fails, and
//!   `0.vhd` then reads exactly as before;
//! - merge of `0.vhd` into the base two levels up (`--depth 2`): it succeeds or fails,
//!   `0.vhd` reads exactly as before either way, and after a success the ancestor (with
//!   its own parents, if it has any) reads as the chain did. The ancestor is the file the
//!   chain resolved two levels up, not a fixed name: a mutated locator may name any of
//!   the files (a campaign once compared a sibling, `2.vhd`, while the chain ran
//!   `0.vhd → 1.vhd → 3.vhd`).
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use vhdkit_format::ops::merge_into::{merge_into, Ancestor};
use vhdkit_format::ops::relink::set_parent;
use vhdkit_format::ops::OpsOptions;
use vhdkit_format::{Disk, OpenOptions};
use vhdkit_fuzz::split_files;
use vhdkit_task::{CancelToken, Progress};

/// Largest virtual size handled (whole-disk reads per execution).
const MAX_SIZE: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let files = split_files(rest);
    if files.len() < 2 {
        return;
    }
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    for (i, f) in files.iter().enumerate() {
        if std::fs::write(dir.path().join(format!("{i}.vhd")), f).is_err() {
            return;
        }
    }
    let top = dir.path().join("0.vhd");
    let open = OpenOptions::new().ignore_parent_id(true);
    let Some((before, layers)) = content(&top, &open) else {
        return;
    };
    if flags & 1 == 0 {
        // set-parent to a copy of the parent: the file the chain resolved one level up
        // (a mutated locator may name any of the files, not `1.vhd`).
        let copy = dir.path().join("copy-of-parent.vhd");
        if std::fs::copy(&layers[1], &copy).is_err() {
            return;
        }
        let result = set_parent(&top, &copy, true);
        let (after, _) = content(&top, &open)
            .unwrap_or_else(|| panic!("the child no longer reads after set-parent ({result:?})"));
        assert!(
            after == before,
            "set-parent changed the child's view ({result:?})"
        );
    } else if layers.len() >= 3 {
        let opts = OpsOptions {
            open: open.clone(),
            chunk_bytes: 1 << 20,
            keep_intermediates: flags & 2 != 0,
            force: true,
            ..OpsOptions::default()
        };
        let result = merge_into(
            &top,
            &Ancestor::Depth(2),
            &opts,
            &Progress::detached(CancelToken::new()),
        );
        let (after, _) = content(&top, &open)
            .unwrap_or_else(|| panic!("the child no longer reads after merge --into ({result:?})"));
        assert!(
            after == before,
            "merge --into changed the child's view ({result:?})"
        );
        if result.is_ok() {
            if let Ok(d) = Disk::open_with(&layers[2], &open) {
                let mut alone = vec![0u8; d.virtual_size().min(before.len() as u64) as usize];
                d.read_at(&mut alone, 0).expect("the merged base reads");
                assert!(
                    alone[..] == before[..alone.len()],
                    "the base does not read as the chain did"
                );
            }
        }
    }
});

/// The virtual content of the disk at `path` and the paths of its levels, top first.
fn content(path: &Path, open: &OpenOptions) -> Option<(Vec<u8>, Vec<PathBuf>)> {
    let disk = Disk::open_with(path, open).ok()?;
    if disk.virtual_size() > MAX_SIZE || disk.layers().len() < 2 {
        return None;
    }
    let mut buf = vec![0u8; disk.virtual_size() as usize];
    disk.read_at(&mut buf, 0).ok()?;
    let layers = disk
        .layers()
        .iter()
        .map(|l| l.path().to_path_buf())
        .collect();
    Some((buf, layers))
}
