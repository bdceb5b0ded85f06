//! The VHDX container (`image/vhdx/`): VHDX files opened through `VhdFile` and `Disk`
//! as any disk is — qemu-img's files (every block size, both subformats, with and
//! without `block_state_zero`) read byte-identically to `qemu-img convert -O raw`;
//! differencing chains built with the format layer (partially present blocks, 512- and
//! 4096-byte sectors, three levels) read as libvhdi reads them; a pending log replayed
//! in memory on a read-only open and on disk on a writable one; damaged files refused
//! with the structure and offset, never a panic.

// qemu-img and libvhdi read the results: Linux CI only.
#![cfg(target_os = "linux")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;
use vhdkit_format::vhdx::header::HeaderSlot;
use vhdkit_format::vhdx::{DiskType, NewVhdx, ParentLocator, ParsedVhdx, MIB};
use vhdkit_format::{Disk, DiskKind, ErrorKind, OpenOptions, VhdFile};
use vhdkit_testkit::{have, pyvhdi_read_all, run_cmd, tempdir, Tool};

#[path = "common/vhdx_build.rs"]
mod vhdx_build;
use vhdx_build::{build, file_with_pending_log, model, Content};

fn tool(program: &str, args: &[&str]) -> String {
    have(Tool::QemuImg);
    let r = run_cmd(Command::new(program).args(args));
    assert_eq!(r.code, 0, "{program} {args:?}: {}", r.stderr);
    r.stdout_str()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The whole disk as qemu-img reads it (`convert -f vhdx -O raw`).
fn qemu_raw(path: &Path) -> Vec<u8> {
    let out = path.with_extension("qemu.raw");
    tool(
        "qemu-img",
        &["convert", "-f", "vhdx", "-O", "raw", s(path), s(&out)],
    );
    let b = fs::read(&out).unwrap();
    fs::remove_file(&out).unwrap();
    b
}

/// The whole disk as vhdkit reads it, chain included.
fn vhdkit_read(path: &Path) -> Vec<u8> {
    let d = Disk::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0u8; d.virtual_size() as usize];
    d.read_at(&mut buf, 0).unwrap();
    buf
}

/// A 24 MiB raw disk with data runs of different lengths and gaps, some crossing
/// block boundaries.
fn patterned_raw(path: &Path) -> Vec<u8> {
    let mut b = vec![0u8; 24 * MIB as usize];
    let mut at = 0usize;
    let mut k = 1u8;
    while at < b.len() {
        let n = (37 * 4096 * k as usize).min(b.len() - at);
        for (i, x) in b[at..at + n].iter_mut().enumerate() {
            *x = k.wrapping_mul(31).wrapping_add((i / 512) as u8) | 1;
        }
        at += n + (3 * MIB as usize / 2) + 4096 * k as usize;
        k += 1;
    }
    fs::write(path, &b).unwrap();
    b
}

#[test]
fn qemu_files_read_byte_identically_for_every_block_size_subformat_and_block_state() {
    let dir = tempdir();
    let raw = dir.path().join("p.raw");
    let want = patterned_raw(&raw);
    for bs in [1u64, 2, 4, 8, 16, 32, 64, 128, 256] {
        for sub in ["dynamic", "fixed"] {
            for zero in ["on", "off"] {
                let f = dir.path().join(format!("{sub}-{bs}-{zero}.vhdx"));
                let o = format!("subformat={sub},block_size={bs}M,block_state_zero={zero}");
                tool(
                    "qemu-img",
                    &[
                        "convert",
                        "-f",
                        "raw",
                        "-O",
                        "vhdx",
                        "-o",
                        &o,
                        s(&raw),
                        s(&f),
                    ],
                );
                let got = vhdkit_read(&f);
                assert!(got == want, "{}: differs from the raw image", f.display());
                assert!(
                    got == qemu_raw(&f),
                    "{}: differs from qemu-img",
                    f.display()
                );
                let file = VhdFile::open(&f, &OpenOptions::new()).unwrap();
                let kind = if sub == "fixed" {
                    DiskKind::Fixed
                } else {
                    DiskKind::Dynamic
                };
                assert_eq!(file.kind(), kind, "{}", f.display());
                assert!(file.is_vhdx());
                fs::remove_file(&f).unwrap();
            }
        }
    }
}

