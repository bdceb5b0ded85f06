//! `vhdkit`: the command line over the vhdkit engine.
//!
//! Exit codes: 0 success; 1 `compare` found a difference or `check` found problems;
//! 2 usage error; 3 the operation failed (one line on stderr, or one JSON object with
//! `--json`); 130 / 143 / 129 an operation cancelled by SIGINT / SIGTERM / SIGHUP.

mod cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    // First, before any thread exists: SIGINT, SIGTERM and SIGHUP go to one thread.
    cmd::signals::install();
    ExitCode::from(cmd::main())
}
