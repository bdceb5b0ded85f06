//! Images written by other programs (Virtual PC, Hyper-V, Windows, VirtualBox, FreeBSD
//! mkimg, disk2vhd, hand-edited dfvfs files). The permissively licensed ones are read
//! from `fixtures/realworld/`; the GPL/LGPL ones (QEMU's Virtual PC, Hyper-V and disk2vhd
//! samples) from `../shared/realworld` beside the repository, and their tests pass over
//! them where that folder is absent unless `VHDKIT_REQUIRE_REALWORLD=1` (CI). Sizes and
//! facts come from the fixtures' README; byte-for-byte comparison with libvhdi is done by
//! the CLI's tests.

mod common;

use std::time::{Duration, Instant};

use common::{read_all, read_range, realworld_fixtures, shared_realworld, MIB};
use vhdkit_format::image::{Extent, FsResolver, MemBackend};
use vhdkit_format::{Disk, DiskKind, Error, ErrorKind, OpenOptions, VhdFile};

/// The size both GPL 127 GiB images' footers give (their BAT covers exactly this).
const SIZE_127G: u64 = 136_365_211_648;

/// Files of `fixtures/realworld` that open on their own, with their kind and the size
/// their README gives.
const SIZES: [(&str, DiskKind, u64); 6] = [
    (
        "win10-dynamic-512m-files.vhd",
        DiskKind::Dynamic,
        536_870_912,
    ),
    (
        "win10-diskpart-fixed-4m-ntfs.vhd",
        DiskKind::Fixed,
        4_194_304,
    ),
    ("virtualbox41-fixed-4m.vhd", DiskKind::Fixed, 4_194_304),
    (
        "freebsd-mkimg-dynamic-4m-bsdlabel.vhd",
        DiskKind::Dynamic,
        4_352_000,
    ),
    (
        "freebsd-mkimg-fixed-5m-bsdlabel.vhd",
        DiskKind::Fixed,
        5_242_880,
    ),
    (
        "dfvfs-handedited-chain/image.vhd",
        DiskKind::Dynamic,
        104_448,
    ),
];

#[test]
fn realworld_images_open_with_the_size_their_readme_gives() {
    let dir = realworld_fixtures();
    for (name, kind, size) in SIZES {
        let disk = Disk::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(disk.kind(), kind, "{name}");
        assert_eq!(disk.virtual_size(), size, "{name}");
    }
}

#[test]
fn realworld_fat_differential_without_its_parent_is_parent_not_found_naming_it() {
    let dir = realworld_fixtures();
    let child = dir.join("win10-diskpart-differencing/fat-differential.vhd");

    let err = Disk::open(&child).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::ParentNotFound, "{err}");
    let Error::ParentNotFound { name, tried, .. } = &err else {
        unreachable!()
    };
    assert!(
        name == "C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd" || name == "fat-parent.vhd",
        "{name}"
    );
    assert!(
        tried.iter().any(|t| t.ends_with("fat-parent.vhd")),
        "{tried:?}"
    );
}

#[test]
fn realworld_fat_differential_alone_holds_exactly_the_sectors_its_bitmap_marks() {
    let dir = realworld_fixtures();
    let child = dir.join("win10-diskpart-differencing/fat-differential.vhd");

    let disk = Disk::open_with(&child, &OpenOptions::new().no_parents(true)).expect("open");

    assert_eq!(disk.kind(), DiskKind::Differencing);
    assert_eq!(disk.virtual_size(), 4_194_304);
    let mut held = Vec::new();
    let mut pos = 0u64;
    for e in disk.extents(0, disk.virtual_size()).expect("extents") {
        if let Extent::Data { len, .. } = e {
            held.extend(pos / 512..(pos + len) / 512);
        }
        pos += e.len();
    }
    let mut expected: Vec<u64> = vec![134, 143, 184, 185, 188, 194, 196];
    expected.extend(152..=159);
    expected.extend(190..=192);
    expected.sort_unstable();
    assert_eq!(held, expected);
}

#[test]
fn realworld_dfvfs_hand_edited_chain_opens_with_warnings_and_reads_the_parent_bytes() {
    let dir = realworld_fixtures();
    let chain = dir.join("dfvfs-handedited-chain");

    let child = Disk::open(chain.join("image-differential.vhd")).expect("lenient open");
    let parent = Disk::open(chain.join("image.vhd")).expect("lenient open");

    assert_eq!(child.kind(), DiskKind::Differencing);
    assert_eq!(child.layers().len(), 2);
    let warnings = child.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("checksum")),
        "bad checksums are accepted with a warning: {warnings:?}"
    );
    let content = read_all(&parent);
    assert!(content.iter().any(|&b| b != 0), "the parent holds data");
    common::assert_bytes_eq("child through the chain", &read_all(&child), &content);
}

