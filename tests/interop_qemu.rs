//! vhdkit against qemu-img: bytes written by `vhdkit write` read back the same through
//! `qemu-img convert`, `vhdkit read` and a plain byte model; qemu-made images (CHS-rounded
//! and force_size) read the same in vhdkit as in qemu.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A disk of `kind`/`size` in a temp dir with `count` seeded random writes, and its model.
fn written_disk(
    kind: &str,
    size: u64,
    block_size: Option<&str>,
    seed: u64,
    count: usize,
) -> (tempfile::TempDir, PathBuf, Model) {
    let dir = tempdir();
    let disk = dir.path().join(format!("{kind}.vhd"));
    let size_arg = size.to_string();
    let mut args = vec!["--type", kind, "--size", &size_arg];
    if let Some(b) = block_size {
        args.extend(["--block-size", b]);
    }
    create(&disk, &args);
    let mut model = Model::new(size);
    let mut rng = Rng::new(seed);
    for (offset, data) in random_writes(&mut rng, size, count) {
        write_both(&disk, &mut model, offset, &data);
    }
    (dir, disk, model)
}

/// The writes make-fixtures.sh made into each qemu fixture (offset, length, seed).
fn qemu_fixture_model(size: u64) -> Model {
    let mut m = Model::new(size);
    for (off, len, seed) in [
        (0, 65536, 1),
        (1_234_567, 10_001, 2),
        (size - 4096, 4096, 3),
    ] {
        m.write(off, &pattern(seed, len as usize));
    }
    m
}

// --- vhdkit writes, everyone reads ------------------------------------------------------

#[test]
fn write_random_fixed_vhdkit_read_equals_model() {
    let (_d, disk, model) = written_disk("fixed", 5_000_704, None, 1, 30);
    assert_bytes_eq("vhdkit read of fixed", &read_all(&disk), &model.0);
}

#[test]
fn write_random_dynamic_vhdkit_read_equals_model() {
    let (_d, disk, model) = written_disk("dynamic", 5_000_704, None, 2, 30);
    assert_bytes_eq("vhdkit read of dynamic", &read_all(&disk), &model.0);
}

#[test]
fn write_random_fixed_qemu_convert_equals_model() {
    if !have(Tool::QemuImg) {
        return;
    }
    let (_d, disk, model) = written_disk("fixed", 5_000_704, None, 3, 30);
    assert_bytes_eq("qemu-img convert of fixed", &qemu_read_all(&disk), &model.0);
}

#[test]
fn write_random_dynamic_qemu_convert_equals_model() {
    if !have(Tool::QemuImg) {
        return;
    }
    let (_d, disk, model) = written_disk("dynamic", 5_000_704, None, 4, 30);
    assert_bytes_eq(
        "qemu-img convert of dynamic",
        &qemu_read_all(&disk),
        &model.0,
    );
}

#[test]
fn write_random_dynamic_block_512k_qemu_convert_equals_model() {
    if !have(Tool::QemuImg) {
        return;
    }
    let (_d, disk, model) = written_disk("dynamic", 3 * MIB + 512, Some("512K"), 5, 30);
    assert_bytes_eq(
        "qemu-img convert (512 KiB blocks)",
        &qemu_read_all(&disk),
        &model.0,
    );
}

#[test]
fn write_random_dynamic_block_8m_qemu_convert_equals_model() {
    if !have(Tool::QemuImg) {
        return;
    }
    let (_d, disk, model) = written_disk("dynamic", 10 * MIB, Some("8M"), 6, 30);
    assert_bytes_eq(
        "qemu-img convert (8 MiB blocks)",
        &qemu_read_all(&disk),
        &model.0,
    );
}

#[test]
fn write_same_content_fixed_and_dynamic_qemu_compare_says_identical() {
    if !have(Tool::QemuImg) {
        return;
    }
    let (_d1, fixed, _) = written_disk("fixed", 5_000_704, None, 7, 25);
    let (_d2, dynamic, _) = written_disk("dynamic", 5_000_704, Some("512K"), 7, 25);
    assert_eq!(qemu_compare(&fixed, &dynamic), 0, "qemu-img compare");
    // And the comparison is able to see a difference.
    write_at(&dynamic, 4_999_999, b"!", &[]);
    assert_eq!(
        qemu_compare(&fixed, &dynamic),
        1,
        "qemu-img compare after a change"
    );
}

