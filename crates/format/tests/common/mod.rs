//! Helpers shared by the integration tests of the format crate: disks made, written and
//! read through the crate's API. Everything that is not about the format crate — the
//! generators, the content pattern, the byte model, the external readers (qemu-img, vhdiinfo, pyvhdi; a
//! missing one fails the test), byte comparisons, temporary directories — comes from
//! `vhdkit-testkit` and is re-exported here.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use vhdkit_format::{CreateOptions, Disk, DiskKind, OpenOptions, VhdFile};

pub use vhdkit_testkit::*;

/// Creates a fixed or dynamic disk at `path`.
pub fn create_at(path: &Path, kind: DiskKind, size: u64, block_size: u32) {
    Disk::create(path, &CreateOptions::new(kind, size).block_size(block_size))
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
}

/// Creates a fixed or dynamic disk at `dir/name` and returns its path.
pub fn create(dir: &Path, name: &str, kind: DiskKind, size: u64, block_size: u32) -> PathBuf {
    let path = dir.join(name);
    create_at(&path, kind, size, block_size);
    path
}

/// Creates a differencing disk at `path` over `parent`.
pub fn create_child_at(path: &Path, parent: &Path, block_size: u32) {
    Disk::create(
        path,
        &CreateOptions::differencing(parent).block_size(block_size),
    )
    .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
}

/// Creates a differencing disk at `dir/name` over `parent` and returns its path.
pub fn create_child(dir: &Path, name: &str, parent: &Path, block_size: u32) -> PathBuf {
    let path = dir.join(name);
    create_child_at(&path, parent, block_size);
    path
}

/// Writes `data` at `offset` into the disk at `path` and flushes.
pub fn write(path: &Path, data: &[u8], offset: u64) {
    let disk = Disk::open_rw(path).expect("open for writing");
    disk.write_at(data, offset).expect("write");
    disk.flush().expect("flush");
}

/// Makes `writes`, in order, into the disk at `path` (one open, one flush).
pub fn write_disk(path: &Path, writes: &[Write]) {
    let disk = Disk::open_rw(path).expect("open for writing");
    for (off, data) in writes {
        disk.write_at(data, *off).expect("write");
    }
    disk.flush().expect("flush");
}

/// Writes the [`mixed_writes`] of `seed` over `unit`-sized blocks into the disk at `path`
/// and into `model` (a child over its parent's model: the zero writes hide the parent's
/// data).
pub fn write_mixed(path: &Path, model: &mut Model, unit: u64, seed: u64) {
    let writes = mixed_writes(model.size(), unit, seed);
    write_disk(path, &writes);
    model.apply(&writes);
}

/// Every virtual byte of an open disk.
pub fn read_all(disk: &Disk) -> Vec<u8> {
    let mut buf = vec![0u8; disk.virtual_size() as usize];
    disk.read_at(&mut buf, 0).expect("read the whole disk");
    buf
}

/// Every virtual byte of the disk at `path`, opened read-only with its chain.
pub fn read_file(path: &Path) -> Vec<u8> {
    read_all(&Disk::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display())))
}

/// `len` virtual bytes at `offset` of an open disk.
pub fn read_range(disk: &Disk, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    disk.read_at(&mut buf, offset).expect("read");
    buf
}

/// Allocated blocks of a dynamic or differencing file.
pub fn allocated(path: &Path) -> u64 {
    VhdFile::open(path, &OpenOptions::new())
        .expect("open")
        .allocated_blocks()
}

/// Temporary files an operation could have left in `dir`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    dir_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".vhdkit-tmp"))
        .collect()
}

/// A base dynamic disk (blocks of 512 KiB), a differencing child over it (256 KiB) and a
/// grandchild (512 KiB) in `dir`, each with its own [`write_mixed`] (seeds `seed`,
/// `seed + 1`, `seed + 2`); returns (top, mid, base) and the model of the top's view.
pub fn three_level_chain(dir: &Path, size: u64, seed: u64) -> (PathBuf, PathBuf, PathBuf, Model) {
    let mut m = Model::new(size);
    let base = create(dir, "base.vhd", DiskKind::Dynamic, size, (512 * KIB) as u32);
    write_mixed(&base, &mut m, 512 * KIB, seed);
    let mid = create_child(dir, "mid.vhd", &base, (256 * KIB) as u32);
    write_mixed(&mid, &mut m, 256 * KIB, seed + 1);
    let top = create_child(dir, "top.vhd", &mid, (512 * KIB) as u32);
    write_mixed(&top, &mut m, 512 * KIB, seed + 2);
    (top, mid, base, m)
}
