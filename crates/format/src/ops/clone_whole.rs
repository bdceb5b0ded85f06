//! Whole-file clone: a conversion whose output is its source's bytes as they are — a
//! fixed VHD or a raw image into a raw result of the same size, on a file system that
//! shares extents between files (XFS with reflink, btrfs, ReFS) — clones the whole
//! source file in one call (`vhdkit_platform::clone_file`: Linux `FICLONE`) and cuts a
//! fixed disk's footer off, instead of mapping and cloning it run by run. The output is
//! the same new file as ever (unnamed or hidden until complete, synced, linked without
//! replacing); `--verify` reads the source and the result and compares them. Where the
//! file system refuses, nothing was cloned and the ordinary conversion runs.

use rayon::prelude::*;
use vhdkit_task::{Phase, Progress};

use crate::error::{Error, Result};
use crate::image::{Disk, DiskKind, NewFile};

use super::convert::{crc_of, verify};
use super::source::{compose_copied, BufferPool};
use super::units::{data_units, units_and_bytes};
use super::{OpsOptions, Target};

/// Clones `disk` whole into `new` when the result is the source's bytes as they are
/// (see the module's doc): `Ok(true)` when done (the output holds the disk, `size`
/// bytes), `Ok(false)` when this conversion or the file system does not allow it and
/// the output is still empty.
pub(crate) fn try_clone(
    disk: &Disk,
    new: &NewFile,
    target: Target,
    size: u64,
    opts: &OpsOptions,
    offload: Option<u64>,
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
    if offload.is_none() || top.data_device() != offload {
        return Ok(false);
    }
    let path = new.shown_path();
    match new.backend.clone_all_from(src) {
        Ok(()) => {}
        Err(e) if vhdkit_platform::clone_refused(&e) => {
            // Nothing cloned; a clone through ranges may have set the length.
            new.file()
                .set_len(0)
                .map_err(|e| Error::file(path, "emptying the new file", e))?;
            return Ok(false);
        }
        Err(e) => return Err(Error::file(path, "cloning the source", e)),
    }
    // A fixed disk's footer (and any padding an interrupted resize left before it).
    new.file()
        .set_len(size)
        .map_err(|e| Error::file(path, "cutting the footer off", e))?;
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