#[test]
fn qemu_io_writes_into_created_files_read_back_identically() {
    let dir = tempdir();
    for (bs, sub, zero) in [
        (1u64, "dynamic", "on"),
        (1, "dynamic", "off"),
        (8, "fixed", "on"),
        (32, "dynamic", "off"),
        (256, "fixed", "off"),
    ] {
        let f = dir.path().join(format!("{sub}-{bs}-{zero}.vhdx"));
        let o = format!("subformat={sub},block_size={bs}M,block_state_zero={zero}");
        tool(
            "qemu-img",
            &["create", "-q", "-f", "vhdx", "-o", &o, s(&f), "40M"],
        );
        for cmd in [
            "write -P 0x5a 0 4k",
            "write -P 0xa5 1020k 8k",
            "write -P 0x33 7M 2M",
            "write -z 7M 4k",
            "write -P 0x77 39M 1M",
        ] {
            tool("qemu-io", &["-f", "vhdx", "-c", cmd, s(&f)]);
        }
        let got = vhdkit_read(&f);
        assert!(
            got == qemu_raw(&f),
            "{}: differs from qemu-img",
            f.display()
        );
        assert!(got[..4096].iter().all(|&b| b == 0x5a));
        assert!(got[(7 * MIB) as usize..(7 * MIB + 4096) as usize]
            .iter()
            .all(|&b| b == 0));
    }
}

fn differencing_chain(sector: u32) {
    let dir = tempdir();
    let size = 12 * MIB;
    let mut n = NewVhdx::new(DiskType::Dynamic, size);
    n.block_size = MIB as u32;
    n.logical_sector_size = sector;
    let base_blocks: &[(u64, Content)] = &[
        (0, Content::Full(0x11)),
        (1, Content::Full(0x12)),
        (3, Content::Full(0x13)),
        (5, Content::Full(0x14)),
        (11, Content::Full(0x15)),
    ];
    let base = dir.path().join("base.vhdx");
    let (_, base_id) = build(&base, &n, None, base_blocks);

    n.disk_type = DiskType::Differencing;
    let mid_blocks: &[(u64, Content)] = &[
        (0, Content::Partial(0x21, 8, 8)),
        (1, Content::Zero),
        (2, Content::Full(0x22)),
        (5, Content::Partial(0x23, 0, 1)),
        (11, Content::Partial(0x24, 100, 50)),
    ];
    let mid = dir.path().join("mid.avhdx");
    let loc = ParentLocator::new(base_id, Some(r".\base.vhdx"), None, None);
    let (_, mid_id) = build(&mid, &n, Some(loc), mid_blocks);

    let top_blocks: &[(u64, Content)] = &[
        (0, Content::Partial(0x31, 10, 2)),
        (3, Content::Partial(0x32, 1, 3)),
        (7, Content::Full(0x33)),
    ];
    let top = dir.path().join("top.avhdx");
    // Found by its absolute path's file name in the child's folder.
    let loc = ParentLocator::new(mid_id, None, None, Some(r"C:\vms\mid.avhdx"));
    build(&top, &n, Some(loc), top_blocks);

    let want = model(size, &n, &[top_blocks, mid_blocks, base_blocks]);
    let disk = Disk::open(&top).unwrap();
    assert_eq!(disk.layers().len(), 3);
    assert_eq!(disk.kind(), DiskKind::Differencing);
    let got = vhdkit_read(&top);
    assert!(
        got == want,
        "vhdkit differs from the model ({sector}-byte sectors)"
    );
    // libvhdi reads a differencing file's zero-state block from the parent; the
    // specification defines its content as zeros, and vhdkit reads zeros (docs/vhdx.md).
    let no_zero: Vec<(u64, Content)> = mid_blocks
        .iter()
        .copied()
        .filter(|(_, c)| !matches!(c, Content::Zero))
        .collect();
    let libvhdi_model = model(size, &n, &[top_blocks, &no_zero, base_blocks]);
    let libvhdi = pyvhdi_read_all(&[&top, &mid, &base]);
    assert!(libvhdi == libvhdi_model, "libvhdi differs from the model");
    assert!(
        got[MIB as usize..2 * MIB as usize].iter().all(|&b| b == 0),
        "the zero-state block reads as zeros"
    );
    // The middle level alone, too.
    assert!(vhdkit_read(&mid) == model(size, &n, &[mid_blocks, base_blocks]));
}

#[test]
fn differencing_chain_reads_as_libvhdi_reads_it_with_512_byte_sectors() {
    differencing_chain(512);
}

#[test]
fn differencing_chain_reads_as_libvhdi_reads_it_with_4096_byte_sectors() {
    differencing_chain(4096);
}

