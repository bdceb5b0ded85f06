//! `vhdkit.Task`: a running operation with the members of Virtual Server's `IVMTask2`
//! under Python names, its progress events, and `await` for asyncio.
//!
//! Every wait — `wait_for_completion`, `join`, the next event, `measure()` — is done
//! detached from the interpreter (other Python threads run) in slices of
//! [`SLICE`], checking for a signal between them: a `KeyboardInterrupt` cancels the
//! task, waits until it has stopped (in the consistent state every operation stops
//! in) and then propagates.

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::PyDict;
use vhdkit_format::ops::{OpTask, Report};
use vhdkit_format::volume::FsScan;
use vhdkit_format::{Error, Subscription, TaskFailure, TaskHandle};

use crate::docs;
use crate::errors::{task_failure, variant_name, Failure};

/// The longest stretch a wait stays detached before it checks for a signal.
const SLICE: Duration = Duration::from_millis(100);

/// Waits until `handle`'s task is complete or `timeout` has passed (`None`: no limit),
/// detached from the interpreter; returns whether it is complete. A Python signal
/// handler's exception (`KeyboardInterrupt`) cancels the task, waits for it to stop
/// and is returned.
pub fn wait(py: Python<'_>, handle: &TaskHandle, timeout: Option<Duration>) -> PyResult<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        if py.detach(|| handle.wait_for_completion(Some(slice))) {
            return Ok(true);
        }
        if let Err(interrupt) = py.check_signals() {
            let _ = handle.cancel();
            py.detach(|| handle.wait_for_completion(None));
            return Err(interrupt);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
    }
}

/// Waits for `task` (see [`wait`]) and takes its value, or the exception for its
/// failure: what the functions that return at once with a result (`create()`,
/// `measure()`) do with their task.
pub fn finish<T>(py: Python<'_>, task: OpTask<T>) -> PyResult<T> {
    wait(py, &task.handle(), None)?;
    // Complete: join returns at once.
    task.join().map_err(|failure| task_failure(py, &failure))
}

/// A running operation: what `compact()`, `convert()`, `merge()`, `merge_to()` and
/// `resize()` return at once while the work goes on in the background, in a thread
/// of its own (the interpreter is free meanwhile).
///
/// The members of Virtual Server's IVMTask2 under Python names: `id`, `description`,
/// `percent_completed`, `is_complete`, `is_cancelable`, `cancel()`,
/// `wait_for_completion(timeout_ms)`, `result` (the report, a dict), `error` (the
/// HRESULT, 0 on success), `error_description`. Beyond them: `task_result` (how it
/// ended, by name), `elapsed`, `events()` (progress events), `join()` (the report, or
/// the exception), and `await task` (the same, for asyncio).
#[pyclass(module = "vhdkit", frozen)]
pub struct Task {
    handle: TaskHandle,
    /// The task until its value is taken (once complete) into `outcome`.
    task: Mutex<Option<OpTask>>,
    outcome: OnceLock<Result<Report, TaskFailure<Error>>>,
    /// The file-system scan of an `fs_aware` operation, whose findings the report adds.
    volumes: Option<FsScan>,
}

impl Task {
    /// Wraps a started operation; `volumes` is its file-system scan, if it has one.
    pub fn new(task: OpTask, volumes: Option<FsScan>) -> Task {
        Task {
            handle: task.handle(),
            task: Mutex::new(Some(task)),
            outcome: OnceLock::new(),
            volumes,
        }
    }

    /// The outcome once the task is complete; `None` while it runs.
    fn outcome(&self) -> Option<&Result<Report, TaskFailure<Error>>> {
        if let Some(done) = self.outcome.get() {
            return Some(done);
        }
        if !self.handle.is_complete() {
            return None;
        }
        let mut slot = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = slot.take() {
            match task.try_join() {
                Ok(done) => {
                    let _ = self.outcome.set(done);
                }
                Err(running) => *slot = Some(running),
            }
        }
        drop(slot);
        self.outcome.get()
    }

