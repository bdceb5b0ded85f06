//! Python arguments as the library's options: the open options every function that
//! opens a disk takes as keywords, and the names of disk types.

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vhdkit_format::ops::Target;
use vhdkit_format::{HostDrives, OpenOptions};

use crate::errors::invalid_argument;

/// The keyword arguments of [`open_options`], with what each sets; the command line's
/// spelling in brackets.
pub const OPEN_KEYWORDS: &[&str] = &[
    // OpenOptions::parent (--with-parent): this file is the disk's parent.
    "parent",
    // OpenOptions::strict (--strict): refuse bad checksums, an inconsistent batmap.
    "strict",
    // OpenOptions::ignore_parent_id (--ignore-parent-id).
    "ignore_parent_id",
    // OpenOptions::absolute_parents (--allow-absolute-parent).
    "allow_absolute_parent",
    // OpenOptions::host_drives (--host-drive, --host-drive-file): False, True (block
    // devices) or "files" (block devices and regular files).
    "host_drive",
    // OpenOptions::ignore_host_drive_identity (--ignore-host-drive-identity).
    "ignore_host_drive_identity",
];

/// The open options of the keywords in `kwargs` (see [`OPEN_KEYWORDS`]), on top of
/// `base`. An unknown keyword is a `TypeError`, as Python reports one.
pub fn open_options(
    py: Python<'_>,
    function: &str,
    kwargs: Option<&Bound<'_, PyDict>>,
    base: OpenOptions,
) -> PyResult<OpenOptions> {
    let mut o = base;
    let Some(kwargs) = kwargs else {
        return Ok(o);
    };
    for (key, value) in kwargs.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "parent" => o.parent = value.extract::<Option<PathBuf>>()?,
            "strict" => o.strict = value.is_truthy()?,
            "ignore_parent_id" => o.ignore_parent_id = value.is_truthy()?,
            "allow_absolute_parent" => o.absolute_parents = value.is_truthy()?,
            "ignore_host_drive_identity" => o.ignore_host_drive_identity = value.is_truthy()?,
            "host_drive" => o.host_drives = host_drives(py, &value)?,
            _ => return Err(unknown_keyword(function, &key)),
        }
    }
    Ok(o)
}

/// The `TypeError` of an unknown keyword, as Python words it, listing the open options.
fn unknown_keyword(function: &str, key: &str) -> PyErr {
    let known = OPEN_KEYWORDS.join(", ");
    PyTypeError::new_err(format!(
        "{function}() got an unexpected keyword argument '{key}' (the open options are {known})"
    ))
}

/// `host_drive=`: `False`/`None` refuses host-drive stubs, `True` follows those naming
/// a block device, `"files"` also those naming a regular file.
fn host_drives(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<HostDrives> {
    if let Ok(s) = value.extract::<String>() {
        return match s.as_str() {
            "files" => Ok(HostDrives::BlockDevicesAndFiles),
            other => Err(invalid_argument(
                py,
                format!("host_drive={other:?}: expected False, True or \"files\""),
            )),
        };
    }
    Ok(if value.is_truthy()? {
        HostDrives::BlockDevices
    } else {
        HostDrives::Refuse
    })
}

/// The kind of file a convert, merge-to or measure writes: `"fixed"`, `"dynamic"`,
/// `"raw"`.
pub fn target(py: Python<'_>, name: &str) -> PyResult<Target> {
    match name {
        "fixed" => Ok(Target::Fixed),
        "dynamic" => Ok(Target::Dynamic),
        "raw" => Ok(Target::Raw),
        other => Err(invalid_argument(
            py,
            format!("type={other:?}: expected \"fixed\", \"dynamic\" or \"raw\""),
        )),
    }
}

/// A block size given in Python: a power of two from 4 KiB to 256 MiB.
pub fn block_size(py: Python<'_>, bytes: Option<u64>) -> PyResult<Option<u32>> {
    let Some(b) = bytes else {
        return Ok(None);
    };
    match u32::try_from(b) {
        Ok(b) if vhdkit_format::check_create_block_size(b).is_ok() => Ok(Some(b)),
        _ => Err(invalid_argument(
            py,
            format!(
                "block_size={b}: not a power of two from 4 KiB to 256 MiB (sizes other readers can read)"
            ),
        )),
    }
}

/// An alignment given in Python: a non-zero multiple of 512 bytes.
pub fn align(py: Python<'_>, bytes: Option<u64>) -> PyResult<Option<u64>> {
    match bytes {
        Some(a) if a == 0 || !a.is_multiple_of(512) => Err(invalid_argument(
            py,
            format!("align={a}: not a non-zero multiple of 512 bytes"),
        )),
        other => Ok(other),
    }
}

/// `format=` and `logical_sector=` of a new file: its container and, for a VHDX, its
/// logical sector size.
pub struct Container {
    /// `"vhd"`, `"vhdx"` or `None` (by the destination's extension).
    pub format: Option<String>,
    /// 512 or 4096 (a VHDX only).
    pub logical_sector: Option<u32>,
}

/// `format=`: `"vhd"`, `"vhdx"` or `None` (the destination's extension decides:
/// `.vhdx` and `.avhdx` make a VHDX).
pub fn container_format(
    py: Python<'_>,
    format: Option<String>,
) -> PyResult<Option<vhdkit_format::image::ContainerFormat>> {
    use vhdkit_format::image::ContainerFormat;
    match format.as_deref() {
        None => Ok(None),
        Some("vhd") => Ok(Some(ContainerFormat::Vhd)),
        Some("vhdx") => Ok(Some(ContainerFormat::Vhdx)),
        Some(other) => Err(invalid_argument(
            py,
            format!("format={other:?}: expected \"vhd\" or \"vhdx\""),
        )),
    }
}
