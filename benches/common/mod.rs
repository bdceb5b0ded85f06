//! Bench inputs: a deterministic raw image and its VHD forms, generated at bench time in
//! a temporary directory.
//!
//! Environment:
//! - `VHDKIT_BENCH_SIZE`: virtual size of the disks (bytes or K/M/G), default 256 MiB.
//! - `VHDKIT_BENCH_DIR`: where the temporary directory goes; default `/dev/shm` when it
//!   exists (tmpfs: the benches then measure the engine, not the device and its fsync),
//!   else the system temporary directory.

#![allow(dead_code)]

pub mod layout;

use std::path::{Path, PathBuf};
use std::time::Duration;
use vhdkit_platform::FileExt;

use criterion::Criterion;
use vhdkit::format::{CreateOptions, Disk, DiskKind};
use vhdkit::parse_size;

use layout::{Layout, Mix, BASE_MIX, BLOCK, CHILD_MIX, TOP_MIX};

/// Seeds of the three layers: base, middle, top.
pub const SEEDS: [u64; 3] = [1, 2, 3];

/// Criterion settings for these benches: few samples, short runs, so that the whole
/// `cargo bench` stays within minutes on two cores.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

/// Virtual size of the bench disks.
pub fn bench_size() -> u64 {
    let size = std::env::var("VHDKIT_BENCH_SIZE")
        .ok()
        .map(|s| parse_size(&s).expect("VHDKIT_BENCH_SIZE: a size such as 256M"))
        .unwrap_or(256 << 20);
    size.div_ceil(BLOCK) * BLOCK
}

/// A fresh temporary directory for bench files.
pub fn temp_dir() -> tempfile::TempDir {
    let base = std::env::var_os("VHDKIT_BENCH_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let shm = Path::new("/dev/shm");
            shm.is_dir().then(|| shm.to_owned())
        })
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("vhdkit-bench.")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("creating a temporary directory in {}: {e}", base.display()))
}

/// The inputs: one virtual content in every source form vhdkit reads.
pub struct Images {
    /// Holds every file; removed on drop.
    pub dir: tempfile::TempDir,
    /// Virtual size.
    pub size: u64,
    /// The base layer's layout.
    pub base: Layout,
    /// Sparse raw image of the base content (holes unwritten, zero blocks written).
    pub raw: PathBuf,
    /// Fixed VHD of the base content, fully allocated (as Virtual Server and Hyper-V
    /// create them).
    pub fixed: PathBuf,
    /// Dynamic VHD of the base content: random and zero blocks allocated, partly
    /// written blocks with only their runs' bitmap bits set, holes unallocated.
    pub dynamic: PathBuf,
    /// Differencing child of `dynamic` holding ~25% of the blocks.
    pub mid: PathBuf,
    /// Differencing child of `mid` holding ~12% of the blocks: the top of a
    /// three-level chain.
    pub top: PathBuf,
}

impl Images {
    /// Generates every form of a `size`-byte disk.
    pub fn build(size: u64) -> Images {
        let dir = temp_dir();
        let p = |name: &str| dir.path().join(name);
        let base = Layout::new(size, SEEDS[0], BASE_MIX);
        let size = base.size;

        let raw = p("base.raw");
        let f = std::fs::File::create(&raw).expect("creating the raw image");
        base.apply_to_raw(&f).expect("writing the raw image");
        drop(f);

        let dynamic = p("base.vhd");
        Disk::create(&dynamic, &CreateOptions::new(DiskKind::Dynamic, size))
            .expect("creating the dynamic disk");
        write_layout(&dynamic, &base);

        let fixed = p("fixed.vhd");
        Disk::create(&fixed, &CreateOptions::new(DiskKind::Fixed, size))
            .expect("creating the fixed disk");
        {
            let src = std::fs::File::open(&raw).expect("opening the raw image");
            let disk = Disk::open_rw(&fixed).expect("opening the fixed disk");
            let mut buf = vec![0u8; BLOCK as usize];
            for b in 0..base.block_count() {
                src.read_exact_at(&mut buf, b * BLOCK)
                    .expect("reading the raw image");
                disk.write_at(&buf, b * BLOCK)
                    .expect("writing the fixed disk");
            }
            disk.flush().expect("flushing the fixed disk");
        }

        let mid = p("mid.vhd");
        Disk::create(&mid, &CreateOptions::differencing(&dynamic)).expect("creating mid.vhd");
        write_layout(&mid, &Layout::new(size, SEEDS[1], CHILD_MIX));
        let top = p("top.vhd");
        Disk::create(&top, &CreateOptions::differencing(&mid)).expect("creating top.vhd");
        write_layout(&top, &Layout::new(size, SEEDS[2], TOP_MIX));

        Images {
            dir,
            size,
            base,
            raw,
            fixed,
            dynamic,
            mid,
            top,
        }
    }

    /// A file name inside the bench directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Writes `layout` into the existing disk at `path` through [`Disk::write_at`].
pub fn write_layout(path: &Path, layout: &Layout) {
    let disk = Disk::open_rw(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    for w in layout.writes() {
        disk.write_at(&layout.data(&w), w.offset)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    disk.flush().expect("flushing");
}

/// A layout of another mix over the same size, for benches that need one.
pub fn layout(size: u64, seed: u64, mix: Mix) -> Layout {
    Layout::new(size, seed, mix)
}

/// Removes `path` if it exists.
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("removing {}: {e}", path.display()),
    }
}
