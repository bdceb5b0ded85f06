//! The untyped side of a task: its `IVMTask2` members, shared by [`TaskHandle`]s.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::progress::ProgressState;
use crate::{CancelToken, HResult, ProgressSnapshot, Subscription, TaskRegistry, VMTaskResult};

/// What a finished task reports.
#[derive(Debug, Clone)]
struct Outcome {
    result: VMTaskResult,
    error: HResult,
    description: String,
    elapsed: Duration,
}

/// The part of the state the lock guards.
#[derive(Default)]
struct State {
    /// `Some` once the task is complete.
    outcome: Option<Outcome>,
    /// True once the final event is delivered and the task has left its registry:
    /// what waiters wait for.
    settled: bool,
    /// Futures waiting for completion, by key.
    wakers: Vec<(u64, Waker)>,
    next_waker_key: u64,
}

/// The state every handle of one task shares.
pub(crate) struct Core {
    id: u32,
    description: String,
    cancelable: bool,
    token: CancelToken,
    progress: Arc<ProgressState>,
    started: Instant,
    /// Set once the outcome is stored, after it: lets `is_complete`, `cancel` and
    /// `percent_completed` avoid the lock.
    complete: AtomicBool,
    /// The task's percentage once complete, stored before `complete` is set.
    final_percent: AtomicU32,
    /// Set with `State::settled`: the fast path of `wait_for_completion`.
    settled: AtomicBool,
    state: Mutex<State>,
    finished: Condvar,
    registry: TaskRegistry,
}

impl Core {
    pub(crate) fn new(
        id: u32,
        description: String,
        cancelable: bool,
        progress: Arc<ProgressState>,
        token: CancelToken,
        registry: TaskRegistry,
    ) -> Core {
        Core {
            id,
            description,
            cancelable,
            token,
            progress,
            started: Instant::now(),
            complete: AtomicBool::new(false),
            final_percent: AtomicU32::new(0),
            settled: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            finished: Condvar::new(),
            registry,
        }
    }

