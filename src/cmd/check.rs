//! `vhdkit check`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;
use vhdkit_format::azure::{check_azure, AzureReport, Rule};
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
    /// length cut short or left long by a crash, orphaned tail blocks, Xen's batmap
    /// (header, checksum, bits). Never guesses at data.
    #[arg(long)]
    repair: bool,
    /// Instead of the structure, check the rules a platform applies to the file as it
    /// is: `azure` (fixed, a whole number of MiB, size limits, footer at the end and
    /// nothing after it). Exit 1 when a rule fails.
    #[arg(
        long = "for",
        value_enum,
        value_name = "PLATFORM",
        conflicts_with = "repair"
    )]
    platform: Option<Platform>,
    #[command(flatten)]
    open: OpenArgs,
}

/// The platforms of `check --for`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Platform {
    /// Azure's rules for an uploaded VHD.
    Azure,
}

/// What `check --for azure --json` prints (docs/json.md).
#[derive(Debug, Serialize)]
struct AzureDoc<'a> {
    path: &'a std::path::Path,
    #[serde(rename = "for")]
    platform: &'static str,
    conforms: bool,
    failed_count: usize,
    file_size: u64,
    virtual_size: Option<u64>,
    disk_type: Option<&'a str>,
    rules: &'a [Rule],
}

/// What `check --json` prints (docs/json.md).
#[derive(Debug, Serialize)]
struct CheckDoc<'a> {
    path: &'a std::path::Path,
    clean: bool,
    problem_count: usize,
    files: &'a [FileReport],
    repairs: Option<&'a [String]>,
}

pub fn run(a: CheckArgs) -> Result<u8, CliError> {
    if let Some(Platform::Azure) = a.platform {
        return azure(&a);
    }
    let repaired = if a.repair {
        Some(repair(&a.path)?)
    } else {
        None
    };
    let report = check(&a.path, &a.open.options_for(&a.path)?)?;
    let clean = report.is_clean();
    if a.json {
        json::print(&json::Doc::new(CheckDoc {
            path: &a.path,
            clean,
            problem_count: report.problem_count(),
            files: &report.files,
            repairs: repaired.as_ref().map(|r| r.actions.as_slice()),
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
            n => terminal::line(format!(
                "{}: {} found",
                a.path.display(),
                count(n as u64, "problem")
            ))?,
        }
    }
    Ok(if clean { EXIT_OK } else { EXIT_DIFFERENT })
}

/// `check --for azure`: every rule, one line each (or the JSON document); exit 1 when
/// one fails.
fn azure(a: &CheckArgs) -> Result<u8, CliError> {
    let report: AzureReport = check_azure(&a.path)?;
    let failed = report.failed().count();
    if a.json {
        json::print(&json::Doc::new(AzureDoc {
            path: &a.path,
            platform: "azure",
            conforms: report.conforms(),
            failed_count: failed,
            file_size: report.file_size,
            virtual_size: report.virtual_size,
            disk_type: report.disk_type.as_deref(),
            rules: &report.rules,
        }))?;
    } else {
        for r in &report.rules {
            terminal::line(format!("{:<5} {:<14}{}", r.status.name(), r.id, r.message))?;
        }
        match failed {
            0 => terminal::line(format!(
                "{}: meets every Azure rule for an uploaded VHD",
                a.path.display()
            ))?,
            n => terminal::line(format!(
                "{}: {} of {} Azure rules failed",
                a.path.display(),
                n,
                report.rules.len()
            ))?,
        }
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_DIFFERENT })
}
