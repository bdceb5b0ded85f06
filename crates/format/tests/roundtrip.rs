//! Round trip: create a disk, reopen it, decode its structures and compare them with
//! what was asked for; write any byte range and read it back, through every kind of disk
//! and through differencing chains.

mod common;

use common::{assert_bytes_eq, create, create_child, dir_names, pattern, read_file, MIB};
use vhdkit_format::spec::{DiskType, DynamicHeader, Footer, FOOTER_SIZE, HEADER_SIZE};
use vhdkit_format::{CreateOptions, Disk, DiskKind, ErrorKind};

const KIB: u32 = 1024;

/// Sizes that are not multiples of a block, of a cylinder or of a MiB.
const ODD_SIZES: [u64; 4] = [5_000_704, 3 * MIB, 3 * MIB + 512, (1 << 30) + 512];

fn end_footer(bytes: &[u8]) -> Footer {
    Footer::decode(&bytes[bytes.len() - FOOTER_SIZE..]).expect("512 bytes")
}

// ---------------------------------------------------------------------------------------
// Create and reopen
// ---------------------------------------------------------------------------------------

#[test]
fn fixed_create_with_odd_sizes_reopens_with_the_exact_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, size) in ODD_SIZES.into_iter().enumerate() {
        let path = create(dir.path(), &format!("f{i}.vhd"), DiskKind::Fixed, size, 0);
        let disk = Disk::open(&path).expect("open");
        assert_eq!(disk.kind(), DiskKind::Fixed);
        assert_eq!(disk.virtual_size(), size, "size {size}");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            size + FOOTER_SIZE as u64,
            "a fixed disk is its data plus one footer"
        );
        assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
    }
}

#[test]
fn dynamic_create_with_odd_sizes_and_each_block_size_reopens_with_the_exact_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    for block_size in [512 * KIB, 2048 * KIB, 4096 * KIB] {
        for (i, size) in ODD_SIZES.into_iter().enumerate() {
            let name = format!("d{block_size}-{i}.vhd");
            let path = create(dir.path(), &name, DiskKind::Dynamic, size, block_size);
            let disk = Disk::open(&path).expect("open");
            assert_eq!(disk.kind(), DiskKind::Dynamic);
            assert_eq!(disk.virtual_size(), size, "size {size}, block {block_size}");
            assert_eq!(disk.top().block_size(), Some(u64::from(block_size)));
            let header = disk.top().header().expect("dynamic header");
            assert_eq!(
                u64::from(header.max_table_entries),
                size.div_ceil(u64::from(block_size)),
                "one BAT entry per started block"
            );
            assert_eq!(disk.top().allocated_blocks(), 0);
            assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
        }
    }
}

#[test]
fn differencing_create_takes_the_parent_size_and_links_its_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, 5_000_704, 512 * KIB);
    let child = create_child(dir.path(), "c.vhd", &parent, 512 * KIB);

    let disk = Disk::open(&child).expect("open");

    assert_eq!(disk.kind(), DiskKind::Differencing);
    assert_eq!(disk.virtual_size(), 5_000_704);
    assert_eq!(disk.layers().len(), 2);
    let parent_id = disk.layers()[1].footer().unique_id;
    let header = disk.top().header().expect("header");
    assert_eq!(header.parent_unique_id, parent_id);
    assert_eq!(header.parent_name(), "p.vhd");
    assert_ne!(disk.top().footer().unique_id, parent_id);
    assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
}

#[test]
fn create_of_each_kind_writes_a_footer_with_a_valid_checksum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixed = create(dir.path(), "f.vhd", DiskKind::Fixed, 3 * MIB, 0);
    let dynamic = create(dir.path(), "d.vhd", DiskKind::Dynamic, 3 * MIB, 512 * KIB);
    let child = create_child(dir.path(), "c.vhd", &dynamic, 512 * KIB);
    for (path, ty) in [
        (&fixed, DiskType::Fixed),
        (&dynamic, DiskType::Dynamic),
        (&child, DiskType::Differencing),
    ] {
        let bytes = std::fs::read(path).expect("read");
        let footer = end_footer(&bytes);
        assert!(footer.cookie_ok(), "{}", path.display());
        assert!(footer.checksum_ok(), "{}: checksum", path.display());
        assert_eq!(footer.checksum, footer.computed_checksum());
        assert_eq!(footer.disk_type, ty);
        assert_eq!(footer.current_size, 3 * MIB);
        assert!(footer.validate(Some(bytes.len() as u64)).is_empty());
    }
}