    /// The lock. A poisoned lock is recovered: every change under it is a single
    /// assignment or a push that no panic can leave half-done.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes the task, in this order, so that whoever observes one step finds the
    /// ones before it done:
    ///
    /// 1. the counters reach their end (phase `Finish`; on success, at their totals);
    /// 2. the outcome is stored, then the task is marked complete (`is_complete`);
    /// 3. every subscriber gets the final event, then its stream ends;
    /// 4. the task leaves its registry;
    /// 5. the task is settled: waiters and futures are woken.
    ///
    /// `percent_completed` reads 100 only from step 2 on, and only on success.
    pub(crate) fn complete(&self, result: VMTaskResult, error: HResult, description: String) {
        let success = result.is_success();
        self.progress.finish(success);
        let final_percent = if success {
            100
        } else {
            self.progress.running_percent()
        };
        {
            let mut state = self.lock();
            state.outcome = Some(Outcome {
                result,
                error,
                description,
                elapsed: self.started.elapsed(),
            });
            self.final_percent.store(final_percent, Ordering::Relaxed);
            self.complete.store(true, Ordering::Release);
        }
        self.progress.close(result, final_percent);
        self.registry.remove(self.id);
        let wakers = {
            let mut state = self.lock();
            state.settled = true;
            self.settled.store(true, Ordering::Release);
            std::mem::take(&mut state.wakers)
        };
        self.finished.notify_all();
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// Ready once complete; otherwise registers `cx`'s waker under `key`.
    pub(crate) fn poll_complete(&self, cx: &mut Context<'_>, key: &mut Option<u64>) -> Poll<()> {
        let mut state = self.lock();
        if state.settled {
            *key = None;
            return Poll::Ready(());
        }
        match *key {
            Some(k) => match state.wakers.iter_mut().find(|(other, _)| *other == k) {
                Some((_, waker)) => waker.clone_from(cx.waker()),
                None => state.wakers.push((k, cx.waker().clone())),
            },
            None => {
                let k = state.next_waker_key;
                state.next_waker_key = state.next_waker_key.wrapping_add(1);
                state.wakers.push((k, cx.waker().clone()));
                *key = Some(k);
            }
        }
        Poll::Pending
    }

    /// Forgets the waker of a future dropped before completion.
    pub(crate) fn forget_waker(&self, key: Option<u64>) {
        if let Some(key) = key {
            self.lock().wakers.retain(|(k, _)| *k != key);
        }
    }

    #[cfg(test)]
    fn waiting_futures(&self) -> usize {
        self.lock().wakers.len()
    }
}

/// A cheap, cloneable handle to a running or finished task, with every member of
/// `IVMTask2` but without the worker's value.
///
/// A [`Task`](crate::Task) is a `TaskHandle` plus the right to the worker's typed
/// value ([`Task::join`](crate::Task::join)); it dereferences to its handle, so every
/// method here is callable on the task too, and `task.clone()` or
/// [`Task::handle`](crate::Task::handle) gives a `TaskHandle`. Hand handles to
/// whoever needs to watch, cancel or wait for the task (a Ctrl-C handler, a UI, the
/// [`TaskRegistry`]); keep the `Task` where the value is wanted. Every handle is
/// `Send + Sync`. Dropping every handle does not stop the work (cancel first if that
/// is wanted).
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
/// [`completed`](Self::completed), a future of the result.
///
/// ```
/// use vhdkit_task::{Task, TaskHandle, VMTaskResult};
///
/// let task: Task<u32, std::io::Error> = Task::spawn("Counting", true, |_| Ok(7));
/// let handle: TaskHandle = task.handle();
/// let watcher = std::thread::spawn(move || {
///     handle.wait_for_completion(None);
///     handle.result()
/// });
/// assert_eq!(task.join().ok(), Some(7));
/// assert_eq!(watcher.join().ok(), Some(Some(VMTaskResult::Success)));
/// ```
#[derive(Clone)]
pub struct TaskHandle {
    core: Arc<Core>,
}

impl TaskHandle {
    pub(crate) fn new(core: Arc<Core>) -> TaskHandle {
        TaskHandle { core }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// The task's id: unique in the process, increasing from 1 in spawn order.
    pub fn id(&self) -> u32 {
        self.core.id
    }

    /// The description given at spawn, e.g. `Compacting /path/disk.vhd`.
    pub fn description(&self) -> &str {
        &self.core.description
    }

    /// True if [`cancel`](Self::cancel) is accepted.
    pub fn is_cancelable(&self) -> bool {
        self.core.cancelable
    }

    /// True once the task has finished, whatever the outcome. When this returns true,
    /// [`result`](Self::result) is `Some`, and [`error`](Self::error) and
    /// [`error_description`](Self::error_description) are final.
    pub fn is_complete(&self) -> bool {
        self.core.complete.load(Ordering::Acquire)
    }

    /// Completion in percent, 0..=100, weighted across the task's phases (see the
    /// [`progress`](crate::progress) module).
    ///
    /// It never decreases. It stays at most 99 while the task runs, is 100 exactly
    /// when the task has succeeded (so 100 implies [`is_complete`](Self::is_complete)
    /// and a [`result`](Self::result) of `Success`), and on failure or cancellation
    /// stays where it was.
    pub fn percent_completed(&self) -> u32 {
        if self.is_complete() {
            self.core.final_percent.load(Ordering::Relaxed)
        } else {
            self.core.progress.running_percent()
        }
    }

    /// Requests cancellation; the worker stops at its next
    /// [`check_cancelled`](crate::Progress::check_cancelled).
    ///
    /// `Err(E_FAIL)` if the task is not cancelable. Otherwise `Ok(())`, also when
    /// repeated; once the task is complete it has no effect (the result stays what it
    /// was). A task can still succeed after `cancel` if the worker finished before it
    /// noticed.
    pub fn cancel(&self) -> Result<(), HResult> {
        if !self.core.cancelable {
            return Err(HResult::E_FAIL);
        }
        if !self.is_complete() {
            self.core.token.cancel();
        }
        Ok(())
    }

    /// True once [`cancel`](Self::cancel) has been accepted (before completion).
    pub fn is_cancel_requested(&self) -> bool {
        self.core.token.is_cancelled()
    }

    /// Waits until the task is complete or `timeout` has passed (`None`: no limit).
    /// Returns whether the task is complete.
    ///
    /// When it returns true, the outcome is stored, every subscriber's final event is
    /// queued (a new subscription yields the final event alone), and the task has left
    /// its [`TaskRegistry`].
    pub fn wait_for_completion(&self, timeout: Option<Duration>) -> bool {
        if self.core.settled.load(Ordering::Acquire) {
            return true;
        }
        // A timeout too large for `Instant` is as good as none.
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let mut state = self.core.lock();
        loop {
            if state.settled {
                return true;
            }
            match (timeout, deadline) {
                (Some(_), Some(deadline)) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        return false;
                    }
                    state = self
                        .core
                        .finished
                        .wait_timeout(state, remaining)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                _ => {
                    state = self
                        .core
                        .finished
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    fn outcome<R>(&self, read: impl FnOnce(&Outcome) -> R) -> Option<R> {
        self.core.lock().outcome.as_ref().map(read)
    }

    /// `None` while running; then how the task ended.
    pub fn result(&self) -> Option<VMTaskResult> {
        self.outcome(|o| o.result)
    }

    /// The HRESULT of the failure: `S_OK` while running and on success; the worker
    /// error's [`hresult`](crate::TaskError::hresult) on failure; `E_ABORT` when
    /// cancelled; `E_FAIL` when the worker panicked.
    pub fn error(&self) -> HResult {
        self.outcome(|o| o.error).unwrap_or(HResult::S_OK)
    }

    /// Text of the failure: empty while running and on success; otherwise the worker
    /// error's `Display` followed by its `source` chain, joined with `": "` (see
    /// [`error_chain`](crate::error_chain)); for a panic,
    /// `worker thread panicked: <message>`.
    pub fn error_description(&self) -> String {
        self.outcome(|o| o.description.clone()).unwrap_or_default()
    }

    /// A new [`Subscription`] to this task's progress events, with a queue of the
    /// task's event capacity ([`TaskBuilder::event_capacity`](crate::TaskBuilder::event_capacity)).
    ///
    /// Its first event is a snapshot of the state now; then come the events the task
    /// sends; the last is the final event. Every subscription gets every event (a slow
    /// one loses the oldest, never the newest and never the final one).
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_with_capacity(self.core.progress.hub.capacity())
    }

    /// As [`subscribe`](Self::subscribe), with a queue of `capacity` events (0 is
    /// taken as 1: the final event needs a slot).
    pub fn subscribe_with_capacity(&self, capacity: usize) -> Subscription {
        let progress = &self.core.progress;
        progress.hub.subscribe(capacity, || progress.event(None))
    }

    /// The progress now (after completion: the counters' final values, phase
    /// [`Finish`](crate::Phase::Finish), and the final percentage).
    pub fn progress(&self) -> ProgressSnapshot {
        // Checked first: a complete task's counters are already final.
        let complete = self.is_complete();
        let mut snapshot = self.core.progress.snapshot();
        if complete {
            snapshot.task_percent = self.core.final_percent.load(Ordering::Relaxed);
        }
        snapshot
    }

    /// Time since spawn; once complete, the time the task took.
    pub fn elapsed(&self) -> Duration {
        self.outcome(|o| o.elapsed)
            .unwrap_or_else(|| self.core.started.elapsed())
    }

    /// A future that resolves to the task's result once it is complete; it needs no
    /// particular runtime (the task wakes it from the worker thread).
    pub fn completed(&self) -> Completion {
        Completion {
            handle: self.clone(),
            key: None,
        }
    }
}

impl fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.id())
            .field("description", &self.description())
            .field("complete", &self.is_complete())
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

/// The future of [`TaskHandle::completed`]: resolves to the task's
/// [`VMTaskResult`] once it is complete (with the same guarantees as
/// [`TaskHandle::wait_for_completion`]).
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Completion {
    handle: TaskHandle,
    key: Option<u64>,
}

impl Future for Completion {
    type Output = VMTaskResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<VMTaskResult> {
        let this = self.get_mut();
        match this.handle.core.poll_complete(cx, &mut this.key) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(
                this.handle
                    .result()
                    .expect("the outcome is stored before the task reads as complete"),
            ),
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.handle.core.forget_waker(self.key.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct NoopWaker;

    impl Wake for NoopWaker {
        fn wake(self: Arc<Self>) {}
    }

    fn running_core() -> Arc<Core> {
        Arc::new(Core::new(
            1,
            "test".into(),
            true,
            Arc::new(ProgressState::new(1, 4)),
            CancelToken::new(),
            TaskRegistry::new(),
        ))
    }

    #[test]
    fn task_handle_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone>() {}
        assert_traits::<TaskHandle>();
    }

    #[test]
    fn completion_polled_twice_registers_one_waker() {
        let core = running_core();
        let handle = TaskHandle::new(Arc::clone(&core));
        let waker = Waker::from(Arc::new(NoopWaker));
        let mut cx = Context::from_waker(&waker);
        let mut future = handle.completed();
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert_eq!(core.waiting_futures(), 1);
    }

    #[test]
    fn completion_dropped_while_pending_forgets_its_waker() {
        let core = running_core();
        let handle = TaskHandle::new(Arc::clone(&core));
        let waker = Waker::from(Arc::new(NoopWaker));
        let mut cx = Context::from_waker(&waker);
        let mut future = handle.completed();
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        drop(future);
        assert_eq!(core.waiting_futures(), 0);
    }
}
