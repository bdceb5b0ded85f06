//! Running an operation's task from the command line: progress bar or JSON progress
//! events on stderr, Ctrl-C as a task cancel (exit 130), the final report as text or
//! JSON on stdout.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, ValueEnum};
use vhdkit_format::ops::{OpTask, Report};
use vhdkit_format::report::{EventDoc, ReportDoc};
use vhdkit_task::{ProgressEvent, TaskFailure};

use super::human::{count, size, size_and_bytes};
use super::volumes::{self, FsAware};
use super::{json, terminal, CliError, EXIT_OK};

/// Exit code of a command cancelled with Ctrl-C (SIGINT); SIGTERM gives 143 and SIGHUP
/// 129, as a shell reports a command those signals ended.
pub const EXIT_CANCELLED: u8 = 130;

/// What is true of the user's files when an operation stops before its end (cancelled,
/// or failed while working): said in the message, because "nothing was lost" is not
/// true of every operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaves {
    /// A new file (create, convert, merge-to): it never got its name.
    NewFile,
    /// A device written in place (convert --type raw onto a device).
    Device,
    /// Compact in place.
    Compact,
    /// Merge in place.
    Merge,
    /// Merge into an ancestor in place.
    MergeInto,
    /// Nothing written (measure).
    Nothing,
    /// Resize in place.
    Resize,
}

impl Leaves {
    fn text(self) -> &'static str {
        match self {
            Leaves::NewFile => "no output was left behind; the source is untouched",
            Leaves::Device => {
                "the device may hold part of the output (a device is written in place); the source is untouched"
            }
            Leaves::Compact => {
                "the disk is valid and reads exactly as before, possibly partly compacted (run compact again to finish)"
            }
            Leaves::Merge => {
                "the child reads exactly as before; the parent may hold part of the merge (run merge again to finish it)"
            }
            Leaves::MergeInto => {
                "the child reads exactly as before; the ancestor may hold part of the merge (run the same command again to finish it)"
            }
            Leaves::Nothing => "nothing was written",
            Leaves::Resize => {
                "the disk is valid and reads either as before or as resized (run resize again to finish)"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A progress bar when stderr is a terminal (the default).
    Auto,
    /// One JSON progress event per line on stderr.
    Json,
    /// Nothing.
    None,
}

/// Output options of long commands.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Progress display.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Print the final report as JSON (and a failure as one JSON object on stderr).
    #[arg(long)]
    pub(super) json: bool,
}

impl RunArgs {
    /// Whether the command speaks JSON: `--json`, or `--progress json` (its stderr is
    /// then a stream of JSON lines, which an error must not break).
    pub fn wants_json(&self) -> bool {
        self.json || self.progress == ProgressMode::Json
    }
}

/// What a disk-full failure of a fixed disk that is allocated up front suggests.
const SPARSE_HINT: &str =
    "a fixed disk is allocated whole up front; --sparse allocates only what is written";

/// `r` with [`SPARSE_HINT`] as advice when it is a disk-full failure of an operation on
/// a fixed disk that `applies` (allocated up front: no `--sparse`).
pub fn hint_sparse<T>(r: Result<T, CliError>, applies: bool) -> Result<T, CliError> {
    let disk_full = |e: &CliError| {
        matches!(e, CliError::Stopped { error, .. }
            if error.kind() == vhdkit_format::ErrorKind::DiskFull)
    };
    r.map_err(|e| {
        if applies && disk_full(&e) {
            CliError::Advised {
                error: Box::new(e),
                advice: SPARSE_HINT,
            }
        } else {
            e
        }
    })
}

/// Waits for `task`, showing progress, and turns its outcome into an exit code.
pub fn run(task: OpTask, args: &RunArgs, leaves: Leaves) -> Result<u8, CliError> {
    run_fs_aware(task, args, leaves, None)
}

/// [`run`] for an operation that may have scanned its disk's file systems
/// (`--fs-aware`): the report adds, per partition, what was found and what was
/// released (or left out), and why a partition was left alone.
pub fn run_fs_aware(
    task: OpTask,
    args: &RunArgs,
    leaves: Leaves,
    fs: Option<&FsAware>,
) -> Result<u8, CliError> {
    let report = wait(task, args, leaves)?;
    let found = fs.and_then(FsAware::report);
    let released = vhdkit_format::ops::UnusedRanges::new(report.unused_released.iter().cloned());
    if args.json {
        let doc = ReportDoc::new(&report, found.as_ref());
        json::print(&json::Doc::new(&doc))?;
    } else {
        if let Some(d) = &found {
            let verb = match (report.operation.name(), report.dry_run) {
                ("compact", true) => "would be released",
                ("compact", false) => "released",
                _ => "left out",
            };
            for line in volumes::text_lines(d, &released, verb) {
                terminal::line(line)?;
            }
        }
        terminal::line(summary(&report))?;
    }
    Ok(EXIT_OK)
}

/// Waits for any operation's `task`, showing its progress as `args` asks and cancelling
/// it on the first SIGINT, SIGTERM or SIGHUP; returns its result.
pub fn wait<T>(task: OpTask<T>, args: &RunArgs, leaves: Leaves) -> Result<T, CliError> {
    let t = task.handle();
    // The first SIGINT, SIGTERM or SIGHUP cancels (the same rollback for each); later
    // ones are ignored: the rollback must finish.
    super::signals::on_signal(move |_, count| {
        if count == 1 {
            let _ = t.cancel();
        }
    });
    let rx = task.subscribe();
    match args.progress {
        ProgressMode::Json => {
            for e in rx.iter() {
                json::eprint(&json::Doc::new(EventDoc::from(&e)));
            }
        }
        ProgressMode::Auto if std::io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new(100);
            bar.set_style(
                indicatif::ProgressStyle::with_template("[{bar:40}] {pos:>3}% {msg} eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(e) => {
                        if e.is_final {
                            break;
                        }
                        let (percent, phase) = bar_state(&e);
                        bar.set_message(phase);
                        bar.set_position(percent);
                    }
                    Err(crossbeam_timeout) if crossbeam_timeout.is_timeout() => {}
                    Err(_) => break,
                }
            }
            bar.finish_and_clear();
        }
        _ => {}
    }
    task.wait_for_completion(None);
    match task.join() {
        Ok(result) => Ok(result),
        Err(TaskFailure::Cancelled) => Err(CliError::Cancelled {
            signal: super::signals::received(),
            state: leaves.text(),
        }),
        Err(TaskFailure::Failed(e)) => Err(CliError::Stopped {
            error: e,
            state: leaves.text(),
        }),
        Err(other) => Err(CliError::Other(other.to_string())),
    }
}

