//! Errors as Python exceptions: every `vhdkit_format::Error` (and every task failure)
//! becomes an instance of `vhdkit.VhdError` or the subclass of its kind
//! (`vhdkit/_errors.py`), carrying the HRESULT, the file and the message.

use std::path::Path;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule};
use vhdkit_format::{Error, HResult, TaskFailure};

use crate::convert::path_str;

/// The Python module that defines the exception classes.
static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    ERRORS
        .get_or_try_init(py, || Ok(py.import("vhdkit._errors")?.unbind()))
        .map(|m| m.bind(py))
}

/// What a Python exception is built from.
pub struct Failure<'a> {
    /// The message (`str(exc)`).
    pub message: String,
    /// The kind in snake_case, which picks the class.
    pub kind: String,
    pub hresult: HResult,
    pub path: Option<&'a Path>,
    pub children: &'a [std::path::PathBuf],
}

impl Failure<'_> {
    /// The exception: an instance of the class of `kind` (VhdError for a kind without
    /// a class of its own).
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self.build(py) {
            Ok(err) => err,
            // The classes could not be loaded: still say what failed.
            Err(e) => PyRuntimeError::new_err(format!("{} ({e})", self.message)),
        }
    }

    fn build(&self, py: Python<'_>) -> PyResult<PyErr> {
        let module = errors_module(py)?;
        let class = match module.getattr("CLASS_OF_KIND")?.get_item(&self.kind) {
            Ok(class) => class,
            Err(_) => module.getattr("VhdError")?,
        };
        let kwargs = PyDict::new(py);
        kwargs.set_item("hresult", self.hresult.0)?;
        kwargs.set_item("path", self.path.map(|p| path_str(py, p)).transpose()?)?;
        kwargs.set_item("kind", &self.kind)?;
        let children = self
            .children
            .iter()
            .map(|c| path_str(py, c))
            .collect::<PyResult<Vec<_>>>()?;
        kwargs.set_item("children", children)?;
        let exc = class.call((self.message.as_str(),), Some(&kwargs))?;
        Ok(PyErr::from_value(exc))
    }
}

/// A unit variant's name as serde spells it — `rename_all = "snake_case"` on
/// [`vhdkit_format::ErrorKind`] and [`vhdkit_format::VMTaskResult`], so `ParentNotFound`
/// → `parent_not_found`: how the JSON documents and the exceptions spell it.
pub fn variant_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("a unit variant serializes as its name, not {other:?}"),
    }
}

/// The file an error concerns: the disk, or for a parent not found or mismatched, the
/// child.
fn error_path(e: &Error) -> Option<&Path> {
    match e {
        Error::Io { path, .. }
        | Error::File { path, .. }
        | Error::NotVhd { path, .. }
        | Error::Corrupt { path, .. }
        | Error::Unsupported { path, .. }
        | Error::NotFound { path }
        | Error::PathNotFound { path }
        | Error::HasChildren { path, .. }
        | Error::ChainLoop { path, .. }
        | Error::ChainTooDeep { path, .. }
        | Error::HostDriveNotFound { path, .. }
        | Error::WrongFileType { path, .. }
        | Error::NotAllowed { path, .. }
        | Error::ReadOnly { path, .. }
        | Error::InUse { path }
        | Error::AlreadyExists { path }
        | Error::OutOfRange { path, .. }
        | Error::WrongDiskType { path, .. } => Some(path),
        Error::ParentNotFound { child, .. } | Error::ParentIdMismatch { child, .. } => Some(child),
        _ => None,
    }
}

/// The exception for a library error.
pub fn vhd_error(py: Python<'_>, e: &Error) -> PyErr {
    let children = match e {
        Error::HasChildren { children, .. } => children.as_slice(),
        _ => &[],
    };
    Failure {
        message: e.to_string(),
        kind: variant_name(&e.kind()),
        hresult: e.hresult(),
        path: error_path(e),
        children,
    }
    .into_pyerr(py)
}

/// The exception for a task that did not succeed: its error's, `Cancelled` (E_ABORT)
/// for a cancel, `VhdError` for a worker that panicked or never started.
pub fn task_failure(py: Python<'_>, f: &TaskFailure<Error>) -> PyErr {
    match f {
        TaskFailure::Failed(e) => vhd_error(py, e),
        other => Failure {
            message: other.to_string(),
            kind: if other.is_cancelled() {
                "cancelled".into()
            } else {
                "other".into()
            },
            hresult: other.hresult(),
            path: None,
            children: &[],
        }
        .into_pyerr(py),
    }
}

/// An argument mistake the binding itself finds (an option that does not apply, a
/// missing one): `InvalidArgument`, E_INVALIDARG, as the library's own.
pub fn invalid_argument(py: Python<'_>, message: impl Into<String>) -> PyErr {
    vhd_error(py, &Error::InvalidArgument(message.into()))
}

/// Library results as Python ones.
pub trait OrRaise<T> {
    /// The value, or the exception for the error.
    fn or_raise(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> OrRaise<T> for Result<T, Error> {
    fn or_raise(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| vhd_error(py, &e))
    }
}
