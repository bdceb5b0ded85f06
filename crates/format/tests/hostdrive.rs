//! Host-drive stubs over a regular file standing in for the device: reads and writes go
//! to the device, a read-only link refuses writes, and a device that is missing, resized
//! or replaced is VM_E_HOST_DRIVE_NOT_FOUND unless its identity check is waived.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_bytes_eq, pattern, read_all, MIB};
use vhdkit_format::spec::{DiskType, Footer, HostDriveHeader, FOOTER_SIZE};
use vhdkit_format::{CreateOptions, Disk, DiskKind, ErrorKind, HostDrives, OpenOptions};

const DEVICE_SIZE: u64 = 8 * MIB;

/// The tests' "device" is a regular file: host drives, and links to files, must be
/// allowed explicitly.
fn hd() -> OpenOptions {
    OpenOptions::new().host_drives(HostDrives::BlockDevicesAndFiles)
}

/// An 8 MiB "device" with random content and a stub linking it.
fn setup(dir: &Path, read_only: bool) -> (PathBuf, PathBuf, Vec<u8>) {
    let device = dir.join("device.img");
    let content = pattern(7, DEVICE_SIZE as usize);
    std::fs::write(&device, &content).expect("write device");
    let stub = dir.join("stub.vhd");
    Disk::create(&stub, &CreateOptions::host_drive(&device, read_only)).expect("create stub");
    (device, stub, content)
}

#[test]
fn host_drive_stub_is_2048_bytes_of_footer_header_footer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (device, stub, _) = setup(dir.path(), false);

    let bytes = std::fs::read(&stub).expect("read stub");

    assert_eq!(bytes.len(), 2048);
    assert_eq!(&bytes[..FOOTER_SIZE], &bytes[1536..]);
    let footer = Footer::decode(&bytes[1536..]).expect("footer");
    assert!(footer.checksum_ok());
    assert_eq!(footer.disk_type, DiskType::Reserved(5));
    assert_eq!(footer.data_offset, 512);
    assert_eq!(footer.current_size, DEVICE_SIZE);
    let header = HostDriveHeader::decode(&bytes[512..1536]).expect("header");
    assert!(header.validate(&bytes[512..1536]).is_empty());
    assert_eq!(&header.cookie, b"vhdkhost");
    assert_eq!(header.device_size, DEVICE_SIZE);
    assert!(!header.read_only());
    let canonical = std::fs::canonicalize(&device).expect("canonicalize");
    assert_eq!(Path::new(&header.device_path), canonical);
}

#[test]
fn host_drive_stub_reads_the_device_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, stub, content) = setup(dir.path(), false);

    let disk = Disk::open_with(&stub, &hd()).expect("open");

    assert_eq!(disk.kind(), DiskKind::HostDrive);
    assert_eq!(disk.virtual_size(), DEVICE_SIZE);
    assert_bytes_eq("through the stub", &read_all(&disk), &content);
}

#[test]
fn host_drive_stub_write_changes_the_device_and_not_the_stub_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (device, stub, mut content) = setup(dir.path(), false);
    let data = pattern(8, 10_000);

    let disk = Disk::open_with(&stub, &hd().writable(true)).expect("open");
    disk.write_at(&data, 3 * MIB + 1).expect("write");
    disk.flush().expect("flush");
    drop(disk);

    content[3 * MIB as usize + 1..3 * MIB as usize + 10_001].copy_from_slice(&data);
    assert_bytes_eq("device", &std::fs::read(&device).expect("read"), &content);
    assert_eq!(std::fs::metadata(&stub).expect("stat").len(), 2048);
}

#[test]
fn host_drive_stub_written_in_its_identity_region_still_opens_after_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, stub, mut content) = setup(dir.path(), false);

    let disk = Disk::open_with(&stub, &hd().writable(true)).expect("open");
    disk.write_at(b"new boot sector", 0).expect("write head");
    disk.write_at(b"new tail", DEVICE_SIZE - 8)
        .expect("write tail");
    disk.flush().expect("flush");
    drop(disk);

    content[..15].copy_from_slice(b"new boot sector");
    content[DEVICE_SIZE as usize - 8..].copy_from_slice(b"new tail");
    let disk = Disk::open_with(&stub, &hd()).expect("the identity was refreshed");
    assert_bytes_eq("after reopening", &read_all(&disk), &content);
}

