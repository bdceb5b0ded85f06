//! `vhdkit create`: the virtual size every reader sees is exactly the size asked for
//! (qemu-img, libvhdi's vhdiinfo and pyvhdi, and vhdkit's own info), for fixed and
//! dynamic disks and several block sizes; sizes out of range fail cleanly.

mod common;

use std::path::Path;

use common::*;

/// Creates a disk of `kind` and `size` (and block size) and checks every reader's size.
fn assert_size_agrees(kind: &str, size: u64, block_size: Option<u64>) {
    let dir = tempdir();
    let disk = dir.path().join("disk.vhd");
    let size_arg = size.to_string();
    let mut args = vec!["--type", kind, "--size", &size_arg];
    let bs_arg = block_size.map(|b| b.to_string());
    if let Some(b) = &bs_arg {
        args.extend(["--block-size", b]);
    }
    create(&disk, &args);

    let i = info(&disk);
    assert_eq!(i["disk_type"], kind);
    assert_eq!(i["virtual_size"].as_u64(), Some(size), "vhdkit info");
    if kind == "fixed" {
        let len = std::fs::metadata(&disk).expect("stat").len();
        assert_eq!(len, size + 512, "a fixed disk is its data plus a footer");
    } else {
        let want_bs = block_size.unwrap_or(2 * MIB);
        assert_eq!(i["block_size"].as_u64(), Some(want_bs), "vhdkit block size");
        assert_eq!(
            i["max_table_entries"].as_u64(),
            Some(size.div_ceil(want_bs)),
            "BAT entries cover the disk"
        );
    }
    check_readers(&disk, size, kind, block_size);
}

fn check_readers(disk: &Path, size: u64, kind: &str, block_size: Option<u64>) {
    if have(Tool::QemuImg) {
        let q = qemu_info(disk);
        assert_eq!(
            q["virtual-size"].as_u64(),
            Some(size),
            "qemu-img virtual-size"
        );
        if kind == "dynamic" {
            assert_eq!(
                q["cluster-size"].as_u64(),
                Some(block_size.unwrap_or(2 * MIB)),
                "qemu-img cluster-size"
            );
        }
    }
    if have(Tool::Vhdiinfo) {
        assert_eq!(vhdiinfo_size(disk), size, "vhdiinfo Media size");
        let want = if kind == "fixed" { "Fixed" } else { "Dynamic" };
        assert_eq!(
            vhdiinfo_field(disk, "Disk type").as_deref(),
            Some(want),
            "vhdiinfo Disk type"
        );
    }
    if have(Tool::Pyvhdi) {
        assert_eq!(pyvhdi_size(disk), size, "pyvhdi get_media_size");
    }
}

macro_rules! size_tests {
    ($($name:ident: $kind:literal, $size:expr, $bs:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_size_agrees($kind, $size, $bs);
        }
    )*};
}

size_tests! {
    create_fixed_3mib_size_agrees_with_every_reader: "fixed", 3 * MIB, None;
    create_fixed_3mib_plus_512_size_agrees_with_every_reader: "fixed", 3 * MIB + 512, None;
    create_fixed_5000704_size_agrees_with_every_reader: "fixed", 5_000_704, None;
    create_fixed_10mib_size_agrees_with_every_reader: "fixed", 10 * MIB, None;
    create_fixed_1gib_plus_512_size_agrees_with_every_reader: "fixed", GIB + 512, None;
    create_dynamic_3mib_size_agrees_with_every_reader: "dynamic", 3 * MIB, None;
    create_dynamic_3mib_plus_512_size_agrees_with_every_reader: "dynamic", 3 * MIB + 512, None;
    create_dynamic_5000704_size_agrees_with_every_reader: "dynamic", 5_000_704, None;
    create_dynamic_10mib_size_agrees_with_every_reader: "dynamic", 10 * MIB, None;
    create_dynamic_1gib_plus_512_size_agrees_with_every_reader: "dynamic", GIB + 512, None;
    create_dynamic_block_512k_size_agrees_with_every_reader: "dynamic", 5_000_704, Some(512 * KIB);
    create_dynamic_block_2m_size_agrees_with_every_reader: "dynamic", 10 * MIB + 512, Some(2 * MIB);
    create_dynamic_block_8m_size_agrees_with_every_reader: "dynamic", 5_000_704, Some(8 * MIB);
    create_dynamic_block_8m_1gib_plus_512_size_agrees_with_every_reader: "dynamic", GIB + 512, Some(8 * MIB);
}

/// Runs a create that must fail with exit 3, and checks the message and that no file
/// was left behind.
fn assert_create_refused(kind: &str, size: &str, message: &str) {
    let dir = tempdir();
    let disk = dir.path().join("refused.vhd");
    let r = vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        kind.as_ref(),
        "--size".as_ref(),
        size.as_ref(),
    ]);
    // A size out of range is a usage mistake: exit 2, with create's own usage.
    assert_eq!(r.code, EXIT_USAGE, "{}", r.stderr);
    assert!(
        r.stderr.contains(message),
        "the error should say {message:?}: {}",
        r.stderr
    );
    assert!(r.stderr.contains("Usage: vhdkit create"), "{}", r.stderr);
    assert!(!disk.exists(), "a refused create must not leave a file");
}

