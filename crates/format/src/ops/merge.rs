//! Merge: write a differencing disk's own sectors into its immediate parent, in place.
//!
//! Crash safety: **the child's view never changes.** Every run of sectors whose bit is
//! set in the child is written into the parent through the parent's own crash-safe
//! write path (data and bitmap durable before the BAT entry). The child overrides those
//! sectors anyway, so a partial merge is invisible through the child, and a rerun
//! repeats the same idempotent writes. The parent seen alone changes — that is what a
//! merge means — and so does every other disk naming the parent as theirs, which is
//! why the merge is refused while there are any (`dependents`), unless forced. The
//! parent is fsynced before success is reported; then the child's
//! recorded parent time stamp is updated (what strict readers check), and with
//! `delete_child` the child is deleted last.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use vhdkit_task::{Phase, Progress};

use crate::error::{Error, Result};
use crate::image::file::{LayerExtent, VhdFile};
use crate::image::{sync_dir, Disk, DiskKind, FsResolver, ParentCandidate};
use crate::spec::VhdTime;

use super::dependents::{Dependents, Effect};
use super::merge_into::would_change;
use super::{OpsOptions, PhaseClock, Report};

/// Checks what can be seen before starting: a differencing disk, a parent that is
/// found, matches, is writable and is not smaller than the child. Returns the parent.
/// ([`open`] makes the same checks on the files it opens for the merge.)
pub fn precheck(child: impl AsRef<Path>, opts: &OpsOptions) -> Result<PathBuf> {
    let child = child.as_ref();
    let disk = Disk::open_with(child, &opts.open.clone().writable(false))?;
    check_chain(child, &disk)?;
    let parent = disk.layers()[1].path();
    let meta = std::fs::metadata(parent).map_err(|e| Error::file(parent, "reading metadata", e))?;
    if meta.permissions().readonly() {
        return Err(parent_read_only(parent));
    }
    Ok(parent.to_owned())
}

/// The checks of a merge on the chain it opened: a differencing disk, a parent the
/// child may write into without the user naming it, not smaller than the child.
fn check_chain(child: &Path, disk: &Disk) -> Result<()> {
    if disk.kind() != DiskKind::Differencing {
        return Err(Error::WrongDiskType {
            path: child.to_owned(),
            found: disk.kind().to_string(),
            expected: "merge needs a differencing disk".into(),
        });
    }
    let parent = &disk.layers()[1];
    // Merge writes into the parent: never into a file the child names by an absolute
    // path outside its own folder tree unless the user named it (docs/security.md).
    if !disk.found_by(1).is_some_and(|f| f.trusted_for_writing()) {
        return Err(Error::NotAllowed {
            path: child.to_owned(),
            detail: format!(
                "merge would write into {}, which the child names by an absolute path outside its folder; name the parent with --with-parent to confirm",
                parent.path().display()
            ),
        });
    }
    if parent.virtual_size() < disk.virtual_size() {
        return Err(Error::InvalidArgument(format!(
            "{}: the parent {} ({} bytes) is smaller than the child ({} bytes)",
            child.display(),
            parent.path().display(),
            parent.virtual_size(),
            disk.virtual_size()
        )));
    }
    Ok(())
}

fn parent_read_only(parent: &Path) -> Error {
    Error::ReadOnly {
        path: parent.to_owned(),
        detail: "the parent is read-only; merge writes into it".into(),
    }
}

/// The two files of a merge, opened and locked for writing before any work: another
/// process holding either is refused before the first byte is written.
#[derive(Debug)]
pub struct MergeFiles {
    child_path: PathBuf,
    parent_path: PathBuf,
    child: VhdFile,
    parent: Disk,
}

