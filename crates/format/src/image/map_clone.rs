//! Memory maps and the clone ioctl: the one module that memory-maps files or clones
//! their extents (`FICLONERANGE`), and the only `unsafe` in vhdkit.
//!
//! Nothing here leaves the crate: the safety of a map rests on no one writing the
//! mapped range while it is mapped, which only the crate's own read paths promise.
//!
//! Operations read their sources through read-only maps of bounded windows — a run of
//! neighbouring blocks of one chunk (convert, merge-to), one run of sectors (merge), one
//! extent copied out (compact) — unmapped as soon as their bytes are written out, so at
//! most a few chunks (tens of MiB) are mapped at once whatever the disk's size.

use std::fs::File;
use std::io;

use memmap2::MmapOptions;

/// A read-only map of one window of a file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Window {
    map: memmap2::Mmap,
}

impl std::ops::Deref for Window {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

/// Maps `len` bytes at `offset` of `file` read-only; with `populate`, faults the pages
/// in at once.
///
/// Operations map one window per run of blocks that lie next to each other in a file
/// (a chunk's worth at most) without populating, and each rayon worker then populates
/// the part it reads with [`Window::populate`]. One `mmap`/`munmap` per run instead of
/// per block matters: each takes the process-wide mapping lock for writing (and
/// `munmap` interrupts the other cores to flush their TLBs), which serialised the
/// workers when every block had its own window.
pub(crate) fn map_window(
    file: &File,
    offset: u64,
    len: usize,
    populate: bool,
) -> io::Result<Window> {
    let meta = file.metadata()?;
    let end = offset
        .checked_add(len as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "window overflows"))?;
    if len == 0 || (end > meta.len() && meta.is_file()) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "mapped window is empty or runs past the end of the file",
        ));
    }
    // SAFETY: as for `copy_mapped` below: a read-only window inside the file (checked
    // just above), of a file vhdkit holds an advisory lock on (shared for sources,
    // exclusive for files it modifies), and never written by this process while the
    // window lives — operations map source blocks and write only to other files, or
    // (compact) to other slots of the same file. The window is dropped (unmapped) once
    // the blocks in it are written out, so at most three chunks of windows (composing,
    // queued, being written) exist at a time.
    let map = unsafe {
        let mut options = MmapOptions::new();
        options.offset(offset).len(len);
        if populate {
            options.populate();
        }
        options.map(file)?
    };
    Ok(Window { map })
}

/// Makes `len` bytes at `dest_offset` of `dest` share the extents that hold `len` bytes
/// at `src_offset` of `src` (`FICLONERANGE`, `FSCTL_DUPLICATE_EXTENTS_TO_FILE`: see
/// [`vhdkit_platform::clone_range`]): no data is read or written and no space is
/// used. Only file systems that share extents between files do it (XFS with reflink,
/// btrfs, ReFS), and only for ranges on their block boundaries: any error means nothing
/// was cloned and the caller writes the bytes itself.
pub(crate) fn clone_range(
    src: &File,
    src_offset: u64,
    len: u64,
    dest: &File,
    dest_offset: u64,
) -> io::Result<()> {
    // The clone changes `dest`'s extents, never the source's, so the contract of any
    // map of the source (nothing writes the mapped range) holds.
    vhdkit_platform::clone_range(src, src_offset, len, dest, dest_offset)
}

impl Window {
    /// Faults in the pages of `range` of the window at once (`MADV_POPULATE_READ`,
    /// under the mapping lock held for reading only, so workers populate their blocks in
    /// parallel). On kernels without it (before 5.14), pages fault in when read.
    pub(crate) fn populate(&self, range: std::ops::Range<usize>) -> io::Result<()> {
        vhdkit_platform::populate(&self.map, range)
    }
}

/// Copies `dst.len()` bytes at `offset` of `file` into `dst` through a read-only map of
/// exactly that window.
pub(crate) fn copy_mapped(file: &File, offset: u64, dst: &mut [u8]) -> io::Result<()> {
    if dst.is_empty() {
        return Ok(());
    }
    let len = file.metadata()?.len();
    let end = offset
        .checked_add(dst.len() as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "window overflows"))?;
    if end > len && file.metadata()?.is_file() {
        // Mapping past the end of a file would fault on access; report a short read.
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "mapped window runs past the end of the file",
        ));
    }
    // SAFETY: the map is read-only, private to this call and dropped before it returns,
    // after one copy. The window lies inside the file (checked just above for regular
    // files), so no access faults unless another process truncates the file meanwhile.
    // vhdkit takes an advisory shared lock on every file it reads and an exclusive lock
    // on every file it modifies (image::file::open_file), so no vhdkit process changes
    // the file under the map; and within this process, writers (compact, merge) never
    // write a range while it is mapped — they map a block's old location, copy it out,
    // unmap, and only then write elsewhere. A concurrent writer that ignores the locks
    // could make the copied bytes inconsistent (never memory-unsafe for `&[u8]` copies
    // of plain bytes) or raise SIGBUS by truncating the file; that is the documented
    // limit of memory-mapped reading.
    let map = unsafe { MmapOptions::new().offset(offset).len(dst.len()).map(file)? };
    dst.copy_from_slice(&map);
    Ok(())
}
