//! `vhdkit set-parent`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use vhdkit_format::ops::relink::{search_parent, set_parent};

use super::{json, terminal, usage_error, CliError, EXIT_OK};

#[derive(Debug, Args)]
pub struct SetParentArgs {
    /// The differencing disk to relink.
    child: PathBuf,
    /// Its parent's new place (a relative path is looked up next to the child first).
    parent: Option<PathBuf>,
    /// Find the parent by the unique id the child records, among the VHDs under these
    /// folders (searched recursively); refused if none or several match.
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with = "parent")]
    search: Vec<PathBuf>,
    /// Accept a parent whose unique id differs from the one the child records (the
    /// child then records the new parent's).
    #[arg(long)]
    ignore_parent_id: bool,
    /// Print a JSON report.
    #[arg(long)]
    pub(super) json: bool,
}

/// What `set-parent --json` prints (docs/json.md).
#[derive(Debug, Serialize)]
struct SetParentDoc<'a> {
    operation: &'static str,
    child: &'a Path,
    parent: &'a Path,
    found_by_search: bool,
    previous_parent_name: &'a str,
    parent_id_changed: bool,
}

pub fn run(a: SetParentArgs) -> Result<u8, CliError> {
    let (parent, searched) = match (&a.parent, a.search.is_empty()) {
        (Some(p), true) => (p.clone(), false),
        (None, false) => (search_parent(&a.child, &a.search)?, true),
        _ => return Err(usage_error("name the new PARENT, or --search DIR...")),
    };
    let r = set_parent(&a.child, &parent, a.ignore_parent_id)?;
    if a.json {
        json::print(&json::Doc::new(SetParentDoc {
            operation: "set-parent",
            child: &r.child,
            parent: &r.parent,
            found_by_search: searched,
            previous_parent_name: &r.previous_parent_name,
            parent_id_changed: r.parent_id_changed,
        }))?;
    } else {
        let how = if searched {
            " (the one file under the folders searched that carries its parent's unique id)"
        } else {
            ""
        };
        terminal::line(format!(
            "set-parent: {} now names {}{how}",
            r.child.display(),
            r.parent.display()
        ))?;
        if r.parent_id_changed {
            terminal::line("set-parent: the recorded parent unique id was replaced, as asked")?;
        }
    }
    Ok(EXIT_OK)
}
