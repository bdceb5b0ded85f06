//! How failures are classified: the [`TaskError`] trait, the ready-made [`Cancelled`]
//! error, and [`TaskFailure`], the error side of [`Task::join`](crate::Task::join).

use std::error::Error;
use std::fmt::Write as _;
use std::io;

use crate::{HResult, VMTaskResult};

/// An error a task worker can fail with.
///
/// The engine's error types implement this so a task can report its failure the way
/// `IVMTask2` does: an [`HResult`] for [`TaskHandle::error`](crate::TaskHandle::error) and a
/// [`VMTaskResult`] for [`TaskHandle::result`](crate::TaskHandle::result).
///
/// ```
/// use vhdkit_task::{Cancelled, HResult, TaskError, VMTaskResult};
///
/// #[derive(Debug, thiserror::Error)]
/// enum CompactError {
///     #[error("writing block {block}")]
///     Write { block: u64, #[source] source: std::io::Error },
///     #[error(transparent)]
///     Cancelled(#[from] Cancelled),
/// }
///
/// impl TaskError for CompactError {
///     fn hresult(&self) -> HResult {
///         match self {
///             CompactError::Write { .. } => HResult::VM_E_HD_IMAGE_ACCESS,
///             CompactError::Cancelled(c) => c.hresult(),
///         }
///     }
///     fn task_result(&self) -> VMTaskResult {
///         match self {
///             CompactError::Write { .. } => VMTaskResult::DiskRelatedError,
///             CompactError::Cancelled(_) => VMTaskResult::Cancelled,
///         }
///     }
///     fn is_cancelled(&self) -> bool {
///         matches!(self, CompactError::Cancelled(_))
///     }
/// }
/// # assert!(CompactError::from(Cancelled).is_cancelled());
/// ```
pub trait TaskError: Error + Send + Sync + 'static {
    /// The HRESULT reported by [`TaskHandle::error`](crate::TaskHandle::error). It should be a
    /// failure code; a task normalises a success code to [`HResult::E_FAIL`].
    fn hresult(&self) -> HResult;

    /// The class of failure: [`VMTaskResult::DiskRelatedError`] for I/O, disk full or a
    /// corrupt image, [`VMTaskResult::IllegalValueError`] for bad arguments, and so on.
    /// A task normalises [`VMTaskResult::Success`] to
    /// [`VMTaskResult::UnexpectedError`].
    fn task_result(&self) -> VMTaskResult;

    /// True if this error means "the operation was cancelled". A task whose worker
    /// fails with such an error ends as [`VMTaskResult::Cancelled`] with
    /// [`HResult::E_ABORT`], whatever `hresult` and `task_result` say.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// The operation was cancelled: returned by [`CancelToken::check`](crate::CancelToken::check)
/// and [`Progress::check_cancelled`](crate::Progress::check_cancelled).
///
/// Engine error types usually wrap it (`#[from] Cancelled`) so workers can write
/// `progress.check_cancelled()?` between chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, thiserror::Error)]
#[error("operation cancelled")]
pub struct Cancelled;

impl TaskError for Cancelled {
    /// Always [`HResult::E_ABORT`].
    fn hresult(&self) -> HResult {
        HResult::E_ABORT
    }

    /// Always [`VMTaskResult::Cancelled`].
    fn task_result(&self) -> VMTaskResult {
        VMTaskResult::Cancelled
    }

    /// Always true.
    fn is_cancelled(&self) -> bool {
        true
    }
}

/// A plain `io::Error` as a task error, for small workers and tests. The engine's own
/// error types should carry context and implement [`TaskError`] themselves.
///
/// | `io::ErrorKind` | `hresult` | `task_result` |
/// |---|---|---|
/// | `NotFound` | `E_FILE_NOT_FOUND` | `DiskRelatedError` |
/// | `AlreadyExists` | `E_ALREADY_EXISTS` | `IllegalValueError` |
/// | `InvalidInput` | `E_INVALIDARG` | `IllegalValueError` |
/// | `InvalidData`, `UnexpectedEof` | `VM_E_INVALID_HD_FILE` | `DiskRelatedError` |
/// | `StorageFull` | `E_DISK_FULL` | `DiskRelatedError` |
/// | `OutOfMemory` | `E_OUTOFMEMORY` | `OutOfMemoryError` |
/// | `TimedOut` | `VM_E_TIMED_OUT` | `TimeOutError` |
/// | anything else | the OS code via [`HResult::from_win32`] on Windows, else `E_FAIL` | `DiskRelatedError` |
impl TaskError for io::Error {
    fn hresult(&self) -> HResult {
        match self.kind() {
            io::ErrorKind::NotFound => HResult::E_FILE_NOT_FOUND,
            io::ErrorKind::AlreadyExists => HResult::E_ALREADY_EXISTS,
            io::ErrorKind::InvalidInput => HResult::E_INVALIDARG,
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                HResult::VM_E_INVALID_HD_FILE
            }
            io::ErrorKind::StorageFull => HResult::E_DISK_FULL,
            io::ErrorKind::OutOfMemory => HResult::E_OUTOFMEMORY,
            io::ErrorKind::TimedOut => HResult::VM_E_TIMED_OUT,
            _ => match self.raw_os_error() {
                Some(code) if cfg!(windows) && code > 0 => HResult::from_win32(code.unsigned_abs()),
                _ => HResult::E_FAIL,
            },
        }
    }

    fn task_result(&self) -> VMTaskResult {
        match self.kind() {
            io::ErrorKind::AlreadyExists | io::ErrorKind::InvalidInput => {
                VMTaskResult::IllegalValueError
            }
            io::ErrorKind::OutOfMemory => VMTaskResult::OutOfMemoryError,
            io::ErrorKind::TimedOut => VMTaskResult::TimeOutError,
            _ => VMTaskResult::DiskRelatedError,
        }
    }
}

