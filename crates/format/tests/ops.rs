//! The four disk operations end to end, judged by other readers where the format allows:
//! convert (every source kind to every target kind), compact (dynamic and differencing),
//! merge and merge-to of a three-level chain, and the HRESULTs of the refusals.
//!
//! qemu-img reads fixed and dynamic VHDs; libvhdi (pyvhdi under /usr/bin/python3) reads
//! differencing chains. A missing reader fails the test.

mod common;

use std::path::{Path, PathBuf};

use vhdkit_format::check::check;
use vhdkit_format::ops::{self, OpsOptions, Report, Target};
use vhdkit_format::{CreateOptions, Disk, DiskKind, HostDrives, OpenOptions, VhdFile};
use vhdkit_task::{HResult, VMTaskResult};

use common::*;

/// A disk size that is not a multiple of any block size used: the last block is short.
const SIZE: u64 = 8 * MIB + 300 * KIB;

fn opts() -> OpsOptions {
    OpsOptions {
        verify: true,
        // The host-drive sources' "device" is a regular file.
        open: OpenOptions::new().host_drives(HostDrives::BlockDevicesAndFiles),
        ..OpsOptions::default()
    }
}

fn hr(e: vhdkit_format::Error) -> HResult {
    e.hresult()
}

/// Runs a task to the end and returns its report, asserting the IVMTask2 members of a
/// successful task.
fn finish(task: ops::OpTask) -> Report {
    assert!(task.wait_for_completion(Some(std::time::Duration::from_secs(120))));
    assert_eq!(
        task.result(),
        Some(VMTaskResult::Success),
        "{}",
        task.error_description()
    );
    assert_eq!(task.error(), HResult::S_OK);
    assert_eq!(task.percent_completed(), 100);
    task.join().expect("the operation succeeded")
}

// ---------------------------------------------------------------------------------------
// Convert: every source kind to every target kind
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Source {
    Fixed,
    Dynamic,
    Chain,
    HostDrive,
    Raw,
}

/// Builds a source of `kind` in `dir`: (path to convert, model of its view, files that
/// must stay untouched).
fn make_source(dir: &Path, kind: Source, seed: u64) -> (PathBuf, Vec<u8>, Vec<PathBuf>) {
    let unit = 512 * KIB;
    match kind {
        Source::Fixed | Source::Dynamic => {
            let p = dir.join("src.vhd");
            let k = if matches!(kind, Source::Fixed) {
                DiskKind::Fixed
            } else {
                DiskKind::Dynamic
            };
            create_at(&p, k, SIZE, unit as u32);
            let mut m = Model::new(SIZE);
            write_mixed(&p, &mut m, unit, seed);
            // The judge of the source itself.
            assert_bytes_eq("qemu-img read of the source", &qemu_read_all(&p), &m.0);
            (p.clone(), m.0, vec![p])
        }
        Source::Chain => {
            let (top, mid, base, m) = three_level_chain(dir, SIZE, seed);
            assert_bytes_eq(
                "libvhdi read of the source chain",
                &pyvhdi_read_all(&[&top, &mid, &base]),
                &m.0,
            );
            (top.clone(), m.0, vec![top, mid, base])
        }
        Source::HostDrive | Source::Raw => {
            let dev = dir.join(if matches!(kind, Source::Raw) {
                "src.img"
            } else {
                "drive.img"
            });
            let writes = mixed_writes(SIZE, unit, seed);
            {
                use vhdkit_platform::FileExt;
                let f = std::fs::File::create(&dev).expect("create the device file");
                f.set_len(SIZE).expect("size the device file");
                for (off, data) in &writes {
                    f.write_all_at(data, *off).expect("write the device file");
                }
            }
            let m = Model::from_writes(SIZE, &writes);
            if matches!(kind, Source::Raw) {
                return (dev.clone(), m.0, vec![dev]);
            }
            let stub = dir.join("drive.vhd");
            Disk::create(&stub, &CreateOptions::host_drive(&dev, false))
                .expect("create the host-drive stub");
            assert_eq!(
                Disk::open_with(&stub, &opts().open)
                    .expect("open the stub")
                    .kind(),
                DiskKind::HostDrive
            );
            (stub.clone(), m.0, vec![stub, dev])
        }
    }
}

