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

/// Deepest folder level `search` descends to, and most files it looks at.
pub const SEARCH_MAX_DEPTH: usize = 16;
/// Most files `search` opens.
pub const SEARCH_MAX_FILES: usize = 100_000;

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
    let mut file = VhdFile::open(child, &OpenOptions::new().writable(true))?;
    if !file.is_differencing() {
        return Err(Error::WrongDiskType {
            path: child.to_owned(),
            found: file.kind().to_string(),
            expected: "set-parent needs a differencing disk".into(),
        });
    }
    let link = ParentLink::resolve(child, parent)?;
    relink(&mut file, &link, ignore_parent_id)
}

/// Rewrites the open (writable) differencing `file` to name the parent `link`
/// describes, in the crash-safe order of the module docs.
pub(crate) fn relink(
    file: &mut VhdFile,
    link: &ParentLink,
    ignore_parent_id: bool,
) -> Result<RelinkReport> {
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
        let space = crate::spec::layout::round_up_sector(payload.len() as u64).max(512);
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

/// Finds `child`'s missing parent by the unique id it records, among the VHDs (`.vhd`,
/// `.avhd`) under `dirs` (regular files only, at most [`SEARCH_MAX_DEPTH`] folders down
/// and [`SEARCH_MAX_FILES`] files). Exactly one match is the answer; none or several is
/// an error naming what was searched or found.
pub fn search_parent(child: impl AsRef<Path>, dirs: &[impl AsRef<Path>]) -> Result<PathBuf> {
    let child = child.as_ref();
    let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.as_ref().to_owned()).collect();
    let alone = OpenOptions::new().no_parents(true);
    let file = VhdFile::open(child, &alone)?;
    let header: DynamicHeader = file.header().cloned().ok_or_else(|| Error::WrongDiskType {
        path: child.to_owned(),
        found: file.kind().to_string(),
        expected: "set-parent needs a differencing disk".into(),
    })?;
    if !file.is_differencing() {
        return Err(Error::WrongDiskType {
            path: child.to_owned(),
            found: file.kind().to_string(),
            expected: "set-parent needs a differencing disk".into(),
        });
    }
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
    let want = header.parent_unique_id;
    let me = std::fs::canonicalize(child).unwrap_or_else(|_| child.to_owned());
    let mut found: Vec<PathBuf> = Vec::new();
    let mut seen = 0usize;
    let mut stack: Vec<(PathBuf, usize)> = dirs.iter().map(|d| (d.clone(), 0)).collect();
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(kind) = e.file_type() else { continue };
            let p = e.path();
            if kind.is_dir() {
                if depth < SEARCH_MAX_DEPTH {
                    stack.push((p, depth + 1));
                }
                continue;
            }
            let is_vhd = p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| x.eq_ignore_ascii_case("vhd") || x.eq_ignore_ascii_case("avhd"));
            if !kind.is_file() || !is_vhd {
                continue;
            }
            seen += 1;
            if seen > SEARCH_MAX_FILES {
                return Err(Error::InvalidArgument(format!(
                    "more than {SEARCH_MAX_FILES} VHDs under the folders searched; name the parent instead"
                )));
            }
            let canon = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            if canon == me || found.contains(&canon) {
                continue;
            }
            let matches = VhdFile::open_regular(&p, &alone)
                .is_ok_and(|f| f.footer().unique_id == want && f.kind() != DiskKind::HostDrive);
            if matches {
                found.push(canon);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::ParentNotFound {
            child: child.to_owned(),
            name: header.parent_name(),
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
