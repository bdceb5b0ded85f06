//! Merge into an ancestor (`Merge-VHD -DestinationPath`, diskpart `merge vdisk depth=N`,
//! VirtualBox's mergeTo): the sectors the child and every disk between it and the
//! ancestor hold are written into the ancestor; then the child is relinked straight to
//! the ancestor (or deleted), and the intermediate disks — which no longer describe a
//! consistent disk once their ancestor changed — are removed.
//!
//! Crash safety: **the child reads exactly as before, at every instant.**
//! 1. For each window of the disk, every sector some level above the ancestor holds is
//!    written into the ancestor, with the bytes the child's chain shows for it (the
//!    topmost level holding it), through the ancestor's own crash-safe write path. The
//!    child and the intermediates override those sectors anyway, so the writes are
//!    invisible through the child; a rerun repeats the same idempotent writes.
//! 2. The ancestor is synced.
//! 3. The child is relinked to the ancestor (`relink`: new locator payloads appended and
//!    synced, then the header in one write): the ancestor now holds everything the
//!    intermediates held, so the child's view is the same through either parent. With
//!    `delete_child` the child is deleted instead (the ancestor alone reads as it did).
//! 4. The intermediates are deleted (unless kept), the folders synced.
//!
//! A kill before 3 leaves the chain as it was (the ancestor holding part or all of the
//! merge, invisibly); running the same command again completes it. A kill between 3 and
//! 4 leaves the child on the ancestor and intermediates no disk names any more.
//!
//! Before 1, disks outside the chain that depend on what it changes are refused
//! ([`open`]); a rerun after 3 finds the intermediate left naming the ancestor, but the
//! ancestor already reads what it would write (`would_change`), so nothing changes
//! for that disk and the rerun goes ahead.

use std::path::{Path, PathBuf};
use std::time::Instant;

use vhdkit_task::{Phase, Progress};

use crate::error::{Error, Result};
use crate::image::create::ParentLink;
use crate::image::file::{LayerExtent, VhdFile};
use crate::image::{sync_dir, Disk, DiskKind, FsResolver, ParentCandidate};

use super::dependents::{Dependents, Effect};
use super::{Operation, OpsOptions, PhaseClock, Report};

/// Which ancestor to merge into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ancestor {
    /// The disk `n` levels up the chain (1: the parent), as diskpart's `depth`.
    Depth(usize),
    /// The disk at this path, which must be in the child's chain.
    Path(PathBuf),
}

/// The files of a merge into an ancestor, checked, opened and locked for writing before
/// any work.
#[derive(Debug)]
pub struct MergeIntoFiles {
    child_path: PathBuf,
    child: VhdFile,
    middle: Vec<VhdFile>,
    ancestor_path: PathBuf,
    ancestor: Disk,
}

impl MergeIntoFiles {
    /// The ancestor written into.
    pub fn ancestor(&self) -> &Path {
        &self.ancestor_path
    }

    /// The intermediate disks (between the child and the ancestor), top first.
    pub fn intermediates(&self) -> Vec<PathBuf> {
        self.middle.iter().map(|f| f.path().to_owned()).collect()
    }
}

