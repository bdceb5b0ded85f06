//! `vhdkit serve`: NBD TRIM and WRITE_ZEROES punch holes in raw and fixed exports
//! (nbdsh), and from qemu-io release the whole blocks of a
//! dynamic export (`vhdkit info` counts fewer allocated blocks; they read as zeros), and
//! never release a block of a differencing export.

// Over Unix domain sockets and NBD clients: Unix only.
#![cfg(unix)]

mod serve_support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use serve_support::*;

const KIB: usize = 1024;
const BS: usize = 512 * KIB;

fn info(disk: &Path) -> Value {
    serde_json::from_slice(&vhdkit([
        "info".as_ref(),
        disk.as_os_str(),
        "--json".as_ref(),
    ]))
    .expect("info JSON")
}

fn allocated(disk: &Path) -> u64 {
    info(disk)["allocated_blocks"]
        .as_u64()
        .expect("allocated_blocks")
}

/// A new 8 MiB dynamic disk of 512 KiB blocks.
fn dynamic_8m(disk: &Path) {
    vhdkit([
        "create".as_ref(),
        disk.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--size".as_ref(),
        "8M".as_ref(),
        "--block-size".as_ref(),
        "512K".as_ref(),
    ]);
}

#[test]
fn serve_trim_and_write_zeroes_release_whole_blocks_of_a_dynamic_disk() {
    need("qemu-io", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("d.vhd");
    dynamic_8m(&disk);
    let src = dir.path().join("data.raw");
    let mut want = bytes(7, 8 << 20);
    std::fs::write(&src, &want).expect("writing the data");
    write_at(&disk, 0, &src);
    assert_eq!(allocated(&disk), 16);
    let size_before = std::fs::metadata(&disk).expect("len").len();

    let served = serve([disk.as_os_str()]);
    run(Command::new("qemu-io").args([
        "-f",
        "raw",
        // TRIM of blocks 2 and 3 (1 MiB at 1 MiB).
        "-c",
        "discard 1048576 1048576",
        // WRITE_ZEROES with NO_HOLE (no -u): zeros, the blocks stay.
        "-c",
        "write -z 3145728 1048576",
        // WRITE_ZEROES that may unmap, over the last 3 blocks and 4 KiB before them:
        // those three released (the last of the file: it shrinks), 4 KiB zeroed.
        "-c",
        "write -z -u 6811648 1576960",
        "-c",
        "flush",
        &served.uri,
    ]));
    let ended = served.stop().clean();
    assert!(
        ended.summary["bytes_trimmed"].as_u64().unwrap_or(0) >= 1 << 20,
        "{}",
        ended.summary
    );

    assert_eq!(allocated(&disk), 11, "blocks 2, 3, 13, 14 and 15 released");
    want[1 << 20..2 << 20].fill(0);
    want[3 << 20..4 << 20].fill(0);
    want[6_811_648..].fill(0);
    assert!(read_all(&disk) == want, "the disk reads other bytes");
    let size_after = std::fs::metadata(&disk).expect("len").len();
    eprintln!("d.vhd: {size_before} -> {size_after} bytes");
    assert!(size_after <= size_before - 3 * BS as u64);
    check_clean(&disk);
}

#[test]
fn serve_a_differencing_export_never_releases_a_block() {
    need("qemu-io", &["--version"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let top = chain_copy(dir.path());
    let mut want = read_all(&top);
    let before = allocated(&top);
    assert!(before > 0);
    let parent_view = read_all(&dir.path().join("mid.vhd"));

    let served = serve([top.as_os_str()]);
    run(Command::new("qemu-io").args([
        "-f",
        "raw",
        // Zeros that may unmap over the first MiB: zeros, never the parent's bytes.
        "-c",
        "write -z -u 0 1048576",
        // Trim of the rest: the top's own data is zeroed, the parents' shows through.
        "-c",
        "discard 1048576 3145728",
        "-c",
        "flush",
        &served.uri,
    ]));
    served.stop().clean();

    assert!(
        allocated(&top) >= before,
        "a block of the child was released"
    );
    let now = read_all(&top);
    want[..1 << 20].fill(0);
    assert!(
        now[..1 << 20] == want[..1 << 20],
        "write zeroes reads zeros"
    );
    // Trimmed: each byte is zero (the top's data, zeroed) or the parents' view.
    for (i, (&n, &p)) in now.iter().zip(&parent_view).enumerate().skip(1 << 20) {
        assert!(
            n == 0 || n == p,
            "byte {i} is neither zero nor the parent's"
        );
    }
    check_clean(&top);
}

/// 512-byte blocks the file takes on disk, after its data is synced.
fn blocks_of(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::File::open(path).expect("open");
    f.sync_all().expect("sync");
    f.metadata().expect("meta").blocks()
}

/// A raw image or a fixed disk of 8 MiB of data, trimmed and zeroed by libnbd through
/// nbdsh (`python3 -m nbd`): TRIM of 2 MiB at 1 MiB and WRITE_ZEROES of 1 MiB + 4 KiB at 6 MiB - 4 KiB
/// punch holes (the file takes 3 MiB less and they read as zeros), WRITE_ZEROES with
/// NBD_CMD_FLAG_NO_HOLE of 1 MiB at 4 MiB zeros and keeps the space.
fn trim_and_zero_punch_holes(kind: &str) {
    const MIB: u64 = 1 << 20;
    // nbdsh is `python3 -m nbd` of the python3 on PATH: the system one has libnbd.
    need("/usr/bin/python3", &["-c", "import nbd"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut want = bytes(11, 8 << 20);
    let disk = if kind == "raw" {
        let p = dir.path().join("d.raw");
        std::fs::write(&p, &want).expect("writing the image");
        p
    } else {
        let p = dir.path().join("d.vhd");
        let src = dir.path().join("data.raw");
        std::fs::write(&src, &want).expect("writing the data");
        vhdkit([
            "create".as_ref(),
            p.as_os_str(),
            "--type".as_ref(),
            "fixed".as_ref(),
            "--size".as_ref(),
            "8M".as_ref(),
        ]);
        vhdkit([
            "write".as_ref(),
            p.as_os_str(),
            "--offset".as_ref(),
            "0".as_ref(),
            "--input".as_ref(),
            src.as_os_str(),
        ]);
        p
    };
    let len_before = std::fs::metadata(&disk).expect("len").len();
    let before = blocks_of(&disk);

    let served = serve([disk.as_os_str()]);
    run(Command::new("/usr/bin/python3").args([
        "-m",
        "nbd",
        "-u",
        &served.uri,
        "-c",
        "h.trim(2 * 2**20, 2**20)",
        "-c",
        "h.zero(2**20, 4 * 2**20, nbd.CMD_FLAG_NO_HOLE)",
        "-c",
        "h.zero(2**20 + 4096, 6 * 2**20 - 4096)",
        "-c",
        "h.flush()",
    ]));
    let ended = served.stop().clean();
    assert_eq!(
        ended.summary["bytes_trimmed"].as_u64(),
        Some(2 * MIB),
        "{}",
        ended.summary
    );

    want[MIB as usize..(3 * MIB) as usize].fill(0);
    want[(4 * MIB) as usize..(5 * MIB) as usize].fill(0);
    want[(6 * MIB - 4096) as usize..(7 * MIB) as usize].fill(0);
    let now = if kind == "raw" {
        std::fs::read(&disk).expect("read")
    } else {
        read_all(&disk)
    };
    assert!(now == want, "{kind}: the disk reads other bytes");
    assert_eq!(std::fs::metadata(&disk).expect("len").len(), len_before);
    let after = blocks_of(&disk);
    eprintln!("{kind}: {before} -> {after} blocks of 512 bytes");
    assert!(
        after + (3 * MIB + 4096) / 512 <= before,
        "{kind}: the holes gave back too little ({before} -> {after} blocks)"
    );
    // NO_HOLE: 3 MiB to 6 MiB - 4 KiB is still allocated, the zeroed MiB included.
    let f = std::fs::File::open(&disk).expect("open");
    let hole = vhdkit_platform::next_hole(&f, 3 * MIB).expect("SEEK_HOLE");
    assert!(hole >= 6 * MIB - 4096, "{kind}: a hole at {hole}");
    if kind == "fixed" {
        check_clean(&disk);
        let raw = dir.path().join("want.raw");
        std::fs::write(&raw, &want).expect("write");
        run(Command::new("qemu-img")
            .args(["compare", "-q", "-f", "vpc", "-F", "raw"])
            .arg(&disk)
            .arg(&raw));
    }
}

#[test]
fn serve_trim_and_write_zeroes_punch_holes_in_a_raw_image() {
    trim_and_zero_punch_holes("raw");
}

#[test]
fn serve_trim_and_write_zeroes_punch_holes_in_a_fixed_disk() {
    trim_and_zero_punch_holes("fixed");
}

/// `nbdsh` (`python3 -m nbd` of the system python3, which has libnbd) running the
/// commands `cmds` against `uri`.
fn nbdsh(uri: &str, cmds: &[&str]) {
    need("/usr/bin/python3", &["-c", "import nbd"]);
    let mut c = Command::new("/usr/bin/python3");
    c.args(["-m", "nbd", "-u", uri]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(&mut c);
}

/// Write zeroes with NBD_CMD_FLAG_NO_HOLE (1 MiB at 2 MiB) over a hole of a raw image
/// or a fixed disk leaves the range allocated, as the flag asks; without it (1 MiB at
/// 5 MiB) the hole stays.
fn no_hole_allocates_a_hole(kind: &str) {
    const MIB: u64 = 1 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut want = bytes(13, 8 << 20);
    let disk = dir
        .path()
        .join(if kind == "raw" { "d.raw" } else { "d.vhd" });
    if kind == "raw" {
        std::fs::write(&disk, &want).expect("writing the image");
    } else {
        let src = dir.path().join("data.raw");
        std::fs::write(&src, &want).expect("writing the data");
        vhdkit([
            "convert".as_ref(),
            src.as_os_str(),
            disk.as_os_str(),
            "--type".as_ref(),
            "fixed".as_ref(),
        ]);
    }
    // Holes at 2 MiB and 5 MiB, 1 MiB each (a fixed disk's data starts at 0).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .expect("open");
    for at in [2 * MIB, 5 * MIB] {
        vhdkit_platform::punch_hole(&f, at, MIB).expect("punching a hole");
        want[at as usize..(at + MIB) as usize].fill(0);
    }
    f.sync_all().expect("sync");
    let hole = vhdkit_platform::next_hole(&f, 2 * MIB).expect("SEEK_HOLE");
    assert_eq!(hole, 2 * MIB, "{kind}: no hole punched at 2 MiB");
    drop(f);
    let before = blocks_of(&disk);

    let served = serve([disk.as_os_str()]);
    nbdsh(
        &served.uri,
        &[
            "h.zero(2**20, 2 * 2**20, nbd.CMD_FLAG_NO_HOLE)",
            "h.zero(2**20, 5 * 2**20)",
            "h.flush()",
        ],
    );
    served.stop().clean();

    // (Allocated but unwritten extents may still show as holes to SEEK_HOLE: count
    // the blocks instead.)
    let after = blocks_of(&disk);
    eprintln!("{kind}: {before} -> {after} blocks of 512 bytes");
    assert!(
        after >= before + MIB / 512,
        "{kind}: NO_HOLE left the hole at 2 MiB ({before} -> {after} blocks)"
    );
    assert!(
        after < before + 2 * MIB / 512,
        "{kind}: the hole at 5 MiB was filled too ({before} -> {after} blocks)"
    );
    let now = if kind == "raw" {
        std::fs::read(&disk).expect("read")
    } else {
        check_clean(&disk);
        read_all(&disk)
    };
    assert!(now == want, "{kind}: the disk reads other bytes");
}

#[test]
fn serve_write_zeroes_no_hole_allocates_a_hole_of_a_raw_image() {
    no_hole_allocates_a_hole("raw");
}

#[test]
fn serve_write_zeroes_no_hole_allocates_a_hole_of_a_fixed_disk() {
    no_hole_allocates_a_hole("fixed");
}

/// Write zeroes with NBD_CMD_FLAG_NO_HOLE allocates the blocks of a dynamic disk it
/// covers (they hold zeros), and in a differencing disk stores zeros over both a
/// parent's data and blocks no level holds; without the flag, unallocated blocks stay
/// unallocated.
#[test]
fn serve_write_zeroes_no_hole_allocates_blocks() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("base.vhd");
    dynamic_8m(&base);
    let src = dir.path().join("data.raw");
    let data = bytes(17, MIB);
    std::fs::write(&src, &data).expect("writing the data");
    write_at(&base, 0, &src);
    assert_eq!(allocated(&base), 2);
    let child = dir.path().join("child.vhd");
    create_child(&child, &base);

    // The child: zeros over the parent's MiB and the unallocated MiB after it.
    let served = serve([child.as_os_str()]);
    nbdsh(
        &served.uri,
        &[
            "h.zero(2 * 2**20, 0, nbd.CMD_FLAG_NO_HOLE)",
            "h.zero(2**20, 4 * 2**20)",
            "h.flush()",
        ],
    );
    served.stop().clean();
    assert_eq!(allocated(&child), 4, "blocks 0-3 stored in the child");
    let mut want = vec![0u8; 8 * MIB];
    assert!(read_all(&child) == want, "the child reads other bytes");
    check_clean(&child);

    // The base itself: blocks 4 and 5 allocated, 12 and 13 not.
    let served = serve([base.as_os_str()]);
    nbdsh(
        &served.uri,
        &[
            "h.zero(2**20, 2 * 2**20, nbd.CMD_FLAG_NO_HOLE)",
            "h.zero(2**20, 6 * 2**20)",
            "h.flush()",
        ],
    );
    served.stop().clean();
    assert_eq!(allocated(&base), 4, "blocks 0, 1, 4 and 5 allocated");
    want[..MIB].copy_from_slice(&data);
    assert!(read_all(&base) == want, "the base reads other bytes");
    check_clean(&base);
}

/// The whole of a VHDX without a parent as qemu-img reads it, after a clean `qemu-img
/// check -f vhdx`.
#[cfg(target_os = "linux")]
fn qemu_vhdx(disk: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("q.raw");
    run(Command::new("qemu-img")
        .args(["check", "-q", "-f", "vhdx"])
        .arg(disk));
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vhdx", "-O", "raw"])
        .arg(disk)
        .arg(&out));
    std::fs::read(&out).expect("reading qemu-img's output")
}

/// Trim and write zeroes (without NO_HOLE) release the whole payload blocks of a dynamic
/// VHDX they cover: fewer blocks allocated, the file takes less space, the data write
/// GUID changes, and every reader (vhdkit, qemu-img, libvhdi-python, dissect) reads
/// zeros there and the rest unchanged. Partial blocks and NO_HOLE get zeros written.
#[cfg(target_os = "linux")]
#[test]
fn serve_trim_and_write_zeroes_release_whole_blocks_of_a_dynamic_vhdx() {
    use vhdkit_testkit::{dissect_read_all, libvhdi_python_read_all};
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("data.raw");
    let mut want = bytes(19, 16 * MIB);
    std::fs::write(&src, &want).expect("writing the data");
    let disk = dir.path().join("d.vhdx");
    vhdkit([
        "convert".as_ref(),
        src.as_os_str(),
        disk.as_os_str(),
        "--type".as_ref(),
        "dynamic".as_ref(),
        "--block-size".as_ref(),
        "1M".as_ref(),
    ]);
    assert_eq!(allocated(&disk), 16);
    let guid = info(&disk)["vhdx"]["data_write_guid"].clone();
    let before = blocks_of(&disk);

    let served = serve([disk.as_os_str()]);
    nbdsh(
        &served.uri,
        &[
            // Blocks 2 and 3.
            "h.trim(2 * 2**20, 2 * 2**20)",
            // 6.5 MiB to 10 MiB: blocks 7, 8 and 9 released, half of block 6 zeroed.
            "h.zero(7 * 2**19, 13 * 2**19)",
            // Block 12 zeroed and kept.
            "h.zero(2**20, 12 * 2**20, nbd.CMD_FLAG_NO_HOLE)",
            "h.flush()",
        ],
    );
    let ended = served.stop().clean();
    assert_eq!(
        ended.summary["bytes_trimmed"].as_u64(),
        Some(2 * MIB as u64),
        "{}",
        ended.summary
    );

    want[2 * MIB..4 * MIB].fill(0);
    want[13 * MIB / 2..10 * MIB].fill(0);
    want[12 * MIB..13 * MIB].fill(0);
    assert_eq!(allocated(&disk), 11, "blocks 2, 3, 7, 8 and 9 released");
    let after = blocks_of(&disk);
    eprintln!("d.vhdx: {before} -> {after} blocks of 512 bytes");
    // 5 MiB released; the log's entries take some of the log region's space (1 MiB).
    assert!(
        after + 4 * MIB as u64 / 512 <= before,
        "the released blocks' space was not given back ({before} -> {after} blocks)"
    );
    assert_ne!(
        info(&disk)["vhdx"]["data_write_guid"],
        guid,
        "the disk's bytes changed: a new data write GUID"
    );
    check_clean(&disk);
    assert!(read_all(&disk) == want, "vhdkit reads other bytes");
    assert!(qemu_vhdx(&disk) == want, "qemu-img reads other bytes");
    assert!(
        libvhdi_python_read_all(&[&disk]) == want,
        "libvhdi-python reads other bytes"
    );
    assert!(dissect_read_all(&disk) == want, "dissect reads other bytes");
}

/// Write zeroes with NO_HOLE on a block device served as a raw disk: zeros written
/// (a device has no holes to allocate, and no free space of its own to check), the
/// bytes around them unchanged.
#[cfg(target_os = "linux")]
#[test]
fn serve_write_zeroes_no_hole_on_a_block_device_writes_zeros() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("d.img");
    let mut want = bytes(23, 8 * MIB);
    std::fs::write(&img, &want).expect("writing the image");
    let dev = vhdkit_testkit::disks::Loop::new(&img, 0, 8 * MIB as u64);
    let served = serve([dev.dev.as_str()]);
    nbdsh(
        &served.uri,
        &[
            "h.zero(3 * 2**20, 2**20, nbd.CMD_FLAG_NO_HOLE)",
            "h.flush()",
        ],
    );
    served.stop().clean();
    drop(dev);
    want[MIB..4 * MIB].fill(0);
    assert!(
        std::fs::read(&img).expect("read") == want,
        "the device reads other bytes"
    );
}
