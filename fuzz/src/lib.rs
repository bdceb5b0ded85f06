//! Helpers shared by the fuzz targets: an in-memory parent resolver, splitting one input
//! into several files, bounded whole-disk reads with invariant checks, and builders for
//! small valid images (used by the `write` target and the seed generator).
//!
//! Every path handed to the library lives under [`FUZZ_DIR`], a directory that does not
//! exist, so nothing a target does can touch the host's files (host-drive stubs aside:
//! a stub naming a real device would be opened read-only, see `README.md`).

pub mod volume;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vhdkit_format::image::{Backend, Extent, MemBackend, ParentResolver};
use vhdkit_format::spec::layout::{NewParent, NewSparse};
use vhdkit_format::spec::locator::PlatformCode;
use vhdkit_format::spec::{DiskType, Footer};
use vhdkit_format::{Disk, OpenOptions, Result, VhdFile};

/// Directory of every in-memory file (it does not exist on the host).
pub const FUZZ_DIR: &str = "/nonexistent-vhdkit-fuzz";

/// Separates the files of a multi-file input (`chain` target). Also in `vhd.dict`.
pub const FILE_SEP: &[u8] = b"\n--vhdkit-fuzz-file--\n";

/// Most files one `chain` input holds.
pub const MAX_FILES: usize = 4;

/// How far any in-memory file may grow when written (like a full volume past it).
pub const GROWTH_LIMIT: u64 = 64 << 20;

/// A memory backend over `bytes` that may grow to `limit`, with 1 MiB of room reserved
/// up front so that growing does not reallocate and copy on every new block.
pub fn mem_backend(bytes: Vec<u8>, limit: u64) -> Arc<MemBackend> {
    let mut v = Vec::with_capacity(bytes.len() + (1usize << 20).min(limit as usize));
    v.extend_from_slice(&bytes);
    Arc::new(MemBackend::with_limit(v, limit))
}

/// Path of in-memory file `i` (`/nonexistent-vhdkit-fuzz/<i>.vhd`).
pub fn path_of(i: usize) -> PathBuf {
    Path::new(FUZZ_DIR).join(format!("{i}.vhd"))
}

