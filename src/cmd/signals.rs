//! SIGINT, SIGTERM and SIGHUP (on Windows the console's Ctrl-C, Ctrl-Break and close
//! events, see [`vhdkit_platform::signals`]), taken by one thread: a long command turns
//! the first into a cancel of its task (same rollback as Ctrl-C, exit 130 / 143 / 129),
//! `serve` into a clean stop; with nothing registered, a signal ends the process as its
//! default action would (exit 128 + the signal's number).

use std::sync::{Mutex, OnceLock};

pub use vhdkit_platform::signals::Signal;

type Handler = Box<dyn Fn(Signal, u32) + Send>;

struct State {
    handler: Option<Handler>,
    first: Option<Signal>,
    count: u32,
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        Mutex::new(State {
            handler: None,
            first: None,
            count: 0,
        })
    })
}

/// Starts the thread that takes the signals — call it first in `main`, before any other
/// thread exists, so every thread inherits the mask. If it cannot, signals keep their
/// default action.
pub fn install() {
    vhdkit_platform::signals::start(|sig| {
        let mut st = state().lock().unwrap_or_else(|e| e.into_inner());
        st.count += 1;
        st.first.get_or_insert(sig);
        let count = st.count;
        match &st.handler {
            Some(h) => h(sig, count),
            None => std::process::exit(exit_code(sig).into()),
        }
    });
}

/// Hands every later signal to `handler` (with how many signals have come so far).
pub fn on_signal(handler: impl Fn(Signal, u32) + Send + 'static) {
    state().lock().unwrap_or_else(|e| e.into_inner()).handler = Some(Box::new(handler));
}

/// The first signal received, if any.
pub fn received() -> Option<Signal> {
    state().lock().unwrap_or_else(|e| e.into_inner()).first
}

/// The shell's exit code for a command ended by `sig`: 128 + its number.
pub fn exit_code(sig: Signal) -> u8 {
    128u8.saturating_add(sig.number())
}