#[test]
fn create_fixed_below_3mib_fails_naming_the_minimum() {
    assert_create_refused("fixed", &(3 * MIB - 512).to_string(), "too small");
}

#[test]
fn create_dynamic_below_3mib_fails_naming_the_minimum() {
    assert_create_refused("dynamic", &(3 * MIB - 512).to_string(), "too small");
}

#[test]
fn create_fixed_above_2040gib_fails_naming_the_maximum() {
    assert_create_refused("fixed", &(2040 * GIB + 512).to_string(), "too large");
}

#[test]
fn create_dynamic_above_2040gib_fails_naming_the_maximum() {
    assert_create_refused("dynamic", &(2040 * GIB + 512).to_string(), "too large");
}

#[test]
fn create_fixed_size_not_multiple_of_512_fails_naming_the_rule() {
    assert_create_refused("fixed", &(3 * MIB + 1).to_string(), "multiple of 512");
}

#[test]
fn create_dynamic_size_not_multiple_of_512_fails_naming_the_rule() {
    assert_create_refused("dynamic", &(5 * MIB + 100).to_string(), "multiple of 512");
}

#[test]
fn create_dynamic_exactly_2040gib_succeeds_sparse() {
    let dir = tempdir();
    let disk = dir.path().join("max.vhd");
    create(
        &disk,
        &["--type", "dynamic", "--size", &(2040 * GIB).to_string()],
    );
    assert_eq!(vhdkit_size(&disk), 2040 * GIB);
    if have(Tool::Vhdiinfo) {
        assert_eq!(vhdiinfo_size(&disk), 2040 * GIB);
    }
}

#[test]
fn create_dynamic_without_size_is_a_usage_error() {
    let dir = tempdir();
    let disk = dir.path().join("nosize.vhd");
    let r = vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
    ]);
    assert_no_panic(&r);
    assert_eq!(r.code, EXIT_USAGE, "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains("--size"),
        "names the option: {}",
        r.stderr
    );
    assert!(!disk.exists());
}

#[test]
fn create_fixed_without_size_is_a_usage_error() {
    let dir = tempdir();
    let disk = dir.path().join("nosize.vhd");
    let r = vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        "fixed".as_ref(),
    ]);
    assert_eq!(r.code, EXIT_USAGE, "stderr: {}", r.stderr);
    assert!(!disk.exists());
}

#[test]
fn create_block_size_not_power_of_two_fails() {
    let dir = tempdir();
    let disk = dir.path().join("bs.vhd");
    let r = vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--size".as_ref(),
        "8M".as_ref(),
        "--block-size".as_ref(),
        "768K".as_ref(),
    ]);
    assert_no_panic(&r);
    assert!(
        r.code == EXIT_FAILED || r.code == EXIT_USAGE,
        "a bad block size must be refused (exit {}): {}",
        r.code,
        r.stderr
    );
    assert!(r.stderr.contains("786432") || r.stderr.contains("power of two"));
    assert!(!disk.exists());
}

#[test]
fn create_existing_file_fails_and_keeps_it() {
    let dir = tempdir();
    let disk = dir.path().join("exists.vhd");
    std::fs::write(&disk, b"precious").expect("write");
    let r = vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--size".as_ref(),
        "4M".as_ref(),
    ]);
    assert_failed_one_line(&r);
    assert_eq!(std::fs::read(&disk).expect("read"), b"precious");
}

#[test]
fn create_size_suffixes_are_powers_of_1024() {
    let dir = tempdir();
    let disk = dir.path().join("suffix.vhd");
    create(&disk, &["--type", "dynamic", "--size", "3G"]);
    assert_eq!(vhdkit_size(&disk), 3 * GIB);
}

#[test]
fn create_size_with_a_decimal_fraction_is_rounded_up_to_a_sector() {
    let dir = tempdir();
    let exact = dir.path().join("exact.vhd");
    let rounded = dir.path().join("rounded.vhd");

    create(&exact, &["--type", "dynamic", "--size", "1.5G"]);
    create(&rounded, &["--type", "fixed", "--size", "10.3M"]);

    assert_eq!(vhdkit_size(&exact), 3 * GIB / 2);
    // 10.3 MiB is 21094.4 sectors.
    assert_eq!(vhdkit_size(&rounded), 21_095 * SECTOR);
    check_readers(&rounded, 21_095 * SECTOR, "fixed", None);
}

#[test]
fn create_size_with_a_fraction_of_a_byte_is_a_usage_error() {
    let dir = tempdir();
    let disk = dir.path().join("x.vhd");

    let r = vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--size".as_ref(),
        "4194304.5".as_ref(),
    ]);

    assert_eq!(r.code, EXIT_USAGE, "{}", r.stderr);
    assert!(r.stderr.contains("a fraction needs a unit"), "{}", r.stderr);
    assert!(!disk.exists());
}

#[test]
fn create_new_dynamic_disk_reads_as_zeros() {
    let dir = tempdir();
    let disk = dir.path().join("zeros.vhd");
    create(&disk, &["--type", "dynamic", "--size", "5000704"]);
    let data = read_all(&disk);
    assert_eq!(data.len(), 5_000_704);
    assert!(all_zero(&data), "a new disk reads as zeros");
}