fn dir_of(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Checks and opens a merge of `child` into `ancestor`: a differencing chain that
/// reaches it; every link trusted for writing (docs/security.md); unless `opts.force`,
/// no disk outside the chain naming as its parent the ancestor (it reads different
/// bytes), an intermediate (removed, or kept over a changed ancestor) or, with
/// `opts.delete_child`, the child ([`Error::HasChildren`]); every file taken before the
/// first write.
pub fn open(
    child: impl AsRef<Path>,
    ancestor: &Ancestor,
    opts: &OpsOptions,
) -> Result<MergeIntoFiles> {
    let child = child.as_ref();
    let open = opts.open.clone().writable(true);
    let look = opts.open.clone().writable(false);
    let vhdx = VhdFile::open(child, &look.clone().no_parents(true))?.is_vhdx();
    // One open of each file: the child and the ancestor (when the chain may write into
    // it) for writing, the levels between read-only; the chain found is the chain
    // merged, so nothing can be swapped between the checks and the writes.
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let wanted = match ancestor {
        Ancestor::Path(p) => Some(canon(p)),
        Ancestor::Depth(_) => None,
    };
    // In a VHDX chain the level right above the ancestor records the ancestor's next
    // data write GUID before the merge writes (`vhdx_link`): it is opened for writing
    // too. Its depth, for an ancestor named by path, from a first read-only look.
    let above = match (vhdx, ancestor) {
        (false, _) => None,
        (true, Ancestor::Depth(n)) => n.checked_sub(1).filter(|&l| l >= 1),
        (true, Ancestor::Path(_)) => {
            let look = Disk::open_with(child, &look)?;
            look.layers()
                .iter()
                .position(|l| Some(canon(l.path())) == wanted)
                .and_then(|k| k.checked_sub(1))
                .filter(|&l| l >= 1)
        }
    };
    let write = |level: usize, c: &ParentCandidate| {
        let here = match (ancestor, &wanted) {
            (Ancestor::Depth(n), _) => level == *n,
            (Ancestor::Path(_), Some(w)) => canon(&c.path) == *w,
            (Ancestor::Path(_), None) => false,
        };
        (here || above == Some(level)) && c.found_by.trusted_for_writing()
    };
    let top = VhdFile::open(child, &open)?;
    let chain = Disk::resolve_writing(top, &open, &FsResolver, &write)?;
    if chain.kind() != DiskKind::Differencing {
        return Err(Error::WrongDiskType {
            path: child.to_owned(),
            found: chain.kind().to_string(),
            expected: "merge needs a differencing disk".into(),
        });
    }
    let layers: Vec<(PathBuf, uuid::Uuid)> = chain
        .layers()
        .iter()
        .map(|l| (l.path().to_owned(), l.footer().unique_id))
        .collect();
    let k = match ancestor {
        Ancestor::Depth(n) if *n >= 1 && *n < layers.len() => *n,
        Ancestor::Depth(n) => {
            return Err(Error::InvalidArgument(format!(
                "{}: depth {n}: its chain has {} level(s) above the base",
                child.display(),
                layers.len() - 1
            )))
        }
        Ancestor::Path(p) => {
            let want = canon(p);
            layers
                .iter()
                .skip(1)
                .position(|(l, _)| canon(l) == want)
                .map(|i| i + 1)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{} is not an ancestor of {}",
                        p.display(),
                        child.display()
                    ))
                })?
        }
    };
    for (level, (path, _)) in layers.iter().enumerate().take(k + 1).skip(1) {
        if !chain
            .found_by(level)
            .is_some_and(|f| f.trusted_for_writing())
        {
            return Err(Error::NotAllowed {
                path: child.to_owned(),
                detail: format!(
                    "merge would write into or remove {}, which the chain names by an absolute path outside its folder; name the parent with --with-parent to confirm",
                    path.display()
                ),
            });
        }
    }
    let size = chain.virtual_size();
    if chain.layers()[k].virtual_size() < size {
        return Err(Error::InvalidArgument(format!(
            "{}: the ancestor {} is smaller than the child",
            child.display(),
            layers[k].0.display()
        )));
    }
    if !chain.layers()[k].is_writable() {
        return Err(Error::ReadOnly {
            path: layers[k].0.clone(),
            detail: "the file is read-only".into(),
        });
    }
    if vhdx && k >= 2 && !chain.layers()[k - 1].is_writable() {
        return Err(Error::ReadOnly {
            path: layers[k - 1].0.clone(),
            detail: "the VHDX level above the ancestor records the ancestor's next identity before the merge writes; it is read-only".into(),
        });
    }
    let (mut upper, ancestor_disk) = chain.split_at(k);
    let child_file = upper.remove(0);
    let middle = upper;
    let ancestor_path = layers[k].0.clone();
    // Disks that depend on what this changes or removes, besides the chain itself: other
    // children of the ancestor (it is rewritten), of an intermediate (removed, or kept
    // over a changed ancestor) and, when deleted, of the child.
    let chain_paths: Vec<&Path> = layers[..=k].iter().map(|(p, _)| p.as_path()).collect();
    let mut dependents = Dependents::new(opts);
    dependents.look(&layers[k].0, layers[k].1, Effect::Reads, &chain_paths)?;
    let effect = if opts.keep_intermediates {
        Effect::Reads
    } else {
        Effect::Orphaned
    };
    for (path, id) in &layers[1..k] {
        dependents.look(path, *id, effect, &chain_paths)?;
    }
    if opts.delete_child {
        dependents.look(child, layers[0].1, Effect::Orphaned, &chain_paths)?;
    }
    // What the ancestor (and through it a kept intermediate) reads changes only where it
    // does not hold the upper levels' bytes already: a rerun of a merge stopped after its
    // writes changes nothing for the disks left naming the ancestor.
    if dependents.has_readers() {
        let levels: Vec<&VhdFile> = std::iter::once(&child_file).chain(&middle).collect();
        if !would_change(&levels, &ancestor_disk, size, opts)? {
            dependents.forget_readers();
        }
    }
    dependents.refuse(child)?;
    Ok(MergeIntoFiles {
        child_path: child.to_owned(),
        child: child_file,
        middle,
        ancestor_path,
        ancestor: ancestor_disk,
    })
}