#[test]
fn host_drive_stub_created_read_only_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (device, stub, content) = setup(dir.path(), true);

    let disk = Disk::open_with(&stub, &hd().writable(true)).expect("a read-only link still opens");
    let err = disk.write_at(b"x", 0).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
    drop(disk);
    assert_eq!(std::fs::read(&device).expect("read"), content);
}

#[test]
fn host_drive_stub_opened_read_only_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, stub, _) = setup(dir.path(), false);
    let disk = Disk::open_with(&stub, &hd()).expect("open");
    let err = disk.write_at(b"x", 0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ReadOnly, "{err}");
}

#[test]
fn host_drive_replaced_by_other_content_of_the_same_size_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (device, stub, _) = setup(dir.path(), false);
    std::fs::write(&device, pattern(99, DEVICE_SIZE as usize)).expect("replace device");

    let err = Disk::open_with(&stub, &hd()).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::HostDriveNotFound, "{err}");
    assert_eq!(
        err.hresult(),
        vhdkit_task::HResult::VM_E_HOST_DRIVE_NOT_FOUND
    );
}

#[test]
fn host_drive_replaced_opens_with_ignore_host_drive_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (device, stub, _) = setup(dir.path(), false);
    let other = pattern(99, DEVICE_SIZE as usize);
    std::fs::write(&device, &other).expect("replace device");

    let opts = hd().ignore_host_drive_identity(true);
    let disk = Disk::open_with(&stub, &opts).expect("open");

    assert_bytes_eq("the new device's bytes", &read_all(&disk), &other);
}

#[test]
fn host_drive_missing_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (device, stub, _) = setup(dir.path(), false);
    std::fs::remove_file(&device).expect("rm device");

    for opts in [hd(), hd().ignore_host_drive_identity(true)] {
        let err = Disk::open_with(&stub, &opts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostDriveNotFound, "{err}");
    }
}

#[test]
fn host_drive_resized_is_not_found_even_ignoring_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (device, stub, _) = setup(dir.path(), false);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&device)
        .expect("open device");
    f.set_len(DEVICE_SIZE + 512).expect("grow");
    drop(f);

    for opts in [hd(), hd().ignore_host_drive_identity(true)] {
        let err = Disk::open_with(&stub, &opts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostDriveNotFound, "{err}");
    }
}

#[test]
fn host_drive_create_for_a_missing_device_is_not_found_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stub = dir.path().join("stub.vhd");
    let err = Disk::create(
        &stub,
        &CreateOptions::host_drive(dir.path().join("nope"), false),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostDriveNotFound, "{err}");
    assert!(common::dir_names(dir.path()).is_empty());
}

#[test]
fn host_drive_stub_cannot_be_a_differencing_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, stub, _) = setup(dir.path(), false);
    let err = Disk::create(
        dir.path().join("child.vhd"),
        &CreateOptions::differencing(&stub),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WrongDiskType, "{err}");
}

/// Runs `tool args… stub`; `None` when the tool is not installed.
fn run_tool(tool: &str, args: &[&str], stub: &Path) -> Option<std::process::Output> {
    std::process::Command::new(tool)
        .args(args)
        .arg(stub)
        .output()
        .ok()
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "runs qemu-img and vhdiinfo (Linux CI)"
)]
fn host_drive_stub_is_refused_by_qemu_img() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, stub, _) = setup(dir.path(), false);
    let Some(out) = run_tool("qemu-img", &["info", "-f", "vpc"], &stub) else {
        panic!("qemu-img is not installed (.ci/run installs it)");
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "qemu-img info -f vpc: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!out.status.success(), "qemu-img opened the stub");
    assert!(
        stderr.contains("checksum") || stderr.contains("header"),
        "{stderr}"
    );
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "runs qemu-img and vhdiinfo (Linux CI)"
)]
fn host_drive_stub_is_refused_by_libvhdi() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, stub, _) = setup(dir.path(), false);
    let Some(out) = run_tool("vhdiinfo", &[], &stub) else {
        panic!("vhdiinfo is not installed (.ci/run installs it)");
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("vhdiinfo: {text}");
    assert!(!out.status.success(), "vhdiinfo opened the stub: {text}");
    assert!(text.contains("Unable to open"), "{text}");
}
