//! The sparse layout is decided once (`spec/layout.rs`); open, check, repair, compact,
//! create and convert used to carry their own copies, which disagreed. One regression
//! test per former disagreement: each builds the file that told the copies apart and
//! checks that every part of vhdkit now takes it the same way.

use std::path::{Path, PathBuf};

use vhdkit_format::check::check;
use vhdkit_format::ops::{self, OpsOptions, Target};
use vhdkit_format::spec::{DynamicHeader, PlatformCode};
use vhdkit_format::{CreateOptions, Disk, DiskKind, OpenOptions, VhdFile};

const MIB: u64 = 1 << 20;

fn dynamic(dir: &Path) -> PathBuf {
    let p = dir.join("d.vhd");
    Disk::create(&p, &CreateOptions::new(DiskKind::Dynamic, 8 * MIB)).expect("create");
    p
}

fn edit_header(p: &Path, edit: impl Fn(&mut DynamicHeader)) {
    let mut b = std::fs::read(p).expect("read");
    let mut h = DynamicHeader::decode(&b[512..1536]).expect("header");
    edit(&mut h);
    b[512..1536].copy_from_slice(&h.encode());
    std::fs::write(p, b).expect("write");
}

fn clean(p: &Path) -> bool {
    check(p, &OpenOptions::new()).expect("check").is_clean()
}

/// Former disagreement: a locator's absurd length was rounded to `u64::MAX` (claiming
/// the rest of the file) in some copies and to 0 in another. Now it claims nothing,
/// everywhere: blocks are placed right after the real metadata, check and repair agree.
#[test]
fn an_absurd_locator_length_claims_nothing_anywhere() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dynamic(dir.path());
    edit_header(&p, |h| {
        h.locators[0].code = PlatformCode::W2ru;
        h.locators[0].data_offset = 1536;
        h.locators[0].data_length = u32::MAX;
        h.locators[0].data_space = 512;
    });
    let f = VhdFile::open(&p, &OpenOptions::new()).expect("opens, with a warning");
    assert!(
        f.warnings().iter().any(|w| w.contains("absurd")),
        "{:?}",
        f.warnings()
    );
    let meta_end = f
        .metadata_ranges()
        .iter()
        .map(|r| r.1)
        .max()
        .expect("metadata");
    assert_eq!(meta_end, 2048, "the BAT ends the metadata");
    drop(f);
    let d = Disk::open_rw(&p).expect("writable");
    d.write_at(&[7u8; 512], 0).expect("write");
    d.flush().expect("flush");
    let at = d
        .top()
        .bat()
        .expect("bat")
        .block_offset(0)
        .expect("allocated");
    assert!(
        at < 8192,
        "the block lands after the real metadata, at {at:#x}"
    );
    drop(d);
    let r = ops::repair::repair(&p).expect("repair");
    assert!(
        r.actions.is_empty(),
        "repair sees nothing to do: {:?}",
        r.actions
    );
}

/// Former disagreement: a locator payload running past the end of the file was clipped
/// to the end in one copy and skipped in another. Now it is clipped everywhere: a
/// read-only open reads, a writable open refuses (new blocks would land inside it), and
/// repair moves the footer past it, after which the file opens for writing.
#[test]
fn a_locator_payload_past_the_end_is_clipped_everywhere() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dynamic(dir.path());
    let len = std::fs::metadata(&p).expect("stat").len();
    edit_header(&p, |h| {
        h.locators[0].code = PlatformCode::W2ru;
        h.locators[0].data_offset = len - 512;
        h.locators[0].data_length = 1024;
        h.locators[0].data_space = 1024;
    });
    Disk::open(&p).expect("read-only opens");
    let e = Disk::open_rw(&p).expect_err("writable refuses");
    assert!(e.to_string().contains("parent locator"), "{e}");
    ops::repair::repair(&p).expect("repair");
    assert!(std::fs::metadata(&p).expect("stat").len() > len + 512 - 1);
    let d = Disk::open_rw(&p).expect("after repair, writable");
    d.write_at(&[1u8; 4096], MIB).expect("write");
    d.flush().expect("flush");
    drop(d);
    // Only what the crafted locator itself is (a locator in a dynamic disk) is left.
    let report = check(&p, &OpenOptions::new()).expect("check");
    let serious: Vec<String> = report
        .problems()
        .filter(|(_, x)| x.severity >= vhdkit_format::spec::Severity::Warning)
        .filter(|(_, x)| x.structure != "dynamic header")
        .map(|(_, x)| x.to_string())
        .collect();
    assert!(serious.is_empty(), "{serious:?}");
}

/// Former disagreement: the BAT's padding (the entries past those covering the size,
/// up to the sector) counted as metadata in some copies only. A block placed inside it
/// is refused by open and reported by check alike.
#[test]
fn a_block_inside_the_bat_padding_is_refused_by_open_and_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dynamic(dir.path());
    // 8 MiB in 2 MiB blocks: 4 entries at 1536..1552; the padding runs to 2048.
    let mut b = std::fs::read(&p).expect("read");
    b[1536..1540].copy_from_slice(&3u32.to_be_bytes()); // sector 3: byte 1536, the BAT itself
    std::fs::write(&p, b).expect("write");
    assert!(Disk::open(&p).is_err());
    assert!(!clean(&p));
}

/// Former disagreement: where the first block goes (create's placement, convert's
/// writer and the write path each had their own). One builder now: the same offset,
/// with data on a 4 KiB boundary, whichever wrote the disk.
#[test]
fn the_first_block_lands_at_the_same_aligned_offset_from_every_writer() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dynamic(dir.path());
    let d = Disk::open_rw(&p).expect("open");
    d.write_at(&[9u8; 4096], 0).expect("write");
    d.flush().expect("flush");
    let written = d
        .top()
        .bat()
        .expect("bat")
        .block_offset(0)
        .expect("allocated");
    drop(d);
    let out = dir.path().join("c.vhd");
    ops::convert_task(&p, &out, Target::Dynamic, &OpsOptions::default())
        .expect("starts")
        .join()
        .expect("converts");
    let f = VhdFile::open(&out, &OpenOptions::new()).expect("open");
    let converted = f.bat().expect("bat").block_offset(0).expect("allocated");
    let bitmap = f.bitmap_size().expect("bitmap");
    assert_eq!(written, converted);
    assert_eq!((written + bitmap) % 4096, 0);
}