/// Merges `child` into `ancestor`: [`open`], then [`run`].
pub fn merge_into(
    child: impl AsRef<Path>,
    ancestor: &Ancestor,
    opts: &OpsOptions,
    progress: &Progress,
) -> Result<Report> {
    let child = child.as_ref();
    run(open(child, ancestor, opts)?, opts, progress)
}

/// Runs a merge into an ancestor on files [`open`] took, in the order of the module docs.
pub fn run(files: MergeIntoFiles, opts: &OpsOptions, progress: &Progress) -> Result<Report> {
    let start = Instant::now();
    let MergeIntoFiles {
        child_path,
        mut child,
        middle,
        ancestor_path,
        ancestor,
    } = files;
    let size = child.virtual_size();
    let mut report = Report {
        operation: Operation::MergeInto,
        path: ancestor_path.clone(),
        file_size_before: ancestor.top().file_len(),
        ..Report::default()
    };
    let window = opts.chunk_bytes.max(1 << 20).div_ceil(4096) * 4096;
    let windows = size.div_ceil(window);
    report.blocks_total = windows;
    let mut clock = PhaseClock::start();
    progress.plan_phases(&[(Phase::Copy, size)]);
    progress.set_phase(Phase::Copy, windows, size);
    // 1. Every sector held above the ancestor, written into it (a VHDX level above
    // the ancestor first accepts the ancestor's next data write GUID).
    let levels: Vec<&VhdFile> = std::iter::once(&child).chain(&middle).collect();
    let above = *levels.last().expect("the child is a level");
    progress.check_cancelled()?;
    super::vhdx_link::stage(above, ancestor.top())?;
    for w in 0..windows {
        progress.check_cancelled()?;
        let pos = w * window;
        let n = window.min(size - pos);
        let covered = covered_ranges(&levels, pos, n)?;
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::with_capacity(covered.len());
        for (off, len) in covered {
            let mut buf = vec![0u8; len as usize];
            read_upper(&levels, off, &mut buf)?;
            runs.push((off, buf));
        }
        report.bytes_written += runs.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
        let refs: Vec<(u64, &[u8])> = runs.iter().map(|(o, d)| (*o, d.as_slice())).collect();
        ancestor.write_runs(&refs)?;
        report.blocks_copied += u64::from(!runs.is_empty());
        progress.block_done(w, n);
    }
    clock.lap(&mut report, "copy");
    // 2. The ancestor durable.
    progress.set_phase(Phase::Flush, 0, 0);
    ancestor.flush()?;
    report.file_size_after = ancestor.top().file_len();
    clock.lap(&mut report, "flush");
    // What the child records about the ancestor, from the ancestor as written (its
    // modification time included), not from opening it again.
    let link = match opts.delete_child {
        true => None,
        false => Some(ParentLink::of_open(&child_path, &ancestor_path, &ancestor)?),
    };
    let ancestor_guid = ancestor.top().vhdx_data_write_guid();
    drop(ancestor);
    // A kept VHDX intermediate above the ancestor names it as it is now.
    if let (Some(guid), true, false) = (ancestor_guid, opts.keep_intermediates, middle.is_empty()) {
        super::vhdx_link::settle(above, guid)?;
    }
    // 3. The child on the ancestor (or gone).
    progress.check_cancelled()?;
    match link {
        None => {
            drop(child);
            remove(&child_path)?;
        }
        Some(link) => {
            match ancestor_guid {
                Some(guid) => super::vhdx_link::relink(&child, &link, guid)?,
                None => {
                    super::relink::relink(&mut child, &link, true)?;
                }
            }
            drop(child);
        }
    }
    clock.lap(&mut report, "child");
    // 4. The intermediates.
    if !opts.keep_intermediates {
        let paths: Vec<PathBuf> = middle.iter().map(|f| f.path().to_owned()).collect();
        drop(middle);
        for p in &paths {
            remove(p)?;
        }
    }
    clock.lap(&mut report, "intermediates");
    report.elapsed = start.elapsed();
    Ok(report)
}