#[test]
fn dynamic_create_lays_out_footer_copy_header_and_bat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 5_000_704;
    let path = create(dir.path(), "d.vhd", DiskKind::Dynamic, size, 512 * KIB);

    let bytes = std::fs::read(&path).expect("read");

    let len = bytes.len();
    assert_eq!(len % 512, 0);
    assert_eq!(
        &bytes[..FOOTER_SIZE],
        &bytes[len - FOOTER_SIZE..],
        "the copy at offset 0 equals the footer at the end"
    );
    let footer = end_footer(&bytes);
    assert_eq!(
        footer.data_offset, 512,
        "header right after the footer copy"
    );
    let header = DynamicHeader::decode(&bytes[512..512 + HEADER_SIZE]).expect("1024 bytes");
    assert_eq!(&header.cookie, b"cxsparse");
    assert!(header.checksum_ok());
    assert_eq!(header.table_offset, 1536, "BAT right after the header");
    assert_eq!(header.block_size, 512 * KIB);
    let entries = size.div_ceil(512 * 1024) as usize;
    assert_eq!(header.max_table_entries as usize, entries);
    let bat_end = 1536 + (entries * 4).div_ceil(512) * 512;
    assert!(
        bytes[1536..bat_end].iter().all(|&b| b == 0xFF),
        "every BAT entry (and its padding) is unused"
    );
    assert_eq!(len, bat_end + FOOTER_SIZE, "nothing but metadata yet");
}

// ---------------------------------------------------------------------------------------
// Create refusals
// ---------------------------------------------------------------------------------------

#[test]
fn create_below_3_mib_is_size_too_small_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for kind in [DiskKind::Fixed, DiskKind::Dynamic] {
        let path = dir.path().join("small.vhd");
        let err = Disk::create(&path, &CreateOptions::new(kind, 3 * MIB - 512)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SizeTooSmall, "{kind}: {err}");
        assert!(
            dir_names(dir.path()).is_empty(),
            "{:?}",
            dir_names(dir.path())
        );
    }
}

#[test]
fn create_above_2040_gib_is_size_too_large_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for kind in [DiskKind::Fixed, DiskKind::Dynamic] {
        let path = dir.path().join("big.vhd");
        let size = 2040 * 1024 * MIB + 512;
        let err = Disk::create(&path, &CreateOptions::new(kind, size)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SizeTooLarge, "{kind}: {err}");
        assert!(
            dir_names(dir.path()).is_empty(),
            "{:?}",
            dir_names(dir.path())
        );
    }
}

#[test]
fn create_of_exactly_2040_gib_dynamic_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 2040 * 1024 * MIB;
    let path = create(dir.path(), "max.vhd", DiskKind::Dynamic, size, 2048 * KIB);
    assert_eq!(Disk::open(&path).expect("open").virtual_size(), size);
}

#[test]
fn create_with_size_not_a_multiple_of_512_is_invalid_argument_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    for kind in [DiskKind::Fixed, DiskKind::Dynamic] {
        let path = dir.path().join("odd.vhd");
        let err = Disk::create(&path, &CreateOptions::new(kind, 3 * MIB + 1)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{kind}: {err}");
        assert!(
            dir_names(dir.path()).is_empty(),
            "{:?}",
            dir_names(dir.path())
        );
    }
}

#[test]
fn dynamic_create_with_a_block_size_not_a_power_of_two_is_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.vhd");
    let opts = CreateOptions::new(DiskKind::Dynamic, 3 * MIB).block_size(3 * 512 * KIB);
    let err = Disk::create(&path, &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(dir_names(dir.path()).is_empty());
}

#[test]
fn create_over_an_existing_file_is_already_exists_and_leaves_it_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("taken.vhd");
    let original = pattern(1, 4096);
    std::fs::write(&path, &original).expect("write");
    for opts in [
        CreateOptions::new(DiskKind::Fixed, 3 * MIB),
        CreateOptions::new(DiskKind::Dynamic, 3 * MIB),
    ] {
        let err = Disk::create(&path, &opts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), original);
    }
    assert_eq!(
        dir_names(dir.path()),
        ["taken.vhd"],
        "no temporary file left"
    );
}

#[test]
fn differencing_create_over_an_existing_child_is_already_exists_and_leaves_it_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, 3 * MIB, 512 * KIB);
    let child = create_child(dir.path(), "c.vhd", &parent, 512 * KIB);
    let before = std::fs::read(&child).expect("read");

    let err = Disk::create(&child, &CreateOptions::differencing(&parent)).unwrap_err();

    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read(&child).expect("read"), before);
    assert_eq!(dir_names(dir.path()), ["c.vhd", "p.vhd"]);
}

#[test]
fn differencing_create_with_a_missing_parent_is_parent_not_found_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = dir.path().join("c.vhd");
    let err = Disk::create(
        &child,
        &CreateOptions::differencing(dir.path().join("nope.vhd")),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ParentNotFound, "{err}");
    assert!(
        dir_names(dir.path()).is_empty(),
        "{:?}",
        dir_names(dir.path())
    );
}

