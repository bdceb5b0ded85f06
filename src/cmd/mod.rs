//! Subcommands, one file each.

mod check;
mod compare;
mod create;
mod errors;
mod generate;
mod human;
mod info;
mod json;
mod map;
mod measure;
mod ops;
mod read;
mod relink;
mod resize;
mod runner;
mod serve;
pub mod signals;
pub mod terminal;
mod volumes;
mod write;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use vhdkit::parse_size;
use vhdkit_format::{HostDrives, OpenOptions};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: `compare` found a difference, or `check` found problems.
pub const EXIT_DIFFERENT: u8 = 1;
/// Exit code: a usage mistake (clap's own, or one clap cannot see).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the operation failed.
pub const EXIT_FAILED: u8 = 3;

/// vhdkit — create, inspect, read and write VHD (conectix) virtual disks.
#[derive(Debug, Parser)]
#[command(name = "vhdkit", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a fixed, dynamic, differencing or host-drive disk.
    Create(create::CreateArgs),
    /// Show what a disk is: type, sizes, creator, ids, parent chain, host drive.
    Info(info::InfoArgs),
    /// Validate a disk and its chain; report every problem found (exit 1 if any).
    Check(check::CheckArgs),
    /// Read virtual bytes (the whole disk by default) to stdout or a file.
    Read(read::ReadArgs),
    /// Write bytes from stdin or a file into a disk at a virtual offset.
    Write(write::WriteArgs),
    /// Compare the virtual contents of two disks (VHD of any kind, or raw images).
    Compare(compare::CompareArgs),
    /// List the disk's extents: allocated here, from a parent, or zero.
    Map(map::MapArgs),
    /// Convert any disk (a chain is flattened; raw and host-drive too) into a new
    /// fixed, dynamic or raw file.
    Convert(ops::ConvertArgs),
    /// Compact a dynamic or differencing disk in place: release empty blocks (and a
    /// differencing disk's blocks equal to its parent's), fill the holes, shorten the
    /// file.
    Compact(ops::CompactArgs),
    /// Merge a differencing disk into its parent, in place (the child stays valid).
    Merge(ops::MergeArgs),
    /// Point a differencing disk at its parent's new place (or find it with --search).
    SetParent(relink::SetParentArgs),
    /// Flatten a differencing disk and its ancestors into a new fixed, dynamic or raw
    /// file.
    MergeTo(ops::MergeToArgs),
    /// The exact size of the file convert (or merge-to) would write, without writing.
    Measure(measure::MeasureArgs),
    /// Change a fixed, dynamic or differencing disk's virtual size in place (--size,
    /// --align; a smaller size only with --allow-shrink).
    Resize(resize::ResizeArgs),
    /// Serve the disk over NBD (Unix socket by default) until SIGINT or SIGTERM.
    Serve(serve::ServeArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(generate::CompletionsArgs),
    /// Print the manual page (roff) on stdout: `vhdkit man | man -l -`.
    Man(generate::ManArgs),
}

impl Cli {
    /// Whether the command was asked for JSON: then its errors are a JSON object too
    /// (`errors`). `--progress json` counts: its stderr is a stream of JSON lines.
    pub fn wants_json(&self) -> bool {
        match &self.command {
            Command::Create(a) => a.run.wants_json(),
            Command::Info(a) => a.json,
            Command::Check(a) => a.json,
            Command::Read(a) => a.json,
            Command::Write(a) => a.json,
            Command::Compare(a) => a.json,
            Command::Map(a) => a.json,
            Command::Convert(a) => a.run.wants_json(),
            Command::Compact(a) => a.run.wants_json(),
            Command::Merge(a) => a.run.wants_json(),
            Command::SetParent(a) => a.json,
            Command::MergeTo(a) => a.run.wants_json(),
            Command::Measure(a) => a.run.wants_json(),
            Command::Resize(a) => a.run.wants_json(),
            Command::Serve(a) => a.json,
            Command::Completions(_) | Command::Man(_) => false,
        }
    }
}

/// Parses the command line, runs the command and reports its failure: the CLI's one
/// exit path. Returns the exit code.
pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return errors::report_parse(e, errors::json_in_args(std::env::args_os())),
    };
    let json = cli.wants_json();
    match run(cli) {
        Ok(code) => code,
        Err(e) => errors::report(&e, json),
    }
}

