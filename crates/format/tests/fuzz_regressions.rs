//! Regression tests for what the fuzz targets under `fuzz/` found. Each test rebuilds the
//! failing input (or a minimal version of it) and checks the fixed behaviour; the raw
//! crashing inputs are kept under `fuzz/regressions/<target>/` and replayed by
//! `fuzz/smoke.sh`.

use std::path::Path;
use std::sync::Arc;

use vhdkit_format::check::{check_file, MAX_LISTED_BAT_PROBLEMS};
use vhdkit_format::image::{Backend, MemBackend};
use vhdkit_format::spec::bitmap::SectorBitmap;
use vhdkit_format::spec::locator::{ParentLocator, PlatformCode};
use vhdkit_format::spec::{Bat, DiskType, DynamicHeader, Footer, FOOTER_SIZE, HEADER_SIZE};
use vhdkit_format::{CreateOptions, Disk, DiskKind, Error, OpenOptions, VhdFile};

const MIB: u64 = 1 << 20;

/// The bytes of a new dynamic disk of `size` bytes.
fn dynamic_image(size: u64, block_size: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.vhd");
    Disk::create(
        &path,
        &CreateOptions::new(DiskKind::Dynamic, size).block_size(block_size),
    )
    .expect("create");
    std::fs::read(&path).expect("read back")
}

/// Rewrites the dynamic header of `image` through `edit`, with a fresh checksum.
fn edit_header(image: &mut [u8], edit: impl FnOnce(&mut DynamicHeader)) {
    let footer = Footer::decode(&image[image.len() - 512..]).expect("footer");
    let at = footer.data_offset as usize;
    let mut h = DynamicHeader::decode(&image[at..at + HEADER_SIZE]).expect("header");
    edit(&mut h);
    image[at..at + HEADER_SIZE].copy_from_slice(&h.encode());
}

fn open(image: &[u8], opts: &OpenOptions) -> vhdkit_format::Result<(Disk, Arc<MemBackend>)> {
    let mem = Arc::new(MemBackend::new(image.to_vec()));
    let backend: Arc<dyn Backend> = mem.clone();
    let top = VhdFile::from_backend(Path::new("/fuzz/0.vhd"), backend, opts)?;
    let disk = Disk::resolve(top, &opts.clone().no_parents(true), &NoParents)?;
    Ok((disk, mem))
}

struct NoParents;

impl vhdkit_format::image::ParentResolver for NoParents {
    fn open(&self, _: &Path, _: &OpenOptions) -> vhdkit_format::Result<Option<VhdFile>> {
        Ok(None)
    }
}

// fuzz/regressions/bat/sector-of-index-overflow: `i * 4` overflowed for huge indexes.
#[test]
fn bat_sector_of_with_huge_index_does_not_overflow() {
    let bat = Bat::new_unused(3);

    let (sector, bytes) = bat.sector_of(u64::MAX);

    assert_eq!(sector, u64::MAX / 128);
    assert!(bytes.iter().all(|&b| b == 0xFF));
    assert_eq!(bat.sector_of(130).0, 1);
}

// fuzz/regressions/bitmap/run-length-start-overflow: `start + n` overflowed near u64::MAX.
#[test]
fn bitmap_run_length_near_u64_max_stops_at_the_last_sector() {
    let bm = SectorBitmap::new(&[0u8; 8]);

    assert_eq!(bm.run_length(u64::MAX - 2, 100), 3);
    assert_eq!(bm.run_length(u64::MAX, u64::MAX), 1);
    assert_eq!(bm.run_length(0, 1000), 1000);
}