#[test]
fn write_into_qemu_made_dynamic_qemu_reads_it_back() {
    if !have(Tool::QemuImg) {
        return;
    }
    let dir = tempdir();
    let disk = dir.path().join("q.vhd");
    std::fs::copy(fixture("qemu/qemu-dynamic-5m-chs.vhd"), &disk).expect("copy");
    let size = qemu_size(&disk);
    let mut model = qemu_fixture_model(size);
    let mut rng = Rng::new(8);
    for (offset, data) in random_writes(&mut rng, size, 20) {
        write_both(&disk, &mut model, offset, &data);
    }
    assert_bytes_eq("qemu after vhdkit writes", &qemu_read_all(&disk), &model.0);
    assert_bytes_eq("vhdkit after its writes", &read_all(&disk), &model.0);
}

#[test]
fn qemu_io_writes_into_vhdkit_dynamic_vhdkit_reads_them() {
    if !have(Tool::QemuImg) {
        return;
    }
    let dir = tempdir();
    let disk = dir.path().join("v.vhd");
    create(&disk, &["--type", "dynamic", "--size", "5000704"]);
    let pat = dir.path().join("pat.bin");
    let mut model = Model::new(5_000_704);
    for (off, len, seed) in [
        (1000u64, 5000usize, 31u64),
        (3_000_001, 777, 32),
        (4_999_680, 1024, 33),
    ] {
        std::fs::write(&pat, pattern(seed, len)).expect("pattern");
        let r = run_cmd(
            std::process::Command::new("qemu-io")
                .args(["-f", "vpc", "-c"])
                .arg(format!("write -q -s {} {off} {len}", pat.display()))
                .arg(&disk),
        );
        assert_eq!(r.code, 0, "qemu-io: {}", r.stderr);
        model.write(off, &pattern(seed, len));
    }
    assert_bytes_eq("vhdkit read after qemu-io", &read_all(&disk), &model.0);
    let c = vhdkit(["check".as_ref(), disk.as_os_str()]);
    assert_eq!(
        c.code,
        EXIT_OK,
        "check of a qemu-written image: {}",
        c.stdout_str()
    );
}

// --- qemu-made fixtures -----------------------------------------------------------------

fn assert_qemu_fixture(name: &str, expected_size: u64) {
    let disk = fixture(&format!("qemu/{name}"));
    assert_eq!(vhdkit_size(&disk), expected_size, "vhdkit virtual size");
    let data = read_all(&disk);
    assert_bytes_eq(
        "vhdkit read vs the fixture's writes",
        &data,
        &qemu_fixture_model(expected_size).0,
    );
    if have(Tool::QemuImg) {
        assert_eq!(qemu_size(&disk), expected_size, "qemu-img virtual size");
        assert_bytes_eq(
            "vhdkit read vs qemu-img convert",
            &data,
            &qemu_read_all(&disk),
        );
    }
}

/// `qemu-img create -f vpc 5M` rounds up to a whole CHS geometry, 151/4/17 = 10268 sectors
/// (with force_size=on it keeps 5 MiB and writes creator `qem2` with CHS 65535/16/255).
const QEMU_5M_CHS_ROUNDED: u64 = 5_257_216;

#[test]
fn qemu_fixed_chs_rounded_reads_like_qemu() {
    assert_qemu_fixture("qemu-fixed-5m-chs.vhd", QEMU_5M_CHS_ROUNDED);
}

#[test]
fn qemu_dynamic_chs_rounded_reads_like_qemu() {
    assert_qemu_fixture("qemu-dynamic-5m-chs.vhd", QEMU_5M_CHS_ROUNDED);
}

#[test]
fn qemu_fixed_force_size_reads_like_qemu() {
    assert_qemu_fixture("qemu-fixed-5m-force.vhd", 5 * MIB);
}

#[test]
fn qemu_dynamic_force_size_reads_like_qemu() {
    assert_qemu_fixture("qemu-dynamic-5m-force.vhd", 5 * MIB);
}