#[test]
fn create_failing_while_writing_or_syncing_leaves_no_file_at_all() {
    use vhdkit_format::image::backend::faults::{arm, FaultOp, FaultPlan};
    for (op, errno) in [(FaultOp::Write, 28), (FaultOp::Sync, 5)] {
        for kind in [DiskKind::Fixed, DiskKind::Dynamic] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("new.vhd");
            let result = {
                let _fault = arm(FaultPlan {
                    dir: dir.path().to_owned(),
                    op,
                    nth: 1,
                    errno,
                });
                Disk::create(&path, &CreateOptions::new(kind, 3 * MIB))
            };
            let err = result.expect_err("the injected fault fails the create");
            assert!(
                matches!(err.kind(), ErrorKind::DiskFull | ErrorKind::Io),
                "{kind} {op:?}: {err}"
            );
            assert!(
                dir_names(dir.path()).is_empty(),
                "{kind} {op:?}: left {:?}",
                dir_names(dir.path())
            );
        }
    }
}

#[test]
fn create_of_each_kind_leaves_no_temporary_file_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    create(dir.path(), "f.vhd", DiskKind::Fixed, 3 * MIB, 0);
    let d = create(dir.path(), "d.vhd", DiskKind::Dynamic, 3 * MIB, 512 * KIB);
    create_child(dir.path(), "c.vhd", &d, 512 * KIB);
    assert_eq!(dir_names(dir.path()), ["c.vhd", "d.vhd", "f.vhd"]);
}

// ---------------------------------------------------------------------------------------
// Write and read back
// ---------------------------------------------------------------------------------------

/// A fixed, a dynamic (512 KiB blocks) and a differencing disk (over an empty dynamic
/// parent), all 3 MiB, in `dir`.
fn three_kinds(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let fixed = create(dir, "fixed.vhd", DiskKind::Fixed, 3 * MIB, 0);
    let dynamic = create(dir, "dynamic.vhd", DiskKind::Dynamic, 3 * MIB, 512 * KIB);
    let base = create(dir, "base.vhd", DiskKind::Dynamic, 3 * MIB, 512 * KIB);
    let child = create_child(dir, "child.vhd", &base, 512 * KIB);
    vec![fixed, dynamic, child]
}

#[test]
fn write_of_one_byte_at_offset_1_reads_back_with_its_neighbours_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in three_kinds(dir.path()) {
        let disk = Disk::open_rw(&path).expect("open");
        disk.write_at(&[0xA5], 1).expect("write");
        disk.flush().expect("flush");
        drop(disk);

        let content = read_file(&path);

        let mut expected = vec![0u8; 3 * MIB as usize];
        expected[1] = 0xA5;
        assert_bytes_eq(&path.display().to_string(), &content, &expected);
    }
}

#[test]
fn write_spanning_block_boundaries_reads_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in three_kinds(dir.path()) {
        let bs = 512 * 1024u64;
        // Three blocks touched, both ends unaligned.
        let offset = bs - 1000;
        let data = pattern(2, (bs + 2001) as usize);
        let disk = Disk::open_rw(&path).expect("open");
        disk.write_at(&data, offset).expect("write");
        // A second write straddling the first one's end, into an allocated block.
        let data2 = pattern(3, 777);
        disk.write_at(&data2, offset + data.len() as u64 - 300)
            .expect("write");
        disk.flush().expect("flush");
        drop(disk);

        let content = read_file(&path);

        let mut expected = vec![0u8; 3 * MIB as usize];
        let o = offset as usize;
        expected[o..o + data.len()].copy_from_slice(&data);
        let o2 = o + data.len() - 300;
        expected[o2..o2 + data2.len()].copy_from_slice(&data2);
        assert_bytes_eq(&path.display().to_string(), &content, &expected);
    }
}

#[test]
fn write_of_the_whole_disk_reads_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in three_kinds(dir.path()) {
        let data = pattern(4, 3 * MIB as usize);
        common::write(&path, &data, 0);
        assert_bytes_eq(&path.display().to_string(), &read_file(&path), &data);
    }
}

#[test]
fn write_of_the_last_byte_of_an_odd_sized_dynamic_disk_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 5_000_704u64;
    let path = create(dir.path(), "d.vhd", DiskKind::Dynamic, size, 512 * KIB);
    common::write(&path, b"xyz", size - 3);
    let disk = Disk::open(&path).expect("open");
    assert_eq!(common::read_range(&disk, size - 4, 4), b"\0xyz");
}