#[test]
fn parent_with_another_data_write_guid_is_refused_and_linkage2_accepted() {
    let dir = tempdir();
    let mut n = NewVhdx::new(DiskType::Dynamic, 4 * MIB);
    n.block_size = MIB as u32;
    let base = dir.path().join("base.vhdx");
    let (_, base_id) = build(&base, &n, None, &[(0, Content::Full(1))]);
    n.disk_type = DiskType::Differencing;
    let child = dir.path().join("child.avhdx");
    build(
        &child,
        &n,
        Some(ParentLocator::new(
            Uuid::new_v4(),
            Some("base.vhdx"),
            None,
            None,
        )),
        &[],
    );
    let e = Disk::open(&child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ParentIdMismatch, "{e}");
    let mut loc = ParentLocator::new(Uuid::new_v4(), Some("base.vhdx"), None, None);
    loc.entries
        .push(("parent_linkage2".into(), format!("{{{base_id}}}")));
    build(&child, &n, Some(loc), &[]);
    let d = Disk::open(&child).unwrap();
    assert_eq!(d.layers().len(), 2);
}

#[test]
fn vhd_parent_under_a_vhdx_child_is_refused() {
    let dir = tempdir();
    let base = dir.path().join("base.vhd");
    Disk::create(
        &base,
        &vhdkit_format::CreateOptions::new(DiskKind::Dynamic, 4 * MIB),
    )
    .unwrap();
    let id = Disk::open(&base).unwrap().top().footer().unique_id;
    let mut n = NewVhdx::new(DiskType::Differencing, 4 * MIB);
    n.block_size = MIB as u32;
    let child = dir.path().join("child.avhdx");
    build(
        &child,
        &n,
        Some(ParentLocator::new(id, Some("base.vhd"), None, None)),
        &[],
    );
    let e = Disk::open(&child).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("VHD"), "{e}");
}

#[test]
fn pending_log_is_replayed_in_memory_on_a_read_only_open() {
    let dir = tempdir();
    let path = dir.path().join("log.vhdx");
    let before = file_with_pending_log(&path);
    let f = VhdFile::open(&path, &OpenOptions::new()).unwrap();
    assert!(
        f.warnings()
            .iter()
            .any(|w| w.contains("replayed in memory")),
        "{:?}",
        f.warnings()
    );
    drop(f);
    let got = vhdkit_read(&path);
    assert!(got[3 * MIB as usize..(3 * MIB + 4096) as usize]
        .iter()
        .all(|&b| b == 0x77));
    assert!(got[(3 * MIB + 4096) as usize..].iter().all(|&b| b == 0));
    assert!(got[..3 * MIB as usize].iter().all(|&b| b == 0));
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "a read-only open never writes"
    );
    // qemu-img refuses to read the file read-only; after a writable open replayed the
    // log on disk, qemu-img and vhdkit read what the in-memory replay showed.
    let r = run_cmd(Command::new("qemu-img").args([
        "convert",
        "-f",
        "vhdx",
        "-O",
        "raw",
        s(&path),
        "/dev/null",
    ]));
    assert_ne!(
        r.code, 0,
        "qemu-img reads a file with a pending log read-only?"
    );
    drop(VhdFile::open(&path, &OpenOptions::new().writable(true)).unwrap());
    assert!(vhdkit_read(&path) == got);
    assert!(qemu_raw(&path) == got);
}

#[test]
fn pending_log_is_replayed_on_disk_on_a_writable_open() {
    let dir = tempdir();
    let path = dir.path().join("log.vhdx");
    file_with_pending_log(&path);
    let f = VhdFile::open(&path, &OpenOptions::new().writable(true)).unwrap();
    assert!(
        f.warnings()
            .iter()
            .any(|w| w.contains("replayed the VHDX log")),
        "{:?}",
        f.warnings()
    );
    drop(f);
    let p = ParsedVhdx::decode(&fs::read(&path).unwrap()).unwrap();
    assert!(p.header.header.log_guid.is_nil(), "the log is cleared");
    assert_eq!(p.header.slot, HeaderSlot::Second);
    assert_eq!(p.header.header.sequence_number, 10);
    assert!(p.replay.is_none());
    // Now qemu-img opens it read-only too, with the same bytes, and finds it clean.
    tool("qemu-img", &["check", "-q", "-f", "vhdx", s(&path)]);
    let got = vhdkit_read(&path);
    assert!(qemu_raw(&path) == got);
    assert!(got[3 * MIB as usize..(3 * MIB + 4096) as usize]
        .iter()
        .all(|&b| b == 0x77));
}