#[test]
fn qemu_fixtures_check_clean() {
    for name in [
        "qemu-fixed-5m-chs.vhd",
        "qemu-dynamic-5m-chs.vhd",
        "qemu-fixed-5m-force.vhd",
        "qemu-dynamic-5m-force.vhd",
    ] {
        let r = vhdkit([
            "check".as_ref(),
            fixture(&format!("qemu/{name}")).as_os_str(),
        ]);
        assert_eq!(r.code, EXIT_OK, "check {name}: {}", r.stdout_str());
    }
}

// --- vhdkit-made odd-size fixtures ------------------------------------------------------

fn vhdkit_fixture_model() -> Model {
    let mut m = Model::new(5_000_704);
    for (off, len, seed) in [
        (0, 4096, 4),
        (777_777, 3333, 5),
        (5_000_704 - 1001, 1001, 6),
    ] {
        m.write(off, &pattern(seed, len as usize));
    }
    m
}

fn assert_vhdkit_fixture(disk: &Path) {
    assert_eq!(vhdkit_size(disk), 5_000_704);
    let model = vhdkit_fixture_model();
    assert_bytes_eq("vhdkit read", &read_all(disk), &model.0);
    if have(Tool::QemuImg) {
        assert_eq!(qemu_size(disk), 5_000_704, "qemu-img virtual size");
        assert_bytes_eq("qemu-img convert", &qemu_read_all(disk), &model.0);
    }
}

#[test]
fn vhdkit_fixed_odd_size_fixture_reads_like_qemu() {
    assert_vhdkit_fixture(&fixture("vhdkit/vhdkit-fixed-5000704.vhd"));
}

#[test]
fn vhdkit_dynamic_odd_size_fixture_reads_like_qemu() {
    assert_vhdkit_fixture(&fixture("vhdkit/vhdkit-dynamic-5000704.vhd"));
}

#[test]
fn vhdkit_odd_size_fixtures_qemu_compare_identical() {
    if !have(Tool::QemuImg) {
        return;
    }
    assert_eq!(
        qemu_compare(
            &fixture("vhdkit/vhdkit-fixed-5000704.vhd"),
            &fixture("vhdkit/vhdkit-dynamic-5000704.vhd")
        ),
        0
    );
}

#[test]
fn write_near_end_of_1gib_dynamic_reads_back_in_qemu_and_libvhdi() {
    // 1 GiB + 512 with 8 MiB blocks: the last block holds one sector. Writes straddle the
    // last full block boundary and end at the last byte; the file stays small.
    let size = GIB + 512;
    let dir = tempdir();
    let disk = dir.path().join("big.vhd");
    create(
        &disk,
        &[
            "--type",
            "dynamic",
            "--size",
            &size.to_string(),
            "--block-size",
            "8M",
        ],
    );
    let writes = [
        (GIB - 3000, pattern(50, 3000 + 512)), // to the very end, across the boundary
        (GIB / 2 + 7, pattern(51, 100_000)),
        (12_345, pattern(52, 777)),
    ];
    let window = |off: u64, len: usize| {
        let start = off / 512 * 512;
        let end = (off + len as u64).div_ceil(512) * 512;
        (start, end - start)
    };
    for (off, data) in &writes {
        write_at(&disk, *off, data, &[]);
    }
    assert!(std::fs::metadata(&disk).expect("stat").len() < 40 * MIB);
    assert_eq!(vhdkit_size(&disk), size);
    for (off, data) in &writes {
        let (start, len) = window(*off, data.len());
        let ours = read_range(&disk, start, len);
        let at = (*off - start) as usize;
        assert_bytes_eq("vhdkit read", &ours[at..at + data.len()], data);
        if have(Tool::QemuImg) {
            assert_bytes_eq("qemu-img read", &qemu_read_range(&disk, start, len), &ours);
        }
        if have(Tool::Pyvhdi) {
            let r = run_cmd(&mut pyvhdi_read_cmd(&[&disk], start, Some(len)));
            assert_eq!(r.code, 0, "pyvhdi: {}", r.stderr);
            assert_bytes_eq("pyvhdi read", &r.stdout, &ours);
        }
    }
}
