//! IVMTask2-style background tasks for vhdkit: progress, cancellation and HRESULT
//! results.
//!
//! Every long disk operation returns a [`Task`] at once and does its work on a
//! background thread. The handle has the members of the Virtual Server `IVMTask2`
//! object — [`id`](Task::id), [`description`](Task::description),
//! [`percent_completed`](Task::percent_completed), [`is_complete`](Task::is_complete),
//! [`is_cancelable`](Task::is_cancelable), [`cancel`](Task::cancel),
//! [`wait_for_completion`](Task::wait_for_completion), [`result`](Task::result),
//! [`error`](Task::error) and [`error_description`](Task::error_description) — plus two
//! things for Rust callers: per-block [`ProgressEvent`]s on a channel that never blocks
//! the engine ([`Task::subscribe`]), and the worker's typed value ([`Task::join`]).
//!
//! The worker is a closure that receives a [`Progress`]. It counts finished blocks
//! (a relaxed atomic add plus a non-blocking `try_send`), checks for cancellation once
//! per chunk with `progress.check_cancelled()?`, and returns `Result<T, E>` where `E`
//! implements [`TaskError`], which classifies a failure as an [`HResult`] and a
//! [`VMTaskResult`]. A panic in the worker is caught and ends the task with
//! [`VMTaskResult::ThreadCrashError`]; waiters are always woken.
//!
//! ```
//! use std::time::Duration;
//! use vhdkit_task::{Cancelled, HResult, Phase, Task, VMTaskResult};
//!
//! const BLOCK: u64 = 2 * 1024 * 1024;
//!
//! // Copy 16 blocks in the background; `Cancelled` is the worker's error type here,
//! // an engine would use its own error enum implementing `TaskError`.
//! let task: Task<u64, Cancelled> = Task::spawn("Copying disk.vhd", true, |progress| {
//!     progress.set_phase(Phase::Copy, 16, 16 * BLOCK);
//!     for block in 0..16 {
//!         progress.check_cancelled()?;
//!         // ... copy one block ...
//!         progress.block_done(block, BLOCK);
//!     }
//!     Ok(16 * BLOCK)
//! });
//! let events = task.subscribe();
//!
//! assert!(task.wait_for_completion(Some(Duration::from_secs(30))));
//! assert_eq!(task.result(), Some(VMTaskResult::Success));
//! assert_eq!(task.error(), HResult::S_OK);
//! assert_eq!(task.percent_completed(), 100);
//!
//! // The listener drains what was queued; the last event is always the final one.
//! let last = events.iter().last().expect("the final event always arrives");
//! assert!(last.is_final);
//! assert_eq!(last.bytes_done, 16 * BLOCK);
//!
//! assert_eq!(task.join().expect("the copy succeeded"), 16 * BLOCK);
//! ```
//!
//! Cancelling:
//!
//! ```
//! use vhdkit_task::{Cancelled, HResult, Task, TaskFailure, VMTaskResult};
//!
//! let (started_tx, started_rx) = std::sync::mpsc::channel();
//! let task: Task<(), Cancelled> = Task::spawn("Compacting disk.vhd", true, move |progress| {
//!     let _ = started_tx.send(());
//!     loop {
//!         progress.check_cancelled()?;
//!         std::thread::yield_now(); // ... one chunk of work ...
//!     }
//! });
//! started_rx.recv().expect("the worker started");
//! task.cancel().expect("disk operations are cancelable");
//!
//! assert!(task.wait_for_completion(None));
//! assert_eq!(task.result(), Some(VMTaskResult::Cancelled));
//! assert_eq!(task.error(), HResult::E_ABORT);
//! assert!(matches!(task.join(), Err(TaskFailure::Cancelled)));
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cancel;
mod error;
mod hresult;
pub mod progress;
mod result;
mod task;

pub use cancel::CancelToken;
pub use error::{error_chain, Cancelled, TaskError, TaskFailure};
pub use hresult::HResult;
pub use progress::{Phase, Progress, ProgressEvent, ProgressSnapshot};
pub use result::VMTaskResult;
pub use task::{Task, TaskBuilder, DEFAULT_PROGRESS_CAPACITY};

/// The receiving half of a task's progress channel, as returned by
/// [`Task::subscribe`] (a `crossbeam_channel::Receiver`, named here so callers need
/// no direct dependency on crossbeam).
pub type EventReceiver = crossbeam_channel::Receiver<ProgressEvent>;