/// Splits a `chain` input into at most [`MAX_FILES`] files at [`FILE_SEP`].
pub fn split_files(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < MAX_FILES {
        match find(rest, FILE_SEP) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + FILE_SEP.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

/// Joins files into one `chain` input (inverse of [`split_files`]).
pub fn join_files(files: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(FILE_SEP);
        }
        out.extend_from_slice(f);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    // Compare whole windows only where the first byte matches: a `memcmp` per position
    // would go through the sanitizer's interceptor a million times for a 1 MiB input.
    let (&first, _) = needle.split_first()?;
    let last = hay.len().checked_sub(needle.len())?;
    let mut i = 0;
    while i <= last {
        let step = hay[i..=last].iter().position(|&b| b == first)?;
        i += step;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// A parent resolver over in-memory files named `0.vhd`, `1.vhd`, …: a path is matched
/// by its file name. With `fallback`, a name that matches nothing opens the files
/// `1..n` in turn, so mutated locators still reach a parent (the unique-id check then
/// decides, as on a real file system).
#[derive(Debug)]
pub struct MemResolver {
    files: Vec<Arc<MemBackend>>,
    fallback: bool,
    next: Cell<usize>,
}

impl MemResolver {
    /// A resolver over `files` (file `i` is `path_of(i)`).
    pub fn new(files: Vec<Arc<MemBackend>>, fallback: bool) -> MemResolver {
        MemResolver {
            files,
            fallback,
            next: Cell::new(0),
        }
    }

    /// Opens file `i` with `opts`.
    pub fn open_index(&self, i: usize, opts: &OpenOptions) -> Result<VhdFile> {
        let backend: Arc<dyn Backend> = self.files[i].clone();
        VhdFile::from_backend(path_of(i), backend, opts)
    }
}

impl ParentResolver for MemResolver {
    fn open(&self, path: &Path, opts: &OpenOptions) -> Result<Option<VhdFile>> {
        let name = path.file_name();
        let by_name = (0..self.files.len()).find(|&i| path_of(i).file_name() == name);
        let idx = match by_name {
            Some(i) => i,
            None if self.fallback && self.files.len() > 1 => {
                let n = self.next.get();
                self.next.set(n + 1);
                1 + n % (self.files.len() - 1)
            }
            None => return Ok(None),
        };
        self.open_index(idx, opts).map(Some)
    }
}

/// A resolver that finds nothing.
#[derive(Debug, Default)]
pub struct NoResolver;

impl ParentResolver for NoResolver {
    fn open(&self, _: &Path, _: &OpenOptions) -> Result<Option<VhdFile>> {
        Ok(None)
    }
}

/// The virtual content of the dynamic disk in the file at `path`, if it opens alone (no
/// parents), is at most `max_size` bytes and reads whole (the compaction targets).
pub fn dynamic_content(path: &Path, max_size: u64) -> Option<Vec<u8>> {
    let opts = OpenOptions::new().no_parents(true);
    let top = VhdFile::open(path, &opts).ok()?;
    if top.kind() != vhdkit_format::DiskKind::Dynamic || top.virtual_size() > max_size {
        return None;
    }
    let disk = Disk::resolve(top, &opts, &NoResolver).ok()?;
    let mut buf = vec![0u8; usize::try_from(disk.virtual_size()).ok()?];
    disk.read_at(&mut buf, 0).ok()?;
    Some(buf)
}

/// A tiny deterministic generator (splitmix64) for input-derived choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds from bytes (FNV-1a of the length and the first and last KiB: cheap for
    /// megabyte inputs, and still moved by most mutations).
    pub fn from_bytes(b: &[u8]) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ b.len() as u64;
        let head = &b[..b.len().min(1024)];
        let tail = &b[b.len().saturating_sub(1024)..];
        for &x in head.iter().chain(tail) {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// Bytes read at the start and at the end of a disk, at most.
pub const EDGE: u64 = 1 << 20;
/// Bytes of each random range, at most.
pub const RANDOM_RANGE: u64 = 64 << 10;
/// Chunk of the chunked reads.
pub const CHUNK: u64 = 16 << 10;

/// The ranges [`exercise_reads`] reads: the first and last MiB and three random ranges.
pub fn sample_ranges(size: u64, rng: &mut Rng) -> Vec<(u64, u64)> {
    let mut v = vec![
        (0, size.min(EDGE)),
        (size.saturating_sub(EDGE), size.min(EDGE)),
    ];
    for _ in 0..3 {
        let off = rng.below(size);
        let len = rng.below(RANDOM_RANGE + 1).min(size - off);
        v.push((off, len));
    }
    v
}

/// Checks what a chain's extents promise: they cover exactly the range asked, and every
/// `Data` extent lies inside its layer's file.
pub fn check_extents(disk: &Disk, extents: &[Extent], len: u64) {
    let total: u64 = extents.iter().map(Extent::len).sum();
    assert_eq!(
        total, len,
        "extents cover {total} bytes of a {len}-byte range"
    );
    for e in extents {
        if let Extent::Data {
            layer,
            file_offset,
            len,
        } = *e
        {
            let l = &disk.layers()[layer];
            if l.host_drive().is_some() {
                continue;
            }
            let end = file_offset.checked_add(len).expect("extent end overflows");
            assert!(
                end <= l.file_len(),
                "data extent {file_offset:#x}+{len:#x} of layer {layer} runs past its file ({:#x})",
                l.file_len()
            );
        }
    }
}

/// Reads a bounded sample of the disk (first and last MiB, a few random ranges) in
/// chunks and at once, checks both agree, and maps the whole disk's extents.
pub fn exercise_reads(disk: &Disk, rng: &mut Rng) {
    let size = disk.virtual_size();
    if let Ok(ext) = disk.extents(0, size) {
        check_extents(disk, &ext, size);
    }
    for (off, len) in sample_ranges(size, rng) {
        let Ok(ext) = disk.extents(off, len) else {
            continue;
        };
        check_extents(disk, &ext, len);
        // Buffers kept across runs: a fresh megabyte each time costs the sanitizer's
        // allocator an mmap and 256 page faults.
        let (mut whole, mut mapped) = SCRATCH.with(|s| s.take());
        whole.clear();
        whole.resize(len as usize, 0);
        mapped.clear();
        mapped.resize(len as usize, 0);
        let ok = disk.read_at(&mut whole, off).is_ok();
        if ok {
            check_sample(disk, off, &whole, &mut mapped);
        }
        SCRATCH.with(|s| s.set((whole, mapped)));
    }
    // Out of range reads must fail, not panic.
    let mut one = [0u8; 1];
    assert!(disk.read_at(&mut one, size).is_err());
    let _ = disk.read_at(&mut one, u64::MAX);
}

thread_local! {
    static SCRATCH: Cell<(Vec<u8>, Vec<u8>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// Reads `whole.len()` bytes at `off` again in chunks and through the mapped path, and
/// checks both agree with `whole`.
fn check_sample(disk: &Disk, off: u64, whole: &[u8], mapped: &mut [u8]) {
    let len = whole.len() as u64;
    let mut pos = 0;
    let mut buf = [0u8; CHUNK as usize];
    while pos < len {
        let n = CHUNK.min(len - pos);
        let chunk = &mut buf[..n as usize];
        if disk.read_at(chunk, off + pos).is_ok() {
            assert_eq!(
                chunk[..],
                whole[pos as usize..(pos + n) as usize],
                "chunked read at {:#x} differs from the whole-range read",
                off + pos
            );
        }
        pos += n;
    }
    if disk.read_mapped(mapped, off).is_ok() {
        assert!(*mapped == *whole, "mapped read at {off:#x} differs");
    }
}

/// Writes `data` at `offset` and, when the write succeeds, checks it reads back.
pub fn write_and_verify(disk: &Disk, data: &[u8], offset: u64) -> bool {
    match disk.write_at(data, offset) {
        Ok(()) => {
            let mut back = vec![0u8; data.len()];
            disk.read_at(&mut back, offset)
                .expect("reading back a range just written");
            assert!(back == data, "a write at {offset:#x} does not read back");
            true
        }
        Err(_) => false,
    }
}

/// A fixed disk of `size` bytes of `content` (zero-extended) with a footer.
pub fn fixed_image(size: u64, content: &[u8], id: [u8; 16]) -> Vec<u8> {
    let mut footer = Footer::new(DiskType::Fixed, size);
    footer.unique_id = uuid_from(id);
    footer.timestamp = vhdkit_format::spec::VhdTime(0x2000_0000);
    let mut out = vec![0u8; size as usize];
    let n = content.len().min(out.len());
    out[..n].copy_from_slice(&content[..n]);
    out.extend_from_slice(&footer.encode());
    out
}

/// What a differencing image records about its parent.
#[derive(Debug, Clone)]
pub struct ParentInfo {
    /// The parent's footer unique id.
    pub unique_id: [u8; 16],
    /// The parent's file name (`1.vhd`).
    pub name: String,
}

/// A dynamic (or, with `parent`, differencing) disk without blocks, built by the
/// library's one sparse-image builder (`spec::layout::NewSparse`, what `create` writes),
/// with a fixed unique id and time stamp and locators into [`FUZZ_DIR`].
pub fn sparse_image(
    size: u64,
    block_size: u32,
    parent: Option<&ParentInfo>,
    id: [u8; 16],
) -> Vec<u8> {
    let parent = parent.map(|p| NewParent {
        unique_id: uuid_from(p.unique_id),
        timestamp: vhdkit_format::spec::VhdTime(0x2000_0000),
        name: p.name.clone(),
        locators: vec![
            (
                PlatformCode::W2ku,
                format!("C:{}\\{}", FUZZ_DIR.replace('/', "\\"), p.name),
            ),
            (PlatformCode::W2ru, format!(".\\{}", p.name)),
        ],
    });
    let mut new = NewSparse::new(size, block_size, parent.as_ref()).expect("a small disk");
    new.footer.unique_id = uuid_from(id);
    new.footer.timestamp = vhdkit_format::spec::VhdTime(0x2000_0000);
    new.image()
}

/// A differencing disk without blocks whose parent is recorded as `name` with unique id
/// `parent_id`, reached through exactly the `locators` given (code, path text) — built
/// by the library's one sparse-image builder.
pub fn child_with_locators(
    size: u64,
    name: &str,
    parent_id: [u8; 16],
    locators: &[(PlatformCode, &str)],
    id: [u8; 16],
) -> Vec<u8> {
    let parent = NewParent {
        unique_id: uuid_from(parent_id),
        timestamp: vhdkit_format::spec::VhdTime(0x2000_0000),
        name: name.to_owned(),
        locators: locators.iter().map(|&(c, t)| (c, t.to_owned())).collect(),
    };
    let mut new = NewSparse::new(size, 1 << 20, Some(&parent)).expect("a small disk");
    new.footer.unique_id = uuid_from(id);
    new.footer.timestamp = vhdkit_format::spec::VhdTime(0x2000_0000);
    new.image()
}

fn uuid_from(b: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(b)
}

/// The real folders of the `trust` target.
pub mod trust {
    use std::path::{Path, PathBuf};

    /// Fixed root of the `trust` target's files (the dictionary names paths under it).
    pub const ROOT: &str = "/tmp/vhdkit-fuzz-trust";
    /// Unique id of the canary VHD outside the test folder (in the dictionary too).
    pub const CANARY_ID: [u8; 16] = *b"CANARY-OUTSIDE!!";

    /// The test folder (one per process), the canary VHD and the secret file outside it,
    /// and a FIFO inside it.
    #[derive(Debug)]
    pub struct Places {
        /// The test folder: the crafted files are `0.vhd`, `1.vhd`, … here.
        pub tree: PathBuf,
        /// A valid VHD outside the folder, unique id [`CANARY_ID`].
        pub canary: PathBuf,
        /// A regular file outside the folder a crafted stub may name.
        pub secret: PathBuf,
        /// A FIFO in the folder (`pipe.vhd`) a crafted locator may name.
        pub fifo: PathBuf,
    }

    impl Places {
        /// Creates them (idempotent; the test folder is `ROOT/tree-<pid>`).
        pub fn make() -> Places {
            let root = Path::new(ROOT);
            let outside = root.join("outside");
            let tree = root.join(format!("tree-{}", std::process::id()));
            std::fs::create_dir_all(&outside).expect("creating the outside folder");
            std::fs::create_dir_all(&tree).expect("creating the test folder");
            let canary = outside.join("canary.vhd");
            if !canary.exists() {
                let bytes = super::sparse_image(4 << 20, 1 << 20, None, CANARY_ID);
                let tmp = outside.join(format!(".canary.{}", std::process::id()));
                std::fs::write(&tmp, bytes).expect("writing the canary");
                let _ = std::fs::rename(&tmp, &canary);
            }
            let secret = outside.join("secret.img");
            if !secret.exists() {
                std::fs::write(&secret, vec![0x5Eu8; 1 << 20]).expect("writing the secret");
            }
            let fifo = tree.join("pipe.vhd");
            if !fifo.exists() {
                let ok = std::process::Command::new("mkfifo")
                    .arg(&fifo)
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "mkfifo {}", fifo.display());
            }
            Places {
                tree,
                canary,
                secret,
                fifo,
            }
        }

        /// Writes `files` as `0.vhd`, `1.vhd`, … into the test folder (replacing the
        /// previous input's) and returns their paths.
        pub fn write(&self, files: &[&[u8]]) -> Vec<PathBuf> {
            for i in files.len()..super::MAX_FILES {
                let _ = std::fs::remove_file(self.tree.join(format!("{i}.vhd")));
            }
            files
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let p = self.tree.join(format!("{i}.vhd"));
                    std::fs::write(&p, f).expect("writing a crafted file");
                    p
                })
                .collect()
        }
    }
}
