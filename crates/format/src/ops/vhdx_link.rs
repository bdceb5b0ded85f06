//! The VHDX side of merges and set-parent: a child's `parent_linkage` names its
//! parent's data write GUID, which changes on the parent's first write, so a merge
//! that writes into the parent relinks the level above it in two steps (MS-VHDX's
//! `parent_linkage2`, "VHDX merge" in `docs/crash-safety.md`):
//!
//! 1. [`stage`]: before the first write, the level above the ancestor records the
//!    ancestor's current GUID as `parent_linkage` and the GUID the ancestor's first
//!    write will give it as `parent_linkage2` (through its log); the ancestor is told
//!    to take that GUID. The level now opens on the ancestor before and after.
//! 2. [`settle`] (or [`relink`] to a new parent): once the ancestor is durable, one
//!    `parent_linkage` naming its GUID as it is, `parent_linkage2` dropped.

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::image::create::ParentLink;
use crate::image::VhdFile;
use crate::vhdx::locator::{KEY_PARENT_LINKAGE, KEY_PARENT_LINKAGE2};
use crate::vhdx::ParentLocator;

/// `loc` with `parent_linkage` = `linkage` and `parent_linkage2` = `second` (dropped
/// when `None`), the other pairs kept in order.
fn with_linkage(loc: &ParentLocator, linkage: Uuid, second: Option<Uuid>) -> ParentLocator {
    let mut entries: Vec<(String, String)> = loc
        .entries
        .iter()
        .filter(|(k, _)| k != KEY_PARENT_LINKAGE2)
        .cloned()
        .collect();
    match entries.iter_mut().find(|(k, _)| k == KEY_PARENT_LINKAGE) {
        Some(e) => e.1 = format!("{{{linkage}}}"),
        None => entries.insert(0, (KEY_PARENT_LINKAGE.into(), format!("{{{linkage}}}"))),
    }
    if let Some(g) = second {
        entries.push((KEY_PARENT_LINKAGE2.into(), format!("{{{g}}}")));
    }
    ParentLocator { entries }
}

/// The parent locator of differencing VHDX file `level` (as opened).
fn locator(level: &VhdFile) -> Result<ParentLocator> {
    level
        .vhdx()
        .and_then(|v| v.parent_locator())
        .cloned()
        .ok_or_else(|| Error::WrongDiskType {
            path: level.path().to_owned(),
            found: level.kind().to_string(),
            expected: "a differencing VHDX file".into(),
        })
}

/// Step 1 (see the module's documentation) for `level`, the file whose parent is
/// `ancestor`, before anything is written into the ancestor. Nothing for VHD files.
pub(crate) fn stage(level: &VhdFile, ancestor: &VhdFile) -> Result<()> {
    let Some(now) = ancestor.vhdx_data_write_guid() else {
        return Ok(());
    };
    let next = Uuid::new_v4();
    level.vhdx_rewrite_parent_locator(&with_linkage(&locator(level)?, now, Some(next)))?;
    ancestor.vhdx_plan_data_write_guid(next)
}

/// Step 2 for `level` on the same parent: `parent_linkage` = `ancestor_guid` (the
/// ancestor's data write GUID after the merge), `parent_linkage2` dropped.
pub(crate) fn settle(level: &VhdFile, ancestor_guid: Uuid) -> Result<()> {
    level.vhdx_rewrite_parent_locator(&with_linkage(&locator(level)?, ancestor_guid, None))
}

/// Step 2 for `level` moved to a new parent: a locator naming `link`'s paths (relative
/// and absolute; the volume path of the old parent is dropped) and `guid`, the new
/// parent's data write GUID as it is now.
pub(crate) fn relink(level: &VhdFile, link: &ParentLink, guid: Uuid) -> Result<()> {
    let loc = ParentLocator::new(guid, Some(&link.relative), None, Some(&link.absolute));
    level.vhdx_rewrite_parent_locator(&loc)
}
