//! The task collection: which tasks are running, and cancelling them all at shutdown.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::TaskHandle;

/// A collection of running tasks, like Virtual Server's task collection: an
/// application lists them (id, description, percent, cancelable, through each
/// [`TaskHandle`]) and cancels them all at shutdown.
///
/// Every task registers with one registry when it is spawned and leaves it when it
/// completes: [`TaskRegistry::global`] unless its
/// [`TaskBuilder::registry`](crate::TaskBuilder::registry) named another. Cloning
/// gives another handle to the same collection.
///
/// ```
/// use vhdkit_task::{Task, TaskBuilder, TaskRegistry, VMTaskResult};
///
/// let registry = TaskRegistry::new();
/// let task: Task<(), vhdkit_task::Cancelled> = TaskBuilder::new("Compacting disk.vhd")
///     .registry(&registry)
///     .spawn(|progress| loop {
///         progress.check_cancelled()?;
///         std::thread::yield_now(); // ... one chunk of work ...
///     });
///
/// for running in registry.running() {
///     println!("{} {} {}%", running.id(), running.description(), running.percent_completed());
/// }
/// // At shutdown: ask every task to stop, then wait for their rollbacks.
/// assert_eq!(registry.cancel_all(), 1);
/// assert!(registry.wait_all(None));
/// assert!(registry.running().is_empty());
/// assert_eq!(task.result(), Some(VMTaskResult::Cancelled));
/// ```
#[derive(Clone, Default)]
pub struct TaskRegistry {
    tasks: Arc<Mutex<BTreeMap<u32, TaskHandle>>>,
}

impl TaskRegistry {
    /// An empty registry, for an application (or a test) that wants its own.
    pub fn new() -> TaskRegistry {
        TaskRegistry::default()
    }

    /// The process-wide registry, where tasks register unless told otherwise.
    pub fn global() -> &'static TaskRegistry {
        static GLOBAL: OnceLock<TaskRegistry> = OnceLock::new();
        GLOBAL.get_or_init(TaskRegistry::new)
    }

    /// The lock. A poisoned lock is recovered: every change under it is one insert
    /// or one remove.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, TaskHandle>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, task: TaskHandle) {
        self.lock().insert(task.id(), task);
    }

    pub(crate) fn remove(&self, id: u32) {
        self.lock().remove(&id);
    }

    /// The tasks running now, in id (spawn) order. A task leaves the list as soon as
    /// it is complete.
    pub fn running(&self) -> Vec<TaskHandle> {
        self.lock()
            .values()
            .filter(|task| !task.is_complete())
            .cloned()
            .collect()
    }

    /// How many tasks are running now.
    pub fn len(&self) -> usize {
        self.running().len()
    }

    /// True if no task is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks every running cancelable task to cancel; returns how many were asked.
    /// Tasks that are not cancelable go on. The tasks stop at their next cancellation
    /// check; [`wait_all`](Self::wait_all) waits for that.
    pub fn cancel_all(&self) -> usize {
        self.running()
            .into_iter()
            .filter(|task| task.cancel().is_ok())
            .count()
    }

    /// Waits until every task running at the call has completed, or `timeout` has
    /// passed (`None`: no limit). Returns whether they all completed.
    pub fn wait_all(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        self.running().into_iter().all(|task| {
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            task.wait_for_completion(remaining)
        })
    }
}

impl fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.running()).finish()
    }
}

/// The tasks running now in the process-wide registry, [`TaskRegistry::global`].
pub fn running() -> Vec<TaskHandle> {
    TaskRegistry::global().running()
}

/// Asks every running cancelable task of the process-wide registry
/// ([`TaskRegistry::global`]) to cancel; returns how many were asked.
pub fn cancel_all() -> usize {
    TaskRegistry::global().cancel_all()
}