/// Options for opening existing images.
#[derive(Debug, Clone, Args)]
pub struct OpenArgs {
    /// Accept a parent whose unique id differs from the one the child recorded.
    #[arg(long)]
    ignore_parent_id: bool,
    /// Use this file as the disk's parent instead of searching its locators.
    #[arg(long, value_name = "PARENT")]
    with_parent: Option<PathBuf>,
    /// Refuse images with bad checksums or an inconsistent Xen batmap instead of
    /// reading them with a warning.
    #[arg(long)]
    strict: bool,
    /// Accept a host drive whose first/last MiB changed since it was linked.
    #[arg(long)]
    ignore_host_drive_identity: bool,
    /// Follow a host-drive disk's link to the block device it names (off by default: a
    /// stub names a host path chosen by whoever wrote it).
    #[arg(long)]
    host_drive: bool,
    /// With --host-drive, also follow a link to a regular file.
    #[arg(long, requires = "host_drive")]
    host_drive_file: bool,
    /// Follow a parent's absolute locator that points outside the child's folder.
    #[arg(long)]
    allow_absolute_parent: bool,
}

impl OpenArgs {
    /// The options for opening `path`; `--with-parent` on a disk that is not a
    /// differencing disk is a usage mistake (exit 2), not something silently ignored.
    fn options_for(&self, path: &std::path::Path) -> Result<OpenOptions, CliError> {
        if self.with_parent.is_some() {
            let alone = OpenOptions::new()
                .no_parents(true)
                .host_drives(HostDrives::Refuse);
            if let Ok(f) = vhdkit_format::VhdFile::open(path, &alone) {
                if !f.is_differencing() {
                    return Err(usage_error(&format!(
                        "--with-parent applies to a differencing disk; {} is {}",
                        path.display(),
                        f.kind()
                    )));
                }
            }
        }
        Ok(self.options())
    }

    /// `--strict`: besides refusing bad checksums, `compare` takes it as qemu-img's
    /// `-s` (a size difference is a mismatch).
    pub fn strict(&self) -> bool {
        self.strict
    }

    fn options(&self) -> OpenOptions {
        OpenOptions {
            ignore_parent_id: self.ignore_parent_id,
            parent: self.with_parent.clone(),
            strict: self.strict,
            ignore_host_drive_identity: self.ignore_host_drive_identity,
            host_drives: match (self.host_drive, self.host_drive_file) {
                (false, _) => HostDrives::Refuse,
                (true, false) => HostDrives::BlockDevices,
                (true, true) => HostDrives::BlockDevicesAndFiles,
            },
            absolute_parents: self.allow_absolute_parent,
            ..OpenOptions::default()
        }
    }
}

/// A library option's name (`block_size`) as the command line spells it (`--block-size`).
pub fn flag(name: &str) -> String {
    format!("--{}", name.replace('_', "-"))
}

/// A usage mistake clap cannot see (an option that does not apply, a value out of
/// range): reported as clap reports its own, with the subcommand's usage (or as a JSON
/// error), exit code 2.
pub fn usage_error(msg: &str) -> CliError {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let sub = std::env::args().nth(1).unwrap_or_default();
    let mut cmd = match cmd.find_subcommand_mut(&sub) {
        Some(c) => c.clone().bin_name(format!("vhdkit {sub}")),
        None => cmd,
    };
    CliError::Usage(Box::new(
        cmd.error(clap::error::ErrorKind::ArgumentConflict, msg),
    ))
}

/// How to take a source that may be a raw image (convert, compare, serve).
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// `auto`: a VHD, or raw bytes when the file has no VHD footer and no other
    /// format's signature (qcow2, VHDX, VMDK, VDI and damaged VHDs are refused); `raw`:
    /// the file's bytes as they are, whatever they hold.
    #[arg(long, value_enum, default_value_t = SourceFormat::Auto)]
    source_format: SourceFormat,
}

/// The values of `--source-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceFormat {
    /// Recognise the format.
    Auto,
    /// Raw bytes.
    Raw,
}

impl SourceArgs {
    /// `opts` with the source format applied.
    pub fn apply(&self, opts: OpenOptions) -> OpenOptions {
        OpenOptions {
            force_raw: self.source_format == SourceFormat::Raw,
            ..opts
        }
    }
}

/// A size on the command line: bytes or K/M/G/T (powers of 1024), a decimal fraction
/// of a unit rounded up to a 512-byte sector (`1.5G`; see [`parse_size`]).
pub fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
}

