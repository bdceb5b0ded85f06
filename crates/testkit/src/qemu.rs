//! qemu-img as a judge of fixed and dynamic VHDs (its `vpc` driver). Each helper first
//! checks that qemu-img is installed ([`have`]): a missing one fails the test.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::files::tempdir;
use crate::run::{have, run_cmd, Tool};

/// `qemu-img info -f vpc --output=json DISK`, parsed.
pub fn qemu_info(disk: &Path) -> Value {
    have(Tool::QemuImg);
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json"])
            .arg(disk),
    );
    assert_eq!(r.code, 0, "qemu-img info {}: {}", disk.display(), r.stderr);
    r.json()
}

/// qemu-img's virtual size: the top-level `virtual-size` of [`qemu_info`].
pub fn qemu_size(disk: &Path) -> u64 {
    qemu_info(disk)["virtual-size"]
        .as_u64()
        .expect("top-level virtual-size")
}

/// `qemu-img convert -f vpc -O raw DISK OUT`.
pub fn qemu_convert_raw(disk: &Path, out: &Path) {
    have(Tool::QemuImg);
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(disk)
            .arg(out),
    );
    assert_eq!(
        r.code,
        0,
        "qemu-img convert {}: {}",
        disk.display(),
        r.stderr
    );
}

/// The whole disk as qemu-img reads it.
pub fn qemu_read_all(disk: &Path) -> Vec<u8> {
    let dir = tempdir();
    let out = dir.path().join("qemu.raw");
    qemu_convert_raw(disk, &out);
    std::fs::read(&out).expect("reading qemu's raw output")
}

/// `len` bytes at `offset` as qemu-img reads them (a raw offset/size view over the vpc
/// driver, so a big sparse disk is not converted whole). Offset and length must be
/// multiples of 512.
pub fn qemu_read_range(disk: &Path, offset: u64, len: u64) -> Vec<u8> {
    have(Tool::QemuImg);
    let dir = tempdir();
    let out = dir.path().join("range.raw");
    let spec = format!(
        "driver=raw,offset={offset},size={len},file.driver=vpc,file.file.filename={}",
        disk.display()
    );
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["convert", "--image-opts", &spec, "-O", "raw"])
            .arg(&out),
    );
    assert_eq!(r.code, 0, "qemu-img convert {spec}: {}", r.stderr);
    std::fs::read(&out).expect("reading qemu's output")
}

/// `qemu-img compare -f vpc -F vpc A B`: its exit code (0 identical, 1 different, more
/// for an error).
pub fn qemu_compare(a: &Path, b: &Path) -> i32 {
    have(Tool::QemuImg);
    run_cmd(
        Command::new("qemu-img")
            .args(["compare", "-f", "vpc", "-F", "vpc"])
            .arg(a)
            .arg(b),
    )
    .code
}

/// `qemu-img compare -f vpc -F raw IMG RAW`: its exit code, 0 (identical) or 1
/// (different); anything else fails the test.
pub fn qemu_compare_raw(img: &Path, raw: &Path) -> i32 {
    have(Tool::QemuImg);
    let r = run_cmd(
        Command::new("qemu-img")
            .args(["compare", "-f", "vpc", "-F", "raw"])
            .arg(img)
            .arg(raw),
    );
    assert!(
        r.code == 0 || r.code == 1,
        "qemu-img compare failed: {}",
        r.stderr
    );
    r.code
}
