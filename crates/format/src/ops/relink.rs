//! set-parent: point a differencing disk at a parent file again (its parent moved or was
//! copied, `Set-VHD -ParentPath`, `vhd-util modify -p`): parent unique id and time stamp,
//! parent name, and fresh relative (`W2ru`) and absolute (`W2ku`) locators, written as
//! `create` writes them (docs/parent-lookup.md). With `search`, the parent is found by
//! the unique id the child records among the VHDs under given folders.
//!
//! Crash safety: **the child always names a parent that works, the old one or the new
//! one.** 1. The new locator payloads are appended past the file's blocks: the footer
//! moves to the new end first (synced), then the payloads are written (synced) —
//! unreferenced space until a header names them (`check` reports it as information).
//! 2. The dynamic header is rewritten in one 1024-byte write and synced: before it the
//! child names its old parent, after it the new one. The header spans two sectors;
//! like Windows and vhd-util, vhdkit needs both to land together (a process kill never
//! tears a write; a power cut in the middle of it leaves a header whose checksum fails —
//! read with a warning — and set-parent can simply be run again). The old payloads stay
//! as unreferenced space.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::create::ParentLink;
use crate::image::{Disk, DiskKind, OpenOptions, VhdFile};
use crate::spec::locator::{encode_utf16le, ParentLocator};
use crate::spec::DynamicHeader;

/// What set-parent changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RelinkReport {
    /// The child rewritten.
    pub child: PathBuf,
    /// The parent it now names.
    pub parent: PathBuf,
    /// The parent name it recorded before.
    pub previous_parent_name: String,
    /// Whether the recorded parent unique id changed (only with `ignore_parent_id`).
    pub parent_id_changed: bool,
}

/// Deepest folder level [`search_parent`] descends to (the folders named are level 0).
pub const SEARCH_MAX_DEPTH: usize = 16;
/// Most folder entries [`search_parent`] visits, of any kind (files, folders, links,
/// anything else), before it gives up: the bound on its time however the folders are
/// filled.
pub const SEARCH_MAX_ENTRIES: usize = 100_000;

/// Points differencing disk `child` at `parent`. Refuses a parent whose unique id is not
/// the one the child records unless `ignore_parent_id` (the child then records the new
/// parent's id), a parent of another size, and a parent whose chain contains the child.
pub fn set_parent(
    child: impl AsRef<Path>,
    parent: impl AsRef<Path>,
    ignore_parent_id: bool,
) -> Result<RelinkReport> {
    let child = child.as_ref();
    let parent = parent.as_ref();
    // The loop first, before the child is taken for writing: a parent whose chain
    // leads back to the child would otherwise meet the child's own lock and read as
    // "in use".
    let alone = VhdFile::open(child, &OpenOptions::new().no_parents(true))?;
    if !alone.is_differencing() {
        return Err(Error::WrongDiskType {
            path: child.to_owned(),
            found: alone.kind().to_string(),
            expected: "set-parent needs a differencing disk".into(),
        });
    }
    refuse_loop(child, alone.footer().unique_id, parent)?;
    drop(alone);
    let mut file = VhdFile::open(child, &OpenOptions::new().writable(true))?;
    let link = match file.is_vhdx() {
        true => ParentLink::resolve_vhdx(child, parent)?,
        false => ParentLink::resolve(child, parent)?,
    };
    relink(&mut file, &link, ignore_parent_id)
}

