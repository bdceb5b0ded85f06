//! The trust policy (docs/security.md) on real files: up to four crafted files (split at
//! `FILE_SEP`; the first byte holds flags) are written into a test folder, file 0 is
//! opened with the default options (or with host drives allowed for block devices), and
//! every path the parent search asks to open is recorded. Outside the test folder sit a
//! canary VHD (fixed unique id, named in the dictionary by absolute and relative paths),
//! a secret regular file and a FIFO beside the files. Asserted:
//!
//! - nothing outside the test folder is opened except through a relative locator (the
//!   one way out the policy allows; an absolute locator or parent name never leads out);
//! - the canary is never a layer unless a relative locator named it;
//! - no host-drive stub reaches the secret file or the FIFO: with the default options no
//!   stub opens at all, with block devices allowed a regular file is refused;
//! - nothing hangs on the FIFO (libFuzzer's timeout would report it).
#![no_main]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vhdkit_format::image::{parent_candidates, FoundBy, FsResolver, ParentResolver};
use vhdkit_format::{Disk, DiskKind, HostDrives, OpenOptions, Result, VhdFile};
use vhdkit_fuzz::{split_files, trust};

/// Records every path it is asked to open, then opens it as the file-system resolver.
struct Recording(RefCell<Vec<PathBuf>>);

impl ParentResolver for Recording {
    fn open(&self, path: &Path, opts: &OpenOptions) -> Result<Option<VhdFile>> {
        self.0.borrow_mut().push(path.to_owned());
        FsResolver.open(path, opts)
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

fuzz_target!(|data: &[u8]| {
    static PLACES: OnceLock<trust::Places> = OnceLock::new();
    let places = PLACES.get_or_init(trust::Places::make);
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let files = split_files(rest);
    let paths = places.write(&files);
    let opts = OpenOptions {
        host_drives: if flags & 1 != 0 {
            HostDrives::BlockDevices
        } else {
            HostDrives::Refuse
        },
        ignore_parent_id: flags & 2 != 0,
        ..OpenOptions::new()
    };
    let rec = Recording(RefCell::new(Vec::new()));
    let opened = VhdFile::open(&paths[0], &opts).and_then(|top| Disk::resolve(top, &opts, &rec));
    let tree = canonical(&places.tree);
    if let Ok(disk) = &opened {
        for (i, layer) in disk.layers().iter().enumerate() {
            let p = canonical(layer.path());
            if p == canonical(&places.canary) {
                assert_eq!(
                    disk.found_by(i),
                    Some(FoundBy::RelativeLocator),
                    "the canary outside the folder became a layer through {:?}",
                    disk.found_by(i)
                );
            }
            if layer.kind() == DiskKind::HostDrive {
                // Only a block device, and only when allowed.
                let (_, device) = layer.host_drive().expect("a host-drive layer");
                let block = std::fs::metadata(&device)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
                assert!(
                    opts.host_drives == HostDrives::BlockDevices && block,
                    "a crafted stub opened {}",
                    device.display()
                );
                assert_ne!(canonical(&device), canonical(&places.secret));
            }
        }
    }
    // Every path asked for lies in the folder, or came from a relative locator of a file
    // that was opened.
    let asked = rec.0.into_inner();
    let mut relative: Vec<PathBuf> = Vec::new();
    for p in paths.iter().chain(asked.iter()) {
        let Ok(f) = VhdFile::open_regular(p, &OpenOptions::new().no_parents(true)) else {
            continue;
        };
        relative.extend(
            parent_candidates(&f)
                .into_iter()
                .filter(|c| c.found_by == FoundBy::RelativeLocator)
                .map(|c| c.path),
        );
    }
    for p in &asked {
        let inside = canonical(p).starts_with(&tree);
        assert!(
            inside || relative.contains(p),
            "asked to open {} outside the folder, not through a relative locator",
            p.display()
        );
    }
});
