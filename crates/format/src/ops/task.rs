//! [`OpTask`]: a running operation, with the members of `IVMTask2` as its own methods.

use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use vhdkit_task::{
    Completion, HResult, JoinFuture, ProgressSnapshot, Subscription, Task, TaskFailure, TaskHandle,
    VMTaskResult,
};

use super::Report;
use crate::error::Error;

/// A running operation: what [`compact_task`](super::compact_task),
/// [`convert_task`](super::convert_task), [`merge_task`](super::merge_task) and the other
/// `*_task` functions return at once, while the work goes on in the background.
///
/// It has the members of Virtual Server's `IVMTask2` — [`id`](Self::id),
/// [`description`](Self::description), [`percent_completed`](Self::percent_completed),
/// [`is_complete`](Self::is_complete), [`is_cancelable`](Self::is_cancelable),
/// [`cancel`](Self::cancel), [`wait_for_completion`](Self::wait_for_completion),
/// [`result`](Self::result), [`error`](Self::error),
/// [`error_description`](Self::error_description) — and, for Rust callers, progress
/// events ([`subscribe`](Self::subscribe)), the operation's typed value
/// ([`join`](Self::join), or `.await`), and [`handle`](Self::handle)s to give to
/// whoever else watches or cancels it (a Ctrl-C handler, a UI). `T` is the value:
/// a [`Report`] for every operation but [`measure_task`](super::measure_task)'s.
///
/// An `OpTask` is not `Clone`: there is one, and `join` consumes it, so the value is
/// always there for it. Dropping it does not stop the work (cancel first).
///
/// ```
/// use vhdkit_format::ops::{self, OpsOptions};
/// use vhdkit_format::{CreateOptions, Disk, DiskKind, VMTaskResult};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let path = dir.path().join("disk.vhd");
/// Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 16 << 20))?;
///
/// let task = ops::compact_task(&path, &OpsOptions::default())?;
/// for event in task.subscribe() {
///     // One event per chunk of blocks; the last one is final.
///     println!("{} {}% (phase {}%)", event.phase, event.task_percent, event.phase_percent);
/// }
/// assert_eq!(task.result(), Some(VMTaskResult::Success));
/// let report = task.join()?;
/// assert_eq!(report.path, path);
/// # Ok(()) }
/// ```
pub struct OpTask<T = Report> {
    task: Task<T, Error>,
}

impl<T> From<Task<T, Error>> for OpTask<T> {
    /// Wraps a task whose worker runs an operation (e.g. one started with
    /// [`TaskBuilder`](vhdkit_task::TaskBuilder) around [`compact`](super::compact::compact)).
    fn from(task: Task<T, Error>) -> OpTask<T> {
        OpTask { task }
    }
}

impl<T> OpTask<T> {
    /// The task underneath, for code written against `vhdkit_task::Task`.
    pub fn into_task(self) -> Task<T, Error> {
        self.task
    }

    /// A cheap, cloneable handle to this task, with every method here but
    /// [`join`](Self::join) and [`try_join`](Self::try_join): to watch, cancel or wait
    /// for it from another thread.
    ///
    /// ```
    /// # use vhdkit_format::ops::{self, OpsOptions};
    /// # use vhdkit_format::{CreateOptions, Disk, DiskKind};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("disk.vhd");
    /// # Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 16 << 20)).unwrap();
    /// let task = ops::compact_task(&path, &OpsOptions::default()).unwrap();
    /// let handle = task.handle();
    /// let watcher = std::thread::spawn(move || {
    ///     handle.wait_for_completion(None);
    ///     handle.percent_completed()
    /// });
    /// task.join().unwrap();
    /// assert_eq!(watcher.join().unwrap(), 100);
    /// ```
    pub fn handle(&self) -> TaskHandle {
        self.task.handle()
    }

    /// The task's id: unique in the process, increasing from 1 in start order.
    pub fn id(&self) -> u32 {
        self.task.id()
    }

    /// What the task does, e.g. `Compacting /path/disk.vhd`.
    pub fn description(&self) -> &str {
        self.task.description()
    }

    /// True if [`cancel`](Self::cancel) is accepted (every disk operation is
    /// cancelable).
    pub fn is_cancelable(&self) -> bool {
        self.task.is_cancelable()
    }

    /// True once the operation has finished, whatever the outcome; then
    /// [`result`](Self::result) is `Some` and [`error`](Self::error) final.
    pub fn is_complete(&self) -> bool {
        self.task.is_complete()
    }

    /// Completion in percent, 0..=100, weighted across the operation's phases by their
    /// work: it never decreases, stays at most 99 while the operation runs, and is 100
    /// exactly when it has succeeded.
    pub fn percent_completed(&self) -> u32 {
        self.task.percent_completed()
    }

