//! The task: a background operation and the right to its typed value.

use std::any::Any;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::thread;

use crate::error::error_chain;
use crate::handle::Core;
use crate::progress::ProgressState;
use crate::{
    CancelToken, HResult, Progress, TaskError, TaskFailure, TaskHandle, TaskRegistry, VMTaskResult,
};

/// Capacity of each subscriber's event queue unless [`TaskBuilder::event_capacity`]
/// or [`TaskHandle::subscribe_with_capacity`] says otherwise.
pub const DEFAULT_EVENT_CAPACITY: usize = 256;

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

/// Where the worker leaves its value for the one [`Task`] that takes it.
type ValueSlot<T, E> = Mutex<Option<Result<T, TaskFailure<E>>>>;

/// How a task that ended with `value` reports it through `IVMTask2`.
fn classify<T, E: TaskError>(value: &Result<T, TaskFailure<E>>) -> (VMTaskResult, HResult) {
    match value {
        Ok(_) => (VMTaskResult::Success, HResult::S_OK),
        Err(failure) => (failure.task_result(), failure.hresult()),
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
/// cancelled, the capacity of each subscriber's event queue, and the registry it
/// joins.
///
/// ```
/// use vhdkit_task::{Task, TaskBuilder, TaskRegistry};
///
/// let registry = TaskRegistry::new();
/// let task: Task<u32, std::io::Error> = TaskBuilder::new("Counting")
///     .cancelable(false)
///     .event_capacity(16)
///     .registry(&registry)
///     .spawn(|_progress| Ok(42));
/// assert_eq!(task.subscribe().capacity(), 16);
/// assert_eq!(task.join().ok(), Some(42));
/// ```
#[derive(Debug, Clone)]
pub struct TaskBuilder {
    description: String,
    cancelable: bool,
    event_capacity: usize,
    registry: Option<TaskRegistry>,
}

impl TaskBuilder {
    /// A cancelable task with this description, subscriber queues of
    /// [`DEFAULT_EVENT_CAPACITY`] events, registered with [`TaskRegistry::global`].
    pub fn new(description: impl Into<String>) -> TaskBuilder {
        TaskBuilder {
            description: description.into(),
            cancelable: true,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            registry: None,
        }
    }

    /// Whether [`TaskHandle::cancel`] is accepted (default true).
    pub fn cancelable(mut self, cancelable: bool) -> TaskBuilder {
        self.cancelable = cancelable;
        self
    }

    /// How many events each subscriber's queue holds before its oldest events are
    /// dropped (see [`Subscription`](crate::Subscription)). At least 1: 0 is taken as
    /// 1, since the final event needs a slot. The operations expose this through
    /// their options.
    pub fn event_capacity(mut self, capacity: usize) -> TaskBuilder {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Registers the task with `registry` instead of [`TaskRegistry::global`].
    pub fn registry(mut self, registry: &TaskRegistry) -> TaskBuilder {
        self.registry = Some(registry.clone());
        self
    }

    /// Starts `work` on a new thread named `vhdkit-task-<id>` and returns its task at
    /// once.
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
        let token = CancelToken::new();
        let progress_state = Arc::new(ProgressState::new(id, self.event_capacity));
        let registry = self
            .registry
            .unwrap_or_else(|| TaskRegistry::global().clone());
        let core = Arc::new(Core::new(
            id,
            self.description,
            self.cancelable,
            Arc::clone(&progress_state),
            token.clone(),
            registry.clone(),
        ));
        let handle = TaskHandle::new(Arc::clone(&core));
        registry.insert(handle.clone());
        let value: Arc<ValueSlot<T, E>> = Arc::new(Mutex::new(None));
        let worker_value = Arc::clone(&value);
        let worker_core = Arc::clone(&core);
        let progress = Progress::new(progress_state, token);
        let spawned = thread::Builder::new()
            .name(format!("vhdkit-task-{id}"))
            .spawn(move || {
                let (result, description) = run_worker(work, &progress);
                drop(progress);
                finish(&worker_core, &worker_value, result, description);
            });
        // Detached on success: the worker completes the task itself.
        if let Err(error) = spawned {
            let failure = TaskFailure::SpawnFailed(error);
            let description = error_chain(&failure);
            finish(&core, &value, Err(failure), description);
        }
        Task { handle, value }
    }
}

/// Leaves the value for the `Task`, then completes the task.
fn finish<T, E: TaskError>(
    core: &Core,
    slot: &ValueSlot<T, E>,
    value: Result<T, TaskFailure<E>>,
    description: String,
) {
    let (result, error) = classify(&value);
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    core.complete(result, error, description);
}

/// A background operation, with the members of `IVMTask2` (through its
/// [`TaskHandle`]) and the right to the worker's typed value.
///
/// A `Task` is not `Clone`: there is exactly one, and [`join`](Self::join) (or
/// `.await`, or [`try_join`](Self::try_join)) consumes it, so the value is always
/// there to take. Everyone else gets a [`TaskHandle`] — [`handle`](Self::handle), or
/// `task.clone()`, which goes through `Deref` — with every member but `join`. The task
/// dereferences to its handle, so `task.cancel()`, `task.subscribe()`,
/// `task.percent_completed()` and the rest work on it directly.
///
/// Awaiting a task needs no particular runtime: `Task` implements [`IntoFuture`], and
/// the worker thread wakes the future when the task completes.
///
/// ```
/// use vhdkit_task::{Task, TaskHandle};
///
/// let task: Task<u32, std::io::Error> = Task::spawn("Counting", true, |_| Ok(3));
/// let watcher: TaskHandle = task.clone(); // a handle: it can watch, not join
/// assert_eq!(task.join().ok(), Some(3));
/// assert!(watcher.is_complete());
/// ```
///
/// Only the task itself can be joined:
///
/// ```compile_fail,E0599
/// use vhdkit_task::Task;
///
/// let task: Task<u32, std::io::Error> = Task::spawn("Counting", true, |_| Ok(3));
/// let other = task.clone();
/// let _ = other.join(); // error: a `TaskHandle` has no `join`
/// ```
pub struct Task<T, E> {
    handle: TaskHandle,
    value: Arc<ValueSlot<T, E>>,
}

impl<T, E> Deref for Task<T, E> {
    type Target = TaskHandle;

    fn deref(&self) -> &TaskHandle {
        &self.handle
    }
}

impl<T, E> fmt::Debug for Task<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("id", &self.id())
            .field("description", &self.description())
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
    /// Starts `work` on a new thread and returns the task at once; the shorthand for
    /// [`TaskBuilder::new`]`(description).cancelable(cancelable).spawn(work)`.
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
    /// A handle to this task, to watch, cancel or wait for it from elsewhere.
    pub fn handle(&self) -> TaskHandle {
        self.handle.clone()
    }

    /// Waits for completion and takes the worker's value: `Ok` with the value, or the
    /// [`TaskFailure`] (the worker's error, a cancellation, a panic).
    pub fn join(self) -> Result<T, TaskFailure<E>> {
        self.handle.wait_for_completion(None);
        self.take()
    }

    /// Takes the worker's value without waiting: as [`join`](Self::join) once the
    /// task is complete; while it runs, `Err` gives the task back.
    ///
    /// ```
    /// use vhdkit_task::Task;
    ///
    /// let mut task: Task<u8, std::io::Error> = Task::spawn("quick", true, |_| Ok(1));
    /// let value = loop {
    ///     match task.try_join() {
    ///         Ok(value) => break value,
    ///         Err(running) => task = running, // ... do something else meanwhile ...
    ///     }
    /// };
    /// assert_eq!(value.ok(), Some(1));
    /// ```
    pub fn try_join(self) -> Result<Result<T, TaskFailure<E>>, Task<T, E>> {
        if self.handle.is_complete() {
            Ok(self.take())
        } else {
            Err(self)
        }
    }

    fn take(&self) -> Result<T, TaskFailure<E>> {
        self.value
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .expect("the value is stored before the task reads as complete, and only the one Task, consumed here, takes it")
    }
}

/// `task.await` waits without blocking a thread and gives what [`Task::join`] gives.
///
/// ```
/// # use std::future::Future;
/// # use std::pin::pin;
/// # use std::sync::Arc;
/// # use std::task::{Context, Poll, Wake, Waker};
/// # struct Unpark(std::thread::Thread);
/// # impl Wake for Unpark { fn wake(self: Arc<Self>) { self.0.unpark() } }
/// # fn block_on<F: Future>(future: F) -> F::Output {
/// #     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
/// #     let mut cx = Context::from_waker(&waker);
/// #     let mut future = pin!(future);
/// #     loop {
/// #         if let Poll::Ready(v) = future.as_mut().poll(&mut cx) { return v; }
/// #         std::thread::park();
/// #     }
/// # }
/// use vhdkit_task::Task;
///
/// async fn size_of_copy() -> Option<u64> {
///     let task: Task<u64, std::io::Error> = Task::spawn("Copying", true, |_| Ok(4096));
///     task.await.ok()
/// }
/// // Any executor runs it; this one is a dozen lines (hidden above).
/// assert_eq!(block_on(size_of_copy()), Some(4096));
/// ```
impl<T, E> IntoFuture for Task<T, E> {
    type Output = Result<T, TaskFailure<E>>;
    type IntoFuture = JoinFuture<T, E>;

    fn into_future(self) -> JoinFuture<T, E> {
        JoinFuture {
            task: Some(self),
            key: None,
        }
    }
}

/// The future of a [`Task`] (`task.await`): resolves to the worker's value as
/// [`Task::join`] returns it.
#[must_use = "futures do nothing unless awaited"]
pub struct JoinFuture<T, E> {
    /// `None` once the value was handed out.
    task: Option<Task<T, E>>,
    /// The key of this future's waker in the task's list.
    key: Option<u64>,
}

impl<T, E> Future for JoinFuture<T, E> {
    type Output = Result<T, TaskFailure<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let task = this
            .task
            .as_ref()
            .expect("a JoinFuture is not polled again after it returned Ready");
        match task.handle.core().poll_complete(cx, &mut this.key) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let task = this.task.take().expect("checked just above");
                Poll::Ready(task.take())
            }
        }
    }
}

impl<T, E> Drop for JoinFuture<T, E> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.handle.core().forget_waker(self.key.take());
        }
    }
}

impl<T, E> fmt::Debug for JoinFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinFuture")
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_is_send_and_sync() {
        fn assert_traits<T: Send + Sync>() {}
        assert_traits::<Task<Vec<u8>, std::io::Error>>();
        assert_traits::<JoinFuture<Vec<u8>, std::io::Error>>();
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
