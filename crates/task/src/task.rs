//! The task handle: a background operation with the members of `IVMTask2`.

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::error::error_chain;
use crate::progress::Counters;
use crate::{
    CancelToken, HResult, Progress, ProgressEvent, ProgressSnapshot, TaskError, TaskFailure,
    VMTaskResult,
};

/// Capacity of a task's progress channel unless
/// [`TaskBuilder::progress_capacity`] says otherwise.
pub const DEFAULT_PROGRESS_CAPACITY: usize = 256;

/// The next task id. Ids start at 1 and increase for the life of the process.
static NEXT_TASK_ID: AtomicU32 = AtomicU32::new(1);

fn next_task_id() -> u32 {
    loop {
        // 0 is never handed out (it marks a detached `Progress`), even after the
        // counter wraps around, which takes 2^32 tasks.
        let id = NEXT_TASK_ID.fetch_add(1, Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// What a finished task reports.
struct Outcome<T, E> {
    result: VMTaskResult,
    error: HResult,
    description: String,
    elapsed: Duration,
    /// Moved out by the first `join`/`try_join`.
    value: Option<Result<T, TaskFailure<E>>>,
}

/// The state every handle of one task shares.
struct Shared<T, E> {
    id: u32,
    description: String,
    cancelable: bool,
    token: CancelToken,
    counters: Arc<Counters>,
    /// Kept so `subscribe` can hand out receivers at any time, and so the final event
    /// can always be delivered (see the `progress` module docs).
    events: Receiver<ProgressEvent>,
    started: Instant,
    /// Set (after `state`) once the outcome is stored; lets `is_complete` and
    /// `cancel` avoid the lock.
    complete: AtomicBool,
    state: Mutex<Option<Outcome<T, E>>>,
    finished: Condvar,
}

impl<T, E> Shared<T, E> {
    /// The outcome lock. A poisoned lock is recovered: the outcome is written in one
    /// assignment, so no panic can leave it half-updated.
    fn lock(&self) -> MutexGuard<'_, Option<Outcome<T, E>>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Delivers the final event, stores the outcome, then wakes every waiter.
    fn complete(&self, progress: Progress, value: Result<T, TaskFailure<E>>, description: String)
    where
        E: TaskError,
    {
        let (result, error) = match &value {
            Ok(_) => (VMTaskResult::Success, HResult::S_OK),
            Err(failure) => (failure.task_result(), failure.hresult()),
        };
        progress.finish(&self.events, result);
        let outcome = Outcome {
            result,
            error,
            description,
            elapsed: self.started.elapsed(),
            value: Some(value),
        };
        let mut state = self.lock();
        *state = Some(outcome);
        self.complete.store(true, Ordering::Release);
        drop(state);
        self.finished.notify_all();
    }
}

/// Runs the worker, catching a panic, and classifies what it returned. Returns the
/// value for `join` and the text for `error_description`.
fn run_worker<T, E, F>(work: F, progress: &Progress) -> (Result<T, TaskFailure<E>>, String)
where
    E: TaskError,
    F: FnOnce(&Progress) -> Result<T, E>,
{
    match panic::catch_unwind(AssertUnwindSafe(|| work(progress))) {
        Ok(Ok(value)) => (Ok(value), String::new()),
        Ok(Err(error)) => {
            let description = error_chain(&error);
            if error.is_cancelled() || error.task_result() == VMTaskResult::Cancelled {
                (Err(TaskFailure::Cancelled), description)
            } else {
                (Err(TaskFailure::Failed(error)), description)
            }
        }
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            // A payload whose destructor panics must not take the task down with it.
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
            let failure = TaskFailure::Panicked(message);
            let description = failure.to_string();
            (Err(failure), description)
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(panic payload is not a string)".to_owned()
    }
}

/// Configures a [`Task`] before spawning it: description, whether it can be
/// cancelled, and the capacity of its progress channel.
///
/// ```
/// use vhdkit_task::{Task, TaskBuilder};
///
/// let task: Task<u32, std::io::Error> = TaskBuilder::new("Counting")
///     .cancelable(false)
///     .progress_capacity(16)
///     .spawn(|_progress| Ok(42));
/// assert_eq!(task.join().ok(), Some(42));
/// ```
#[derive(Debug, Clone)]
pub struct TaskBuilder {
    description: String,
    cancelable: bool,
    progress_capacity: usize,
}

impl TaskBuilder {
    /// A cancelable task with this description and a progress channel of
    /// [`DEFAULT_PROGRESS_CAPACITY`] events.
    pub fn new(description: impl Into<String>) -> TaskBuilder {
        TaskBuilder {
            description: description.into(),
            cancelable: true,
            progress_capacity: DEFAULT_PROGRESS_CAPACITY,
        }
    }

    /// Whether [`Task::cancel`] is accepted (default true).
    pub fn cancelable(mut self, cancelable: bool) -> TaskBuilder {
        self.cancelable = cancelable;
        self
    }

    /// How many events the progress channel holds before further events are dropped
    /// (coalesced). At least 1: 0 is taken as 1, since the final event needs a slot.
    pub fn progress_capacity(mut self, capacity: usize) -> TaskBuilder {
        self.progress_capacity = capacity.max(1);
        self
    }

    /// Starts `work` on a new thread named `vhdkit-task-<id>` and returns its handle
    /// at once.
    ///
    /// If the thread cannot be created, the task is returned already complete, with
    /// [`VMTaskResult::OutOfMemoryError`], [`HResult::E_OUTOFMEMORY`] and
    /// [`TaskFailure::SpawnFailed`]; `work` never runs.
    pub fn spawn<T, E, F>(self, work: F) -> Task<T, E>
    where
        T: Send + 'static,
        E: TaskError,
        F: FnOnce(&Progress) -> Result<T, E> + Send + 'static,
    {
        let id = next_task_id();
        let (sender, receiver) = crossbeam_channel::bounded(self.progress_capacity.max(1));
        let shared = Arc::new(Shared {
            id,
            description: self.description,
            cancelable: self.cancelable,
            token: CancelToken::new(),
            counters: Arc::new(Counters::default()),
            events: receiver,
            started: Instant::now(),
            complete: AtomicBool::new(false),
            state: Mutex::new(None),
            finished: Condvar::new(),
        });
        // Kept only to report a failed spawn; dropped unused once the thread runs.
        let spare_sender: Sender<ProgressEvent> = sender.clone();
        let progress = Progress::new(id, shared.counters.clone(), shared.token.clone(), sender);
        let worker_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name(format!("vhdkit-task-{id}"))
            .spawn(move || {
                let (value, description) = run_worker(work, &progress);
                worker_shared.complete(progress, value, description);
            });
        match spawned {
            // Detached: the worker completes the task itself; nobody joins the thread.
            Ok(_handle) => drop(spare_sender),
            Err(error) => {
                let progress = Progress::new(
                    id,
                    shared.counters.clone(),
                    shared.token.clone(),
                    spare_sender,
                );
                let failure = TaskFailure::SpawnFailed(error);
                let description = error_chain(&failure);
                shared.complete(progress, Err(failure), description);
            }
        }
        Task { shared }
    }
}

/// A handle to a background operation, with the members of `IVMTask2`.
///
/// Cloning gives another handle to the same task; every handle is `Send + Sync`.
/// Dropping every handle does not stop the work (cancel first if that is wanted).
///
/// | `IVMTask2` | here |
/// |---|---|
/// | `ID` | [`id`](Self::id) |
/// | `Description` | [`description`](Self::description) |
/// | `PercentCompleted` | [`percent_completed`](Self::percent_completed) |
/// | `IsComplete` | [`is_complete`](Self::is_complete) |
/// | `IsCancelable` | [`is_cancelable`](Self::is_cancelable) |
/// | `Cancel` | [`cancel`](Self::cancel) |
/// | `WaitForCompletion` | [`wait_for_completion`](Self::wait_for_completion) |
/// | `Result` | [`result`](Self::result) |
/// | `Error` | [`error`](Self::error) |
/// | `ErrorDescription` | [`error_description`](Self::error_description) |
///
/// Beyond the original: [`subscribe`](Self::subscribe) for progress events,
/// [`progress`](Self::progress) for the counters, [`elapsed`](Self::elapsed), and
/// [`join`](Self::join) for the worker's typed value.
pub struct Task<T, E> {
    shared: Arc<Shared<T, E>>,
}

impl<T, E> Clone for Task<T, E> {
    fn clone(&self) -> Self {
        Task {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T, E> fmt::Debug for Task<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.shared.id)
            .field("description", &self.shared.description)
            .field("complete", &self.is_complete())
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

impl<T, E> Task<T, E>
where
    T: Send + 'static,
    E: TaskError,
{
    /// Starts `work` on a new thread and returns the task's handle at once; the
    /// shorthand for [`TaskBuilder::new`]`(description).cancelable(cancelable).spawn(work)`.
    ///
    /// The worker receives a [`Progress`] to count blocks and check for cancellation.
    /// It can return `Err` with any [`TaskError`]; a panic is caught and reported as
    /// [`VMTaskResult::ThreadCrashError`].
    pub fn spawn<F>(description: impl Into<String>, cancelable: bool, work: F) -> Task<T, E>
    where
        F: FnOnce(&Progress) -> Result<T, E> + Send + 'static,
    {
        TaskBuilder::new(description)
            .cancelable(cancelable)
            .spawn(work)
    }
}

impl<T, E> Task<T, E> {
    /// The task's id: unique in the process, increasing from 1 in spawn order.
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// The description given at spawn, e.g. `Compacting /path/disk.vhd`.
    pub fn description(&self) -> &str {
        &self.shared.description
    }

    /// True if [`cancel`](Self::cancel) is accepted.
    pub fn is_cancelable(&self) -> bool {
        self.shared.cancelable
    }

    /// True once the task has finished, whatever the outcome. When this returns true,
    /// [`result`](Self::result) is `Some` and the final progress event is queued.
    pub fn is_complete(&self) -> bool {
        self.shared.complete.load(Ordering::Acquire)
    }

    /// Completion in percent, 0..=100, derived from the progress counters (bytes if a
    /// byte total is set, else blocks).
    ///
    /// It never decreases: each call reports the highest value seen so far. It stays at
    /// most 99 until the task succeeds, is exactly 100 once it has succeeded, and on
    /// failure or cancellation stays where it was.
    pub fn percent_completed(&self) -> u32 {
        self.shared.counters.percent()
    }

    /// Requests cancellation; the worker stops at its next
    /// [`check_cancelled`](Progress::check_cancelled).
    ///
    /// `Err(E_FAIL)` if the task is not cancelable. Otherwise `Ok(())`, also when
    /// repeated; once the task is complete it has no effect (the result stays what it
    /// was). A task can still succeed after `cancel` if the worker finished before it
    /// noticed.
    pub fn cancel(&self) -> Result<(), HResult> {
        if !self.shared.cancelable {
            return Err(HResult::E_FAIL);
        }
        if !self.is_complete() {
            self.shared.token.cancel();
        }
        Ok(())
    }

    /// True once [`cancel`](Self::cancel) has been accepted (before completion).
    pub fn is_cancel_requested(&self) -> bool {
        self.shared.token.is_cancelled()
    }

    /// Waits until the task is complete or `timeout` has passed (`None`: no limit).
    /// Returns whether the task is complete.
    pub fn wait_for_completion(&self, timeout: Option<Duration>) -> bool {
        if self.is_complete() {
            return true;
        }
        // A timeout too large for `Instant` is as good as none.
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let mut state = self.shared.lock();
        loop {
            if state.is_some() {
                return true;
            }
            match (timeout, deadline) {
                (Some(_), Some(deadline)) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return false;
                    }
                    state = self
                        .shared
                        .finished
                        .wait_timeout(state, remaining)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                _ => {
                    state = self
                        .shared
                        .finished
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// `None` while running; then how the task ended.
    pub fn result(&self) -> Option<VMTaskResult> {
        self.shared.lock().as_ref().map(|outcome| outcome.result)
    }

    /// The HRESULT of the failure: `S_OK` while running and on success; the worker
    /// error's [`hresult`](TaskError::hresult) on failure; `E_ABORT` when cancelled;
    /// `E_FAIL` when the worker panicked.
    pub fn error(&self) -> HResult {
        self.shared
            .lock()
            .as_ref()
            .map_or(HResult::S_OK, |outcome| outcome.error)
    }

    /// Text of the failure: empty while running and on success; otherwise the worker
    /// error's `Display` followed by its `source` chain, joined with `": "` (see
    /// [`error_chain`](crate::error_chain)); for a panic,
    /// `worker thread panicked: <message>`.
    pub fn error_description(&self) -> String {
        self.shared
            .lock()
            .as_ref()
            .map(|outcome| outcome.description.clone())
            .unwrap_or_default()
    }

    /// A receiver of this task's [`ProgressEvent`]s.
    ///
    /// The channel exists from spawn on, so events sent before `subscribe` are queued
    /// (up to the channel capacity). Receivers returned by several calls share one
    /// queue: each event goes to exactly one of them, so have one listener. The last
    /// event is always the final one ([`ProgressEvent::is_final`]), and iterating the
    /// receiver ends after it.
    pub fn subscribe(&self) -> Receiver<ProgressEvent> {
        self.shared.events.clone()
    }

    /// The progress counters now (after completion: their final values, phase
    /// [`Finish`](crate::Phase::Finish)).
    pub fn progress(&self) -> ProgressSnapshot {
        self.shared.counters.snapshot()
    }

    /// Time since spawn; once complete, the time the task took.
    pub fn elapsed(&self) -> Duration {
        self.shared
            .lock()
            .as_ref()
            .map_or_else(|| self.shared.started.elapsed(), |outcome| outcome.elapsed)
    }

    /// Waits for completion and takes the worker's value.
    ///
    /// The value is moved out once per task: if another handle already took it, this
    /// returns `Err(`[`TaskFailure::AlreadyTaken`]`)` (the outcome itself stays
    /// readable through [`result`](Self::result) and [`error`](Self::error)).
    pub fn join(self) -> Result<T, TaskFailure<E>> {
        self.wait_for_completion(None);
        self.take()
    }

    /// Takes the worker's value without waiting: `None` while running; otherwise as
    /// [`join`](Self::join).
    pub fn try_join(&self) -> Option<Result<T, TaskFailure<E>>> {
        if self.is_complete() {
            Some(self.take())
        } else {
            None
        }
    }

    fn take(&self) -> Result<T, TaskFailure<E>> {
        self.shared
            .lock()
            .as_mut()
            .and_then(|outcome| outcome.value.take())
            .unwrap_or(Err(TaskFailure::AlreadyTaken))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone>() {}
        assert_traits::<Task<Vec<u8>, std::io::Error>>();
    }

    #[test]
    fn panic_message_of_non_string_payload_is_placeholder() {
        let payload: Box<dyn Any + Send> = Box::new(17_u8);
        assert_eq!(
            panic_message(payload.as_ref()),
            "(panic payload is not a string)"
        );
    }

    #[test]
    fn panic_message_of_formatted_panic_is_text() {
        let payload: Box<dyn Any + Send> = Box::new(String::from("block 3 out of range"));
        assert_eq!(panic_message(payload.as_ref()), "block 3 out of range");
    }
}