    /// Asks the operation to stop at its next chunk of blocks. Every operation stops
    /// in a consistent state: a new file never appears, an in-place change stops
    /// between two crash-safe steps (`docs/crash-safety.md`).
    ///
    /// `Err(`[`HResult::E_FAIL`]`)` if the task is not cancelable; `Ok(())` otherwise,
    /// also when repeated or once complete (the result then stays what it was). An
    /// operation can still succeed after `cancel` if it finished before it noticed.
    ///
    /// ```
    /// # use vhdkit_format::ops::{self, OpsOptions, Target};
    /// # use vhdkit_format::{CreateOptions, Disk, DiskKind, HResult, TaskFailure, VMTaskResult};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let src = dir.path().join("src.vhd");
    /// # Disk::create(&src, &CreateOptions::new(DiskKind::Dynamic, 64 << 20))?;
    /// let dst = dir.path().join("copy.vhd");
    /// let task = ops::convert_task(&src, &dst, Target::Fixed, &OpsOptions::default())?;
    /// task.cancel()?;                          // an HResult, usable with `?`
    /// match task.join() {
    ///     Err(TaskFailure::Cancelled) => assert!(!dst.exists()), // nothing left behind
    ///     Ok(_) => {}                          // it finished before it noticed
    ///     Err(other) => return Err(other.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cancel(&self) -> Result<(), HResult> {
        self.task.cancel()
    }

    /// True once [`cancel`](Self::cancel) has been accepted (before completion).
    pub fn is_cancel_requested(&self) -> bool {
        self.task.is_cancel_requested()
    }

    /// Waits until the operation is complete or `timeout` has passed (`None`: no
    /// limit); returns whether it is complete. When true, every subscriber's final
    /// event is queued.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use vhdkit_format::ops::{self, OpsOptions};
    /// # use vhdkit_format::{CreateOptions, Disk, DiskKind, HResult, VMTaskResult};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("disk.vhd");
    /// # Disk::create(&path, &CreateOptions::new(DiskKind::Dynamic, 16 << 20)).unwrap();
    /// let task = ops::compact_task(&path, &OpsOptions::default()).unwrap();
    /// while !task.wait_for_completion(Some(Duration::from_millis(100))) {
    ///     println!("{}%", task.percent_completed());
    /// }
    /// assert_eq!(task.result(), Some(VMTaskResult::Success));
    /// assert_eq!(task.error(), HResult::S_OK);
    /// ```
    pub fn wait_for_completion(&self, timeout: Option<Duration>) -> bool {
        self.task.wait_for_completion(timeout)
    }

    /// `None` while running; then how the operation ended (`Success`, `Cancelled`,
    /// `DiskRelatedError`, …).
    pub fn result(&self) -> Option<VMTaskResult> {
        self.task.result()
    }

    /// The HRESULT of the failure: `S_OK` while running and on success, `E_ABORT` when
    /// cancelled, otherwise the error's (see [`Error::hresult`]).
    pub fn error(&self) -> HResult {
        self.task.error()
    }

    /// The text of the failure: empty while running and on success; otherwise the
    /// error's message followed by its causes.
    pub fn error_description(&self) -> String {
        self.task.error_description()
    }

    /// A new subscription to the operation's progress events, with a queue of the
    /// operation's [`event_capacity`](super::OpsOptions::event_capacity) events.
    ///
    /// Iterating it blocks until the next event and ends after the final one. Its first
    /// event is the state now; every subscription gets every event, but a slow one
    /// loses the oldest (never the newest and never the final one), and a full queue
    /// never slows the operation. See [`ProgressEvent`](vhdkit_task::ProgressEvent)
    /// for the fields.
    pub fn subscribe(&self) -> Subscription {
        self.task.subscribe()
    }

    /// As [`subscribe`](Self::subscribe), with a queue of `capacity` events (0 is taken
    /// as 1).
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        self.task.subscribe_with_capacity(capacity)
    }

    /// The progress now: phase, the phase's counters, the phase's and the task's
    /// percentages.
    pub fn progress(&self) -> ProgressSnapshot {
        self.task.progress()
    }

    /// Time since the start; once complete, the time the operation took.
    pub fn elapsed(&self) -> Duration {
        self.task.elapsed()
    }

    /// A future that resolves to [`result`](Self::result) once the operation is
    /// complete; it needs no particular runtime.
    pub fn completed(&self) -> Completion {
        self.task.completed()
    }

    /// Waits for completion and takes the operation's value: `Ok` with it, or why
    /// there is none — [`TaskFailure::Failed`] with the [`Error`],
    /// [`TaskFailure::Cancelled`], or a panic. `TaskFailure` is an error (`?` works)
    /// with the same [`hresult`](TaskFailure::hresult) and
    /// [`task_result`](TaskFailure::task_result) the task reports.
    ///
    /// ```
    /// # use vhdkit_format::ops::{self, OpsOptions};
    /// # use vhdkit_format::{ErrorKind, HResult, TaskFailure};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("not-a-disk.vhd");
    /// std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    /// // Refusals a look at the file can make come at once, before any task starts.
    /// let refused = ops::compact_task(&path, &OpsOptions::default()).unwrap_err();
    /// assert_eq!(refused.kind(), ErrorKind::NotVhd);
    /// assert_eq!(refused.hresult(), HResult::VM_E_INVALID_HD_FILE);
    /// ```
    pub fn join(self) -> Result<T, TaskFailure<Error>> {
        self.task.join()
    }

    /// Takes the value without waiting: as [`join`](Self::join) once the operation is
    /// complete; while it runs, `Err` gives the task back.
    pub fn try_join(self) -> Result<Result<T, TaskFailure<Error>>, OpTask<T>> {
        self.task.try_join().map_err(OpTask::from)
    }
}

/// `task.await` waits without blocking a thread (any executor; the worker thread wakes
/// the future) and gives what [`OpTask::join`] gives.
impl<T> IntoFuture for OpTask<T> {
    type Output = Result<T, TaskFailure<Error>>;
    type IntoFuture = JoinFuture<T, Error>;

    fn into_future(self) -> JoinFuture<T, Error> {
        self.task.into_future()
    }
}

impl<T> fmt::Debug for OpTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.task, f)
    }
}