/// What the progress bar shows for an event: the whole task's percent (weighted across
/// its phases, never going back), and beside it the phase with its own progress —
/// `copy 12 MiB/64 MiB`, or `flush` for a phase that counts nothing.
fn bar_state(e: &ProgressEvent) -> (u64, String) {
    let phase = e.phase.name();
    let detail = if e.phase_bytes_total > 0 {
        format!(
            "{phase} {}/{}",
            size(e.phase_bytes_done),
            size(e.phase_bytes_total)
        )
    } else if e.phase_blocks_total > 0 {
        format!(
            "{phase} {}/{}",
            e.phase_blocks_done,
            count(e.phase_blocks_total, "block")
        )
    } else {
        phase.to_owned()
    };
    (u64::from(e.task_percent), detail)
}

/// The text form of the report: one line, sizes as `4 MiB (4194304 bytes)`.
fn summary(r: &Report) -> String {
    let mut s = format!(
        "{}{}: {}",
        r.operation,
        if r.dry_run {
            " (dry run, nothing written)"
        } else {
            ""
        },
        r.path.display()
    );
    match r.operation.name() {
        "compact" => {
            let mut why = Vec::new();
            if r.blocks_unused > 0 {
                why.push(format!(
                    "{} unused by the file systems",
                    size(r.bytes_unused)
                ));
            }
            if r.blocks_deduplicated > 0 {
                why.push(format!(
                    "{} the same as the parent's",
                    r.blocks_deduplicated
                ));
            }
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join(", "))
            };
            let (released, moved) = if r.dry_run {
                ("would be released", "would move")
            } else {
                ("released", "moved")
            };
            s += &format!(
                ": {} of {} {released}{why}, {} {moved}, {} -> {}",
                r.blocks_released,
                count(r.blocks_total, "block"),
                r.blocks_moved,
                size_and_bytes(r.file_size_before),
                size_and_bytes(r.file_size_after)
            )
        }
        "merge" => {
            s += &format!(
                ": {}, {} merged into the parent",
                count(r.blocks_copied, "block"),
                size_and_bytes(r.bytes_written)
            )
        }
        "merge-into" => {
            s += &format!(
                ": {} merged into this ancestor",
                size_and_bytes(r.bytes_written)
            )
        }
        "create" => s += &format!(": {}", size_and_bytes(r.file_size_after)),
        "resize" => {
            if let Some(f) = &r.resize {
                s += &format!(
                    ": {} -> {}",
                    size_and_bytes(f.size_before),
                    size_and_bytes(f.size_after)
                );
                if f.bat != vhdkit_format::ops::resize::BatChange::None {
                    s += &format!(", BAT {}", f.bat.name());
                }
                if f.size_after < f.size_before {
                    s += &match f.nonzero_bytes_cut {
                        0 => ", only zeros cut".to_owned(),
                        n => format!(", {} non-zero cut", size_and_bytes(n)),
                    };
                }
                if r.blocks_released > 0 {
                    s += &format!(", {} released", count(r.blocks_released, "block"));
                }
                s += &format!(", file {}", size_and_bytes(r.file_size_after));
            }
        }
        _ => {
            s += &format!(
                ": {} of {} written, {} zero, {}",
                r.blocks_copied,
                count(r.blocks_total, "block"),
                r.blocks_zero,
                size_and_bytes(r.file_size_after)
            );
            if r.bytes_unused > 0 {
                s += &format!(
                    "; {} left out as unused by the file systems",
                    size(r.bytes_unused)
                );
            }
        }
    }
    if r.verified {
        s += ", verified";
    }
    s += &format!(", {:.2} s", r.elapsed.as_secs_f64());
    s
}