/// A block size on the command line (`--block-size` of create, convert, merge-to): a
/// power of two from 4 KiB to 256 MiB. Mistakes are usage errors (exit 2).
pub fn block_size_arg(s: &str) -> Result<u32, String> {
    let b = parse_size(s)?;
    match u32::try_from(b) {
        Ok(b) if vhdkit_format::check_create_block_size(b).is_ok() => Ok(b),
        _ => Err(format!(
            "{b} is not a power of two from 4K to 256M (sizes other readers can read)"
        )),
    }
}

/// An alignment on the command line (`--align` of convert, merge-to, measure): a size
/// that is a non-zero multiple of 512 bytes (`1M` for Azure). Mistakes are usage errors
/// (exit 2).
pub fn align_arg(s: &str) -> Result<u64, String> {
    let a = parse_size(s)?;
    if a == 0 || !a.is_multiple_of(512) {
        return Err(format!("{a} is not a non-zero multiple of 512 bytes"));
    }
    Ok(a)
}

/// What can go wrong in a command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the engine.
    #[error(transparent)]
    Format(#[from] vhdkit_format::Error),
    /// Reading input or writing output.
    #[error("{what}: {source}")]
    Io {
        /// What was being done (naming the file, if any).
        what: String,
        /// The file concerned, if any (for the JSON error's `path`).
        path: Option<PathBuf>,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An operation failed part way; `state` says what that left.
    #[error("{error}; {state}")]
    Stopped {
        /// What failed.
        error: vhdkit_format::Error,
        /// What is true of the user's files now.
        state: &'static str,
    },
    /// A failure and how to avoid it (e.g. `--sparse` for a fixed disk that did not
    /// fit): reported as the failure is, the advice after its message.
    #[error("{error}; {advice}")]
    Advised {
        /// The failure.
        error: Box<CliError>,
        /// What to do about it.
        advice: &'static str,
    },
    /// An operation was cancelled (Ctrl-C, SIGTERM, SIGHUP); `state` says what that
    /// left. Exit code 128 + the signal's number (130 without one).
    #[error("cancelled{}; {state}", signal.map(|s| format!(" by {s}")).unwrap_or_default())]
    Cancelled {
        /// The signal that cancelled it.
        signal: Option<signals::Signal>,
        /// What is true of the user's files now.
        state: &'static str,
    },
    /// A usage mistake: clap's error, with the usage to print. Exit code 2.
    #[error("{}", usage_message(.0))]
    Usage(Box<clap::Error>),
    /// Anything else, already worded.
    #[error("{0}")]
    Other(String),
}

/// The first line of a clap error, without its `error: ` label.
fn usage_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

impl CliError {
    fn io(what: impl Into<String>, source: std::io::Error) -> CliError {
        CliError::Io {
            what: what.into(),
            path: None,
            source,
        }
    }

    /// An I/O error on the file `path` while doing `doing` (e.g. `opening`).
    fn io_at(doing: &str, path: &std::path::Path, source: std::io::Error) -> CliError {
        CliError::Io {
            what: format!("{doing} {}", path.display()),
            path: Some(path.to_owned()),
            source,
        }
    }

    /// The exit code of the failed command: 2 for a usage mistake, 128 + the signal's
    /// number for a cancel by a signal (130 without one), 3 for every other failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Advised { error, .. } => error.exit_code(),
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Cancelled { signal, .. } => signal
                .map(signals::exit_code)
                .unwrap_or(runner::EXIT_CANCELLED),
            _ => EXIT_FAILED,
        }
    }

    /// Whether stdout was closed under us (e.g. `vhdkit read … | head`).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Runs the parsed command and returns the exit code.
fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Create(a) => create::run(a),
        Command::Info(a) => info::run(a),
        Command::Check(a) => check::run(a),
        Command::Read(a) => read::run(a),
        Command::Write(a) => write::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Map(a) => map::run(a),
        Command::Convert(a) => ops::convert(a),
        Command::Compact(a) => ops::compact(a),
        Command::Merge(a) => ops::merge(a),
        Command::SetParent(a) => relink::run(a),
        Command::MergeTo(a) => ops::merge_to(a),
        Command::Measure(a) => measure::run(a),
        Command::Resize(a) => resize::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Completions(a) => generate::completions(a),
        Command::Man(a) => generate::man(a),
    }
}
