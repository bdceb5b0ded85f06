//! Real-world images made by other programs (Virtual PC, Hyper-V, disk2vhd, Windows 10,
//! VirtualBox, FreeBSD mkimg, hand-edited dfvfs samples). The permissively licensed ones
//! are read from `fixtures/realworld/` (every clone has them); the GPL/LGPL ones (QEMU's
//! Virtual PC, Hyper-V and disk2vhd samples, libvhdi's fragments) stay outside the
//! repository, in `../shared/realworld`, and their tests pass over them when that
//! folder is absent — unless `VHDKIT_REQUIRE_REALWORLD=1` (CI), which fails them.
//!
//! Every image must open, report the footer's current size (= libvhdi's media size) and
//! read the same bytes as libvhdi (pyvhdi).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::*;

/// Full read through vhdkit and through pyvhdi, compared as streams.
fn assert_reads_like_libvhdi(chain: &[&Path]) {
    if have(Tool::Pyvhdi) {
        assert_streams_eq(
            "vhdkit read vs pyvhdi",
            vhdkit_read_cmd(chain[0], None),
            pyvhdi_read_cmd(chain, 0, None),
        );
    } else {
        let status = vhdkit_read_cmd(chain[0], None)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running vhdkit read");
        assert!(status.success(), "vhdkit read {}", chain[0].display());
    }
}

/// Size from vhdkit info equals `expected` and vhdiinfo's media size.
fn assert_size(disk: &Path, expected: u64) {
    assert_eq!(vhdkit_size(disk), expected, "vhdkit virtual size");
    if have(Tool::Vhdiinfo) {
        assert_eq!(vhdiinfo_size(disk), expected, "vhdiinfo media size");
    }
    if have(Tool::Pyvhdi) {
        assert_eq!(pyvhdi_size(disk), expected, "pyvhdi media size");
    }
}

/// An image that reads entirely the same in vhdkit, pyvhdi and qemu-img.
fn assert_plain_image(rel: &str, size: u64, with_qemu: bool) {
    let rw = realworld_fixtures();
    let disk = rw.join(rel);
    assert_size(&disk, size);
    assert_reads_like_libvhdi(&[&disk]);
    if with_qemu && have(Tool::QemuImg) {
        assert_eq!(qemu_size(&disk), size, "qemu-img virtual size");
        assert_bytes_eq(
            "vhdkit read vs qemu-img",
            &read_all(&disk),
            &qemu_read_all(&disk),
        );
    }
}

#[test]
fn realworld_win10_dynamic_512m_reads_like_libvhdi() {
    assert_plain_image("win10-dynamic-512m-files.vhd", 536_870_912, false);
}

#[test]
fn realworld_win10_diskpart_fixed_reads_like_libvhdi_and_qemu() {
    assert_plain_image("win10-diskpart-fixed-4m-ntfs.vhd", 4_194_304, true);
}

#[test]
fn realworld_virtualbox_fixed_reads_like_libvhdi_and_qemu() {
    assert_plain_image("virtualbox41-fixed-4m.vhd", 4_194_304, true);
}

#[test]
fn realworld_virtualbox_fixed_content_is_y_newline() {
    let rw = realworld_fixtures();
    let data = read_all(&rw.join("virtualbox41-fixed-4m.vhd"));
    assert_eq!(data.len(), 4_194_304);
    assert!(
        data.chunks(2).all(|c| c == b"y\n"),
        "the disk is `y\\n` repeated"
    );
}

#[test]
fn realworld_mkimg_dynamic_partial_last_block_reads_like_libvhdi_and_qemu() {
    assert_plain_image("freebsd-mkimg-dynamic-4m-bsdlabel.vhd", 4_352_000, true);
}

#[test]
fn realworld_mkimg_fixed_larger_than_chs_reads_like_libvhdi_and_qemu() {
    assert_plain_image("freebsd-mkimg-fixed-5m-bsdlabel.vhd", 5_242_880, true);
}

/// Compares the first and the last 64 MiB of a 127 GiB empty image.
fn assert_big_empty_image(rel: &str) {
    let Some(rw) = shared_realworld() else {
        return;
    };
    let disk = rw.join(rel);
    const SIZE: u64 = 136_365_211_648;
    assert_size(&disk, SIZE);
    for (what, off) in [("first 64 MiB", 0), ("last 64 MiB", SIZE - 64 * MIB)] {
        let ours = read_range(&disk, off, 64 * MIB);
        assert_eq!(ours.len() as u64, 64 * MIB, "{what}");
        assert!(all_zero(&ours), "{what} of an empty disk is zeros");
        if have(Tool::Pyvhdi) {
            assert_streams_eq(
                what,
                vhdkit_read_cmd(&disk, Some((off, 64 * MIB))),
                pyvhdi_read_cmd(&[&disk], off, Some(64 * MIB)),
            );
        }
    }
    // Nothing is allocated: the whole disk maps to one zero extent.
    let map = vhdkit(["map".as_ref(), disk.as_os_str(), "--json".as_ref()])
        .ok()
        .json();
    let rows = map["rows"].as_array().expect("rows");
    assert!(
        rows.iter().all(|r| r["kind"] == "zero"),
        "no data in an empty disk"
    );
    let total: u64 = rows
        .iter()
        .map(|r| r["length"].as_u64().expect("length"))
        .sum();
    assert_eq!(total, SIZE);
}

