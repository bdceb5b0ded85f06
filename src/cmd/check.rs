//! `vhdkit check`.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use vhdkit_format::check::{check, FileReport};
use vhdkit_format::ops::repair::repair;

use super::human::count;
use super::{json, terminal, CliError, OpenArgs, EXIT_DIFFERENT, EXIT_OK};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The disk.
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
    /// First restore what is safely restorable: a damaged footer from its copy, a file
    /// length cut short or left long by a crash, orphaned tail blocks. Never guesses at
    /// data.
    #[arg(long)]
    repair: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// What `check --json` prints (docs/json.md).
#[derive(Debug, Serialize)]
struct CheckDoc<'a> {
    schema: u32,
    path: &'a std::path::Path,
    clean: bool,
    problem_count: usize,
    files: &'a [FileReport],
    repairs: Option<&'a [String]>,
}

pub fn run(a: CheckArgs) -> Result<u8, CliError> {
    let repaired = if a.repair {
        Some(repair(&a.path)?)
    } else {
        None
    };
    let report = check(&a.path, &a.open.options_for(&a.path)?)?;
    let clean = report.is_clean();
    if a.json {
        json::print(&CheckDoc {
            schema: json::SCHEMA,
            path: &a.path,
            clean,
            problem_count: report.problem_count(),
            files: &report.files,
            repairs: repaired.as_ref().map(|r| r.actions.as_slice()),
        })?;
    } else {
        for action in repaired.iter().flat_map(|r| &r.actions) {
            terminal::line(format!("{}: repaired: {action}", a.path.display()))?;
        }
        for (path, p) in report.problems() {
            terminal::line(format!("{}: {p}", path.display()))?;
        }
        match report.problem_count() {
            0 => terminal::line(format!("{}: no problems found", a.path.display()))?,
            n => terminal::line(format!(
                "{}: {} found",
                a.path.display(),
                count(n as u64, "problem")
            ))?,
        }
    }
    Ok(if clean { EXIT_OK } else { EXIT_DIFFERENT })
}
