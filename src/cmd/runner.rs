//! Running an operation's task from the command line: progress bar or JSON progress
//! events on stderr, Ctrl-C as a task cancel (exit 130), the final report as text or
//! JSON on stdout.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::json;
use vhdkit_format::ops::{OpTask, Report};
use vhdkit_task::{ProgressEvent, TaskFailure};

use super::{print_json, terminal, CliError, EXIT_OK};

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
    /// Compact in place.
    Compact,
    /// Merge in place.
    Merge,
}

impl Leaves {
    fn text(self) -> &'static str {
        match self {
            Leaves::NewFile => "no output was left behind; the source is untouched",
            Leaves::Compact => {
                "the disk is valid and reads exactly as before, possibly partly compacted (run compact again to finish)"
            }
            Leaves::Merge => {
                "the child reads exactly as before; the parent may hold part of the merge (run merge again to finish it)"
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
    /// Print the final report as JSON.
    #[arg(long)]
    json: bool,
}

/// One `--progress json` line. `percent` is the task's (weighted across its phases,
/// never decreasing, 100 only in the final event of a success), `phase_percent` the
/// current phase's; `lost` counts the events this listener missed just before.
fn event_json(e: &ProgressEvent) -> serde_json::Value {
    json!({
        "task_id": e.task_id,
        "phase": e.phase.name(),
        "block_index": e.block_index,
        "blocks_done": e.blocks_done,
        "blocks_total": e.blocks_total,
        "bytes_done": e.bytes_done,
        "bytes_total": e.bytes_total,
        "percent": e.task_percent,
        "phase_percent": e.phase_percent,
        "lost": e.lost,
        "final": e.is_final,
        "result": e.result.map(|r| r.name()),
    })
}

/// Waits for `task`, showing progress, and turns its outcome into an exit code.
pub fn run(task: OpTask, args: &RunArgs, leaves: Leaves) -> Result<u8, CliError> {
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
                terminal::eline(event_json(&e));
            }
        }
        ProgressMode::Auto if std::io::stderr().is_terminal() => {
            let bar = indicatif::ProgressBar::new(100);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>8} [{bar:40}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(e) => {
                        if e.is_final {
                            break;
                        }
                        bar.set_message(e.phase.name());
                        bar.set_length(e.bytes_total.max(1));
                        bar.set_position(e.bytes_done);
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
        Ok(report) => {
            if args.json {
                print_json(
                    &serde_json::to_value(&report).map_err(|e| CliError::Other(e.to_string()))?,
                )?;
            } else {
                terminal::line(summary(&report))?;
            }
            Ok(EXIT_OK)
        }
        Err(TaskFailure::Cancelled) => {
            let sig = super::signals::received();
            let why = match sig {
                Some(s) => format!("cancelled by {s}"),
                None => "cancelled".into(),
            };
            terminal::eline(format!("vhdkit: {why}; {}", leaves.text()));
            Ok(sig.map(super::signals::exit_code).unwrap_or(EXIT_CANCELLED))
        }
        Err(TaskFailure::Failed(e)) => Err(CliError::Stopped {
            error: e,
            state: leaves.text(),
        }),
        Err(other) => Err(CliError::Other(other.to_string())),
    }
}

fn summary(r: &Report) -> String {
    let mut s = format!("{}: {}", r.operation, r.path.display());
    match r.operation.name() {
        "compact" => {
            s += &format!(
                ": {} of {} blocks released, {} moved, {} -> {} bytes",
                r.blocks_released,
                r.blocks_total,
                r.blocks_moved,
                r.file_size_before,
                r.file_size_after
            )
        }
        "merge" => {
            s += &format!(
                ": {} blocks, {} bytes merged into the parent",
                r.blocks_copied, r.bytes_written
            )
        }
        "create" => s += &format!(": {} bytes", r.file_size_after),
        _ => {
            s += &format!(
                ": {} of {} blocks written, {} zero, {} bytes",
                r.blocks_copied, r.blocks_total, r.blocks_zero, r.file_size_after
            )
        }
    }
    if r.verified {
        s += ", verified";
    }
    s += &format!(" ({:.2} s)", r.elapsed.as_secs_f64());
    s
}
