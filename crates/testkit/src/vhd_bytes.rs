//! Raw edits of a VHD's metadata, for crafting the images other writers make and
//! vhdkit never would: the fields are read and written as bytes at the offsets of the
//! specification, with no code of vhdkit's own, so a bug in its encoder cannot hide in
//! the image a test is built on.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vhdkit_platform::FileExt;

/// Seconds between the Unix epoch and the VHD epoch (2000-01-01 UTC).
const VHD_EPOCH_UNIX: u64 = 946_684_800;
/// The dynamic header's size, its checksum's offset, its parent time stamp's, its
/// locator table's and a locator entry's size.
const HEADER: usize = 1024;
const CHECKSUM: usize = 36;
const PARENT_TIMESTAMP: usize = 56;
const LOCATORS: usize = 576;
const LOCATOR: usize = 24;

fn open(path: &Path) -> std::fs::File {
    std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The offset of the dynamic header, from the footer at the end of the file.
fn header_offset(f: &std::fs::File) -> u64 {
    let len = f.metadata().expect("metadata").len();
    let mut footer = [0u8; 512];
    f.read_exact_at(&mut footer, len - 512).expect("footer");
    u64::from_be_bytes(footer[16..24].try_into().expect("8 bytes"))
}

fn read_header(f: &std::fs::File) -> (u64, Vec<u8>) {
    let at = header_offset(f);
    let mut h = vec![0u8; HEADER];
    f.read_exact_at(&mut h, at).expect("dynamic header");
    assert_eq!(&h[..8], b"cxsparse", "a dynamic or differencing disk");
    (at, h)
}

/// Writes `h` back with its checksum recomputed (the one's complement of the sum of its
/// bytes, the checksum field counted as zero).
fn write_header(f: &std::fs::File, at: u64, h: &mut [u8]) {
    h[CHECKSUM..CHECKSUM + 4].fill(0);
    let sum = h.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
    h[CHECKSUM..CHECKSUM + 4].copy_from_slice(&(!sum).to_be_bytes());
    f.write_all_at(h, at).expect("writing the dynamic header");
    f.sync_all().expect("sync");
}

/// Sets the modification time of `parent` to the parent time stamp the differencing
/// disk `child` records: the time a copy that kept modification times would show
/// (fixtures checked out by git carry the time of the checkout).
pub fn restore_parent_time(child: &Path, parent: &Path) {
    let (_, h) = read_header(&open(child));
    let secs = u32::from_be_bytes(
        h[PARENT_TIMESTAMP..PARENT_TIMESTAMP + 4]
            .try_into()
            .expect("4"),
    );
    let t: SystemTime = UNIX_EPOCH + Duration::from_secs(VHD_EPOCH_UNIX + u64::from(secs));
    std::fs::File::open(parent)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("setting the time of {}: {e}", parent.display()));
}

/// Moves the payload of parent locator `slot` of `disk` to file offset `to` (where the
/// caller knows nothing else lives) and points the locator there, its data space the
/// payload's length: how a writer that packs metadata tightly may place it.
pub fn move_locator_payload(disk: &Path, slot: usize, to: u64) {
    let f = open(disk);
    let (at, mut h) = read_header(&f);
    let e = LOCATORS + slot * LOCATOR;
    let len = u32::from_be_bytes(h[e + 8..e + 12].try_into().expect("4"));
    let from = u64::from_be_bytes(h[e + 16..e + 24].try_into().expect("8"));
    assert!(len > 0, "locator {slot} is used");
    let mut payload = vec![0u8; len as usize];
    f.read_exact_at(&mut payload, from)
        .expect("locator payload");
    f.write_all_at(&payload, to).expect("writing the payload");
    h[e + 4..e + 8].copy_from_slice(&len.to_be_bytes());
    h[e + 16..e + 24].copy_from_slice(&to.to_be_bytes());
    write_header(&f, at, &mut h);
}

/// Empties parent locator `slot` of `disk` (its entry zeroed; the payload stays as
/// unreferenced bytes).
pub fn clear_locator(disk: &Path, slot: usize) {
    let f = open(disk);
    let (at, mut h) = read_header(&f);
    let e = LOCATORS + slot * LOCATOR;
    h[e..e + LOCATOR].fill(0);
    write_header(&f, at, &mut h);
}