// fuzz/regressions/open_read/locator-past-eof-then-grow: a locator whose payload ran past
// the end of the file was clipped to the file; a write grew the file into it, and the
// grown file no longer opened ("block 0 lies inside the header, BAT or locator area").
// The input's locator claimed 48 MiB at offset 0: such a length is now ignored as
// absurd, so the write goes through and the grown file opens.
#[test]
fn write_into_image_with_absurd_locator_past_eof_reopens() {
    let mut image = dynamic_image(4 * MIB, 512 * 1024);
    edit_header(&mut image, |h| {
        h.locators[3] = ParentLocator {
            code: PlatformCode::Unknown(0x0303_0303),
            data_space: 0x0303_0303,
            data_length: 48 << 20,
            reserved: 0,
            data_offset: 0,
        };
    });
    let (disk, mem) = open(&image, &OpenOptions::new().writable(true)).expect("open rw");

    disk.write_at(&[0x77; 5000], 100).expect("write");
    disk.flush().expect("flush");

    let (again, _) = open(&mem.to_vec(), &OpenOptions::new()).expect("the grown file opens");
    let mut buf = vec![0u8; 5000];
    again.read_at(&mut buf, 100).expect("read");
    assert!(buf.iter().all(|&b| b == 0x77));
}

// The same defect with a plausible payload length: the payload runs past the end of the
// file, so a writable open is refused (read-only still works).
#[test]
fn writable_open_with_locator_running_past_eof_is_refused_and_read_only_open_works() {
    let mut image = dynamic_image(4 * MIB, 512 * 1024);
    let len = image.len() as u64;
    edit_header(&mut image, |h| {
        h.locators[0] = ParentLocator {
            code: PlatformCode::W2ku,
            data_space: 8192,
            data_length: 8192,
            reserved: 0,
            data_offset: len - 1024,
        };
    });

    let (disk, _) = open(&image, &OpenOptions::new()).expect("read-only open");
    let mut buf = vec![0xAAu8; 4096];
    disk.read_at(&mut buf, 0).expect("read");
    assert!(buf.iter().all(|&b| b == 0));
    let err = open(&image, &OpenOptions::new().writable(true)).unwrap_err();

    assert!(
        matches!(
            err,
            Error::Corrupt {
                structure: "parent locator",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("{len:#x}")), "{err}");
}

#[test]
fn writable_open_with_locator_wholly_past_eof_is_refused() {
    let mut image = dynamic_image(4 * MIB, 512 * 1024);
    let len = image.len() as u64;
    edit_header(&mut image, |h| {
        h.locators[0] = ParentLocator {
            code: PlatformCode::W2ku,
            data_space: 512,
            data_length: 100,
            reserved: 0,
            data_offset: len + 4096,
        };
    });

    let err = open(&image, &OpenOptions::new().writable(true)).unwrap_err();

    assert!(
        matches!(
            err,
            Error::Corrupt {
                structure: "parent locator",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn write_into_dynamic_disk_with_locator_inside_the_file_reopens() {
    // The same image with its locator payload inside the file stays writable, and the
    // grown file opens again with the data in place.
    let mut image = dynamic_image(4 * MIB, 512 * 1024);
    edit_header(&mut image, |h| {
        h.locators[0] = ParentLocator {
            code: PlatformCode::W2ku,
            data_space: 512,
            data_length: 100,
            reserved: 0,
            data_offset: 0,
        };
    });
    let (disk, mem) = open(&image, &OpenOptions::new().writable(true)).expect("open rw");

    disk.write_at(&[0x5A; 3000], 700).expect("write");
    disk.flush().expect("flush");

    let (again, _) = open(&mem.to_vec(), &OpenOptions::new()).expect("reopen");
    let mut buf = vec![0u8; 3000];
    again.read_at(&mut buf, 700).expect("read");
    assert!(buf.iter().all(|&b| b == 0x5A));
}

/// Distinct bytes for run `salt`.
fn run_bytes(salt: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| salt ^ (i as u8).wrapping_mul(31) ^ 0x5A)
        .collect()
}

/// Reads `len` bytes at `offset`.
fn read(disk: &Disk, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    disk.read_at(&mut buf, offset).expect("read");
    buf
}

// fuzz/regressions/write/write-runs-later-run-loses: `Disk::write_runs` laid the runs of
// a group over its buffer in offset order, so where runs overlapped the one at the
// highest offset won instead of the later one.
#[test]
fn write_runs_into_differencing_disk_lets_the_later_run_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    Disk::create(
        &base,
        &CreateOptions::new(DiskKind::Dynamic, 3 * MIB).block_size(16 * 1024),
    )
    .expect("create base");
    Disk::create(
        &child,
        &CreateOptions::differencing(&base).block_size(16 * 1024),
    )
    .expect("create child");
    let disk = Disk::open_rw(&child).expect("open child");
    let (a, b, c) = (run_bytes(1, 11671), run_bytes(2, 7635), run_bytes(3, 16641));

    disk.write_runs(&[(0x1469, &a), (0x242d, &b), (0xff, &c)])
        .expect("write runs");

    assert!(read(&disk, 0xff, c.len()) == c, "the last run must win");
    assert!(read(&disk, 0, 0xff).iter().all(|&x| x == 0));
}

#[test]
fn write_runs_into_dynamic_disk_lets_the_later_run_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.vhd");
    Disk::create(
        &path,
        &CreateOptions::new(DiskKind::Dynamic, 3 * MIB).block_size(4096),
    )
    .expect("create");
    let disk = Disk::open_rw(&path).expect("open");
    let (a, b) = (run_bytes(1, 3000), run_bytes(2, 5000));

    disk.write_runs(&[(1000, &a), (100, &b)])
        .expect("write runs");
    disk.flush().expect("flush");

    assert!(read(&disk, 100, b.len()) == b, "the last run must win");
    drop(disk);
    let again = Disk::open(&path).expect("reopen");
    assert!(read(&again, 100, b.len()) == b);
}

// Found by profiling the `check` target (not a crash): a BAT whose every entry points into
// the metadata gave one problem per entry, and more for the overlaps, so a 1 MiB file
// produced half a million problems and about 100 MB of report.
#[test]
fn check_of_a_bat_with_every_entry_bad_lists_a_bounded_number_of_problems() {
    let entries = 60_000u32;
    let size = u64::from(entries) * 512;
    let footer = Footer::new(DiskType::Dynamic, size).encode();
    let table_offset = (FOOTER_SIZE + HEADER_SIZE) as u64;
    let header = DynamicHeader::new(table_offset, entries, 512).encode();
    let mut image = Vec::new();
    image.extend_from_slice(&footer);
    image.extend_from_slice(&header);
    for _ in 0..entries {
        image.extend_from_slice(&1u32.to_be_bytes()); // block at sector 1: the header
    }
    image.resize(image.len().div_ceil(512) * 512, 0xFF);
    image.extend_from_slice(&footer);

    let problems = check_file(&MemBackend::new(image)).expect("check");

    let bat: Vec<_> = problems
        .iter()
        .filter(|p| p.structure == "BAT" && p.field == "entry")
        .collect();
    assert_eq!(bat.len(), MAX_LISTED_BAT_PROBLEMS + 1);
    assert!(bat
        .last()
        .expect("summary")
        .message
        .contains("more problems with BAT entries are not listed"));
    assert!(problems.len() < MAX_LISTED_BAT_PROBLEMS + 20);
}

// fuzz/regressions/open_vs_check/full-footer-at-unaligned-end.vhd: a file of 512·n + 511
// bytes whose last 512 bytes are a valid footer. Opening takes that footer (it looks at the
// last 512 bytes before the 511-byte footer of old Virtual PC); check looked only at the
// 511-byte position and called the footer missing.
#[test]
fn check_takes_the_trailing_footer_that_open_takes_in_a_511_remainder_file() {
    let image = dynamic_image(4 * MIB, 2 << 20);
    // One byte of padding before the footer: the length becomes 512·n + 511 + 512.
    let footer_at = image.len() - FOOTER_SIZE;
    let mut odd = image[..footer_at].to_vec();
    odd.extend_from_slice(&[0; 511]);
    odd.extend_from_slice(&image[footer_at..]);
    assert_eq!(odd.len() % 512, 511);
    let mem: Arc<dyn Backend> = Arc::new(MemBackend::new(odd.clone()));
    let f = VhdFile::from_backend(
        Path::new("/fuzz/0.vhd"),
        mem,
        &OpenOptions::new().strict(true),
    )
    .expect("opens strictly");
    assert_eq!(f.footer_source(), vhdkit_format::image::FooterSource::End);
    let errors: Vec<String> = check_file(&MemBackend::new(odd))
        .expect("memory never fails")
        .iter()
        .filter(|p| p.severity == vhdkit_format::spec::Severity::Error)
        .map(|p| p.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

// fuzz/regressions/open_vs_check/batmap-*.vhd: blktap's empty-64m.vhd with its Xen batmap
// damaged three ways (the footer written where the batmap header was — seedgen's shrink
// cut a blktap file there —, a bit set for an unallocated block, a wrong checksum). check
// called each an error, a strict open only warned (issue 26). Now a strict open refuses
// what check calls an error, naming the fix, and a lenient open still reads.
#[test]
fn strict_open_refuses_each_batmap_check_calls_an_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/open_vs_check");
    for name in [
        "batmap-footer-over-header.vhd",
        "batmap-bit-for-unallocated-block.vhd",
        "batmap-checksum.vhd",
    ] {
        let image = std::fs::read(dir.join(name)).expect("regression input");

        let errors: Vec<String> = check_file(&MemBackend::new(image.clone()))
            .expect("memory never fails")
            .iter()
            .filter(|p| p.severity == vhdkit_format::spec::Severity::Error)
            .map(|p| p.to_string())
            .collect();
        let strict = open(&image, &OpenOptions::new().strict(true));
        let lenient = open(&image, &OpenOptions::new());

        assert!(
            errors.iter().all(|e| e.contains("batmap")),
            "{name}: {errors:#?}"
        );
        assert_eq!(errors.len(), 1, "{name}: {errors:#?}");
        let e = strict.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("`vhdkit check --repair`"), "{name}: {e}");
        assert!(lenient.is_ok(), "{name}");
    }
}

// fuzz/regressions/open_vs_check/hostdrive-device-size-not-the-footers.vhd (the 300 s
// campaign of 2026-12-07): a host-drive stub whose header gives a device size of 1 MiB
// under a footer of size 0. Open refused it ("device size 1048576 differs from the
// footer's size 0") while check found no error; both now apply the one rule
// (`HostDriveHeader::validate_for`).
#[test]
fn check_reports_the_host_drive_size_that_open_refuses() {
    let image = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions/open_vs_check/hostdrive-device-size-not-the-footers.vhd"),
    )
    .expect("regression input");

    let errors: Vec<String> = check_file(&MemBackend::new(image.clone()))
        .expect("memory never fails")
        .iter()
        .filter(|p| p.severity == vhdkit_format::spec::Severity::Error)
        .map(|p| p.to_string())
        .collect();
    let opened = open(&image, &OpenOptions::new());

    assert!(
        errors
            .iter()
            .any(|e| e.contains("device size 1048576 differs from the footer's size 0")),
        "{errors:#?}"
    );
    let e = opened.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("device size 1048576 differs"), "{e}");
}

