//! `vhdkit check`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use vhdkit_format::check::check;
use vhdkit_format::ops::repair::repair;

use super::{print_json, terminal, CliError, OpenArgs, EXIT_DIFFERENT, EXIT_OK};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The disk.
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// First restore what is safely restorable: a damaged footer from its copy, a file
    /// length cut short or left long by a crash, orphaned tail blocks. Never guesses at
    /// data.
    #[arg(long)]
    repair: bool,
    #[command(flatten)]
    open: OpenArgs,
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
        print_json(&json!({
            "path": a.path,
            "clean": clean,
            "problem_count": report.problem_count(),
            "files": report.files,
            "repairs": repaired.as_ref().map(|r| &r.actions),
        }))?;
    } else {
        for action in repaired.iter().flat_map(|r| &r.actions) {
            terminal::line(format!("{}: repaired: {action}", a.path.display()))?;
        }
        for (path, p) in report.problems() {
            terminal::line(format!("{}: {p}", path.display()))?;
        }
        match report.problem_count() {
            0 => terminal::line(format!("{}: no problems found", a.path.display()))?,
            n => terminal::line(format!("{}: {n} problem(s) found", a.path.display()))?,
        }
    }
    Ok(if clean { EXIT_OK } else { EXIT_DIFFERENT })
}