/// Refuses, as a loop, a `parent` that is the child (unique id `id`, at `child`) itself,
/// or whose chain reaches it: a level that is the child, or that records the child's
/// unique id as its parent's. The parent's chain is resolved read-only as far as it
/// goes — the child's own parent may well be missing (that is what set-parent is for),
/// and the levels found before that are enough. Other failures are left for the link
/// to report.
fn refuse_loop(child: &Path, id: uuid::Uuid, parent: &Path) -> Result<()> {
    use crate::image::{FsResolver, ParentResolver};
    /// Each file a chain resolution opened: (canonical path, unique id, recorded parent id).
    #[derive(Default)]
    struct Seen(std::sync::Mutex<Vec<(PathBuf, uuid::Uuid, Option<uuid::Uuid>)>>);
    impl Seen {
        fn note(&self, f: &VhdFile) {
            let entry = (
                canonical(f.path()),
                f.footer().unique_id,
                recorded_parent_id(f),
            );
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
        }
    }
    impl ParentResolver for Seen {
        fn open(&self, path: &Path, opts: &OpenOptions) -> Result<Option<VhdFile>> {
            let f = FsResolver.open(path, opts)?;
            if let Some(f) = &f {
                self.note(f);
            }
            Ok(f)
        }
    }
    let dir = child
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // A relative parent is looked up next to the child first, as `ParentLink` does.
    let parent = if parent.is_relative() && dir.join(parent).is_file() {
        dir.join(parent)
    } else {
        parent.to_owned()
    };
    let Ok(top) = VhdFile::open(&parent, &OpenOptions::new().no_parents(true)) else {
        return Ok(());
    };
    let seen = Seen::default();
    seen.note(&top);
    let _ = Disk::resolve(top, &OpenOptions::new(), &seen);
    let seen = seen.0.into_inner().unwrap_or_else(|e| e.into_inner());
    let me = canonical(child);
    let mut level = seen.first();
    for _ in 0..=crate::image::DEFAULT_MAX_DEPTH {
        let Some((path, uid, parent_id)) = level else {
            break;
        };
        if *path == me || *uid == id || *parent_id == Some(id) {
            return Err(Error::ChainLoop {
                path: child.to_owned(),
                again: path.clone(),
            });
        }
        level = parent_id.and_then(|p| seen.iter().find(|(_, u, _)| *u == p));
    }
    Ok(())
}

