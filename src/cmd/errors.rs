//! How a command that failed says so — the one place for every subcommand: a line
//! `vhdkit: …` on stderr (clap's own message and usage for a usage mistake), or, when
//! the command was asked for JSON (`--json`, or `--progress json` whose stderr is a
//! stream of JSON lines), one JSON object on stderr (docs/json.md, "Errors"). The exit
//! code is the same either way.

use std::path::Path;

use serde::Serialize;
use vhdkit_format::ErrorKind;
use vhdkit_task::HResult;

use super::{json, terminal, CliError, EXIT_USAGE};

/// The error document (`docs/json.md`).
#[derive(Debug, Serialize)]
struct ErrorDoc<'a> {
    /// The message, as the text form prints it after `vhdkit: `.
    message: String,
    /// The format crate's error kind in snake_case, or `io`, `usage`, `cancelled`,
    /// `other`.
    kind: Kind,
    /// The HRESULT as Windows tools print it: `0x80070002`.
    hresult: String,
    /// The same HRESULT as a number (the unsigned 32-bit pattern).
    hresult_value: u32,
    /// The file the error concerns, when it names one (lossily decoded: an error
    /// about a path that is not UTF-8 must still be reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<std::borrow::Cow<'a, str>>,
    /// The disks depending on what a refused operation would change (`has_children`).
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<Vec<std::borrow::Cow<'a, str>>>,
    /// What an operation stopped part way left of the user's files.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    /// The process's exit code.
    exit_code: u8,
}

/// Prints `e` (as JSON when `json`) and returns the exit code. A closed stdout is not
/// reported: the reader went away on purpose (`vhdkit read … | head`).
pub fn report(e: &CliError, json: bool) -> u8 {
    if e.is_broken_pipe() {
        return 0;
    }
    let code = e.exit_code();
    if json {
        json::eprint(&json::Doc::new(ErrorDoc {
            message: e.to_string(),
            kind: kind(e),
            hresult: hresult(e).to_string(),
            hresult_value: hresult(e).0,
            path: path(e).map(Path::to_string_lossy),
            children: children(e).map(|c| c.iter().map(|p| p.to_string_lossy()).collect()),
            state: state(e),
            exit_code: code,
        }));
    } else {
        match e {
            CliError::Usage(clap) => {
                let _ = clap.print();
            }
            _ => terminal::eline(format!("vhdkit: {e}")),
        }
    }
    code
}

/// A failure to parse the command line (or `--help`, `--version`, which clap reports
/// the same way): printed by clap, or as a JSON error when `json`. Returns the exit
/// code.
pub fn report_parse(e: clap::Error, json: bool) -> u8 {
    if e.exit_code() == 0 || !json {
        // Help and version go to stdout as usual, whatever --json says.
        let _ = e.print();
        return u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE);
    }
    report(&CliError::Usage(Box::new(e)), true)
}

/// Whether the raw command line asks for JSON: `--json`, or `--progress json`, before
/// any `--`. Used where clap could not parse it (a usage mistake) — otherwise the parsed
/// command says ([`super::Cli::wants_json`]).
pub fn json_in_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let mut previous_was_progress = false;
    for a in args.into_iter().skip(1) {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--json" || a == "--progress=json" || (previous_was_progress && a == "json") {
            return true;
        }
        previous_was_progress = a == "--progress";
    }
    false
}

/// What an operation stopped part way left of the user's files, if it was one.
fn state(e: &CliError) -> Option<&'static str> {
    match e {
        CliError::Stopped { state, .. } | CliError::Cancelled { state, .. } => Some(state),
        CliError::Advised { error, .. } => state(error),
        _ => None,
    }
}

/// The `kind` of the error document: the format crate's [`ErrorKind`], or one of the
/// CLI's own (each in snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Io,
    Usage,
    Cancelled,
    Other,
    #[serde(untagged)]
    Format(ErrorKind),
}

/// The `kind` of the error document.
fn kind(e: &CliError) -> Kind {
    match e {
        CliError::Advised { error, .. } => kind(error),
        CliError::Format(f) | CliError::Stopped { error: f, .. } => Kind::Format(f.kind()),
        CliError::Io { .. } => Kind::Io,
        CliError::Usage(_) => Kind::Usage,
        CliError::Cancelled { .. } => Kind::Cancelled,
        CliError::Other(_) => Kind::Other,
    }
}

