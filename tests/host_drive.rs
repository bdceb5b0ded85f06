//! Host-drive stubs: a VHD that links a host block device (here a regular file standing
//! in for one). The stub records an absolute device path, so it is made at test time,
//! never stored in fixtures/. Other readers (qemu-img, libvhdi) must refuse it.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;

const DEVICE_SIZE: u64 = 4 * MIB;

/// A temp dir holding `device.img` (seeded random bytes) and the stub `stub.vhd`.
fn stub(read_only: bool) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempdir();
    let device = dir.path().join("device.img");
    std::fs::write(&device, Rng::new(301).bytes(DEVICE_SIZE as usize)).expect("device");
    let stub = dir.path().join("stub.vhd");
    let dev = device.to_str().expect("utf-8 path");
    let mut args = vec!["--type", "host-drive", "--host-drive", dev];
    if read_only {
        args.push("--read-only");
    }
    create(&stub, &args);
    (dir, device, stub)
}

/// The opt-in every command needs to follow a stub to its "device" (a regular file here).
const HD: [&str; 2] = ["--host-drive", "--host-drive-file"];

/// `vhdkit CMD STUB --host-drive --host-drive-file EXTRA…`.
fn hd(cmd: &str, stub: &Path, extra: &[&str]) -> Run {
    let mut a: Vec<&OsStr> = vec![OsStr::new(cmd), stub.as_os_str()];
    a.extend(HD.iter().chain(extra).map(OsStr::new));
    vhdkit(a)
}

fn hd_read_all(stub: &Path) -> Vec<u8> {
    hd("read", stub, &[]).ok().stdout
}

fn hd_info(stub: &Path) -> serde_json::Value {
    hd("info", stub, &["--json"]).ok().json()
}

fn device_bytes(device: &Path) -> Vec<u8> {
    std::fs::read(device).expect("reading the device")
}

#[test]
fn host_drive_read_equals_device() {
    let (_d, device, stub) = stub(false);
    assert_bytes_eq("stub read", &hd_read_all(&stub), &device_bytes(&device));
}

#[test]
fn host_drive_info_json_names_device_and_size() {
    let (_d, device, stub) = stub(false);
    let i = hd_info(&stub);
    assert_eq!(i["disk_type"], "host-drive");
    assert_eq!(i["virtual_size"].as_u64(), Some(DEVICE_SIZE));
    assert_eq!(
        i["host_drive"]["device"].as_str().map(PathBuf::from),
        Some(device.clone())
    );
    assert_eq!(i["host_drive"]["read_only"], false);
    assert_eq!(i["host_drive"]["device_size"].as_u64(), Some(DEVICE_SIZE));
}

#[test]
fn host_drive_write_changes_the_device() {
    let (_d, device, stub) = stub(false);
    let mut model = Model(device_bytes(&device));
    let mut rng = Rng::new(302);
    for (off, data) in random_writes(&mut rng, DEVICE_SIZE, 10) {
        write_at(&stub, off, &data, &HD);
        model.write(off, &data);
    }
    assert_bytes_eq("device after writes", &device_bytes(&device), &model.0);
    assert_bytes_eq("stub read after writes", &hd_read_all(&stub), &model.0);
    let stub_len = std::fs::metadata(&stub).expect("stat").len();
    assert!(stub_len < 64 * KIB, "writes go to the device, not the stub");
}

#[test]
fn host_drive_read_only_refuses_writes() {
    let (_d, device, stub) = stub(true);
    let before = device_bytes(&device);
    assert_eq!(hd_info(&stub)["host_drive"]["read_only"], true);
    let r = try_write_at(&stub, 1000, b"must not land", &HD);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("read-only"), "names the reason: {line}");
    assert_bytes_eq("device untouched", &device_bytes(&device), &before);
    // Reading still works.
    assert_bytes_eq("read-only stub read", &hd_read_all(&stub), &before);
}