    /// The report of a success as a dict.
    fn report<'py>(&self, py: Python<'py>, r: &Report) -> PyResult<Bound<'py, PyDict>> {
        let volumes = self.volumes.as_ref().and_then(FsScan::report);
        docs::report(py, r, volumes.as_ref())
    }
}

#[pymethods]
impl Task {
    /// The task's id: unique in the process, increasing from 1 in start order.
    #[getter]
    fn id(&self) -> u32 {
        self.handle.id()
    }

    /// What the task does, e.g. "Compacting /vm/disk.vhd".
    #[getter]
    fn description(&self) -> &str {
        self.handle.description()
    }

    /// Completion in percent, 0 to 100, weighted across the operation's phases by
    /// their work: it never decreases, stays at most 99 while the task runs, and is
    /// 100 exactly when it has succeeded.
    #[getter]
    fn percent_completed(&self) -> u32 {
        self.handle.percent_completed()
    }

    /// True once the task has finished, whatever the outcome.
    #[getter]
    fn is_complete(&self) -> bool {
        self.handle.is_complete()
    }

    /// True if cancel() is accepted (every disk operation is cancelable).
    #[getter]
    fn is_cancelable(&self) -> bool {
        self.handle.is_cancelable()
    }

    /// Asks the operation to stop at its next chunk of blocks. It stops in a
    /// consistent state: a new file never appears, an in-place change stops between
    /// two crash-safe steps; then `error` is E_ABORT. Does nothing once the task is
    /// complete (it may have finished before it saw the cancel). Raises VhdError
    /// (E_FAIL) for a task that is not cancelable.
    fn cancel(&self, py: Python<'_>) -> PyResult<()> {
        self.handle.cancel().map_err(|hresult| {
            Failure {
                message: format!("task {} cannot be cancelled", self.handle.id()),
                kind: "other".into(),
                hresult,
                path: None,
                children: &[],
            }
            .into_pyerr(py)
        })
    }

    /// Waits until the task is complete or `timeout_ms` milliseconds have passed
    /// (-1 or None: no limit, as IVMTask2's WaitForCompletion(-1)); returns whether it
    /// is complete. Other Python threads run meanwhile. A KeyboardInterrupt cancels the
    /// task, waits until it has stopped, and propagates.
    #[pyo3(signature = (timeout_ms = -1), text_signature = "($self, timeout_ms=-1)")]
    fn wait_for_completion(&self, py: Python<'_>, timeout_ms: Option<i64>) -> PyResult<bool> {
        let timeout = match timeout_ms {
            Some(ms) if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            _ => None,
        };
        wait(py, &self.handle, timeout)
    }