#[test]
fn differencing_child_reads_parent_bytes_where_unwritten_and_its_own_where_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Dynamic, 3 * MIB, 512 * KIB);
    let parent_data = pattern(5, 3 * MIB as usize);
    common::write(&parent, &parent_data, 0);
    let child = create_child(dir.path(), "c.vhd", &parent, 512 * KIB);
    let own = pattern(6, 3000);
    let zeros = vec![0u8; 5000];

    let disk = Disk::open_rw(&child).expect("open");
    disk.write_at(&own, 100).expect("write");
    disk.write_at(&zeros, MIB + 7)
        .expect("write zeros over parent data");
    disk.flush().expect("flush");
    drop(disk);

    let mut expected = parent_data.clone();
    expected[100..3100].copy_from_slice(&own);
    expected[MIB as usize + 7..MIB as usize + 5007].fill(0);
    assert_bytes_eq("child", &read_file(&child), &expected);
    assert_bytes_eq("parent unchanged", &read_file(&parent), &parent_data);
}

#[test]
fn differencing_child_of_a_fixed_parent_reads_through_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parent = create(dir.path(), "p.vhd", DiskKind::Fixed, 3 * MIB, 0);
    let parent_data = pattern(7, 3 * MIB as usize);
    common::write(&parent, &parent_data, 0);
    let child = create_child(dir.path(), "c.vhd", &parent, 512 * KIB);
    common::write(&child, b"child", 3 * MIB - 5);

    let mut expected = parent_data;
    expected[3 * MIB as usize - 5..].copy_from_slice(b"child");
    assert_bytes_eq("child", &read_file(&child), &expected);
}

#[test]
fn chain_of_three_levels_reads_the_topmost_written_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 3 * MIB as usize;
    let base = create(
        dir.path(),
        "base.vhd",
        DiskKind::Dynamic,
        3 * MIB,
        512 * KIB,
    );
    let a = pattern(8, size);
    common::write(&base, &a, 0);
    let mid = create_child(dir.path(), "mid.vhd", &base, 2048 * KIB);
    let b = pattern(9, 700_000);
    common::write(&mid, &b, 400_000);
    let top = create_child(dir.path(), "top.vhd", &mid, 512 * KIB);
    let c = pattern(10, 300_001);
    common::write(&top, &c, 900_001);
    common::write(&top, &[0u8; 1024], 2 * MIB);

    let disk = Disk::open(&top).expect("open");
    assert_eq!(disk.layers().len(), 3);

    let mut expected = a;
    expected[400_000..1_100_000].copy_from_slice(&b);
    expected[900_001..1_200_002].copy_from_slice(&c);
    expected[2 * MIB as usize..2 * MIB as usize + 1024].fill(0);
    assert_bytes_eq("top of the chain", &common::read_all(&disk), &expected);
}

#[test]
fn write_into_a_read_only_opened_disk_is_read_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in three_kinds(dir.path()) {
        let before = std::fs::read(&path).expect("read");
        let disk = Disk::open(&path).expect("open");
        let err = disk.write_at(b"x", 10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{}: {err}", path.display());
        let err = disk.write_at(&[1u8; 512], 512).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ReadOnly, "{}: {err}", path.display());
        drop(disk);
        assert_eq!(std::fs::read(&path).expect("read"), before);
    }
}

#[test]
fn read_or_write_past_the_end_is_out_of_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in three_kinds(dir.path()) {
        let disk = Disk::open_rw(&path).expect("open");
        let size = disk.virtual_size();
        let mut buf = [0u8; 2];
        for (offset, len) in [(size - 1, 2usize), (size, 1), (u64::MAX, 1), (u64::MAX, 2)] {
            let err = disk.read_at(&mut buf[..len], offset).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::OutOfRange, "read {offset}+{len}");
            let err = disk.write_at(&buf[..len], offset).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::OutOfRange, "write {offset}+{len}");
        }
        disk.read_at(&mut buf[..1], size - 1)
            .expect("the last byte is in range");
        disk.read_at(&mut [], size)
            .expect("an empty read at the end");
    }
}

#[test]
fn dynamic_disk_that_lost_its_end_footer_gets_it_back_on_the_next_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = create(dir.path(), "d.vhd", DiskKind::Dynamic, 3 * MIB, 512 * KIB);
    common::write(&path, b"first", 0);
    let len = std::fs::metadata(&path).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len - 512).expect("cut the footer off");
    drop(f);

    let disk = Disk::open_rw(&path).expect("opens from the copy at offset 0");
    assert!(!disk.warnings().is_empty(), "opening from the copy warns");
    disk.write_at(b"second", 100)
        .expect("write into the allocated block");
    disk.flush().expect("flush");
    drop(disk);

    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(bytes.len() as u64, len);
    assert_eq!(
        &bytes[..512],
        &bytes[bytes.len() - 512..],
        "footer restored"
    );
    let report =
        vhdkit_format::check::check(&path, &vhdkit_format::OpenOptions::new()).expect("check");
    assert!(report.is_clean());
    let disk = Disk::open(&path).expect("open");
    assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
    assert_eq!(common::read_range(&disk, 0, 5), b"first");
    assert_eq!(common::read_range(&disk, 100, 6), b"second");
}
