//! The other disks an in-place operation affects: a differencing disk reads through its
//! parent, so changing a disk's content (merge into it, compact with unused ranges),
//! its size (resize) or deleting it (merge's `delete_child`, the intermediates of a
//! merge into an ancestor) changes what every disk naming it as parent reads. The
//! operations gather them here before their first write — in the folder of each disk
//! they change and in [`OpsOptions::also_check`], by [`find_children`] — and refuse,
//! naming each one and what would become of it, unless [`OpsOptions::force`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::find_children;

use super::OpsOptions;

/// What would become of a disk's children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// The disk's content changes: they read different bytes.
    Reads,
    /// Blocks whose every byte the disk's file systems call free are released: where
    /// the children read the disk there, they read zeros (or its parent) instead.
    FreeSpace,
    /// The disk is deleted.
    Orphaned,
    /// The disk's virtual size becomes this.
    Size(u64),
}

impl Effect {
    fn says(self) -> String {
        match self {
            Effect::Reads => "would read different bytes".into(),
            Effect::FreeSpace => {
                "would read different bytes where its free space is released".into()
            }
            Effect::Orphaned => "would be orphaned".into(),
            Effect::Size(n) => {
                format!("would no longer match its size (resize each to {n} bytes afterwards)")
            }
        }
    }
}

/// The children found so far: (the disk they name, what becomes of them, them).
#[derive(Debug)]
pub(crate) struct Dependents<'a> {
    opts: &'a OpsOptions,
    found: Vec<(PathBuf, Effect, Vec<PathBuf>)>,
}

impl<'a> Dependents<'a> {
    /// Nothing found yet; with `opts.force`, nothing will be looked for.
    pub(crate) fn new(opts: &'a OpsOptions) -> Self {
        Dependents {
            opts,
            found: Vec::new(),
        }
    }

    /// Adds the children of `disk` (unique id `id`) except the disks of `except` (the
    /// operation's own chain, compared by canonical path), as affected by `effect`.
    pub(crate) fn look(
        &mut self,
        disk: &Path,
        id: uuid::Uuid,
        effect: Effect,
        except: &[&Path],
    ) -> Result<()> {
        if self.opts.force {
            return Ok(());
        }
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let except: Vec<PathBuf> = except.iter().map(|p| canon(p)).collect();
        let children: Vec<PathBuf> = find_children(disk, id, &self.opts.also_check)?
            .into_iter()
            .filter(|c| !except.contains(&canon(c)))
            .collect();
        if !children.is_empty() {
            self.found.push((disk.to_owned(), effect, children));
        }
        Ok(())
    }

    /// Whether children were found that would read different bytes ([`Effect::Reads`]).
    pub(crate) fn has_readers(&self) -> bool {
        self.found.iter().any(|(_, e, _)| *e == Effect::Reads)
    }

    /// Forgets the children found as reading different bytes: the operation turns out to
    /// leave the content they read as it is (a merge whose data its target already
    /// holds, such as the rerun of one that was stopped after its writes).
    pub(crate) fn forget_readers(&mut self) {
        self.found.retain(|(_, e, _)| *e != Effect::Reads);
    }

    /// `Err(HasChildren)` naming every child found, for the operation asked on `path`;
    /// `Ok` when there is none.
    pub(crate) fn refuse(self, path: &Path) -> Result<()> {
        if self.found.is_empty() {
            return Ok(());
        }
        let children: Vec<PathBuf> = self
            .found
            .iter()
            .flat_map(|(_, _, c)| c.iter().cloned())
            .collect();
        let detail = self
            .found
            .iter()
            .map(|(disk, effect, c)| {
                let names: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
                let of = if c.len() == 1 { "a child" } else { "children" };
                format!(
                    "{} ({of} of {}) {}",
                    names.join(", "),
                    disk.display(),
                    effect.says()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::HasChildren {
            path: path.to_owned(),
            children,
            detail,
        })
    }
}