fn remove(p: &Path) -> Result<()> {
    std::fs::remove_file(p).map_err(|e| Error::file(p, "deleting a merged disk", e))?;
    let dir = dir_of(p);
    sync_dir(dir).map_err(|e| Error::file(dir, "syncing the directory", e))
}

/// Whether writing what `levels` (top first) store into `ancestor` — the bytes the
/// levels show wherever one of them stores something — would change what the ancestor
/// reads: read and compared a window at a time, stopping at the first difference.
pub(crate) fn would_change(
    levels: &[&VhdFile],
    ancestor: &Disk,
    size: u64,
    opts: &OpsOptions,
) -> Result<bool> {
    let window = opts.chunk_bytes.max(1 << 20);
    let mut pos = 0;
    while pos < size {
        let n = window.min(size - pos);
        for (off, len) in covered_ranges(levels, pos, n)? {
            let mut upper = vec![0u8; len as usize];
            read_upper(levels, off, &mut upper)?;
            let mut below = vec![0u8; len as usize];
            ancestor.read_at(&mut below, off)?;
            if upper != below {
                return Ok(true);
            }
        }
        pos += n;
    }
    Ok(false)
}

/// The ranges of `pos..pos + n` that some level stores itself, sorted and merged.
fn covered_ranges(levels: &[&VhdFile], pos: u64, n: u64) -> Result<Vec<(u64, u64)>> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for level in levels {
        let mut at = pos;
        // A VHDX level's zero blocks read zeros over what is below: they count.
        let zeros_count = level.is_vhdx();
        for e in level.extents(pos, n)? {
            if matches!(e, LayerExtent::Data { .. })
                || (zeros_count && matches!(e, LayerExtent::Zero { .. }))
            {
                ranges.push((at, at + e.len()));
            }
            at += e.len();
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Ok(merged.into_iter().map(|(a, b)| (a, b - a)).collect())
}

/// Fills `buf` with the bytes of `offset..` as the levels show them: each sector from
/// the topmost level that stores it (the ranges passed are stored by some level).
fn read_upper(levels: &[&VhdFile], offset: u64, buf: &mut [u8]) -> Result<()> {
    let mut pending = vec![(offset, buf.len() as u64)];
    for level in levels {
        let mut next = Vec::new();
        for (off, len) in pending {
            let mut at = off;
            for e in level.extents(off, len)? {
                let l = e.len();
                let dst = &mut buf[(at - offset) as usize..(at - offset + l) as usize];
                match e {
                    LayerExtent::Data { file_offset, .. } => level.read_data(dst, file_offset)?,
                    LayerExtent::Zero { .. } => dst.fill(0),
                    LayerExtent::Parent { .. } => next.push((at, l)),
                }
                at += l;
            }
        }
        pending = next;
        if pending.is_empty() {
            break;
        }
    }
    // Not stored above the ancestor: the caller passes only stored ranges, so this
    // is unreachable for a consistent chain; zeros would be wrong, so refuse.
    if let Some(&(off, _)) = pending.first() {
        return Err(Error::InvalidArgument(format!(
            "offset {off}: not stored above the ancestor (the chain changed?)"
        )));
    }
    Ok(())
}