/// `vhdx_header`: a creator of 256 UTF-16 units (no terminator) whose last two are a
/// surrogate pair. Re-encoding cut it at 255 units, splitting the pair, so the
/// identifier did not decode back to a prefix of itself; the encoder now cuts between
/// whole characters.
#[test]
fn vhdx_creator_filling_its_field_reencodes_to_whole_characters() {
    use vhdkit_format::vhdx::ident::{RawFileIdentifier, CREATOR_OFFSET, IDENT_SIGNATURE};
    let mut head = vec![0u8; 1024];
    head[..8].copy_from_slice(&IDENT_SIGNATURE);
    let units: Vec<u16> = std::iter::repeat_n(u16::from(b'q'), 254)
        .chain("\u{1F600}".encode_utf16())
        .collect();
    for (i, u) in units.iter().enumerate() {
        head[CREATOR_OFFSET + 2 * i..CREATOR_OFFSET + 2 * i + 2].copy_from_slice(&u.to_le_bytes());
    }
    let id = RawFileIdentifier::decode(&head)
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!(id.creator.encode_utf16().count(), 256);
    let back = RawFileIdentifier::decode(&id.encode())
        .unwrap()
        .validate()
        .unwrap();
    assert!(id.creator.starts_with(&back.creator), "{:?}", back.creator);
    assert_eq!(back.creator, "q".repeat(254));
}
