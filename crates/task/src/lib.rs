//! IVMTask2-style background tasks for vhdkit: progress, cancellation and HRESULT
//! results.
//!
//! Every long disk operation returns a [`Task`] at once and does its work on a
//! background thread. Through its [`TaskHandle`] the task has the members of the
//! Virtual Server `IVMTask2` object — [`id`](TaskHandle::id),
//! [`description`](TaskHandle::description),
//! [`percent_completed`](TaskHandle::percent_completed),
//! [`is_complete`](TaskHandle::is_complete), [`is_cancelable`](TaskHandle::is_cancelable),
//! [`cancel`](TaskHandle::cancel), [`wait_for_completion`](TaskHandle::wait_for_completion),
//! [`result`](TaskHandle::result), [`error`](TaskHandle::error) and
//! [`error_description`](TaskHandle::error_description) — plus, for Rust callers:
//!
//! - per-block [`ProgressEvent`]s, carrying the phase's and the task's percentage, to
//!   any number of [`Subscription`]s, each with its own bounded queue that never
//!   blocks the engine ([`TaskHandle::subscribe`]);
//! - the worker's typed value, by [`Task::join`] or by `task.await` (no runtime
//!   needed); a `Task` is not `Clone`, so the value is always there for it, while
//!   [`TaskHandle`]s, which cannot join, are cloned freely;
//! - a [`TaskRegistry`] of running tasks, to list them and cancel them all at shutdown
//!   ([`running`], [`cancel_all`]).
//!
//! The worker is a closure that receives a [`Progress`]. It declares its phases and
//! their work ([`Progress::plan_phases`]), starts each ([`Progress::set_phase`]), counts
//! finished blocks (a relaxed atomic add plus a non-blocking `try_send` per
//! subscriber), checks for cancellation once per chunk with
//! `progress.check_cancelled()?`, and returns `Result<T, E>` where `E` implements
//! [`TaskError`], which classifies a failure as an [`HResult`] and a [`VMTaskResult`].
//! A panic in the worker is caught and ends the task with
//! [`VMTaskResult::ThreadCrashError`]; waiters are always woken.
//!
//! A task completes in one order: its outcome is stored and it reads as complete
//! *before* [`percent_completed`](TaskHandle::percent_completed) reads 100 and before
//! any subscriber gets the final event or sees its stream end.
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
//!     progress.plan_phases(&[(Phase::Copy, 16 * BLOCK)]);
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
//! let last = events.last().expect("the final event always arrives");
//! assert!(last.is_final);
//! assert_eq!(last.phase_bytes_done, 16 * BLOCK);
//! assert_eq!(last.task_percent, 100);
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
mod handle;
mod hresult;
pub mod progress;
mod registry;
mod result;
mod subscription;
mod task;

pub use cancel::CancelToken;
pub use error::{error_chain, Cancelled, TaskError, TaskFailure};
pub use handle::{Completion, TaskHandle};
pub use hresult::HResult;
pub use progress::{Phase, Progress, ProgressEvent, ProgressSnapshot};
pub use registry::{cancel_all, running, TaskRegistry};
pub use result::VMTaskResult;
pub use subscription::{Events, RecvTimeoutError, Subscription, TryEvents, TryRecvError};
pub use task::{JoinFuture, Task, TaskBuilder, DEFAULT_EVENT_CAPACITY};