/// The parent id a differencing disk records: a VHD's parent unique id, a VHDX file's
/// `parent_linkage` (its parent's data write GUID). `None` for other disks.
fn recorded_parent_id(f: &VhdFile) -> Option<uuid::Uuid> {
    if !f.is_differencing() {
        return None;
    }
    match f.vhdx() {
        Some(v) => v.parent_locator().and_then(|l| l.parent_linkage()),
        None => f.header().map(|h| h.parent_unique_id),
    }
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

/// Rewrites the open (writable) differencing `file` to name the parent `link`
/// describes, in the crash-safe order of the module docs.
pub(crate) fn relink(
    file: &mut VhdFile,
    link: &ParentLink,
    ignore_parent_id: bool,
) -> Result<RelinkReport> {
    if file.is_vhdx() {
        return relink_vhdx(file, link, ignore_parent_id);
    }
    let child = file.path().to_owned();
    let header = file.header().cloned().ok_or_else(|| Error::WrongDiskType {
        path: child.clone(),
        found: file.kind().to_string(),
        expected: "a differencing disk".into(),
    })?;
    let parent = PathBuf::from(&link.absolute);
    if link.unique_id == file.footer().unique_id {
        return Err(Error::ChainLoop {
            path: child,
            again: parent,
        });
    }
    if link.unique_id != header.parent_unique_id && !ignore_parent_id {
        return Err(Error::ParentIdMismatch {
            child,
            parent,
            expected: header.parent_unique_id,
        });
    }
    if link.size != file.virtual_size() {
        return Err(Error::InvalidArgument(format!(
            "{}: the parent {} is {} bytes, the child {}: a child and its parent have one size",
            child.display(),
            parent.display(),
            link.size,
            file.virtual_size()
        )));
    }
    // The parent's own chain must not lead back to the child.
    let chain = Disk::open_with(&parent, &OpenOptions::new())?;
    if chain
        .layers()
        .iter()
        .any(|l| l.footer().unique_id == file.footer().unique_id)
    {
        return Err(Error::ChainLoop {
            path: child,
            again: parent,
        });
    }
    drop(chain);
    let locators = link.locators();
    let payloads: Vec<Vec<u8>> = locators.iter().map(|(_, t)| encode_utf16le(t)).collect();
    if payloads
        .iter()
        .any(|p| p.len() > crate::spec::locator::MAX_LOCATOR_DATA as usize)
    {
        return Err(Error::InvalidArgument(format!(
            "{}: the parent's path is too long for a locator",
            parent.display()
        )));
    }
    // 1. The payloads, unreferenced until the header names them.
    let offsets = file.append_metadata(&payloads)?;
    // 2. The header, in one write.
    let mut new = header.clone();
    new.parent_unique_id = link.unique_id;
    new.parent_timestamp = link.timestamp;
    new.set_parent_name(&link.name)
        .map_err(Error::InvalidArgument)?;
    new.locators = [ParentLocator::EMPTY; 8];
    for (slot, (((code, _), payload), off)) in
        locators.iter().zip(&payloads).zip(offsets).enumerate()
    {
        let space = crate::spec::layout::locator_space(payload.len() as u64);
        new.locators[slot] = ParentLocator {
            code: *code,
            // Fit: at most MAX_LOCATOR_DATA, checked above.
            data_space: space as u32,
            data_length: payload.len() as u32,
            reserved: 0,
            data_offset: off,
        };
    }
    file.rewrite_header(new)?;
    Ok(RelinkReport {
        child,
        parent,
        previous_parent_name: header.parent_name(),
        parent_id_changed: link.unique_id != header.parent_unique_id,
    })
}

/// The parent a VHDX child names, for messages and reports: its relative path, else
/// its absolute one, else its linkage.
fn previous_name(loc: Option<&crate::vhdx::ParentLocator>) -> String {
    loc.and_then(|l| {
        l.relative_path()
            .or(l.absolute_win32_path())
            .map(str::to_owned)
            .or_else(|| l.parent_linkage().map(|g| format!("{{{g}}}")))
    })
    .unwrap_or_default()
}

/// [`relink`] for a VHDX child: the new parent must be a VHDX file of the child's size,
/// whose data write GUID the child records (`parent_linkage`, or `parent_linkage2`)
/// unless `ignore_parent_id`; the locator is rewritten through the child's log
/// (`vhdx_link`, "VHDX parent locator" in docs/crash-safety.md), its linkage the
/// parent's data write GUID.
fn relink_vhdx(file: &VhdFile, link: &ParentLink, ignore_parent_id: bool) -> Result<RelinkReport> {
    let child = file.path().to_owned();
    let parent = PathBuf::from(&link.absolute);
    let loc = file
        .vhdx()
        .and_then(|v| v.parent_locator())
        .cloned()
        .ok_or_else(|| Error::WrongDiskType {
            path: child.clone(),
            found: file.kind().to_string(),
            expected: "a differencing disk".into(),
        })?;
    let chain = Disk::open_with(&parent, &OpenOptions::new())?;
    if !chain.top().is_vhdx() {
        return Err(Error::WrongDiskType {
            path: parent,
            found: "a VHD".into(),
            expected:
                "a VHDX child's parent must be a VHDX file (Hyper-V mixes no containers in a chain)"
                    .into(),
        });
    }
    let id = file.footer().unique_id;
    if link.unique_id == id || chain.layers().iter().any(|l| l.footer().unique_id == id) {
        return Err(Error::ChainLoop {
            path: child,
            again: parent,
        });
    }
    drop(chain);
    let recorded = [loc.parent_linkage(), loc.parent_linkage2()];
    if !recorded.contains(&Some(link.unique_id)) && !ignore_parent_id {
        return Err(Error::ParentIdMismatch {
            child,
            parent,
            expected: loc.parent_linkage().unwrap_or_default(),
        });
    }
    if link.size != file.virtual_size() {
        return Err(Error::InvalidArgument(format!(
            "{}: the parent {} is {} bytes, the child {}: a child and its parent have one size",
            child.display(),
            parent.display(),
            link.size,
            file.virtual_size()
        )));
    }
    super::vhdx_link::relink(file, link, link.unique_id)?;
    Ok(RelinkReport {
        child,
        parent,
        previous_parent_name: previous_name(Some(&loc)),
        parent_id_changed: loc.parent_linkage() != Some(link.unique_id),
    })
}

/// Finds `child`'s missing parent by the unique id it records, among the VHDs (`.vhd`,
/// `.avhd`) under `dirs` (regular files only, at most [`SEARCH_MAX_DEPTH`] folders down,
/// at most [`SEARCH_MAX_ENTRIES`] entries visited; the folders waiting to be searched
/// are never more than the levels of the folder being read). Exactly one match is the
/// answer; none or several is an error naming what was searched or found.
pub fn search_parent(child: impl AsRef<Path>, dirs: &[impl AsRef<Path>]) -> Result<PathBuf> {
    let child = child.as_ref();
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.as_ref().to_owned()).collect();
    let alone = OpenOptions::new().no_parents(true);
    let file = VhdFile::open(child, &alone)?;
    let (Some(want), true) = (recorded_parent_id(&file), file.is_differencing()) else {
        return Err(Error::WrongDiskType {
            path: child.to_owned(),
            found: file.kind().to_string(),
            expected: "set-parent needs a differencing disk".into(),
        });
    };
    // A VHDX child's parent is a VHDX file (Hyper-V mixes no containers in a chain).
    let vhdx = file.is_vhdx();
    let name = match file.vhdx() {
        Some(v) => previous_name(v.parent_locator()),
        None => file
            .header()
            .map(DynamicHeader::parent_name)
            .unwrap_or_default(),
    };
    drop(file);
    if let Some(d) = dirs.iter().find(|d| !d.is_dir()) {
        return Err(if d.exists() {
            Error::InvalidArgument(format!(
                "{}: not a directory (--search takes folders)",
                d.display()
            ))
        } else {
            Error::PathNotFound { path: d.clone() }
        });
    }
    let me = canonical(child);
    let extensions: &[&str] = if vhdx {
        &["vhdx", "avhdx"]
    } else {
        &["vhd", "avhd"]
    };
    let mut found: Vec<PathBuf> = Vec::new();
    let limits = SearchLimits {
        depth: SEARCH_MAX_DEPTH,
        entries: SEARCH_MAX_ENTRIES,
    };
    walk(&dirs, limits, &mut |p| {
        let is_vhd = p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| extensions.iter().any(|e| x.eq_ignore_ascii_case(e)));
        if !is_vhd {
            return;
        }
        let canon = canonical(p);
        if canon == me || found.contains(&canon) {
            return;
        }
        let matches = VhdFile::open_regular(p, &alone)
            .is_ok_and(|f| f.footer().unique_id == want && f.kind() != DiskKind::HostDrive);
        if matches {
            found.push(canon);
        }
    })?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::ParentNotFound {
            child: child.to_owned(),
            name,
            tried: dirs,
            refused: Vec::new(),
        }),
        _ => Err(Error::InvalidArgument(format!(
            "{}: {} files carry the parent's unique id {want}: {}; name the parent instead",
            child.display(),
            found.len(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// How far [`walk`] goes.
#[derive(Debug, Clone, Copy)]
struct SearchLimits {
    /// Deepest level descended to (the folders named are level 0).
    depth: usize,
    /// Most entries visited, of any kind.
    entries: usize,
}

/// Walks the folders `dirs` depth first, calling `visit` with every regular file, and
/// returns the most folders that were open at once. One listing is open per level
/// being read — never more than `limits.depth + 1` folders pending, however wide the
/// tree — and every entry visited counts toward `limits.entries`, past which the walk
/// fails. Folders that cannot be read, and symbolic links, are passed over.
fn walk(dirs: &[PathBuf], limits: SearchLimits, visit: &mut dyn FnMut(&Path)) -> Result<usize> {
    let mut visited = 0usize;
    let mut most_open = 0usize;
    for dir in dirs {
        let mut open: Vec<(std::fs::ReadDir, usize)> = Vec::new();
        if let Ok(listing) = std::fs::read_dir(dir) {
            open.push((listing, 0));
        }
        while !open.is_empty() {
            most_open = most_open.max(open.len());
            let (listing, depth) = open.last_mut().expect("not empty");
            let depth = *depth;
            let Some(entry) = listing.next() else {
                open.pop();
                continue;
            };
            visited += 1;
            if visited > limits.entries {
                return Err(Error::InvalidArgument(format!(
                    "more than {} entries under the folders searched; name the parent, or search a narrower folder",
                    limits.entries
                )));
            }
            let Ok(entry) = entry else { continue };
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if depth < limits.depth {
                    if let Ok(listing) = std::fs::read_dir(entry.path()) {
                        open.push((listing, depth + 1));
                    }
                }
            } else if kind.is_file() {
                visit(&entry.path());
            }
        }
    }
    Ok(most_open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn files(dir: &Path) -> Vec<String> {
        let mut seen = Vec::new();
        let limits = SearchLimits {
            depth: SEARCH_MAX_DEPTH,
            entries: SEARCH_MAX_ENTRIES,
        };
        walk(&[dir.to_owned()], limits, &mut |p| {
            seen.push(
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .expect("walks");
        seen.sort();
        seen
    }

    #[test]
    fn walk_counts_every_entry_toward_its_cap_not_only_vhds() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..30 {
            std::fs::create_dir(dir.path().join(format!("empty{i}"))).expect("mkdir");
            std::fs::write(dir.path().join(format!("notes{i}.txt")), b"x").expect("write");
        }
        let limits = SearchLimits {
            depth: SEARCH_MAX_DEPTH,
            entries: 50,
        };

        let e = walk(&[dir.path().to_owned()], limits, &mut |_| {}).expect_err("capped");

        assert!(e.to_string().contains("more than 50 entries"), "{e}");
        let room = SearchLimits {
            entries: 60,
            ..limits
        };
        walk(&[dir.path().to_owned()], room, &mut |_| {}).expect("60 entries fit");
    }

    #[test]
    fn walk_keeps_one_folder_open_per_level_however_wide_the_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..500 {
            let sub = dir.path().join(format!("d{i}"));
            std::fs::create_dir(&sub).expect("mkdir");
            std::fs::write(sub.join("f.vhd"), b"x").expect("write");
        }
        std::fs::create_dir_all(dir.path().join("a/b/c")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/c/deep.vhd"), b"x").expect("write");
        let limits = SearchLimits {
            depth: SEARCH_MAX_DEPTH,
            entries: SEARCH_MAX_ENTRIES,
        };
        let mut n = 0;

        let most_open = walk(&[dir.path().to_owned()], limits, &mut |_| n += 1).expect("walks");

        assert_eq!(n, 501, "every file visited");
        assert_eq!(most_open, 4, "the root, a, b, c: not 500 folders pending");
    }

    #[cfg(unix)]
    #[test]
    fn walk_stops_descending_at_its_depth_and_skips_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("1/2")).expect("mkdir");
        std::fs::write(dir.path().join("1/one.vhd"), b"x").expect("write");
        std::fs::write(dir.path().join("1/2/two.vhd"), b"x").expect("write");
        std::os::unix::fs::symlink(dir.path().join("1"), dir.path().join("link")).expect("ln");
        let limits = SearchLimits {
            depth: 1,
            entries: SEARCH_MAX_ENTRIES,
        };
        let mut seen = Vec::new();

        walk(&[dir.path().to_owned()], limits, &mut |p| {
            seen.push(p.to_owned())
        })
        .expect("walks");

        assert_eq!(seen, vec![dir.path().join("1/one.vhd")]);
        assert_eq!(files(dir.path()), vec!["one.vhd", "two.vhd"]);
    }
}
