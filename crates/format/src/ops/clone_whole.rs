//! Whole-file clone: a conversion whose output is its source's bytes as they are — a
//! fixed VHD or a raw image into a raw result of the same size, on a file system that
//! shares extents between files (XFS with reflink, btrfs, APFS, ReFS) — clones the whole
//! source file in one call and cuts a fixed disk's footer off, instead of mapping and
//! cloning it run by run. The output is the same new file as ever (unnamed or hidden
//! until complete, synced, linked without replacing); `--verify` reads the source and the
//! result and compares them. Where the file system refuses, nothing was cloned and the
//! ordinary conversion runs.
//!
//! How the clone is made depends on the new file ([`NewFile::clone_whole_from`]): an
//! unnamed one (Linux `O_TMPFILE`) is cloned into (`FICLONE`); a named one (macOS,
//! Windows, Linux file systems without `O_TMPFILE`) is replaced by a clone made under a
//! second hidden name (`vhdkit_platform::clone_file_to`: macOS `fclonefileat`, else a new
//! file and `FICLONE` or `FSCTL_DUPLICATE_EXTENTS_TO_FILE`). The named way is the same
//! code on every system but for that one call, and Linux's tests run it.

use rayon::prelude::*;
use vhdkit_task::{Phase, Progress};

use crate::error::{Error, Result};
use crate::image::{Disk, DiskKind, NewFile};

use super::convert::{crc_of, verify};
use super::source::{compose_copied, BufferPool};
use super::units::{data_units, units_and_bytes};
use super::{OpsOptions, Target};

/// Clones `disk` whole into `new` when the result is the source's bytes as they are
/// (see the module's doc) and the source lies on the output's volume, whose file system
/// clones whole files ([`vhdkit_platform::whole_clone_volume`]): `Ok(true)` when done
/// (the output holds the disk, `size` bytes), `Ok(false)` when this conversion or the
/// file system does not allow it and the output is still empty.
pub(crate) fn try_clone(
    disk: &Disk,
    new: &mut NewFile,
    target: Target,
    size: u64,
    opts: &OpsOptions,
) -> Result<bool> {
    let [top] = disk.layers() else {
        return Ok(false);
    };
    let as_they_are = target == Target::Raw
        && matches!(top.kind(), DiskKind::Fixed | DiskKind::Raw)
        && !top.is_vhdx()
        && size == disk.virtual_size()
        && opts.unused_ranges.is_none()
        && new.device().is_none();
    let Some(src) = top.data_file().filter(|_| as_they_are) else {
        return Ok(false);
    };
    let volume = vhdkit_platform::whole_clone_volume(new.file());
    if volume.is_none() || top.data_device() != volume {
        return Ok(false);
    }
    match new.clone_whole_from(src) {
        Ok(()) => {}
        Err(e) if vhdkit_platform::clone_refused(&e) => {
            // Nothing cloned; a clone through ranges may have set the length.
            new.file()
                .set_len(0)
                .map_err(|e| Error::file(new.shown_path(), "emptying the new file", e))?;
            return Ok(false);
        }
        Err(e) => return Err(Error::file(new.shown_path(), "cloning the source", e)),
    }
    // A fixed disk's footer (and any padding an interrupted resize left before it).
    new.file()
        .set_len(size)
        .map_err(|e| Error::file(new.shown_path(), "cutting the footer off", e))?;
    Ok(true)
}

/// `--verify` of a whole-file clone: the CRC32 of every block the source stores, read
/// from it, against the result read back.
pub(crate) fn verify_clone(
    disk: &Disk,
    new: &NewFile,
    size: u64,
    unit: u64,
    opts: &OpsOptions,
    progress: &Progress,
) -> Result<()> {
    let units: Vec<u64> = data_units(disk, size, unit, None)
        .into_iter()
        .flatten()
        .collect();
    let runs: Vec<std::ops::Range<u64>> = units.iter().map(|&i| i..i + 1).collect();
    let (blocks, bytes) = units_and_bytes(&runs, unit, size);
    progress.set_phase(Phase::Verify, blocks, bytes);
    let pool = BufferPool::default();
    let per_chunk = (opts.chunk_bytes / unit).max(1) as usize;
    let mut expected = Vec::with_capacity(units.len());
    for chunk in units.chunks(per_chunk) {
        progress.check_cancelled()?;
        let crcs = chunk
            .par_iter()
            .map(|&b| {
                let c = compose_copied(disk, size, b, unit, &pool)?;
                let crc = crc_of(&c);
                pool.give(c.data);
                Ok(crc)
            })
            .collect::<Result<Vec<_>>>()?;
        for &b in chunk {
            progress.block_done(b, unit.min(size - b * unit));
        }
        expected.extend(crcs);
    }
    verify(new, Target::Raw, size, unit, &expected, opts, progress)
}

