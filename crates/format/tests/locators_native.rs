//! Parent locators hold native paths where the child is made: on Windows the `W2ku`
//! locator is the parent's path as Windows writes it (`C:\…\base.vhd`, not the `\\?\`
//! form of a canonical path, not POSIX), and every locator a reader finds is a path of
//! this system. CI runs this natively on Linux and under wine for Windows.

use std::path::Path;

use vhdkit_format::image::{parent_candidates, VhdFile};
use vhdkit_format::spec::locator::PlatformCode;
use vhdkit_format::{CreateOptions, Disk, DiskKind, OpenOptions};
use vhdkit_platform::FileExt;

/// The decoded paths of `child`'s used locators, by code.
fn locators(child: &Path) -> Vec<(PlatformCode, String)> {
    let f = VhdFile::open(child, &OpenOptions::new()).expect("open the child");
    let file = std::fs::File::open(child).expect("open");
    f.header()
        .expect("a dynamic header")
        .locators
        .iter()
        .filter(|l| l.is_used())
        .map(|l| {
            let mut payload = vec![0u8; l.data_length as usize];
            file.read_exact_at(&mut payload, l.data_offset)
                .expect("payload");
            let p = l.decode_path(&payload).expect("a path");
            (l.code, p.raw)
        })
        .collect()
}

#[test]
fn w2ku_is_the_parents_native_absolute_path_and_w2ru_its_relative_one() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("kids")).expect("mkdir");
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("kids").join("child.vhd");
    Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 4 << 20)).expect("base");
    Disk::create(&child, &CreateOptions::differencing(&base)).expect("child");

    let found = locators(&child);
    let w2ku = &found
        .iter()
        .find(|(c, _)| *c == PlatformCode::W2ku)
        .expect("W2ku")
        .1;
    let w2ru = &found
        .iter()
        .find(|(c, _)| *c == PlatformCode::W2ru)
        .expect("W2ru")
        .1;
    assert_eq!(w2ru, "..\\base.vhd");
    let canonical = std::fs::canonicalize(&base).expect("canonical");
    if cfg!(windows) {
        // `X:\…\base.vhd`, exactly as Windows writes it.
        let b = w2ku.as_bytes();
        assert!(
            b.len() > 3 && b[0].is_ascii_alphabetic() && &b[1..3] == b":\\",
            "{w2ku}"
        );
        assert!(
            !w2ku.contains('/') && w2ku.ends_with("\\base.vhd"),
            "{w2ku}"
        );
    } else {
        assert_eq!(Path::new(w2ku), canonical, "the POSIX path");
    }
    // Whatever the system, the candidates a reader tries are this system's paths, and
    // the chain opens through them.
    let top = VhdFile::open(&child, &OpenOptions::new()).expect("open");
    let cands = parent_candidates(&top);
    assert!(!cands.is_empty());
    for c in &cands {
        assert!(
            c.path.file_name().is_some_and(|n| n == "base.vhd"),
            "{:?}",
            c.path
        );
    }
    assert_eq!(
        std::fs::canonicalize(&cands[0].path).expect("the first candidate exists"),
        canonical
    );
    let disk = Disk::open(&child).expect("the chain opens");
    assert_eq!(disk.layers().len(), 2);
}