/// Checks a merge of `child` (see [`precheck`]) and opens both files for writing, once:
/// the child's chain is resolved with the child and its parent (when the child may write
/// into it) opened for writing, and split into the child and the parent's own chain.
/// Unless `opts.force`, refuses ([`Error::HasChildren`]) when other disks name the
/// parent as theirs (the merge changes what they read), and with `opts.delete_child`
/// when disks name the child as their parent (deleting it would orphan them) — looked
/// for in each disk's folder and in `opts.also_check`.
pub fn open(child: impl AsRef<Path>, opts: &OpsOptions) -> Result<MergeFiles> {
    let child = child.as_ref();
    let open = opts.open.clone().writable(true);
    let top = VhdFile::open(child, &open)?;
    // The parent opens for writing with its own chain (a differencing parent completes
    // partial granules from its ancestors); the chain found is the chain merged, so
    // nothing can be swapped between the checks and the writes.
    let write = |level: usize, c: &ParentCandidate| level == 1 && c.found_by.trusted_for_writing();
    let disk = Disk::resolve_writing(top, &open, &FsResolver, &write)?;
    check_chain(child, &disk)?;
    if !disk.layers()[1].is_writable() {
        return Err(parent_read_only(disk.layers()[1].path()));
    }
    let (mut upper, parent) = disk.split_at(1);
    let child_file = upper.remove(0);
    let parent_path = parent.top().path().to_owned();
    // The parent's other children read through what the merge rewrites.
    let mut dependents = Dependents::new(opts);
    dependents.look(
        &parent_path,
        parent.top().footer().unique_id,
        Effect::Reads,
        &[child],
    )?;
    // Unless the parent holds the child's bytes already (a rerun of a merge stopped
    // after its writes): then what they read does not change.
    if dependents.has_readers()
        && !would_change(&[&child_file], &parent, child_file.virtual_size(), opts)?
    {
        dependents.forget_readers();
    }
    if opts.delete_child {
        dependents.look(child, child_file.footer().unique_id, Effect::Orphaned, &[])?;
    }
    dependents.refuse(child)?;
    Ok(MergeFiles {
        child_path: child.to_owned(),
        parent_path,
        child: child_file,
        parent,
    })
}

/// Merges `child` into its parent: [`open`], then [`run`].
pub fn merge(child: impl AsRef<Path>, opts: &OpsOptions, progress: &Progress) -> Result<Report> {
    let child = child.as_ref();
    run(open(child, opts)?, opts, progress)
}

/// Runs a merge on files [`open`] took.
pub fn run(files: MergeFiles, opts: &OpsOptions, progress: &Progress) -> Result<Report> {
    let start = Instant::now();
    let MergeFiles {
        child_path,
        parent_path,
        child: mut child_file,
        parent,
    } = files;
    let child = child_path.as_path();
    let (block_size, blocks) = match child_file.vhdx() {
        Some(v) => (v.block_size(), v.merge_blocks()),
        None => {
            let bat = child_file.bat().expect("differencing disks have a BAT");
            let block_size = child_file
                .block_size()
                .expect("differencing disks have blocks");
            (block_size, bat.allocated().map(|(i, _)| i).collect())
        }
    };
    let file_size_before = parent.top().file_len();
    let mut report = Report {
        operation: super::Operation::Merge,
        path: parent_path.clone(),
        blocks_total: blocks.len() as u64,
        file_size_before,
        ..Report::default()
    };
    let mut clock = PhaseClock::start();
    progress.plan_phases(&[(Phase::Copy, blocks.len() as u64 * block_size)]);
    progress.set_phase(
        Phase::Copy,
        blocks.len() as u64,
        blocks.len() as u64 * block_size,
    );
    // Each chunk costs two syncs (the write order below), so it spans a round of chunks.
    let per_chunk = (opts
        .chunk_bytes
        .saturating_mul(super::IN_PLACE_ROUND_CHUNKS)
        / block_size)
        .max(1) as usize;
    // A VHDX child accepts the parent's next data write GUID before it is written.
    progress.check_cancelled()?;
    if !blocks.is_empty() {
        super::vhdx_link::stage(&child_file, parent.top())?;
    }
    for chunk in blocks.chunks(per_chunk) {
        progress.check_cancelled()?;
        // Compose the child's runs of marked sectors in parallel…
        let runs: Vec<Vec<(u64, RunData)>> = chunk
            .par_iter()
            .map(|&b| child_runs(&child_file, b, block_size))
            .collect::<Result<_>>()?;
        // …and write the whole chunk into the parent under one application of its
        // crash-safe write order (one footer move, two barriers).
        let runs: Vec<(u64, RunData)> = runs.into_iter().flatten().collect();
        report.bytes_written += runs.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
        let refs: Vec<(u64, &[u8])> = runs.iter().map(|(o, d)| (*o, &**d)).collect();
        parent.write_runs(&refs)?;
        for &b in chunk {
            report.blocks_copied += 1;
            progress.block_done(b, block_size);
        }
    }
    clock.lap(&mut report, "copy");
    progress.set_phase(Phase::Flush, 0, 0);
    parent.flush()?;
    clock.lap(&mut report, "flush");
    report.file_size_after = parent.top().file_len();
    let parent_guid = parent.top().vhdx_data_write_guid();
    drop(parent);
    if let Some(guid) = parent_guid {
        // A VHDX child names the parent's data write GUID as it is now.
        if !opts.delete_child {
            super::vhdx_link::settle(&child_file, guid)?;
        }
    } else {
        // The parent changed: record its new modification time in the child.
        let mtime = std::fs::metadata(&parent_path)
            .and_then(|m| m.modified())
            .map_err(|e| Error::file(&parent_path, "reading the modification time", e))?;
        let mut header = child_file
            .header()
            .cloned()
            .expect("differencing disks have a header");
        header.parent_timestamp = VhdTime::from_system_time(mtime);
        child_file.rewrite_header(header)?;
    }
    drop(child_file);
    if opts.delete_child {
        std::fs::remove_file(child)
            .map_err(|e| Error::file(child, "deleting the merged child", e))?;
        let dir = child
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| Error::file(dir, "syncing the directory", e))?;
    }
    clock.lap(&mut report, "child");
    report.elapsed = start.elapsed();
    Ok(report)
}