/// The named way of a whole-file clone (the one macOS and Windows take), forced on Linux
/// ([`crate::image::newfile::NAMED_ONLY`]) on real file systems made on loop devices:
/// needs root, mkfs.xfs, mkfs.btrfs, filefrag and qemu-img (a missing one fails).
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use vhdkit_task::{CancelToken, Progress};
    use vhdkit_testkit::disks::{extents, sh, ImageFs};
    use vhdkit_testkit::{dir_names, Rng};

    use super::*;
    use crate::image::newfile::NAMED_ONLY;
    use crate::image::{CreateOptions, OutputOptions};
    use crate::ops::{convert::convert_disk, Operation, Report};

    const SIZE: u64 = 16 << 20;
    /// The result's permission bits asked for: neither the source's (0o644, which
    /// `clonefile` copies) nor those of the clone as made (0o600).
    const MODE: u32 = 0o640;

    /// A fixed disk `name` in `fs` (mode 0o644) with data in places and holes between,
    /// and the bytes it reads as.
    fn fixed(fs: &ImageFs, name: &str) -> (PathBuf, Vec<u8>) {
        let path = fs.path(name);
        let disk = Disk::create_and_open(&path, &CreateOptions::new(DiskKind::Fixed, SIZE))
            .expect("create");
        let mut raw = vec![0u8; SIZE as usize];
        let mut rng = Rng::new(0xc10e);
        for (at, len) in [(0, 3 << 20), (5 << 20, 4096), (9 << 20, 2 << 20)] {
            let bytes = rng.bytes(len);
            disk.write_at(&bytes, at as u64).expect("write");
            raw[at..at + len].copy_from_slice(&bytes);
        }
        disk.flush().expect("flush");
        drop(disk);
        vhdkit_platform::set_mode(&path, 0o644).expect("chmod");
        (path, raw)
    }

    fn opts(verify: bool) -> OpsOptions {
        OpsOptions {
            verify,
            output: OutputOptions::new().mode(MODE),
            ..OpsOptions::default()
        }
    }

    /// Converts `src` to raw at `dst` with named new files only.
    fn convert_named(src: &Path, dst: &Path, verify: bool) -> Report {
        let opts = opts(verify);
        let disk = Disk::open_any(src, &opts.open).expect("open");
        NAMED_ONLY.set(true);
        let report = convert_disk(
            &disk,
            dst,
            Target::Raw,
            &opts,
            &Progress::detached(CancelToken::new()),
            Operation::Convert,
        );
        NAMED_ONLY.set(false);
        report.expect("convert")
    }

    /// The result reads as `want` (vhdkit's reading and qemu-img's comparison with the
    /// source), has the permission bits asked for, and no temporary name is left.
    fn assert_result(fs: &ImageFs, src: &Path, out: &Path, want: &[u8]) {
        assert!(
            std::fs::read(out).expect("read") == want,
            "the result differs"
        );
        sh(&format!(
            "qemu-img compare -q -f raw -F vpc '{}' '{}'",
            out.display(),
            src.display()
        ));
        let mode = std::fs::metadata(out).expect("meta").mode() & 0o777;
        assert_eq!(mode, MODE & !vhdkit_testkit::umask(), "permission bits");
        let left: Vec<String> = dir_names(&fs.path(""))
            .into_iter()
            .filter(|n| n.ends_with(crate::image::output::TEMP_SUFFIX))
            .collect();
        assert!(left.is_empty(), "temporary names left: {left:?}");
    }

    /// Every extent of `path` is shared with another file (FIEMAP_EXTENT_SHARED).
    fn assert_shared(path: &Path) {
        let list = extents(path);
        assert!(!list.is_empty(), "no extents");
        assert!(
            list.iter().all(|e| e.contains("shared")),
            "extents not shared: {list:#?}"
        );
    }

    /// The named new file is replaced by a clone of the source made under a second
    /// temporary name: the result is the source's data, shares all its extents, has the
    /// bits asked for, and no temporary name remains (with `--verify` too).
    fn named_clone_on(kind: &str) {
        let fs = ImageFs::new(kind);
        let (src, raw) = fixed(&fs, "fixed.vhd");
        for (name, verify) in [("out.raw", false), ("out-v.raw", true)] {
            let out = fs.path(name);
            let report = convert_named(&src, &out, verify);
            assert_eq!(report.bytes_cloned, SIZE, "{name}");
            assert_eq!(report.verified, verify, "{name}");
            assert_result(&fs, &src, &out, &raw);
            assert_shared(&out);
        }
    }

    #[test]
    fn a_named_new_file_on_xfs_becomes_a_clone_of_the_source() {
        named_clone_on("xfs");
    }

    #[test]
    fn a_named_new_file_on_btrfs_becomes_a_clone_of_the_source() {
        named_clone_on("btrfs");
    }

    /// A named new file made by `NewFile::create` for `out`.
    fn named_new(out: &Path) -> NewFile {
        NAMED_ONLY.set(true);
        let new = NewFile::create(out, &OutputOptions::new().mode(MODE), None, 0);
        NAMED_ONLY.set(false);
        new.expect("new file")
    }

    /// After the clone the new file is under another temporary name (the empty one is
    /// gone); a name that appeared meanwhile is never replaced, and a clone dropped
    /// (cancelled) or refused to be named leaves no file behind.
    #[test]
    fn a_cloned_named_file_never_replaces_a_name_and_leaves_nothing_when_dropped() {
        let fs = ImageFs::new("xfs");
        let (src, raw) = fixed(&fs, "fixed.vhd");
        let disk = Disk::open(&src).expect("open");
        let out = fs.path("out.raw");
        let temporaries = || {
            dir_names(&fs.path(""))
                .into_iter()
                .filter(|n| n.starts_with(".out.raw."))
                .collect::<Vec<_>>()
        };

        let mut new = named_new(&out);
        let empty = new.shown_path().to_owned();
        assert!(try_clone(&disk, &mut new, Target::Raw, SIZE, &opts(false)).expect("clone"));
        assert_ne!(new.shown_path(), empty, "the clone has a name of its own");
        assert!(!empty.exists(), "the empty file is removed");
        let name = new
            .shown_path()
            .file_name()
            .expect("name")
            .to_string_lossy();
        assert_eq!(temporaries(), [name.into_owned()]);
        assert!(!out.exists(), "no name before it is complete");
        std::fs::write(&out, b"someone else's").expect("a file appears");
        assert!(matches!(
            new.persist(&out),
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(std::fs::read(&out).expect("read"), b"someone else's");
        assert_eq!(temporaries(), Vec::<String>::new());
        std::fs::remove_file(&out).expect("rm");

        let mut new = named_new(&out);
        assert!(try_clone(&disk, &mut new, Target::Raw, SIZE, &opts(false)).expect("clone"));
        drop(new);
        assert_eq!(temporaries(), Vec::<String>::new());
        assert!(!out.exists());

        let mut new = named_new(&out);
        assert!(try_clone(&disk, &mut new, Target::Raw, SIZE, &opts(false)).expect("clone"));
        new.persist(&out).expect("persist");
        assert_eq!(temporaries(), Vec::<String>::new());
        assert!(std::fs::read(&out).expect("read") == raw);
    }

    /// XFS without reflink says it is XFS but refuses the clone (`EOPNOTSUPP`): the
    /// clone's name is removed again, the new file stays the empty one, and the
    /// ordinary conversion writes the same bytes. Where the file system clones nothing
    /// (ext4) or the source lies elsewhere (another XFS), no clone is tried.
    #[test]
    fn a_refused_or_impossible_clone_falls_back_to_the_copy() {
        let noreflink = ImageFs::new("xfs-noreflink");
        let (src, raw) = fixed(&noreflink, "fixed.vhd");
        let disk = Disk::open(&src).expect("open");
        let mut new = named_new(&noreflink.path("direct.raw"));
        let empty = new.shown_path().to_owned();
        assert!(!try_clone(&disk, &mut new, Target::Raw, SIZE, &opts(false)).expect("refusal"));
        assert_eq!(new.shown_path(), empty, "still the empty new file");
        assert_eq!(new.file().metadata().expect("meta").len(), 0);
        let names = dir_names(&noreflink.path(""));
        assert_eq!(names.len(), 2, "the clone's name is removed: {names:?}");
        drop((new, disk));

        let out = noreflink.path("out.raw");
        let report = convert_named(&src, &out, true);
        assert_eq!(report.bytes_cloned, 0);
        assert_result(&noreflink, &src, &out, &raw);

        let ext4 = ImageFs::new("ext4");
        let (src, raw) = fixed(&ext4, "fixed.vhd");
        let out = ext4.path("out.raw");
        assert_eq!(convert_named(&src, &out, false).bytes_cloned, 0);
        assert_result(&ext4, &src, &out, &raw);

        let other = ImageFs::new("xfs");
        let out = other.path("out.raw");
        assert_eq!(convert_named(&src, &out, false).bytes_cloned, 0);
        assert_result(&other, &src, &out, &raw);
    }
}