#[test]
fn damaged_files_are_refused_with_structure_and_offset_never_a_panic() {
    let dir = tempdir();
    let good = dir.path().join("good.vhdx");
    tool(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vhdx",
            "-o",
            "block_size=1M",
            s(&good),
            "64M",
        ],
    );
    tool(
        "qemu-io",
        &["-f", "vhdx", "-c", "write -P 1 0 3M", s(&good)],
    );
    let bytes = fs::read(&good).unwrap();
    let bad: PathBuf = dir.path().join("bad.vhdx");
    // Both headers damaged: refused, naming the headers.
    let mut b = bytes.clone();
    b[64 * 1024 + 100] ^= 1;
    b[128 * 1024 + 100] ^= 1;
    fs::write(&bad, &b).unwrap();
    let e = VhdFile::open(&bad, &OpenOptions::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("header"), "{e}");
    assert_eq!(e.hresult(), vhdkit_format::HResult::VM_E_INVALID_HD_FILE);
    // Cut inside the BAT or the payload.
    let p = ParsedVhdx::decode(&bytes).unwrap();
    for cut in [
        100_000u64,
        p.regions.bat.offset + 8,
        bytes.len() as u64 - MIB,
    ] {
        fs::write(&bad, &bytes[..cut as usize]).unwrap();
        let e = VhdFile::open(&bad, &OpenOptions::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "cut at {cut}: {e}");
    }
    // Every 4 KiB of the metadata areas flipped in turn: an error or a file, no panic.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for at in (0..p.areas.metadata_end()).step_by(4096) {
        let mut b = bytes.clone();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = (at + rng % 4096) as usize;
        b[i] ^= 1 << (rng % 8);
        fs::write(&bad, &b).unwrap();
        if let Ok(f) = VhdFile::open(&bad, &OpenOptions::new()) {
            let _ = f.extents(0, f.virtual_size());
        }
    }
    // A BAT region claiming 4 GiB in a small file: refused before anything that size.
    let mut b = bytes.clone();
    for copy in [192 * 1024usize, 256 * 1024] {
        let t = &mut b[copy..copy + 64 * 1024];
        for e in 0..2 {
            let at = 16 + 32 * e;
            let guid = Uuid::from_bytes_le(t[at..at + 16].try_into().unwrap());
            if guid == vhdkit_format::vhdx::region::BAT_REGION_GUID {
                t[at + 24..at + 28].copy_from_slice(&u32::MAX.to_le_bytes());
            }
        }
        let crc = {
            t[4..8].fill(0);
            crc32c_of(t)
        };
        t[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    fs::write(&bad, &b).unwrap();
    let e = VhdFile::open(&bad, &OpenOptions::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

/// CRC-32C (Castagnoli), bit by bit (the test's own, not the crate's).
fn crc32c_of(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Runs of bytes written at unaligned offsets, some crossing blocks.
fn runs() -> Vec<(u64, Vec<u8>)> {
    vec![
        (1000, vec![0xa1; 3000]),
        (MIB - 100, vec![0xa2; 5000]),
        (5 * MIB + 4096, vec![0xa3; 2 * MIB as usize]),
        (11 * MIB + 7, vec![0xa4; 600]),
    ]
}

fn write_and_model(path: &Path, mut want: Vec<u8>) -> Vec<u8> {
    let d = Disk::open_rw(path).unwrap();
    for (at, bytes) in runs() {
        d.write_at(&bytes, at).unwrap();
        want[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
    }
    // The same handle reads what it wrote, before and after the flush.
    let mut now = vec![0u8; want.len()];
    d.read_at(&mut now, 0).unwrap();
    assert!(
        now == want,
        "{}: read back through the writing handle",
        path.display()
    );
    d.flush().unwrap();
    d.read_at(&mut now, 0).unwrap();
    assert!(now == want);
    want
}

#[test]
fn writes_into_qemu_files_read_back_identically_in_qemu_and_check_clean() {
    let dir = tempdir();
    for (sub, zero) in [
        ("dynamic", "on"),
        ("dynamic", "off"),
        ("fixed", "on"),
        ("fixed", "off"),
    ] {
        let f = dir.path().join(format!("{sub}-{zero}.vhdx"));
        let o = format!("subformat={sub},block_size=1M,block_state_zero={zero}");
        tool(
            "qemu-img",
            &["create", "-q", "-f", "vhdx", "-o", &o, s(&f), "12M"],
        );
        tool(
            "qemu-io",
            &["-f", "vhdx", "-c", "write -P 0x3c 512k 1M", s(&f)],
        );
        let before = ParsedVhdx::decode(&fs::read(&f).unwrap()).unwrap();
        let want = write_and_model(&f, qemu_raw(&f));
        let after = ParsedVhdx::decode(&fs::read(&f).unwrap()).unwrap();
        assert!(
            after.header.header.log_guid.is_nil(),
            "flush closes the log"
        );
        assert_ne!(
            after.header.header.data_write_guid, before.header.header.data_write_guid,
            "the data write GUID changes with the data"
        );
        tool("qemu-img", &["check", "-q", "-f", "vhdx", s(&f)]);
        assert!(vhdkit_read(&f) == want, "{}: vhdkit", f.display());
        assert!(qemu_raw(&f) == want, "{}: qemu-img", f.display());
        // A second session writes over what the first allocated.
        let want = write_and_model(&f, want);
        assert!(qemu_raw(&f) == want);
    }
}

#[test]
fn writes_into_a_differencing_vhdx_set_sector_bitmap_bits_libvhdi_reads() {
    for sector in [512u32, 4096] {
        let dir = tempdir();
        let size = 12 * MIB;
        let mut n = NewVhdx::new(DiskType::Dynamic, size);
        n.block_size = MIB as u32;
        n.logical_sector_size = sector;
        let base_blocks: &[(u64, Content)] = &[(0, Content::Full(0x11)), (5, Content::Full(0x12))];
        let base = dir.path().join("base.vhdx");
        let (_, id) = build(&base, &n, None, base_blocks);
        n.disk_type = DiskType::Differencing;
        let child_blocks: &[(u64, Content)] =
            &[(1, Content::Zero), (11, Content::Partial(0x21, 3, 2))];
        let child = dir.path().join("child.avhdx");
        build(
            &child,
            &n,
            Some(ParentLocator::new(id, Some("base.vhdx"), None, None)),
            child_blocks,
        );
        let want = write_and_model(&child, vhdkit_read(&child));
        assert!(vhdkit_read(&child) == want, "{sector}: vhdkit");
        let p = ParsedVhdx::decode(&fs::read(&child).unwrap()).unwrap();
        assert!(p.header.header.log_guid.is_nil());
        // libvhdi reads the zero-state block from the parent (see the chain test): the
        // writes cover none of block 1 but its first sectors, which are now present.
        let libvhdi = pyvhdi_read_all(&[&child, &base]);
        let first_diff = (0..want.len()).find(|&i| want[i] != libvhdi[i]);
        assert!(
            first_diff.is_none_or(|i| (MIB as usize..2 * MIB as usize).contains(&i)),
            "{sector}: libvhdi differs at {first_diff:?}"
        );
    }
}

#[test]
fn absolute_locator_paths_outside_the_child_folder_need_permission() {
    let parent_dir = tempdir();
    let child_dir = tempdir();
    let mut n = NewVhdx::new(DiskType::Dynamic, 4 * MIB);
    n.block_size = MIB as u32;
    let base = parent_dir.path().join("base.vhdx");
    let (_, id) = build(&base, &n, None, &[(0, Content::Full(7))]);
    n.disk_type = DiskType::Differencing;
    let win = format!("C:{}", base.display()).replace('/', "\\");
    let volume = format!(
        r"\\?\Volume{{26a21bda-a627-11d7-9931-806e6f6e6963}}{}",
        base.display()
    )
    .replace('/', "\\");
    for (abs, vol) in [(Some(win.as_str()), None), (None, Some(volume.as_str()))] {
        let child = child_dir.path().join("child.avhdx");
        build(
            &child,
            &n,
            Some(ParentLocator::new(id, None, vol, abs)),
            &[],
        );
        let e = Disk::open(&child).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ParentNotFound, "{e}");
        let opts = OpenOptions::new().absolute_parents(true);
        let d = Disk::open_with(&child, &opts).unwrap();
        assert_eq!(d.layers()[1].path(), base.as_path());
        assert_eq!(
            d.found_by(1),
            Some(vhdkit_format::image::FoundBy::AbsoluteOutside)
        );
    }
}

#[test]
fn read_only_open_of_a_log_that_only_grows_the_file_reads_zeros_past_its_end() {
    let dir = tempdir();
    let path = dir.path().join("cut.vhdx");
    vhdx_build::file_cut_with_growing_log(&path);
    let before = fs::read(&path).unwrap();
    let disk = Disk::open_with(&path, &OpenOptions::new()).unwrap();
    let mut buf = vec![0xAAu8; 2 * MIB as usize];
    disk.read_at(&mut buf, 2 * MIB).unwrap();
    assert!(buf.iter().all(|&x| x == 0), "block 3 reads zeros");
    drop(disk);
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "a read-only open writes nothing"
    );
    // Opened for writing, the replay grows the file: the same zeros.
    let disk = Disk::open_with(&path, &OpenOptions::new().writable(true)).unwrap();
    let mut buf = vec![0xAAu8; MIB as usize];
    disk.read_at(&mut buf, 3 * MIB).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
}
