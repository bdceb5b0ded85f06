//! The dicts the package returns, each with the fields of the JSON document the
//! command line prints for the same thing (`docs/json.md`, `docs/schema/`): `info()`,
//! an operation's report, a progress event, `measure()`, the rows of `map()`. `info()`,
//! reports and events are the library's documents (`vhdkit_format::info`,
//! `vhdkit_format::report`), serialized as the command line serializes them; the tests
//! validate every dict against the same schemas.

use std::path::Path;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use vhdkit_format::image::Extent;
use vhdkit_format::ops::{Measure, Report};
use vhdkit_format::report::{EventDoc, MeasureDoc, ReportDoc};
use vhdkit_format::volume::DiskReport;
use vhdkit_format::{Disk, Error, ProgressEvent};

use crate::convert::{dict, path_str, serde_dict};

/// The version of the JSON documents these dicts mirror (their `"schema"` field).
pub const SCHEMA: u32 = 1;

/// `info()`: the fields of `vhdkit info --json` for `disk`, opened from `path` — the
/// library's [`vhdkit_format::info::Info`], the very document the command line prints;
/// `chain_error` says why its parents could not be opened (then `disk` is the file
/// alone).
pub fn info<'py>(
    py: Python<'py>,
    disk: &Disk,
    chain_error: Option<&Error>,
    path: &Path,
) -> PyResult<Bound<'py, PyDict>> {
    schema_dict(py, &vhdkit_format::info::describe(disk, chain_error, path))
}

/// A progress event: the fields of one `--progress json` line (the library's
/// [`EventDoc`], the very document the command line prints).
pub fn event<'py>(py: Python<'py>, e: &ProgressEvent) -> PyResult<Bound<'py, PyDict>> {
    schema_dict(py, &EventDoc::from(e))
}

/// An operation's report: the fields of its `--json` document (the library's
/// [`ReportDoc`]); with the disk's partitions when `volumes` holds what a file-system
/// scan (`fs_aware`) found.
pub fn report<'py>(
    py: Python<'py>,
    r: &Report,
    volumes: Option<&DiskReport>,
) -> PyResult<Bound<'py, PyDict>> {
    schema_dict(py, &ReportDoc::new(r, volumes))
}

/// `doc` as a dict with `"schema"` first, as the command line's `json::Doc` prints it.
fn schema_dict<'py, T: serde::Serialize>(py: Python<'py>, doc: &T) -> PyResult<Bound<'py, PyDict>> {
    let d = dict!(py, { "schema" => SCHEMA });
    d.update(serde_dict(py, doc)?.as_mapping())?;
    Ok(d)
}

/// `measure()`: the fields of `measure --json` for the source `path` (the library's
/// [`MeasureDoc`]).
pub fn measure<'py>(py: Python<'py>, path: &Path, m: &Measure) -> PyResult<Bound<'py, PyDict>> {
    schema_dict(py, &MeasureDoc::new(path, m))
}

/// One row of `map()` (a row of `map --json`): where a run of virtual bytes lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub start: u64,
    pub length: u64,
    /// The chain level holding the bytes; `None` for bytes stored nowhere (zeros).
    pub layer: Option<usize>,
    pub file_offset: Option<u64>,
}

impl Row {
    /// The row of extent `e` starting at virtual offset `start`.
    pub fn of(e: &Extent, start: u64) -> Row {
        match *e {
            Extent::Data {
                layer,
                file_offset,
                len,
            } => Row {
                start,
                length: len,
                layer: Some(layer),
                file_offset: Some(file_offset),
            },
            Extent::Zero { len } => Row {
                start,
                length: len,
                layer: None,
                file_offset: None,
            },
        }
    }

    /// Extends this row by `next` when it continues it (same level, contiguous in the
    /// disk and in the file); returns whether it did.
    pub fn absorb(&mut self, next: &Row) -> bool {
        let contiguous = self.start + self.length == next.start
            && self.layer == next.layer
            && match (self.file_offset, next.file_offset) {
                (Some(a), Some(b)) => a + self.length == b,
                (None, None) => true,
                _ => false,
            };
        if contiguous {
            self.length += next.length;
        }
        contiguous
    }

    /// The row as a dict: `start`, `length`, `kind` (`allocated`, `parent`, `zero`),
    /// and for stored bytes `layer`, `file`, `file_offset`.
    pub fn to_dict<'py>(&self, py: Python<'py>, disk: &Disk) -> PyResult<Bound<'py, PyDict>> {
        let kind = match self.layer {
            None => "zero",
            Some(0) => "allocated",
            Some(_) => "parent",
        };
        let d = dict!(py, {
            "start" => self.start,
            "length" => self.length,
            "kind" => kind,
        });
        if let (Some(layer), Some(offset)) = (self.layer, self.file_offset) {
            d.set_item("layer", layer)?;
            d.set_item("file", path_str(py, disk.layers()[layer].path())?)?;
            d.set_item("file_offset", offset)?;
        }
        Ok(d)
    }
}
