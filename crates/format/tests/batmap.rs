//! Xen's batmap when it disagrees with its file (the forms of `BatmapDamage`, made from
//! the blktap fixtures): a strict open refuses it naming the fix, `check` calls it an
//! error, a lenient open warns and reads as qemu-img does, a writable one refuses what a
//! write could make worse, and `repair` (`check --repair`) rewrites the batmap without
//! changing a byte that qemu-img or libvhdi read.

mod common;

use std::path::{Path, PathBuf};

use common::{pyvhdi_read_all, qemu_read_all, read_all, tempdir, BatmapDamage};
use vhdkit_format::check::{check, CheckReport};
use vhdkit_format::ops::repair::repair;
use vhdkit_format::spec::Severity;
use vhdkit_format::{Disk, Error, OpenOptions};

/// A damaged copy of the form's fixture in `dir`.
fn damaged(dir: &Path, form: BatmapDamage) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/blktap");
    let bytes = std::fs::read(fixtures.join(form.fixture())).expect("fixture");
    let path = dir.join(format!("{form:?}.vhd"));
    std::fs::write(&path, form.apply(&bytes)).expect("write the damaged copy");
    path
}

fn batmap_errors(report: &CheckReport) -> Vec<String> {
    report
        .problems()
        .filter(|(_, p)| p.severity == Severity::Error && p.structure == "batmap")
        .map(|(_, p)| p.to_string())
        .collect()
}

fn check_of(path: &Path) -> CheckReport {
    check(path, &OpenOptions::new()).expect("check runs")
}

#[test]
fn check_calls_each_inconsistent_batmap_an_error() {
    let dir = tempdir();
    for form in BatmapDamage::ALL {
        let path = damaged(dir.path(), form);

        let errors = batmap_errors(&check_of(&path));

        assert_eq!(errors.len(), 1, "{form:?}: {errors:?}");
        assert!(
            errors[0].contains("vhdkit check --repair"),
            "{form:?}: {errors:?}"
        );
    }
}

#[test]
fn strict_open_refuses_each_inconsistent_batmap_naming_the_fix() {
    let dir = tempdir();
    for form in BatmapDamage::ALL {
        let path = damaged(dir.path(), form);

        let e = Disk::open_with(&path, &OpenOptions::new().strict(true))
            .err()
            .unwrap_or_else(|| panic!("{form:?}: a strict open took it"));

        assert!(matches!(e, Error::Corrupt { .. }), "{form:?}: {e}");
        let msg = e.to_string();
        assert!(msg.contains("batmap"), "{form:?}: {msg}");
        assert!(msg.contains("`vhdkit check --repair`"), "{form:?}: {msg}");
    }
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "reads with qemu-img (Linux CI)")]
fn lenient_open_of_each_inconsistent_batmap_warns_and_reads_as_qemu_does() {
    let dir = tempdir();
    for form in BatmapDamage::ALL {
        let path = damaged(dir.path(), form);

        let disk = Disk::open(&path).expect("a lenient open reads");

        // A bit set for a block whose bitmap is not full is seen only by reading that
        // bitmap, which a lenient open does not do (reads never trust the batmap).
        if form != BatmapDamage::NotFullBit {
            let w = disk.warnings();
            assert!(w.iter().any(|w| w.contains("batmap")), "{form:?}: {w:?}");
        }
        assert!(
            read_all(&disk) == qemu_read_all(&path),
            "{form:?}: reads differ from qemu-img's"
        );
    }
}

#[test]
fn writable_open_refuses_a_damaged_header_or_a_bit_for_an_unallocated_block() {
    let dir = tempdir();
    let rw = OpenOptions::new().writable(true);
    for form in [BatmapDamage::Cookie, BatmapDamage::UnallocatedBit] {
        let path = damaged(dir.path(), form);

        let e = Disk::open_with(&path, &rw).err();

        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("`vhdkit check --repair`"), "{form:?}: {msg}");
    }
    // A wrong checksum alone is no danger to a write: the next rewrite recomputes it.
    let path = damaged(dir.path(), BatmapDamage::Checksum);
    let disk = Disk::open_with(&path, &rw).expect("writable open");
    assert!(disk.warnings().iter().any(|w| w.contains("checksum")));
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "reads with qemu-img (Linux CI)")]
fn repair_rewrites_each_inconsistent_batmap_and_every_reader_reads_as_before() {
    let dir = tempdir();
    for form in BatmapDamage::ALL {
        let path = damaged(dir.path(), form);
        let qemu = qemu_read_all(&path);
        let pyvhdi = pyvhdi_read_all(&[&path]);

        let report = repair(&path).expect("repair");

        assert!(
            report.actions.iter().any(|a| a.contains("batmap")),
            "{form:?}: {:?}",
            report.actions
        );
        let after = check_of(&path);
        assert!(after.is_clean(), "{form:?}: {:?}", after.files);
        let disk = Disk::open_with(&path, &OpenOptions::new().strict(true)).expect("strict");
        assert!(
            disk.warnings().is_empty(),
            "{form:?}: {:?}",
            disk.warnings()
        );
        assert!(
            read_all(&disk) == qemu,
            "{form:?}: vhdkit reads differently"
        );
        drop(disk);
        assert!(
            qemu_read_all(&path) == qemu,
            "{form:?}: qemu-img reads differently"
        );
        assert!(
            pyvhdi_read_all(&[&path]) == pyvhdi,
            "{form:?}: pyvhdi reads differently"
        );
        assert!(repair(&path).expect("rerun").actions.is_empty(), "{form:?}");
    }
}

#[test]
fn repair_refuses_to_rewrite_a_batmap_header_over_a_block() {
    let dir = tempdir();
    let path = damaged(dir.path(), BatmapDamage::UnallocatedBit);
    let mut bytes = std::fs::read(&path).expect("read");
    // Header damaged, and block 0 stored where the batmap belongs (sector 4 = 0x800).
    bytes[0x800..0x808].copy_from_slice(b"notbatmp");
    bytes[0x600..0x604].copy_from_slice(&4u32.to_be_bytes());
    std::fs::write(&path, &bytes).expect("write");

    let e = repair(&path).expect_err("nowhere to put the batmap");

    assert!(e.to_string().contains("block 0"), "{e}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "nothing written"
    );
}
