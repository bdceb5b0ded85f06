//! Helpers shared by the integration tests of the format crate: temporary disks,
//! deterministic byte patterns and whole-disk reads.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vhdkit_format::{CreateOptions, Disk, DiskKind};

/// One MiB.
pub const MIB: u64 = 1 << 20;

/// Deterministic pseudo-random bytes (xorshift64*), different for each seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A temporary directory in memory (`/dev/shm`) when there is one, where `fsync` costs
/// nothing: for tests that make many small writes. Falls back to the default place.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// Creates a fixed or dynamic disk at `dir/name` and returns its path.
pub fn create(dir: &Path, name: &str, kind: DiskKind, size: u64, block_size: u32) -> PathBuf {
    let path = dir.join(name);
    Disk::create(
        &path,
        &CreateOptions::new(kind, size).block_size(block_size),
    )
    .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    path
}

/// Creates a differencing disk at `dir/name` over `parent` and returns its path.
pub fn create_child(dir: &Path, name: &str, parent: &Path, block_size: u32) -> PathBuf {
    let path = dir.join(name);
    Disk::create(
        &path,
        &CreateOptions::differencing(parent).block_size(block_size),
    )
    .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    path
}

/// Writes `data` at `offset` into the disk at `path` and flushes.
pub fn write(path: &Path, data: &[u8], offset: u64) {
    let disk = Disk::open_rw(path).expect("open for writing");
    disk.write_at(data, offset).expect("write");
    disk.flush().expect("flush");
}

/// Every virtual byte of an open disk.
pub fn read_all(disk: &Disk) -> Vec<u8> {
    let mut buf = vec![0u8; disk.virtual_size() as usize];
    disk.read_at(&mut buf, 0).expect("read the whole disk");
    buf
}

/// Every virtual byte of the disk at `path`, opened read-only with its chain.
pub fn read_file(path: &Path) -> Vec<u8> {
    read_all(&Disk::open(path).expect("open"))
}

/// `len` virtual bytes at `offset` of an open disk.
pub fn read_range(disk: &Disk, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    disk.read_at(&mut buf, offset).expect("read");
    buf
}

/// Names of the entries of a directory, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Asserts equality of two large buffers, naming the first differing offset instead of
/// printing megabytes.
#[track_caller]
pub fn assert_bytes_eq(found: &[u8], expected: &[u8], what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: lengths differ");
    if found == expected {
        return; // memcmp: the byte-by-byte search below is slow in debug builds
    }
    if let Some(i) = found.iter().zip(expected).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} (sector {}): found {:#04x}, expected {:#04x}",
            i / 512,
            found[i],
            expected[i]
        );
    }
}
