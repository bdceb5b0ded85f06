//! Finding a differencing disk's parent: the candidates its locators and parent name
//! give, in the order they are tried, filtered by the trust policy (`docs/security.md`,
//! `docs/parent-lookup.md`); the resolvers that open them; and the disks in a folder
//! (and in folders the caller names) that name a given disk as their parent.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::locator::MAX_LOCATOR_DATA;

use super::file::VhdFile;
use super::OpenOptions;

/// Finds and opens parents. The file-system resolver is the default; tests and fuzz
/// targets resolve over an in-memory set of files.
pub trait ParentResolver {
    /// Opens `path` with `opts` (read-only, unless an operation is to write into that
    /// level of the chain), or returns `Ok(None)` if there is no such file.
    fn open(&self, path: &Path, opts: &OpenOptions) -> Result<Option<VhdFile>>;
}

/// Resolves parents on the host's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsResolver;

impl ParentResolver for FsResolver {
    fn open(&self, path: &Path, opts: &OpenOptions) -> Result<Option<VhdFile>> {
        if !path.is_file() {
            return Ok(None);
        }
        match VhdFile::open_regular(path, opts) {
            Ok(f) => Ok(Some(f)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// How a parent was found: where the path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FoundBy {
    /// Named by the caller (`--with-parent`, [`OpenOptions::parent`]).
    Explicit,
    /// A relative locator (`W2ru`, `Mac `), resolved against the child's folder.
    RelativeLocator,
    /// The header's parent name, looked up in the child's own folder.
    ParentName,
    /// An absolute locator (`W2ku`, `MacX`) or an absolute parent name, inside the
    /// child's folder tree.
    AbsoluteInside,
    /// An absolute locator or parent name outside the child's folder tree, followed only
    /// because [`OpenOptions::absolute_parents`] allowed it.
    AbsoluteOutside,
}

impl FoundBy {
    /// Whether an operation may write into a parent found this way without the user
    /// naming it: every way but an absolute path outside the child's folder tree.
    pub fn trusted_for_writing(self) -> bool {
        self != FoundBy::AbsoluteOutside
    }
}

/// A place where a child's parent may be.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParentCandidate {
    /// The path.
    pub path: PathBuf,
    /// Where it came from (for absolute paths: whether it lies inside the child's folder
    /// tree, judged on the canonical paths).
    pub found_by: FoundBy,
}

/// The paths where `child`'s parent may be, in the order they are tried: relative
/// locators (against the child's directory), the header's parent name in the child's
/// folder, then absolute locators and an absolute parent name. `docs/parent-lookup.md`
/// says why this order.
pub fn parent_candidates(child: &VhdFile) -> Vec<ParentCandidate> {
    let dir = child
        .path()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (relative, by_name, absolute) = if let Some(v) = child.vhdx() {
        match v.parent_locator() {
            Some(l) => vhdx_locator_paths(l, &dir),
            None => return Vec::new(),
        }
    } else {
        match vhd_locator_paths(child, &dir) {
            Some(paths) => paths,
            None => return Vec::new(),
        }
    };
    let tree = canonical(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &dir
    });
    let mut out: Vec<ParentCandidate> = Vec::new();
    let all = relative
        .into_iter()
        .map(|p| (p, FoundBy::RelativeLocator))
        .chain(by_name.into_iter().map(|p| (p, FoundBy::ParentName)))
        .chain(absolute.into_iter().map(|p| {
            let inside = canonical(&p).starts_with(&tree);
            let how = if inside {
                FoundBy::AbsoluteInside
            } else {
                FoundBy::AbsoluteOutside
            };
            (p, how)
        }));
    for (p, found_by) in all {
        let path = normalize(&p);
        if !out.iter().any(|c| c.path == path) {
            out.push(ParentCandidate { path, found_by });
        }
    }
    out
}

/// Candidate paths (relative, by name in the child's folder, absolute) of a list.
type Paths = (Vec<PathBuf>, Vec<PathBuf>, Vec<PathBuf>);

/// The paths a differencing VHD's locators and parent name give.
fn vhd_locator_paths(child: &VhdFile, dir: &Path) -> Option<Paths> {
    let header = child.header()?;
    let mut relative = Vec::new();
    let mut absolute = Vec::new();
    let file_len = child.file_len();
    for l in header.locators.iter().filter(|l| l.is_used()) {
        let len = l.data_length.min(MAX_LOCATOR_DATA);
        if len == 0 || l.data_offset.saturating_add(u64::from(len)) > file_len {
            continue;
        }
        let mut payload = vec![0u8; len as usize];
        if child
            .backend()
            .read_exact_at(&mut payload, l.data_offset)
            .is_err()
        {
            continue;
        }
        if let Some(p) = l.decode_path(&payload) {
            if p.relative {
                relative.push(dir.join(&p.path));
            } else {
                absolute.push(PathBuf::from(&p.path));
            }
        }
    }
    let name = vhdkit_platform::path_from_windows(&header.parent_name());
    let mut by_name = Vec::new();
    if !name.is_empty() {
        if let Some(base) = Path::new(&name).file_name() {
            by_name.push(dir.join(base));
        }
        if Path::new(&name).has_root() {
            absolute.push(PathBuf::from(&name));
        }
    }
    Some((relative, by_name, absolute))
}

/// The paths a differencing VHDX's parent locator gives: `relative_path` against the
/// child's folder; the parent's file name (from any entry) in the child's folder;
/// `absolute_win32_path` and `volume_path` as absolute paths, their drive letter or
/// `\\?\Volume{…}` prefix dropped (judged by the same trust policy as a VHD's
/// absolute locators).
fn vhdx_locator_paths(l: &crate::vhdx::ParentLocator, dir: &Path) -> Paths {
    use crate::spec::locator::windows_to_unix;
    let mut relative = Vec::new();
    let mut by_name = Vec::new();
    let mut absolute = Vec::new();
    let mut name = |p: &str| {
        if let Some(base) = Path::new(p).file_name() {
            let c = dir.join(base);
            if !by_name.contains(&c) {
                by_name.push(c);
            }
        }
    };
    if let Some(r) = l.relative_path() {
        let p = windows_to_unix(r);
        name(&p);
        if p.starts_with('/') {
            absolute.push(PathBuf::from(p));
        } else if !p.is_empty() {
            relative.push(dir.join(p));
        }
    }
    for a in [l.absolute_win32_path(), l.volume_path()]
        .into_iter()
        .flatten()
    {
        let a = strip_volume(a);
        let p = windows_to_unix(a);
        name(&p);
        if p.starts_with('/') {
            absolute.push(PathBuf::from(p));
        }
    }
    (relative, by_name, absolute)
}

/// `\\?\Volume{guid}\dir\file` → `\dir\file` (other paths as they are).
fn strip_volume(p: &str) -> &str {
    let rest = p
        .strip_prefix("\\\\?\\")
        .or_else(|| p.strip_prefix("\\\\.\\"));
    match rest {
        Some(r) if r.starts_with("Volume{") => r.find('\\').map_or("", |i| &r[i..]),
        _ => p,
    }
}

/// The disks that name the disk at `path` (whose unique id is `unique_id`) as their
/// parent: the differencing VHDs (`.vhd` and `.avhd` files, not `path` itself) in
/// `path`'s folder and in each folder of `also_check` (not searched recursively) whose
/// dynamic header records `unique_id` as their parent's. These are the disks that see
/// different bytes when `path`'s content or size changes, and that deleting it orphans.
///
/// Each file's footer and header are read without taking its lock, so a child that
/// another program has open (a running VM's disk) is found too; a file that is not a
/// readable VHD is passed over. Sorted, each file named once (a folder given twice, or
/// `path`'s own folder given again, adds nothing). `path`'s own folder is passed over
/// when it cannot be listed; a folder of `also_check` that cannot be listed is an error
/// (it was asked for), before anything else is read.
///
/// ```
/// use vhdkit_format::image::find_children;
/// use vhdkit_format::{CreateOptions, Disk, DiskKind};
/// # let dir = tempfile::tempdir().unwrap();
/// let base = dir.path().join("base.vhd");
/// Disk::create(&base, &CreateOptions::new(DiskKind::Dynamic, 8 << 20)).unwrap();
/// let child = dir.path().join("child.vhd");
/// Disk::create(&child, &CreateOptions::differencing(&base)).unwrap();
/// let id = Disk::open(&base).unwrap().top().footer().unique_id;
/// assert_eq!(find_children(&base, id, &[]).unwrap(), vec![child]);
/// ```
pub fn find_children(
    path: impl AsRef<Path>,
    unique_id: uuid::Uuid,
    also_check: &[PathBuf],
) -> Result<Vec<PathBuf>> {
    let path = path.as_ref();
    // Children are named as `path` is: relative to the same folder (`sib.vhd` beside
    // `top.vhd`, not `./sib.vhd`).
    let own = path.parent().unwrap_or(Path::new(""));
    let listed = if own.as_os_str().is_empty() {
        Path::new(".")
    } else {
        own
    };
    let mut listings = Vec::new();
    if let Ok(entries) = std::fs::read_dir(listed) {
        listings.push((own.to_owned(), entries));
    }
    for dir in also_check {
        let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::PathNotFound {
                path: dir.to_owned(),
            },
            _ => Error::file(dir, "listing a folder to look for children", e),
        })?;
        listings.push((dir.to_owned(), entries));
    }
    let me = canonical(path);
    let mut seen_dirs: Vec<PathBuf> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for (dir, entries) in listings {
        let canon_dir = canonical(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &dir
        });
        if seen_dirs.contains(&canon_dir) {
            continue;
        }
        seen_dirs.push(canon_dir);
        for p in entries.filter_map(|e| e.ok().map(|e| dir.join(e.file_name()))) {
            let is_vhd = p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                ["vhd", "avhd", "vhdx", "avhdx"]
                    .iter()
                    .any(|e| x.eq_ignore_ascii_case(e))
            });
            if !is_vhd || !recorded_parent_ids(&p).contains(&unique_id) {
                continue;
            }
            let canon = canonical(&p);
            if canon != me && !seen.contains(&canon) {
                seen.push(canon);
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The parent unique ids a differencing disk at `path` records: a VHD's, read from its
/// footer and dynamic header without a lock (checksums not required: a child is never
/// missed for a damaged checksum); a VHDX file's `parent_linkage` and
/// `parent_linkage2`, its log replayed in memory. Empty for anything else.
fn recorded_parent_ids(path: &Path) -> Vec<uuid::Uuid> {
    use super::backend::{Backend, FileBackend};
    let Ok(file) = super::open::open_unlocked(path, super::open::Accept::Regular) else {
        return Vec::new();
    };
    let b = FileBackend::new(file);
    let Ok(len) = b.len() else {
        return Vec::new();
    };
    let mut prefix = [0u8; 8];
    if b.read_exact_at(&mut prefix, 0).is_ok() && crate::vhdx::parse::is_vhdx(&prefix) {
        let Ok((_, v)) =
            super::vhdx::open_vhdx(path, std::sync::Arc::new(b), len, &OpenOptions::new())
        else {
            return Vec::new();
        };
        return v
            .parent_locator()
            .map(|l| {
                [l.parent_linkage(), l.parent_linkage2()]
                    .into_iter()
                    .flatten()
                    .collect()
            })
            .unwrap_or_default();
    }
    recorded_parent_id(path, &b, len).into_iter().collect()
}

/// The parent unique id a differencing VHD records (see [`recorded_parent_ids`]).
fn recorded_parent_id(
    path: &Path,
    b: &super::backend::FileBackend,
    len: u64,
) -> Option<uuid::Uuid> {
    use super::backend::Backend;
    use crate::spec::{DiskType, DynamicHeader, HEADER_SIZE};
    let (footer, _, _) =
        super::footer::read_footer(path, b, len, &OpenOptions::new(), &mut Vec::new()).ok()?;
    if footer.disk_type != DiskType::Differencing {
        return None;
    }
    let mut raw = [0u8; HEADER_SIZE];
    b.read_exact_at(&mut raw, footer.data_offset).ok()?;
    let header = DynamicHeader::decode(&raw).ok()?;
    (header.cookie == crate::spec::HEADER_COOKIE).then_some(header.parent_unique_id)
}

/// Removes `.` components and folds `dir/..` lexically.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Finds and opens `child`'s parent: the first candidate whose unique id matches (or,
/// with `ignore_parent_id`, the first found). Candidates `write` names are opened for
/// writing — if they can be: a file the OS or its mode keeps read-only opens read-only,
/// and the operation that wanted to write refuses it in its own words.
pub(crate) fn find_parent(
    child: &VhdFile,
    explicit: Option<PathBuf>,
    opts: &OpenOptions,
    resolver: &dyn ParentResolver,
    write: &dyn Fn(&ParentCandidate) -> bool,
    warnings: &mut Vec<String>,
) -> Result<(VhdFile, FoundBy)> {
    let (ids, name) = recorded_parent(child);
    let expected = ids.first().copied().unwrap_or_default();
    let candidates = match explicit {
        Some(path) => vec![ParentCandidate {
            path,
            found_by: FoundBy::Explicit,
        }],
        None => parent_candidates(child),
    };
    let mut tried = Vec::new();
    let mut refused = Vec::new();
    let mut mismatch: Option<(VhdFile, FoundBy)> = None;
    for cand in candidates {
        if cand.found_by == FoundBy::AbsoluteOutside && !opts.absolute_parents {
            refused.push(cand.path);
            continue;
        }
        tried.push(cand.path.clone());
        let opened = if write(&cand) {
            match resolver.open(&cand.path, &opts.clone().writable(true)) {
                Err(Error::ReadOnly { .. }) => resolver.open(&cand.path, opts),
                other => other,
            }
        } else {
            resolver.open(&cand.path, opts)
        };
        let Some(parent) = opened? else {
            continue;
        };
        if parent.is_vhdx() != child.is_vhdx() {
            let what = |f: &VhdFile| if f.is_vhdx() { "a VHDX file" } else { "a VHD" };
            return Err(Error::Unsupported {
                path: child.path().to_owned(),
                detail: format!(
                    "it is {} but its parent {} is {}: a differencing disk's parent must be of its own format (Hyper-V does not chain VHD and VHDX)",
                    what(child),
                    parent.path().display(),
                    what(&parent)
                ),
            });
        }
        if ids.contains(&parent.footer().unique_id) {
            return Ok((parent, cand.found_by));
        }
        if mismatch.is_none() {
            mismatch = Some((parent, cand.found_by));
        }
    }
    if let Some((parent, found_by)) = mismatch {
        if opts.ignore_parent_id {
            warnings.push(format!(
                "{}: parent {} is not the disk the child was made from (unique id differs); used anyway as asked",
                child.path().display(),
                parent.path().display(),
            ));
            return Ok((parent, found_by));
        }
        return Err(Error::ParentIdMismatch {
            child: child.path().to_owned(),
            parent: parent.path().to_owned(),
            expected,
        });
    }
    Err(Error::ParentNotFound {
        child: child.path().to_owned(),
        name: if name.is_empty() {
            "(no parent name recorded)".into()
        } else {
            name
        },
        tried,
        refused,
    })
}

/// The identities `child`'s parent may have — a VHD's parent unique id; a VHDX's
/// `parent_linkage` and `parent_linkage2` (the parent's data write GUID) — and the name
/// it records for it.
fn recorded_parent(child: &VhdFile) -> (Vec<uuid::Uuid>, String) {
    if let Some(v) = child.vhdx() {
        let Some(l) = v.parent_locator() else {
            return (Vec::new(), String::new());
        };
        let ids = [l.parent_linkage(), l.parent_linkage2()]
            .into_iter()
            .flatten()
            .collect();
        let name = l
            .relative_path()
            .or(l.absolute_win32_path())
            .or(l.volume_path())
            .unwrap_or_default()
            .to_owned();
        return (ids, name);
    }
    match child.header() {
        Some(h) => (vec![h.parent_unique_id], h.parent_name()),
        None => (Vec::new(), String::new()),
    }
}

pub(crate) fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}