fn convert_pair(kind: Source, target: Target, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, want, inputs) = make_source(dir.path(), kind, seed);
    let before: Vec<Vec<u8>> = inputs
        .iter()
        .map(|p| std::fs::read(p).expect("read input"))
        .collect();
    let dst = dir.path().join(format!("dst.{}", target.name()));
    // A dynamic target with a block size other than the source's.
    let o = OpsOptions {
        block_size: MIB as u32,
        ..opts()
    };

    let report = finish(ops::convert_task(&src, &dst, target, &o).expect("convert starts"));

    // The report.
    let unit = if target == Target::Dynamic {
        MIB
    } else {
        2 * MIB
    };
    assert_eq!(report.operation, ops::Operation::Convert);
    assert_eq!(report.path, dst);
    assert_eq!(report.blocks_total, SIZE.div_ceil(unit));
    assert_eq!(
        report.blocks_copied + report.blocks_zero,
        report.blocks_total
    );
    let nonzero = want
        .chunks(unit as usize)
        .filter(|c| c.iter().any(|&b| b != 0))
        .count() as u64;
    assert_eq!(report.blocks_copied, nonzero, "blocks with data");
    assert!(report.verified);
    assert_eq!(report.file_size_after, file_len(&dst));
    // Every byte, judged by another reader where one reads the result.
    match target {
        Target::Raw => {
            assert_eq!(file_len(&dst), SIZE);
            assert_bytes_eq("raw result", &std::fs::read(&dst).expect("read"), &want);
        }
        Target::Fixed | Target::Dynamic => {
            assert_bytes_eq("qemu-img read of the result", &qemu_read_all(&dst), &want);
            assert_bytes_eq(
                "libvhdi read of the result",
                &pyvhdi_read_all(&[&dst]),
                &want,
            );
            assert_bytes_eq("vhdkit read of the result", &read_file(&dst), &want);
            let kind = Disk::open(&dst).expect("open").kind();
            if target == Target::Fixed {
                assert_eq!(kind, DiskKind::Fixed);
                assert_eq!(file_len(&dst), SIZE + 512);
            } else {
                assert_eq!(kind, DiskKind::Dynamic);
                // Zero blocks are holes: only blocks with data are allocated.
                assert_eq!(allocated(&dst), nonzero);
            }
            let r = check(&dst, &OpenOptions::new()).expect("check");
            assert!(r.is_clean(), "{r:?}");
        }
    }
    // The source is untouched, and nothing else is left behind.
    for (p, b) in inputs.iter().zip(&before) {
        assert!(
            std::fs::read(p).expect("read input") == *b,
            "{} changed",
            p.display()
        );
    }
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        dir_names(dir.path())
    );
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_fixed_to_fixed_preserves_every_byte() {
    convert_pair(Source::Fixed, Target::Fixed, 11);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_fixed_to_dynamic_preserves_every_byte() {
    convert_pair(Source::Fixed, Target::Dynamic, 12);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_fixed_to_raw_preserves_every_byte() {
    convert_pair(Source::Fixed, Target::Raw, 13);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_dynamic_to_fixed_preserves_every_byte() {
    convert_pair(Source::Dynamic, Target::Fixed, 21);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_dynamic_to_dynamic_preserves_every_byte() {
    convert_pair(Source::Dynamic, Target::Dynamic, 22);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_dynamic_to_raw_preserves_every_byte() {
    convert_pair(Source::Dynamic, Target::Raw, 23);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_chain_to_fixed_flattens_every_byte() {
    convert_pair(Source::Chain, Target::Fixed, 31);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_chain_to_dynamic_flattens_every_byte() {
    convert_pair(Source::Chain, Target::Dynamic, 32);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_chain_to_raw_flattens_every_byte() {
    convert_pair(Source::Chain, Target::Raw, 33);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_host_drive_to_fixed_preserves_every_byte() {
    convert_pair(Source::HostDrive, Target::Fixed, 41);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_host_drive_to_dynamic_preserves_every_byte() {
    convert_pair(Source::HostDrive, Target::Dynamic, 42);
}

#[test]
fn convert_host_drive_to_raw_preserves_every_byte() {
    convert_pair(Source::HostDrive, Target::Raw, 43);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_raw_to_fixed_preserves_every_byte() {
    convert_pair(Source::Raw, Target::Fixed, 51);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn convert_raw_to_dynamic_preserves_every_byte() {
    convert_pair(Source::Raw, Target::Dynamic, 52);
}

#[test]
fn convert_raw_to_raw_preserves_every_byte() {
    convert_pair(Source::Raw, Target::Raw, 53);
}

// ---------------------------------------------------------------------------------------
// Compact
// ---------------------------------------------------------------------------------------

/// Where vhdkit puts the blocks of a dynamic disk with `entries` BAT entries and no
/// locators: footer copy (512) · header (1024) · BAT (whole sectors) · blocks whose data
/// starts on a 4 KiB boundary, bitmap just before. Returns the file size with `live`
/// blocks packed at the front, worked out by hand from the format, not from vhdkit.
fn packed_dynamic_size(entries: u64, block_size: u64, live: u64) -> u64 {
    let bitmap = (block_size / 512).div_ceil(8).div_ceil(512) * 512;
    let metadata_end = 512 + 1024 + (entries * 4).div_ceil(512) * 512;
    if live == 0 {
        return metadata_end + 512;
    }
    let align = |free: u64| (free + bitmap).div_ceil(4096) * 4096 - bitmap;
    let mut at = align(metadata_end);
    for _ in 1..live {
        at = align(at + bitmap + block_size);
    }
    at + bitmap + block_size + 512
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn compact_dynamic_with_zeroed_blocks_shrinks_to_live_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    let bs = 512 * KIB;
    let size = 16 * MIB;
    create_at(&p, DiskKind::Dynamic, size, bs as u32);
    // Every block written, in index order; then every third block and block 30 zeroed
    // whole, block 4 zeroed but for one sector (it must stay).
    let mut w: Vec<Write> = Vec::new();
    let mut rng = Rng::xorshift_star(7);
    for b in 0..size / bs {
        w.push((b * bs, rng.bytes(bs as usize)));
    }
    for b in (0..size / bs).filter(|b| b % 3 == 1 || *b == 30) {
        w.push((b * bs, vec![0; bs as usize]));
    }
    w.push((4 * bs, vec![0; (bs - 512) as usize]));
    write_disk(&p, &w);
    let m = Model::from_writes(size, &w);
    let released = (0..size / bs).filter(|b| b % 3 == 1 || *b == 30).count() as u64;
    let live = size / bs - released;
    let pre_raw = dir.path().join("pre.raw");
    std::fs::write(&pre_raw, read_file(&p)).expect("save the content");
    assert_eq!(qemu_compare_raw(&p, &pre_raw), 0, "qemu reads the model");
    let size_before = file_len(&p);
    assert_eq!(size_before, packed_dynamic_size(32, bs, 32));

    let report = finish(ops::compact_task(&p, &opts()).expect("compact starts"));

    let expected = packed_dynamic_size(32, bs, live);
    assert_eq!(file_len(&p), expected, "metadata + live blocks + footer");
    assert_eq!(report.operation, ops::Operation::Compact);
    assert_eq!(report.blocks_total, 32);
    assert_eq!(report.blocks_released, released);
    assert!(report.blocks_moved > 0);
    assert_eq!(report.file_size_before, size_before);
    assert_eq!(report.file_size_after, expected);
    assert!(report.verified);
    assert_eq!(allocated(&p), live);
    assert_eq!(qemu_compare_raw(&p, &pre_raw), 0, "qemu-img compare");
    assert_bytes_eq("vhdkit read after compact", &read_file(&p), &m.0);
    let r = check(&p, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{r:?}");
    // A fresh convert of the same content is exactly as large.
    let fresh = dir.path().join("fresh.vhd");
    let o = OpsOptions {
        block_size: bs as u32,
        ..OpsOptions::default()
    };
    finish(ops::convert_task(&pre_raw, &fresh, Target::Dynamic, &o).expect("convert starts"));
    assert_eq!(file_len(&fresh), file_len(&p));
}

#[test]
fn compact_dynamic_twice_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    create_at(&p, DiskKind::Dynamic, 8 * MIB, (512 * KIB) as u32);
    write_disk(&p, &mixed_writes(8 * MIB, 512 * KIB, 3));
    finish(ops::compact_task(&p, &OpsOptions::default()).expect("compact starts"));
    let bytes = std::fs::read(&p).expect("read");

    let report = finish(ops::compact_task(&p, &OpsOptions::default()).expect("compact starts"));

    assert_eq!(report.blocks_released, 0);
    assert_eq!(report.blocks_moved, 0);
    assert!(
        std::fs::read(&p).expect("read") == bytes,
        "the file changed"
    );
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn compact_dynamic_of_only_zero_blocks_leaves_only_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    create_at(&p, DiskKind::Dynamic, 8 * MIB, (512 * KIB) as u32);
    let disk = Disk::open_rw(&p).expect("open");
    disk.write_at(&vec![0; (3 * MIB) as usize], 1000)
        .expect("write zeros");
    disk.flush().expect("flush");
    drop(disk);
    assert!(allocated(&p) > 0);

    finish(ops::compact_task(&p, &OpsOptions::default()).expect("compact starts"));

    assert_eq!(allocated(&p), 0);
    assert_eq!(file_len(&p), packed_dynamic_size(16, 512 * KIB, 0));
    assert!(read_file(&p).iter().all(|&b| b == 0));
    assert!(qemu_read_all(&p).iter().all(|&b| b == 0));
}

/// Clears the sector bitmap of allocated `block` of the differencing disk at `path` by
/// writing into the file: the block stays allocated but holds nothing of its own.
fn clear_bitmap(path: &Path, block: u64) {
    use vhdkit_platform::FileExt;
    let f = VhdFile::open(path, &OpenOptions::new()).expect("open");
    let at = f
        .bat()
        .expect("a BAT")
        .block_offset(block)
        .expect("allocated");
    let n = f.bitmap_size().expect("a bitmap") as usize;
    drop(f);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for writing");
    file.write_all_at(&vec![0; n], at).expect("clear bitmap");
    file.sync_all().expect("sync");
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn compact_differencing_releases_only_blocks_with_empty_bitmaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    let bs = 512 * KIB;
    let size = 16 * MIB;
    create_at(&base, DiskKind::Dynamic, size, bs as u32);
    let mut rng = Rng::xorshift_star(5);
    write(&base, &rng.bytes(size as usize), 0);
    create_child_at(&child, &base, bs as u32);
    // Child: data in blocks 0, 3, 6, …; zeros (bits set: they hide the parent) in 1 and
    // 7; data in 2, 8, 11 whose bitmaps are then cleared (they read from the parent).
    let mut cw: Vec<Write> = Vec::new();
    for b in (0..32).filter(|b| b % 3 == 0) {
        cw.push((b * bs + 4096, rng.bytes((bs - 8192) as usize)));
    }
    for b in [1, 7] {
        cw.push((b * bs, vec![0; bs as usize]));
    }
    for b in [2, 8, 11] {
        cw.push((b * bs, rng.bytes(bs as usize)));
    }
    write_disk(&child, &cw);
    for b in [2, 8, 11] {
        clear_bitmap(&child, b);
    }
    let want = read_file(&child);
    for b in [1u64, 7] {
        assert!(want[(b * bs) as usize..((b + 1) * bs) as usize]
            .iter()
            .all(|&x| x == 0));
    }
    assert_bytes_eq(
        "libvhdi read of the chain before",
        &pyvhdi_read_all(&[&child, &base]),
        &want,
    );
    let allocated_before = allocated(&child);
    let size_before = file_len(&child);
    let base_bytes = std::fs::read(&base).expect("read base");

    let report = finish(ops::compact_task(&child, &opts()).expect("compact starts"));

    assert_eq!(report.blocks_released, 3);
    assert_eq!(allocated(&child), allocated_before - 3);
    let f = VhdFile::open(&child, &OpenOptions::new()).expect("open");
    let bat = f.bat().expect("a BAT");
    for b in [1u64, 7] {
        assert!(
            bat.block_offset(b).is_some(),
            "zero block {b} with bits set was released"
        );
    }
    for b in [2u64, 8, 11] {
        assert!(bat.block_offset(b).is_none(), "empty block {b} was kept");
    }
    drop(f);
    let pitch = 512 * KIB + 4096;
    assert_eq!(file_len(&child), size_before - 3 * pitch);
    assert_bytes_eq(
        "libvhdi read of the chain after",
        &pyvhdi_read_all(&[&child, &base]),
        &want,
    );
    assert_bytes_eq("vhdkit read after compact", &read_file(&child), &want);
    assert!(
        std::fs::read(&base).expect("read base") == base_bytes,
        "base changed"
    );
    let r = check(&child, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Merge and merge-to
// ---------------------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn merge_three_level_chain_parent_reads_the_child_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (top, mid, base, m) = three_level_chain(dir.path(), SIZE, 61);
    let want = m.0;
    assert_bytes_eq("vhdkit view of the chain", &read_file(&top), &want);
    assert_bytes_eq(
        "libvhdi read of the chain before",
        &pyvhdi_read_all(&[&top, &mid, &base]),
        &want,
    );
    let base_bytes = std::fs::read(&base).expect("read base");

    let report = finish(ops::merge_task(&top, &OpsOptions::default()).expect("merge starts"));

    assert_eq!(report.operation, ops::Operation::Merge);
    assert_eq!(report.path, mid);
    assert_eq!(report.blocks_total, report.blocks_copied);
    assert!(report.bytes_written > 0);
    assert!(top.exists(), "the child is kept");
    assert_bytes_eq(
        "libvhdi read of the parent after",
        &pyvhdi_read_all(&[&mid, &base]),
        &want,
    );
    assert_bytes_eq(
        "libvhdi read of the child after",
        &pyvhdi_read_all(&[&top, &mid, &base]),
        &want,
    );
    assert_bytes_eq("vhdkit read of the parent", &read_file(&mid), &want);
    assert_bytes_eq("vhdkit read of the child", &read_file(&top), &want);
    assert!(
        std::fs::read(&base).expect("read") == base_bytes,
        "the grandparent changed"
    );
    for p in [&top, &mid] {
        let r = check(p, &OpenOptions::new()).expect("check");
        assert!(r.is_clean(), "{}: {r:?}", p.display());
    }
}

fn merge_into_base(kind: DiskKind, delete_child: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    create_at(&base, kind, SIZE, (512 * KIB) as u32);
    let mut m = Model::new(SIZE);
    write_mixed(&base, &mut m, 512 * KIB, 71);
    create_child_at(&child, &base, (2 * MIB) as u32);
    write_mixed(&child, &mut m, 256 * KIB, 72);
    assert_bytes_eq("vhdkit view of the chain", &read_file(&child), &m.0);
    let o = OpsOptions {
        delete_child,
        ..OpsOptions::default()
    };

    finish(ops::merge_task(&child, &o).expect("merge starts"));

    assert_bytes_eq("qemu-img read of the parent", &qemu_read_all(&base), &m.0);
    assert_bytes_eq("vhdkit read of the parent", &read_file(&base), &m.0);
    assert_eq!(child.exists(), !delete_child);
    if !delete_child {
        assert_bytes_eq("vhdkit read of the child", &read_file(&child), &m.0);
    }
    let r = check(&base, &OpenOptions::new()).expect("check");
    assert!(r.is_clean(), "{r:?}");
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn merge_into_dynamic_parent_qemu_reads_the_child_view() {
    merge_into_base(DiskKind::Dynamic, false);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn merge_into_fixed_parent_qemu_reads_the_child_view() {
    merge_into_base(DiskKind::Fixed, false);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn merge_with_delete_child_deletes_the_child() {
    merge_into_base(DiskKind::Dynamic, true);
}

fn merge_to(target: Target) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (top, mid, base, m) = three_level_chain(dir.path(), SIZE, 81);
    let chain: Vec<Vec<u8>> = [&top, &mid, &base]
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let dst = dir.path().join("flat.vhd");

    let report = finish(ops::merge_to_task(&top, &dst, target, &opts()).expect("merge-to starts"));

    assert_eq!(report.operation, ops::Operation::MergeTo);
    assert!(report.verified);
    assert_bytes_eq("qemu-img read of the result", &qemu_read_all(&dst), &m.0);
    assert_bytes_eq("vhdkit read of the result", &read_file(&dst), &m.0);
    let kind = Disk::open(&dst).expect("open").kind();
    assert_eq!(
        kind,
        if target == Target::Fixed {
            DiskKind::Fixed
        } else {
            DiskKind::Dynamic
        }
    );
    for (p, b) in [&top, &mid, &base].iter().zip(&chain) {
        assert!(
            std::fs::read(p).expect("read") == *b,
            "{} changed",
            p.display()
        );
    }
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn merge_to_fixed_of_three_level_chain_equals_the_view() {
    merge_to(Target::Fixed);
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "reads with qemu-img and libvhdi (Linux CI)"
)]
fn merge_to_dynamic_of_three_level_chain_equals_the_view() {
    merge_to(Target::Dynamic);
}

// ---------------------------------------------------------------------------------------
// Refusals and their HRESULTs
// ---------------------------------------------------------------------------------------

fn small_chain(dir: &Path) -> (PathBuf, PathBuf) {
    let base = dir.join("base.vhd");
    let child = dir.join("child.vhd");
    create_at(&base, DiskKind::Dynamic, 4 * MIB, (512 * KIB) as u32);
    write_disk(&base, &mixed_writes(4 * MIB, 512 * KIB, 1));
    create_child_at(&child, &base, (512 * KIB) as u32);
    write_disk(&child, &mixed_writes(4 * MIB, 512 * KIB, 2));
    (child, base)
}

#[test]
fn compact_of_fixed_disk_is_wrong_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("f.vhd");
    create_at(&p, DiskKind::Fixed, 4 * MIB, 0);
    let bytes = std::fs::read(&p).expect("read");

    let e = ops::compact_task(&p, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_WRONG_HD_IMAGE_TYPE);
    assert!(std::fs::read(&p).expect("read") == bytes);
}

#[test]
fn merge_of_dynamic_disk_is_wrong_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    create_at(&p, DiskKind::Dynamic, 4 * MIB, (512 * KIB) as u32);

    let e = ops::merge_task(&p, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_WRONG_HD_IMAGE_TYPE);
}

#[test]
fn merge_to_of_dynamic_disk_is_wrong_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.vhd");
    create_at(&p, DiskKind::Dynamic, 4 * MIB, (512 * KIB) as u32);
    let dst = dir.path().join("out.vhd");

    let e =
        ops::merge_to_task(&p, &dst, Target::Fixed, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_WRONG_HD_IMAGE_TYPE);
    assert!(!dst.exists());
}

#[test]
fn convert_to_existing_target_already_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, _) = small_chain(dir.path());
    let dst = dir.path().join("taken.vhd");
    std::fs::write(&dst, b"not to be replaced").expect("write");

    let e = ops::convert_task(&child, &dst, Target::Dynamic, &OpsOptions::default())
        .expect_err("refused");

    assert_eq!(hr(e), HResult::E_ALREADY_EXISTS);
    assert_eq!(std::fs::read(&dst).expect("read"), b"not to be replaced");
}

#[test]
fn merge_to_existing_target_already_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, _) = small_chain(dir.path());
    let dst = dir.path().join("taken.vhd");
    std::fs::write(&dst, b"not to be replaced").expect("write");

    let e = ops::merge_to_task(&child, &dst, Target::Fixed, &OpsOptions::default())
        .expect_err("refused");

    assert_eq!(hr(e), HResult::E_ALREADY_EXISTS);
    assert_eq!(std::fs::read(&dst).expect("read"), b"not to be replaced");
}

/// Moves the parent away; returns the child.
fn orphan(dir: &Path) -> PathBuf {
    let (child, base) = small_chain(dir);
    std::fs::create_dir(dir.join("elsewhere")).expect("mkdir");
    std::fs::rename(&base, dir.join("elsewhere/base.vhd")).expect("move the parent away");
    child
}

#[test]
fn convert_with_missing_parent_is_parent_path_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = orphan(dir.path());
    let dst = dir.path().join("out.vhd");

    let e = ops::convert_task(&child, &dst, Target::Dynamic, &OpsOptions::default())
        .expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_PARENT_PATH_NOT_FOUND);
    assert!(!dst.exists());
    assert!(temp_files(dir.path()).is_empty());
}

#[test]
fn merge_with_missing_parent_is_parent_path_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = orphan(dir.path());
    let bytes = std::fs::read(&child).expect("read");

    let e = ops::merge_task(&child, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_PARENT_PATH_NOT_FOUND);
    assert!(std::fs::read(&child).expect("read") == bytes);
}

#[test]
fn merge_to_with_missing_parent_is_parent_path_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = orphan(dir.path());
    let dst = dir.path().join("out.vhd");

    let e = ops::merge_to_task(&child, &dst, Target::Dynamic, &OpsOptions::default())
        .expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_PARENT_PATH_NOT_FOUND);
    assert!(!dst.exists());
}

/// Merge checks the parent's permission bits itself, so the refusal holds even for
/// root, whom the file system would let write.
#[cfg(unix)]
#[test]
fn merge_into_read_only_parent_is_file_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, base) = small_chain(dir.path());
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let (base_bytes, child_bytes) = (
        std::fs::read(&base).expect("read"),
        std::fs::read(&child).expect("read"),
    );

    let e = ops::merge_task(&child, &OpsOptions::default()).expect_err("refused");

    assert_eq!(hr(e), HResult::VM_E_FILE_READ_ONLY);
    assert!(
        std::fs::read(&base).expect("read") == base_bytes,
        "the parent changed"
    );
    assert!(
        std::fs::read(&child).expect("read") == child_bytes,
        "the child changed"
    );
}

#[test]
fn merge_to_raw_target_writes_the_chains_view() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (child, _) = small_chain(dir.path());
    let dst = dir.path().join("out.img");

    let r = finish(
        ops::merge_to_task(&child, &dst, Target::Raw, &OpsOptions::default()).expect("started"),
    );

    let want = read_all(&Disk::open(&child).expect("open chain"));
    assert_eq!(std::fs::read(&dst).expect("read raw"), want);
    assert_eq!(r.file_size_after, want.len() as u64);
}