#[test]
fn realworld_virtualpc_127g_uses_current_size_not_chs() {
    assert_big_empty_image("virtualpc-dynamic-127g-empty.vhd");
}

#[test]
fn realworld_hyperv_127g_with_gap_before_footer_reads_like_libvhdi() {
    assert_big_empty_image("hyperv2012r2-dynamic-127g-empty.vhd");
}

/// Decompresses the disk2vhd image to `dir` (bzip2 if present, else Python's bz2).
fn decompress_disk2vhd(rw: &Path, dir: &Path) -> Option<PathBuf> {
    let src = rw.join("disk2vhd-dynamic-251m-zerofilled.vhd.bz2");
    let out = dir.join("disk2vhd.vhd");
    let file = std::fs::File::create(&out).expect("create");
    let status = if have(Tool::Bzip2) {
        std::process::Command::new("bzip2")
            .arg("-dc")
            .arg(&src)
            .stdout(file)
            .status()
    } else {
        std::process::Command::new("python3")
            .args([
                "-c",
                "import bz2, shutil, sys\nshutil.copyfileobj(bz2.open(sys.argv[1]), sys.stdout.buffer, 1 << 20)",
            ])
            .arg(&src)
            .stdout(file)
            .status()
    }
    .expect("decompressing");
    let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    (status.success() && len == 264_308_224).then_some(out)
}

/// The decompressed disk2vhd image (264 MB) in a temp dir: in memory (/dev/shm) where
/// that has room, which spares the disk, else in the default temp dir.
fn disk2vhd(rw: &Path) -> (tempfile::TempDir, PathBuf) {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            if let Some(p) = decompress_disk2vhd(rw, dir.path()) {
                return (dir, p);
            }
        }
    }
    let dir = tempdir();
    let p = decompress_disk2vhd(rw, dir.path()).expect("decompressing the disk2vhd image");
    (dir, p)
}

#[test]
fn realworld_disk2vhd_nonmonotonic_bat_reads_like_libvhdi() {
    let Some(rw) = shared_realworld() else {
        return;
    };
    let (_dir, disk) = disk2vhd(&rw);
    assert_size(&disk, 263_454_720);
    let i = info(&disk);
    assert_eq!(i["allocated_blocks"].as_u64(), Some(126));
    assert_reads_like_libvhdi(&[&disk]);
}

// --- differencing ---------------------------------------------------------------------

#[test]
fn realworld_dfvfs_chain_child_reads_like_libvhdi_through_parent() {
    let rw = realworld_fixtures();
    let parent = rw.join("dfvfs-handedited-chain/image.vhd");
    let child = rw.join("dfvfs-handedited-chain/image-differential.vhd");
    assert_size(&parent, 104_448);
    assert_size(&child, 104_448);
    let i = info(&child);
    assert_eq!(i["disk_type"], "differencing");
    assert_eq!(i["parent"]["found"], true, "found by its unicode name: {i}");
    assert!(
        !i["warnings"].as_array().expect("warnings").is_empty(),
        "bad checksums are read with a warning"
    );
    // The child's block 0 has every bitmap bit set and the parent's data.
    let through_child = read_all(&child);
    assert_bytes_eq("child vs parent", &through_child, &read_all(&parent));
    assert_reads_like_libvhdi(&[&child, &parent]);
}

#[test]
fn realworld_dfvfs_chain_strict_refuses_bad_checksums() {
    let rw = realworld_fixtures();
    let child = rw.join("dfvfs-handedited-chain/image-differential.vhd");
    let r = vhdkit(["read".as_ref(), child.as_os_str(), "--strict".as_ref()]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("checksum"), "names the checksum: {line}");
}

#[test]
fn realworld_fat_differential_without_parent_read_fails_naming_parent() {
    let rw = realworld_fixtures();
    let child = rw.join("win10-diskpart-differencing/fat-differential.vhd");
    let r = vhdkit(["read".as_ref(), child.as_os_str()]);
    let line = assert_failed_one_line(&r);
    assert!(line.contains("fat-parent.vhd"), "names the parent: {line}");
    assert!(r.stdout.is_empty(), "no partial output");
}