/// A run of the child's own sectors: mapped straight from the child's file (no copy)
/// when it lives in a file — a part of one window mapped for all the runs of a block —
/// copied otherwise.
enum RunData {
    Mapped(Arc<crate::image::Window>, std::ops::Range<usize>),
    Owned(Vec<u8>),
}

impl std::ops::Deref for RunData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            RunData::Mapped(w, r) => &w[r.clone()],
            RunData::Owned(v) => v,
        }
    }
}

/// The runs of sectors block `b` of the child holds itself: (virtual offset, bytes).
fn child_runs(child: &VhdFile, b: u64, block_size: u64) -> Result<Vec<(u64, RunData)>> {
    let start = b * block_size;
    let len = block_size.min(child.virtual_size().saturating_sub(start));
    let extents = child.extents(start, len)?;
    // The stored runs lie in order in the block's data area: one map spans them all
    // (a block whose bitmap alternates holds a run per other sector).
    let stored = extents.iter().filter_map(|e| match *e {
        LayerExtent::Data { file_offset, len } => Some((file_offset, file_offset + len)),
        _ => None,
    });
    let span = stored.fold(None, |acc: Option<(u64, u64)>, (s, t)| match acc {
        None => Some((s, t)),
        Some((a, z)) => Some((a.min(s), z.max(t))),
    });
    let window = match span {
        Some((s, t)) => child
            .map_data(s, t - s)
            .transpose()?
            .map(|w| (s, Arc::new(w))),
        None => None,
    };
    let mut out = Vec::new();
    let mut pos = start;
    for e in extents {
        // A VHDX child's zero blocks read zeros over the parent: the parent takes them.
        if let (LayerExtent::Zero { len }, true) = (e, child.is_vhdx()) {
            out.push((pos, RunData::Owned(vec![0u8; len as usize])));
        }
        if let LayerExtent::Data { file_offset, len } = e {
            let data = match &window {
                Some((s, w)) => {
                    let from = (file_offset - s) as usize;
                    RunData::Mapped(Arc::clone(w), from..from + len as usize)
                }
                None => {
                    let mut buf = vec![0u8; len as usize];
                    child.read_data(&mut buf, file_offset)?;
                    RunData::Owned(buf)
                }
            };
            out.push((pos, data));
        }
        pos += e.len();
    }
    Ok(out)
}
