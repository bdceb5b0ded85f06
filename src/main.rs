//! `vhdkit`: the command line over the vhdkit engine.
//!
//! Exit codes: 0 success; 1 `compare` found a difference or `check` found problems;
//! 2 usage error; 3 the operation failed (one line on stderr).

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // First, before any thread exists: SIGINT, SIGTERM and SIGHUP go to one thread.
    cmd::signals::install();
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if e.is_broken_pipe() {
                return ExitCode::SUCCESS;
            }
            cmd::terminal::eline(format!("vhdkit: {e}"));
            ExitCode::from(cmd::EXIT_FAILED)
        }
    }
}
