//! Ctrl-C and termination: SIGINT, SIGTERM and SIGHUP on Unix, taken by one thread
//! (`sigwait`); on Windows the console's control events (Ctrl-C; Ctrl-Break, closing
//! the console, logoff and shutdown as termination), handed to the same kind of thread.

use std::fmt;

/// A request to stop, by the user or the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT; Ctrl-C in a Windows console.
    Interrupt,
    /// SIGTERM; Ctrl-Break, logoff or shutdown on Windows.
    Terminate,
    /// SIGHUP (the terminal went away); the console window closed on Windows.
    Hangup,
}

impl Signal {
    /// The Unix signal number (also used on Windows for the shell's exit code, 128 +
    /// the number, so that scripts see the same codes everywhere).
    pub fn number(self) -> u8 {
        match self {
            Signal::Interrupt => 2,
            Signal::Terminate => 15,
            Signal::Hangup => 1,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        })
    }
}

/// Starts the thread that takes every stop request and calls `on` with it. Call it
/// first in `main`, before any other thread exists (on Unix the signals are blocked in
/// the calling thread, and every later thread inherits that). False if it could not:
/// the requests then keep their default action (the process ends).
pub fn start(on: impl Fn(Signal) + Send + 'static) -> bool {
    super::sys::start_signals(Box::new(on))
}