#[test]
fn realworld_fat_differential_without_parent_info_still_works() {
    let rw = realworld_fixtures();
    let child = rw.join("win10-diskpart-differencing/fat-differential.vhd");
    assert_size(&child, 4_194_304);
    let i = info(&child);
    assert_eq!(i["disk_type"], "differencing");
    let p = &i["parent"];
    assert_eq!(p["found"], false);
    assert_eq!(p["unique_id"], "5fa21a55-f394-aa4d-9958-1951a67d5540");
    assert!(
        p["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("fat-parent.vhd")),
        "parent name: {p}"
    );
    let codes: Vec<&str> = p["locators"]
        .as_array()
        .expect("locators")
        .iter()
        .filter_map(|l| l["code"].as_str())
        .collect();
    assert_eq!(codes, ["W2ku", "W2ru"]);
    if have(Tool::Vhdiinfo) {
        assert_eq!(
            vhdiinfo_field(&child, "Parent identifier").map(|s| s.to_lowercase()),
            Some("5fa21a55-f394-aa4d-9958-1951a67d5540".to_owned())
        );
    }
}

#[test]
fn realworld_fat_differential_with_explicit_parent_reads_marked_sectors() {
    // With a stand-in parent (a fixed disk of zeros with the right size), the 18 sectors
    // marked in block 0's bitmap come from the child and everything else from the parent.
    let rw = realworld_fixtures();
    let dir = tempdir();
    let parent = dir.path().join("fat-parent.vhd");
    create(&parent, &["--type", "fixed", "--size", "4M"]);
    let child = rw.join("win10-diskpart-differencing/fat-differential.vhd");
    let r = vhdkit([
        "map".as_ref(),
        child.as_os_str(),
        "--json".as_ref(),
        "--with-parent".as_ref(),
        parent.as_os_str(),
        "--ignore-parent-id".as_ref(),
    ])
    .ok();
    let mut own_sectors = Vec::new();
    for row in r.json()["rows"].as_array().expect("rows") {
        if row["kind"] == "allocated" {
            let start = row["start"].as_u64().expect("start") / 512;
            let len = row["length"].as_u64().expect("length") / 512;
            own_sectors.extend(start..start + len);
        }
    }
    let mut want: Vec<u64> = vec![134, 143];
    want.extend(152..=159);
    want.extend([184, 185, 188]);
    want.extend(190..=192);
    want.extend([194, 196]);
    assert_eq!(
        own_sectors, want,
        "the sectors marked in the child's bitmap"
    );
}

#[test]
fn realworld_footer_fragment_fails_cleanly() {
    let Some(rw) = shared_realworld() else {
        return;
    };
    for frag in [
        "virtualpc-differencing-footer.bin",
        "virtualpc-differencing-dynheader.bin",
    ] {
        let p = rw.join("fragments").join(frag);
        for cmd in ["info", "read"] {
            let r = vhdkit([OsStr::new(cmd), p.as_os_str()]);
            assert_failed_one_line(&r);
        }
        let r = vhdkit(["check".as_ref(), p.as_os_str()]);
        assert_no_panic(&r);
        assert_eq!(r.code, EXIT_DIFFERENT, "check {frag}: {}", r.stdout_str());
    }
}

/// `vhdkit check --json` of `disk` exits 0 and reports it clean.
fn assert_checks_clean(disk: &Path) {
    let r = vhdkit(["check".as_ref(), disk.as_os_str(), "--json".as_ref()]);
    assert_eq!(
        r.code,
        EXIT_OK,
        "check {}: {}",
        disk.display(),
        r.stdout_str()
    );
    assert_eq!(r.json()["clean"], true, "{}", disk.display());
}

#[test]
fn realworld_images_check_without_errors() {
    let rw = realworld_fixtures();
    for rel in [
        "win10-dynamic-512m-files.vhd",
        "win10-diskpart-fixed-4m-ntfs.vhd",
        "virtualbox41-fixed-4m.vhd",
        "freebsd-mkimg-dynamic-4m-bsdlabel.vhd",
        "freebsd-mkimg-fixed-5m-bsdlabel.vhd",
    ] {
        assert_checks_clean(&rw.join(rel));
    }
}

#[test]
fn realworld_127g_gpl_images_check_without_errors() {
    let Some(rw) = shared_realworld() else {
        return;
    };
    for rel in [
        "virtualpc-dynamic-127g-empty.vhd",
        "hyperv2012r2-dynamic-127g-empty.vhd",
    ] {
        assert_checks_clean(&rw.join(rel));
    }
}

#[test]
fn realworld_fixture_copies_are_the_bytes_their_origin_published() {
    // The SHA-256 of each copied file, as fixtures/README.md and the source folder's
    // README give them: a test that wrote into a fixture, or a bad copy, fails here.
    let rw = realworld_fixtures();
    let sums = std::fs::read_to_string(rw.join("SHA256SUMS")).expect("SHA256SUMS");
    let mut files = 0;
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").expect("`SUM  NAME` lines");
        let r = run_cmd(std::process::Command::new("sha256sum").arg(rw.join(name)));
        assert_eq!(r.code, 0, "sha256sum {name}: {}", r.stderr);
        let got = r.stdout_str();
        assert_eq!(got.split_whitespace().next(), Some(sum), "{name}");
        files += 1;
    }
    assert_eq!(files, 8, "every copied image is listed");
}
