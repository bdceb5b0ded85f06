//! `vhdkit check`.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use vhdkit_format::check::check;

use super::{print_json, CliError, OpenArgs, EXIT_DIFFERENT, EXIT_OK};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The disk.
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

pub fn run(a: CheckArgs) -> Result<u8, CliError> {
    let report = check(&a.path, &a.open.options())?;
    let clean = report.is_clean();
    if a.json {
        print_json(&json!({
            "path": a.path,
            "clean": clean,
            "problem_count": report.problem_count(),
            "files": report.files,
        }))?;
    } else {
        for (path, p) in report.problems() {
            println!("{}: {p}", path.display());
        }
        match report.problem_count() {
            0 => println!("{}: no problems found", a.path.display()),
            n => println!("{}: {n} problem(s) found", a.path.display()),
        }
    }
    Ok(if clean { EXIT_OK } else { EXIT_DIFFERENT })
}