#[test]
fn realworld_dfvfs_hand_edited_chain_is_refused_when_strict() {
    let dir = realworld_fixtures();
    let chain = dir.join("dfvfs-handedited-chain");
    for name in ["image-differential.vhd", "image.vhd"] {
        let err = Disk::open_with(chain.join(name), &OpenOptions::new().strict(true)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{name}: {err}");
    }
}

#[test]
fn realworld_127g_empty_images_open_quickly_and_read_zeros() {
    let Some(dir) = shared_realworld() else {
        return;
    };
    for name in [
        "virtualpc-dynamic-127g-empty.vhd",
        "hyperv2012r2-dynamic-127g-empty.vhd",
    ] {
        let started = Instant::now();
        let disk = Disk::open(dir.join(name)).expect("open");
        let size = disk.virtual_size();
        assert_eq!(disk.kind(), DiskKind::Dynamic, "{name}");
        assert_eq!(
            size, SIZE_127G,
            "{name}: the footer's size, not the CHS product"
        );
        for at in [0, size / 2 - 3, size - MIB] {
            let data = read_range(&disk, at, MIB as usize);
            assert!(data.iter().all(|&b| b == 0), "{name} at {at}");
        }
        assert_eq!(disk.top().allocated_blocks(), 0);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{name}: open and three 1 MiB reads took {took:?}"
        );
    }
}

#[test]
fn realworld_freebsd_dynamic_with_a_partial_last_block_reads_to_its_exact_end() {
    let dir = realworld_fixtures();
    let disk = Disk::open(dir.join("freebsd-mkimg-dynamic-4m-bsdlabel.vhd")).expect("open");
    let size = disk.virtual_size();
    assert_eq!(size, 4_352_000);
    assert!(!size.is_multiple_of(disk.top().block_size().expect("dynamic")));

    let content = read_all(&disk);

    // CRC32 of the bytes qemu-img and libvhdi both return.
    assert_eq!(crc32fast::hash(&content), 0x1330_8228);
    assert_eq!(&content[..4], b"B\nB\n");
    assert_eq!(
        read_range(&disk, size - 512, 512),
        &content[size as usize - 512..]
    );
    let mut one = [0u8; 1];
    let err = disk.read_at(&mut one, size).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutOfRange, "{err}");
}

#[test]
fn realworld_virtualbox_fixed_reads_its_y_newline_pattern() {
    let dir = realworld_fixtures();
    let disk = Disk::open(dir.join("virtualbox41-fixed-4m.vhd")).expect("open");
    let content = read_all(&disk);
    assert!(content.chunks(2).all(|c| c == b"y\n"));
}

#[test]
fn realworld_win10_dynamic_reports_its_allocated_blocks() {
    let dir = realworld_fixtures();
    let disk = Disk::open(dir.join("win10-dynamic-512m-files.vhd")).expect("open");
    assert_eq!(disk.top().allocated_blocks(), 11);
    assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "decompresses with bzip2 (Linux CI)"
)]
fn realworld_disk2vhd_decompressed_reads_zeros_through_unordered_blocks() {
    let Some(dir) = shared_realworld() else {
        return;
    };
    let Ok(out) = std::process::Command::new("bzip2")
        .arg("-dc")
        .arg(dir.join("disk2vhd-dynamic-251m-zerofilled.vhd.bz2"))
        .output()
    else {
        panic!("bzip2 is missing (.ci/run installs it)");
    };
    assert!(out.status.success(), "bzip2 failed");
    let backend = std::sync::Arc::new(MemBackend::new(out.stdout));
    let opts = OpenOptions::new();
    let path = dir.join("disk2vhd-dynamic-251m-zerofilled.vhd");
    let top = VhdFile::from_backend(&path, backend, &opts).expect("open");
    let disk = Disk::resolve(top, &opts, &FsResolver).expect("resolve");

    assert_eq!(disk.virtual_size(), 263_454_720);
    assert_eq!(disk.top().allocated_blocks(), 126);
    let zeros = vec![0u8; 8 * MIB as usize];
    let mut buf = vec![0xAAu8; zeros.len()];
    let mut at = 0;
    while at < disk.virtual_size() {
        let n = (disk.virtual_size() - at).min(buf.len() as u64) as usize;
        disk.read_at(&mut buf[..n], at).expect("read");
        assert!(buf[..n] == zeros[..n], "at {at}");
        at += n as u64;
    }
}