    /// The operation's report once it has succeeded — a dict with the fields of the
    /// command line's `--json` report (docs/json.md) — else None: while it runs, and
    /// when it failed or was cancelled (then `error` and `error_description` say why).
    #[getter]
    fn result<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        match self.outcome() {
            Some(Ok(report)) => self.report(py, report).map(Some),
            _ => Ok(None),
        }
    }

    /// How the task ended, as Virtual Server's VMTaskResult in snake_case: "success",
    /// "cancelled", "disk_related_error", "illegal_value_error", ...; None while it
    /// runs.
    #[getter]
    fn task_result(&self) -> Option<String> {
        self.handle.result().map(|r| variant_name(&r))
    }

    /// The HRESULT of the failure as an int (its unsigned 32-bit pattern): 0 (S_OK)
    /// while running and on success, E_ABORT (0x80004004) when cancelled, otherwise
    /// the error's.
    #[getter]
    fn error(&self) -> u32 {
        self.handle.error().0
    }

    /// The text of the failure: empty while running and on success.
    #[getter]
    fn error_description(&self) -> String {
        self.handle.error_description()
    }

    /// Seconds since the task started; once complete, the time it took.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.handle.elapsed().as_secs_f64()
    }

    /// An iterator over the task's progress events, each a dict with the fields of a
    /// `--progress json` line (docs/json.md): the first is the state now, the last has
    /// "final": True (with "result"), and the iteration ends after it. Each iterator
    /// has its own queue of `capacity` events; a slow reader loses the oldest (counted
    /// in the next event's "lost"), never the newest nor the final one, and never slows
    /// the task.
    #[pyo3(signature = (capacity = None))]
    fn events(&self, capacity: Option<usize>) -> Events {
        let sub = match capacity {
            Some(c) => self.handle.subscribe_with_capacity(c),
            None => self.handle.subscribe(),
        };
        Events {
            sub: Mutex::new(Some(sub)),
            handle: self.handle.clone(),
        }
    }

    /// Waits for the task (as wait_for_completion) and returns its report; raises the
    /// VhdError of its failure — Cancelled (E_ABORT) if it was cancelled.
    fn join<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        wait(py, &self.handle, None)?;
        match self.outcome() {
            Some(Ok(report)) => self.report(py, report),
            Some(Err(failure)) => Err(task_failure(py, failure)),
            None => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the task is complete but its outcome is not available",
            )),
        }
    }

    /// `await task`: the report, or the exception, as join() gives them, without
    /// blocking the event loop. Cancelling the awaiting coroutine cancels the task.
    fn __await__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("vhdkit._aio")?.call_method1("wait", (slf,))
    }

    /// Calls `callback()` (with no arguments) from a thread of its own once the task is
    /// complete; used by `await`. Exceptions it raises are reported as unraisable.
    fn _when_complete(&self, callback: Py<PyAny>) -> PyResult<()> {
        let handle = self.handle.clone();
        std::thread::Builder::new()
            .name(format!("vhdkit-await-{}", handle.id()))
            .spawn(move || {
                handle.wait_for_completion(None);
                // Nothing to call once the interpreter is gone.
                Python::try_attach(|py| {
                    if let Err(e) = callback.call0(py) {
                        e.write_unraisable(py, None);
                    }
                });
            })
            .map(drop)
            .map_err(|e| {
                pyo3::exceptions::PyRuntimeError::new_err(format!("starting a thread: {e}"))
            })
    }

    fn __repr__(&self) -> String {
        let state = match self.handle.result() {
            None => format!("{}%", self.handle.percent_completed()),
            Some(r) => variant_name(&r),
        };
        format!(
            "<vhdkit.Task {} {:?} {state}>",
            self.handle.id(),
            self.handle.description()
        )
    }
}

/// The progress events of a task (`Task.events()`): an iterator of dicts that ends
/// after the final event.
#[pyclass(module = "vhdkit", frozen)]
pub struct Events {
    /// `None` once the final event was given.
    sub: Mutex<Option<Subscription>>,
    handle: TaskHandle,
}

#[pymethods]
impl Events {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        // Another thread may be iterating (and waiting, detached): wait for the lock
        // detached too, so that it can reattach.
        let mut slot = self
            .sub
            .lock_py_attached(py)
            .unwrap_or_else(PoisonError::into_inner);
        let Some(sub) = slot.as_ref() else {
            return Ok(None);
        };
        let event = loop {
            match py.detach(|| sub.recv_timeout(SLICE)) {
                Ok(event) => break Some(event),
                Err(e) if e.is_ended() => break None,
                Err(_) => {
                    if let Err(interrupt) = py.check_signals() {
                        let _ = self.handle.cancel();
                        py.detach(|| self.handle.wait_for_completion(None));
                        return Err(interrupt);
                    }
                }
            }
        };
        match event {
            Some(e) => {
                if e.is_final {
                    *slot = None;
                }
                docs::event(py, &e).map(Some)
            }
            None => {
                *slot = None;
                Ok(None)
            }
        }
    }
}
