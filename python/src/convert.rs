//! Small conversions between Rust values and Python ones.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::PyString;

/// A path as a Python `str`, decoded as `os.fsdecode` does: a name that is not UTF-8
/// keeps its bytes (surrogate escapes), so it still names the same file.
pub fn path_str<'py>(py: Python<'py>, path: &Path) -> PyResult<Bound<'py, PyString>> {
    Ok(path.as_os_str().into_pyobject(py)?)
}

/// The name serde gives a unit enum variant (`FooterSource::ShortEnd` → `short-end`):
/// the spelling of the JSON documents.
pub fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A serializable value (a struct: a JSON object) as a Python `dict`, through its JSON
/// form: the keys and values of the command line's `--json` documents exactly.
pub fn serde_dict<'py, T: serde::Serialize>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
    let text = serde_json::to_string(value)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let loaded = py.import("json")?.call_method1("loads", (text,))?;
    Ok(loaded.cast_into::<pyo3::types::PyDict>()?)
}

/// Builds a `dict` from `key => value` pairs (values: anything `IntoPyObject`), in
/// order; `?` on failure.
macro_rules! dict {
    ($py:expr, { $($key:literal => $value:expr),* $(,)? }) => {{
        let d = pyo3::types::PyDict::new($py);
        $( pyo3::types::PyDictMethods::set_item(&d, $key, $value)?; )*
        d
    }};
}
pub(crate) use dict;