/// The HRESULT of the error: the format crate's for its errors; for the CLI's own,
/// `E_INVALIDARG` (usage), `E_ABORT` (cancelled), `E_FAIL` (other), and for I/O on
/// the CLI's own streams and files the Win32 code of what happened.
fn hresult(e: &CliError) -> HResult {
    match e {
        CliError::Advised { error, .. } => hresult(error),
        CliError::Format(f) | CliError::Stopped { error: f, .. } => f.hresult(),
        CliError::Io { source, .. } => {
            if vhdkit_format::error::is_disk_full(source) {
                HResult::E_DISK_FULL
            } else {
                match source.kind() {
                    std::io::ErrorKind::NotFound => HResult::E_FILE_NOT_FOUND,
                    std::io::ErrorKind::PermissionDenied => HResult::E_ACCESSDENIED,
                    _ => HResult::E_FAIL,
                }
            }
        }
        CliError::Usage(_) => HResult::E_INVALIDARG,
        CliError::Cancelled { .. } => HResult::E_ABORT,
        CliError::Other(_) => HResult::E_FAIL,
    }
}

/// The disks a `has_children` refusal names.
fn children(e: &CliError) -> Option<&[std::path::PathBuf]> {
    match e {
        CliError::Format(vhdkit_format::Error::HasChildren { children, .. })
        | CliError::Stopped {
            error: vhdkit_format::Error::HasChildren { children, .. },
            ..
        } => Some(children),
        _ => None,
    }
}

/// The file the error concerns, if it names one.
fn path(e: &CliError) -> Option<&Path> {
    use vhdkit_format::Error as F;
    let f = match e {
        CliError::Format(f) | CliError::Stopped { error: f, .. } => f,
        CliError::Advised { error, .. } => return path(error),
        CliError::Io { path, .. } => return path.as_deref(),
        _ => return None,
    };
    match f {
        F::Io { path, .. }
        | F::File { path, .. }
        | F::NotVhd { path, .. }
        | F::Corrupt { path, .. }
        | F::Unsupported { path, .. }
        | F::NotFound { path }
        | F::PathNotFound { path }
        | F::HasChildren { path, .. }
        | F::ChainLoop { path, .. }
        | F::ChainTooDeep { path, .. }
        | F::HostDriveNotFound { path, .. }
        | F::WrongFileType { path, .. }
        | F::NotAllowed { path, .. }
        | F::ReadOnly { path, .. }
        | F::InUse { path }
        | F::AlreadyExists { path }
        | F::OutOfRange { path, .. }
        | F::WrongDiskType { path, .. } => Some(path),
        F::ParentNotFound { child, .. } | F::ParentIdMismatch { child, .. } => Some(child),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_of_a_format_error_is_its_error_kind_in_snake_case() {
        let kind = |e: &CliError| serde_json::to_value(kind(e)).expect("json");
        let e = CliError::Format(vhdkit_format::Error::NotFound { path: "/x".into() });
        assert_eq!(kind(&e), "not_found");
        assert_eq!(path(&e), Some(Path::new("/x")));
        let e = CliError::Format(vhdkit_format::Error::Cancelled);
        assert_eq!(kind(&e), "cancelled");
        assert_eq!(path(&e), None);
    }

    #[test]
    fn kind_of_the_cli_own_errors_and_of_every_format_kind_is_snake_case() {
        let json = |k: Kind| serde_json::to_value(k).expect("json");
        assert_eq!(json(Kind::Io), "io");
        assert_eq!(json(Kind::Usage), "usage");
        assert_eq!(json(Kind::Other), "other");
        assert_eq!(json(Kind::Format(ErrorKind::DiskFull)), "disk_full");
        assert_eq!(
            json(Kind::Format(ErrorKind::ParentIdMismatch)),
            "parent_id_mismatch"
        );
        assert_eq!(
            json(Kind::Format(ErrorKind::HostDriveNotFound)),
            "host_drive_not_found"
        );
    }

    #[test]
    fn json_in_args_finds_json_and_progress_json_before_the_separator() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(json_in_args(args(&["vhdkit", "info", "--json", "x"])));
        assert!(json_in_args(args(&[
            "vhdkit",
            "convert",
            "--progress",
            "json"
        ])));
        assert!(json_in_args(args(&[
            "vhdkit",
            "convert",
            "--progress=json"
        ])));
        assert!(!json_in_args(args(&["vhdkit", "info", "--", "--json"])));
        assert!(!json_in_args(args(&["vhdkit", "info", "json"])));
    }

    #[test]
    fn io_errors_of_the_cli_map_to_win32_hresults() {
        let e = CliError::io("writing", vhdkit_platform::errno_error(28));
        assert_eq!(hresult(&e), HResult::E_DISK_FULL);
        let e = CliError::io("opening", std::io::ErrorKind::NotFound.into());
        assert_eq!(hresult(&e), HResult::E_FILE_NOT_FOUND);
    }
}