#[test]
fn host_drive_qemu_img_refuses_the_stub() {
    if !have(Tool::QemuImg) {
        return;
    }
    let (_d, _device, stub) = stub(false);
    let r = run_cmd(
        std::process::Command::new("qemu-img")
            .args(["info", "-f", "vpc"])
            .arg(&stub),
    );
    assert_ne!(
        r.code,
        0,
        "qemu-img must not open a host-drive stub: {}",
        r.stdout_str()
    );
}

#[test]
fn host_drive_vhdiinfo_refuses_the_stub() {
    if !have(Tool::Vhdiinfo) {
        return;
    }
    let (_d, _device, stub) = stub(false);
    let r = vhdiinfo(&stub);
    assert_ne!(
        r.code,
        0,
        "vhdiinfo must not open a host-drive stub: {}",
        r.stdout_str()
    );
}

#[test]
fn host_drive_pyvhdi_refuses_the_stub() {
    if !have(Tool::Pyvhdi) {
        return;
    }
    let (_d, _device, stub) = stub(false);
    let r = run_cmd(
        std::process::Command::new(PYTHON)
            .args([
                "-c",
                "import sys, pyvhdi\nf = pyvhdi.file()\nf.open(sys.argv[1])",
            ])
            .arg(&stub),
    );
    assert_ne!(r.code, 0, "pyvhdi must not open a host-drive stub");
}

#[test]
fn host_drive_missing_device_fails_with_one_line() {
    let (_d, device, stub) = stub(false);
    std::fs::remove_file(&device).expect("remove");
    let r = hd("read", &stub, &[]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("device.img"), "names the device: {line}");
}

#[test]
fn host_drive_replaced_device_is_detected() {
    let (_d, device, stub) = stub(false);
    // Another drive under the same name: the identity check must notice.
    std::fs::write(&device, Rng::new(999).bytes(DEVICE_SIZE as usize)).expect("replace");
    let r = hd("read", &stub, &[]);
    let line = assert_failed_one_line(&r);
    assert!(
        !line.contains("ignore-host-drive-identity"),
        "the message does not talk the user into the override: {line}"
    );
    let r = hd("read", &stub, &["--ignore-host-drive-identity"]);
    assert_eq!(r.code, EXIT_OK, "the override reads anyway: {}", r.stderr);
    assert_bytes_eq("override read", &r.stdout, &device_bytes(&device));
}

#[test]
fn host_drive_check_is_clean() {
    let (_d, _device, stub) = stub(false);
    let r = hd("check", &stub, &["--json"]);
    assert_eq!(r.code, EXIT_OK, "{}", r.stdout_str());
    assert_eq!(r.json()["clean"], true);
}

#[test]
fn host_drive_without_device_argument_is_a_usage_error() {
    let dir = tempdir();
    let stub = dir.path().join("stub.vhd");
    let r = vhdkit([
        "create".as_ref(),
        stub.as_os_str(),
        "--type".as_ref(),
        "host-drive".as_ref(),
    ]);
    assert_eq!(r.code, EXIT_USAGE, "{}", r.stderr);
    assert!(!stub.exists());
}

#[test]
fn host_drive_stub_is_refused_without_the_opt_in() {
    let (_d, _device, stub) = stub(false);
    for cmd in ["info", "read", "check"] {
        let r = vhdkit([cmd.as_ref(), stub.as_os_str()]);
        let line = if cmd == "check" {
            assert_eq!(r.code, 1, "check reports the refusal: {}", r.stdout_str());
            r.stdout_str().to_string()
        } else {
            assert_failed_one_line(&r)
        };
        assert!(
            line.contains("--host-drive"),
            "{cmd}: says how to allow it: {line}"
        );
    }
}

#[test]
fn host_drive_stub_naming_a_regular_file_needs_the_second_opt_in() {
    let (_d, _device, stub) = stub(false);
    let r = vhdkit(["read".as_ref(), stub.as_os_str(), "--host-drive".as_ref()]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("regular file"), "{line}");
    assert!(line.contains("--host-drive-file"), "{line}");
}