/// Why [`Task::join`](crate::Task::join) did not produce the worker's value.
///
/// It implements [`TaskError`] itself (and has inherent [`hresult`](Self::hresult) and
/// [`task_result`](Self::task_result) methods), with the same classification the task
/// reports through [`TaskHandle::error`](crate::TaskHandle::error) and
/// [`TaskHandle::result`](crate::TaskHandle::result).
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure<E> {
    /// The worker returned this error. `Display` and `source` are the error's own.
    #[error(transparent)]
    Failed(E),
    /// The worker stopped because the task was cancelled (it returned an error whose
    /// [`TaskError::is_cancelled`] is true).
    #[error("operation cancelled")]
    Cancelled,
    /// The worker panicked; the payload's message, or a placeholder if the payload
    /// was not a string.
    #[error("worker thread panicked: {0}")]
    Panicked(String),
    /// The worker thread could not be started, so the work never ran.
    #[error("could not start the worker thread")]
    SpawnFailed(#[source] io::Error),
}

impl<E: TaskError> TaskFailure<E> {
    /// The HRESULT of this failure: the error's own for `Failed`, `E_ABORT` for
    /// `Cancelled`, `E_FAIL` for `Panicked`, `E_OUTOFMEMORY` for `SpawnFailed`.
    pub fn hresult(&self) -> HResult {
        match self {
            TaskFailure::Failed(e) => normalise_hresult(e.hresult()),
            TaskFailure::Cancelled => HResult::E_ABORT,
            TaskFailure::Panicked(_) => HResult::E_FAIL,
            TaskFailure::SpawnFailed(_) => HResult::E_OUTOFMEMORY,
        }
    }

    /// The class of this failure: the error's own for `Failed`, `Cancelled`,
    /// `ThreadCrashError` for `Panicked`, `OutOfMemoryError` for `SpawnFailed`.
    pub fn task_result(&self) -> VMTaskResult {
        match self {
            TaskFailure::Failed(e) => normalise_task_result(e.task_result()),
            TaskFailure::Cancelled => VMTaskResult::Cancelled,
            TaskFailure::Panicked(_) => VMTaskResult::ThreadCrashError,
            TaskFailure::SpawnFailed(_) => VMTaskResult::OutOfMemoryError,
        }
    }

    /// True for `Cancelled`.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, TaskFailure::Cancelled)
    }
}

impl<E: TaskError> TaskError for TaskFailure<E> {
    fn hresult(&self) -> HResult {
        TaskFailure::hresult(self)
    }

    fn task_result(&self) -> VMTaskResult {
        TaskFailure::task_result(self)
    }

    fn is_cancelled(&self) -> bool {
        TaskFailure::is_cancelled(self)
    }
}

/// A failure must not report a success code.
pub(crate) fn normalise_hresult(code: HResult) -> HResult {
    if code.is_success() {
        HResult::E_FAIL
    } else {
        code
    }
}

/// A failure must not report `Success`.
pub(crate) fn normalise_task_result(result: VMTaskResult) -> VMTaskResult {
    if result.is_success() {
        VMTaskResult::UnexpectedError
    } else {
        result
    }
}

/// The error's `Display` followed by each `source`'s, joined with `": "`.
///
/// This is the text [`TaskHandle::error_description`](crate::TaskHandle::error_description)
/// reports for a failed task.
///
/// ```
/// let inner = std::io::Error::other("disk on fire");
/// let outer = std::io::Error::other(inner);
/// assert_eq!(vhdkit_task::error_chain(&outer), "disk on fire");
/// ```
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers that print their source (`#[error(transparent)]`, io::Error's
        // custom payload) would otherwise repeat the same text twice in a row.
        if !text.ends_with(&cause_text) {
            let _ = write!(text, ": {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("compacting disk.vhd")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("writing block 7")]
    struct Inner(#[source] io::Error);

    #[test]
    fn error_chain_of_nested_errors_joins_with_colon() {
        let error = Outer(Inner(io::Error::other("no space left")));
        assert_eq!(
            error_chain(&error),
            "compacting disk.vhd: writing block 7: no space left"
        );
    }

    #[test]
    fn cancelled_classifies_as_abort() {
        assert_eq!(Cancelled.hresult(), HResult::E_ABORT);
        assert_eq!(Cancelled.task_result(), VMTaskResult::Cancelled);
        assert!(Cancelled.is_cancelled());
    }

    #[test]
    fn io_error_storage_full_is_disk_full() {
        let error = io::Error::from(io::ErrorKind::StorageFull);
        assert_eq!(error.hresult(), HResult::E_DISK_FULL);
        assert_eq!(error.task_result(), VMTaskResult::DiskRelatedError);
        assert!(!error.is_cancelled());
    }

    #[test]
    fn task_failure_panicked_is_thread_crash() {
        let failure = TaskFailure::<io::Error>::Panicked("boom".into());
        assert_eq!(failure.hresult(), HResult::E_FAIL);
        assert_eq!(failure.task_result(), VMTaskResult::ThreadCrashError);
        assert_eq!(failure.to_string(), "worker thread panicked: boom");
    }

    #[test]
    fn task_failure_failed_displays_inner_error() {
        let failure = TaskFailure::Failed(Outer(Inner(io::Error::other("x"))));
        assert_eq!(failure.to_string(), "compacting disk.vhd");
        assert_eq!(
            error_chain(&failure),
            "compacting disk.vhd: writing block 7: x"
        );
    }
}
