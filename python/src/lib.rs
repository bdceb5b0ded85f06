//! `vhdkit._vhdkit`, the extension module of the Python package `vhdkit`: the
//! library's disks, operations and tasks for Python scripts — a thin binding over
//! `vhdkit-format`'s public API. The package (`vhdkit/`) re-exports it and adds the
//! exceptions (`vhdkit/_errors.py`), `await` (`vhdkit/_aio.py`) and the type stubs.
//!
//! - `disk`: `open()`, `Disk` (read, write, info, map, check), `create()`, and the
//!   module-level `info()`, `check()`, `repair()`.
//! - `ops`: the operations as tasks (`compact`, `convert`, `merge`, `merge_to`,
//!   `resize`), and `measure()`.
//! - `task`: `Task` (IVMTask2's members), its events, the waits.
//! - `docs`: the dicts, with the fields of the CLI's JSON documents.
//! - `errors`: library errors as `VhdError` and its subclasses.
//!
//! Every call that reads, writes or waits runs detached from the interpreter.
//!
//! `unsafe` is denied but in `disk::filled_bytes` (a `bytes` object filled while
//! detached), each block with its `// SAFETY:` argument.

#![deny(unsafe_code)]

mod convert;
mod disk;
mod docs;
mod errors;
mod ops;
mod options;
mod task;

use pyo3::prelude::*;

/// Cancels every task still running and waits until they have stopped: run at
/// interpreter exit (atexit), so that a script that ends without waiting for its tasks
/// leaves every file as a cancel leaves it rather than killing the work mid-way.
#[pyfunction]
fn _shutdown(py: Python<'_>) {
    let registry = vhdkit_format::task::TaskRegistry::global();
    registry.cancel_all();
    py.detach(|| registry.wait_all(None));
}

#[pymodule]
fn _vhdkit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<disk::Disk>()?;
    m.add_class::<disk::Problem>()?;
    m.add_class::<task::Task>()?;
    m.add_class::<task::Events>()?;
    m.add_function(wrap_pyfunction!(disk::open, m)?)?;
    m.add_function(wrap_pyfunction!(disk::create, m)?)?;
    m.add_function(wrap_pyfunction!(disk::info, m)?)?;
    m.add_function(wrap_pyfunction!(disk::check, m)?)?;
    m.add_function(wrap_pyfunction!(disk::repair, m)?)?;
    m.add_function(wrap_pyfunction!(ops::compact, m)?)?;
    m.add_function(wrap_pyfunction!(ops::convert, m)?)?;
    m.add_function(wrap_pyfunction!(ops::merge, m)?)?;
    m.add_function(wrap_pyfunction!(ops::merge_to, m)?)?;
    m.add_function(wrap_pyfunction!(ops::resize, m)?)?;
    m.add_function(wrap_pyfunction!(ops::measure, m)?)?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    // The HRESULTs of the Virtual Server API, by name (E_ABORT, VM_E_INVALID_HD_FILE…).
    for (code, name) in vhdkit_format::HResult::KNOWN {
        m.add(*name, code.0)?;
    }
    Ok(())
}
