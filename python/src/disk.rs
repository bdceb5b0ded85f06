//! `vhdkit.open()` and `vhdkit.Disk`: reading and writing a disk's virtual bytes,
//! what it is (`info()`), where its bytes live (`map()`) and what is wrong with it
//! (`check()`); `vhdkit.create()`, and the module-level `info()`, `check()` and
//! `repair()` for files that may not open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use vhdkit_format::image::FileBackend;
use vhdkit_format::Problem as SpecProblem;
use vhdkit_format::{CreateOptions, DiskKind, Error, OpenOptions};

use crate::convert::path_str;
use crate::docs::{self, Row};
use crate::errors::{invalid_argument, OrRaise};
use crate::options::open_options;
use crate::task::finish;

/// Virtual bytes `map()` asks the library about at a time.
const MAP_WINDOW: u64 = 16 << 20;

/// An open disk (or differencing chain): what `vhdkit.open()` returns. A context
/// manager: `with vhdkit.open(path) as disk:` closes it at the end of the block.
///
/// Every read and write runs detached from the interpreter: other Python threads run
/// meanwhile, and several threads may read (or write) one Disk at once.
#[pyclass(module = "vhdkit", frozen)]
pub struct Disk {
    /// `None` once closed. Each call clones the `Arc`, so a close while another thread
    /// reads lets that read finish.
    inner: Mutex<Option<Arc<vhdkit_format::Disk>>>,
    path: PathBuf,
    opts: OpenOptions,
    virtual_size: u64,
    kind: DiskKind,
}

impl Disk {
    /// The open disk, or `ValueError` once closed (as Python's files say it).
    fn get(&self) -> PyResult<Arc<vhdkit_format::Disk>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| PyValueError::new_err("I/O operation on a closed disk"))
    }

    /// `OutOfRange` (E_INVALIDARG), as the library reports it, for a range that does
    /// not lie inside the disk: checked before anything is allocated.
    fn check_range(&self, offset: u64, len: u64) -> Result<(), Error> {
        match offset.checked_add(len) {
            Some(end) if end <= self.virtual_size => Ok(()),
            _ => Err(Error::OutOfRange {
                path: self.path.clone(),
                offset,
                len,
                size: self.virtual_size,
            }),
        }
    }
}

/// A pointer that may cross into the detached closure of [`filled_bytes`].
struct BufferPtr(*mut u8);

// SAFETY: the pointer is used by one thread at a time: handed to the detached closure
// and used there only, while the caller waits for it (see `filled_bytes`).
#[allow(unsafe_code)]
unsafe impl Send for BufferPtr {}

/// A new `bytes` of `len` bytes, filled by `fill` detached from the interpreter. Only
/// the allocation happens attached: the first touch of its pages (zeroing them, which
/// for a large read costs as much as the read) and `fill` run while other Python
/// threads run — `PyBytes::new_with` would zero them attached.
#[allow(unsafe_code)]
fn filled_bytes<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<(), Error> + Send,
) -> PyResult<Bound<'py, PyBytes>> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len)
        .map_err(|_| invalid_argument(py, format!("length {len} does not fit in memory")))?;
    // SAFETY: PyBytes_FromStringAndSize with a null pointer returns a new bytes object of
    // `size` uninitialised bytes, or null with a Python exception set (MemoryError),
    // which from_owned_ptr_or_err turns into Err; the object is a bytes object, so the
    // cast holds.
    let bytes = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
        )?
        .cast_into_unchecked::<PyBytes>()
    };
    // SAFETY: the object is a bytes object; its buffer holds `len` bytes (and a nul).
    let ptr = BufferPtr(unsafe { pyo3::ffi::PyBytes_AsString(bytes.as_ptr()) }.cast::<u8>());
    py.detach(move || {
        let ptr = ptr;
        // SAFETY: `ptr` points to the `len` writable bytes of `bytes`, which this frame
        // keeps alive and no other code can reach yet (it is returned only after this
        // closure). They are initialised (zeroed) before the slice over them is made.
        let buf = unsafe {
            ptr.0.write_bytes(0, len);
            std::slice::from_raw_parts_mut(ptr.0, len)
        };
        fill(buf)
    })
    .or_raise(py)?;
    Ok(bytes)
}

/// The bytes of `data` (bytes, bytearray, memoryview or anything with the buffer
/// protocol): `bytes` as they are, anything else copied once.
fn bytes_of<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(b.clone());
    }
    // memoryview() refuses what has no buffer (an int, a str) with a TypeError.
    let view = data
        .py()
        .import("builtins")?
        .call_method1("memoryview", (data,))?;
    Ok(view.call_method0("tobytes")?.cast_into::<PyBytes>()?)
}

#[pymethods]
impl Disk {
    /// Reads `length` bytes of the virtual disk from `offset`: what a differencing
    /// disk holds, its parents' bytes elsewhere, zeros where nothing is stored.
    /// Raises InvalidArgument (E_INVALIDARG) for a range outside the disk.
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        length: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let disk = self.get()?;
        self.check_range(offset, length).or_raise(py)?;
        let len = usize::try_from(length)
            .map_err(|_| invalid_argument(py, format!("length {length} does not fit in memory")))?;
        filled_bytes(py, len, |buf| disk.read_at(buf, offset))
    }

    /// Writes `data` (bytes, bytearray, memoryview) at virtual `offset`; returns the
    /// number of bytes written. Crash-safe: each block reads as before or as written at
    /// every instant; flush() (or close()) makes the writes durable. Raises ReadOnly
    /// on a disk opened without writable=True.
    fn write(&self, py: Python<'_>, offset: u64, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let disk = self.get()?;
        let data = bytes_of(data)?;
        let bytes = data.as_bytes();
        self.check_range(offset, bytes.len() as u64).or_raise(py)?;
        py.detach(|| disk.write_at(bytes, offset)).or_raise(py)?;
        Ok(bytes.len())
    }

    /// Makes every write durable (fsync).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let disk = self.get()?;
        py.detach(|| disk.flush()).or_raise(py)
    }

    /// Releases the blocks of a dynamic disk that the range covers entirely: they read
    /// as zeros and their space is given back. Returns the virtual bytes released (0
    /// for other disks: a fixed disk has no blocks, a differencing disk's released
    /// block would read from its parent).
    fn discard(&self, py: Python<'_>, offset: u64, length: u64) -> PyResult<u64> {
        let disk = self.get()?;
        py.detach(|| disk.discard(offset, length)).or_raise(py)
    }

    /// Closes the disk; a writable one is flushed first (its writes are durable when
    /// close returns). Closing twice does nothing.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match taken {
            Some(disk) if self.opts.writable => py.detach(|| disk.flush()).or_raise(py),
            _ => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    /// The path the disk was opened from.
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        path_str(py, &self.path)
    }

    /// The disk's size in bytes.
    #[getter]
    fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// "fixed", "dynamic", "differencing" or "host-drive".
    #[getter]
    fn r#type(&self) -> &'static str {
        self.kind.name()
    }

    /// Whether the disk was opened for writing.
    #[getter]
    fn writable(&self) -> bool {
        self.opts.writable
    }

    /// Whether close() was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// What the disk is: a dict with the fields of `vhdkit info --json` (docs/json.md):
    /// type, sizes, creator, ids, the parent it names and where it was found, the chain.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let disk = self.get()?;
        docs::info(py, &disk, None, &self.path)
    }

    /// Where the virtual bytes of `offset .. offset + length` (default: to the end)
    /// live: a list of dicts with the fields of `vhdkit map --json`'s rows — `start`,
    /// `length`, `kind` ("allocated" in this file, "parent" in an ancestor, "zero"
    /// stored nowhere) and, for stored bytes, `layer`, `file` and `file_offset`.
    /// Adjacent rows of one kind and file are merged.
    #[pyo3(signature = (offset = 0, length = None))]
    fn map<'py>(
        &self,
        py: Python<'py>,
        offset: u64,
        length: Option<u64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let disk = self.get()?;
        let length = length.unwrap_or(self.virtual_size.saturating_sub(offset));
        self.check_range(offset, length).or_raise(py)?;
        let rows = py.detach(|| map_rows(&disk, offset, length)).or_raise(py)?;
        let list = PyList::empty(py);
        for row in &rows {
            list.append(row.to_dict(py, &disk)?)?;
        }
        Ok(list)
    }

    /// Validates the disk and its chain as `vhdkit check` does; returns every problem
    /// found (a list of Problem, empty when there is none), info-level ones included.
    /// On a disk opened writable (this process holds the writer's lock, so the chain
    /// cannot be opened again) the writes are flushed and each file of the chain is
    /// checked on its own, without the checks of the links between them.
    fn check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let disk = self.get()?;
        if !self.opts.writable {
            return problems(py, &self.path, &self.opts);
        }
        let found = py
            .detach(|| -> Result<Vec<(PathBuf, Vec<SpecProblem>)>, Error> {
                disk.flush()?;
                let mut found = Vec::new();
                for layer in disk.layers() {
                    let path = layer.path();
                    let file = std::fs::File::open(path).map_err(|source| Error::File {
                        path: path.to_owned(),
                        doing: "opening for check",
                        source,
                    })?;
                    let backend = FileBackend::with_path(file, path);
                    found.push((path.to_owned(), vhdkit_format::check::check_file(&backend)?));
                }
                Ok(found)
            })
            .or_raise(py)?;
        let list = PyList::empty(py);
        for (file, list_of) in &found {
            for p in list_of {
                list.append(Problem::new(py, file, p)?)?;
            }
        }
        Ok(list)
    }

    fn __repr__(&self) -> String {
        format!(
            "<vhdkit.Disk {:?} {} {} bytes{}{}>",
            self.path.display().to_string(),
            self.kind.name(),
            self.virtual_size,
            if self.opts.writable { ", writable" } else { "" },
            if self.closed() { ", closed" } else { "" }
        )
    }
}

/// The merged rows of `offset .. offset + length`, a window at a time.
fn map_rows(disk: &vhdkit_format::Disk, offset: u64, length: u64) -> Result<Vec<Row>, Error> {
    let end = offset + length;
    let mut rows: Vec<Row> = Vec::new();
    let mut pos = offset;
    while pos < end {
        let n = MAP_WINDOW.min(end - pos);
        let mut start = pos;
        for e in disk.extents(pos, n)? {
            let row = Row::of(&e, start);
            start += e.len();
            if !rows.last_mut().is_some_and(|last| last.absorb(&row)) {
                rows.push(row);
            }
        }
        pos += n;
    }
    Ok(rows)
}

/// One problem `check()` found.
#[pyclass(module = "vhdkit", frozen)]
pub struct Problem {
    /// The file it was found in: the disk, or one of its ancestors.
    #[pyo3(get)]
    path: Py<PyString>,
    /// "info" (worth knowing, the image is fine), "warning" (deviates from the
    /// specification, reads safely) or "error" (cannot be trusted).
    #[pyo3(get)]
    severity: String,
    /// The structure: "footer", "dynamic header", "BAT", ...
    #[pyo3(get)]
    structure: &'static str,
    /// The field, e.g. "checksum".
    #[pyo3(get)]
    field: &'static str,
    /// Byte offset in the file of the structure or field, or None.
    #[pyo3(get)]
    offset: Option<u64>,
    /// What was found and what was expected.
    #[pyo3(get)]
    message: String,
    /// The one-line form, as `vhdkit check` prints it after the file.
    text: String,
}

impl Problem {
    /// The problem `p` found in `file`.
    fn new(py: Python<'_>, file: &Path, p: &SpecProblem) -> PyResult<Py<Problem>> {
        let problem = Problem {
            path: path_str(py, file)?.unbind(),
            severity: crate::convert::serde_name(&p.severity),
            structure: p.structure,
            field: p.field,
            offset: p.offset,
            message: p.message.clone(),
            text: p.to_string(),
        };
        Py::new(py, problem)
    }
}

#[pymethods]
impl Problem {
    fn __str__(&self) -> &str {
        &self.text
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "<vhdkit.Problem {} {:?}: {}>",
            self.path.bind(py),
            self.severity,
            self.text
        )
    }
}

/// Every problem `vhdkit_format::check::check` finds in `path` and its chain.
fn problems<'py>(py: Python<'py>, path: &Path, opts: &OpenOptions) -> PyResult<Bound<'py, PyList>> {
    let report = py
        .detach(|| vhdkit_format::check::check(path, opts))
        .or_raise(py)?;
    let list = PyList::empty(py);
    for (file, p) in report.problems() {
        list.append(Problem::new(py, file, p)?)?;
    }
    Ok(list)
}

/// Opens the disk at `path` (and its parent chain) for reading, or for writing with
/// `writable=True` (its parents stay read-only; a writer holds the file's lock: a
/// second writer gets InUse). The keywords are the open options: `parent` (use this
/// file as the parent), `strict`, `ignore_parent_id`, `allow_absolute_parent`,
/// `host_drive` (False, True or "files") and `ignore_host_drive_identity`.
#[pyfunction]
#[pyo3(signature = (path, writable = false, **options))]
pub fn open(
    py: Python<'_>,
    path: PathBuf,
    writable: bool,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Disk> {
    let opts = open_options(py, "open", options, OpenOptions::new().writable(writable))?;
    let disk = py
        .detach(|| vhdkit_format::Disk::open_with(&path, &opts))
        .or_raise(py)?;
    Ok(Disk {
        virtual_size: disk.virtual_size(),
        kind: disk.kind(),
        inner: Mutex::new(Some(Arc::new(disk))),
        path,
        opts,
    })
}

/// What `vhdkit info PATH --json` says, as a dict (docs/json.md). A differencing disk
/// whose parent cannot be opened is described on its own, `parent.error` saying why.
#[pyfunction]
#[pyo3(signature = (path, **options))]
pub fn info<'py>(
    py: Python<'py>,
    path: PathBuf,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = open_options(py, "info", options, OpenOptions::new())?;
    let (disk, chain_error) = py
        .detach(|| vhdkit_format::info::open(&path, &opts))
        .or_raise(py)?;
    docs::info(py, &disk, chain_error.as_ref(), &path)
}

/// Validates the disk at `path` and every ancestor it reaches, as `vhdkit check`
/// does; returns every problem found (a list of Problem). Raises only when the file
/// cannot be read at all: a damaged disk that will not open is checked too.
#[pyfunction]
#[pyo3(signature = (path, **options))]
pub fn check<'py>(
    py: Python<'py>,
    path: PathBuf,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyList>> {
    let opts = open_options(py, "check", options, OpenOptions::new())?;
    problems(py, &path, &opts)
}

/// Restores what is safely restorable in a dynamic or differencing disk, as `vhdkit
/// check --repair`: a damaged footer from its copy, a file length cut short or left
/// long by a crash, orphaned tail blocks, Xen's batmap. Never guesses at data. Returns
/// each action taken, in words (empty: nothing needed repair).
#[pyfunction]
pub fn repair(py: Python<'_>, path: PathBuf) -> PyResult<Vec<String>> {
    let report = py
        .detach(|| vhdkit_format::ops::repair::repair(&path))
        .or_raise(py)?;
    Ok(report.actions)
}

/// Creates a disk, as `vhdkit create`, and returns its report (a dict, as a task's).
///
/// `type` is "dynamic", "fixed", "differencing" or "host-drive"; by default
/// "differencing" when a `parent` is given, else "dynamic". A fixed or dynamic disk
/// needs `size` (bytes: a multiple of 512 from 3 MiB to 2040 GiB); a differencing disk
/// `parent` (its size and, by default, block size are the parent's); a host-drive stub
/// `host_drive` (the device, with `read_only`). `block_size`: a power of two from 4 KiB
/// to 256 MiB (dynamic, differencing). `sparse`: a fixed disk's data area is left a
/// hole instead of being allocated up front. `format`: "vhd" or "vhdx" (default: by
/// the extension, `.vhdx` and `.avhdx` making a VHDX, with 32 MiB blocks by default,
/// 1–256 MiB, fixed ones too, sizes to 64 TiB; a differencing VHDX needs a VHDX
/// parent). `logical_sector`: a VHDX's, 512 (default) or 4096.
#[pyfunction]
#[pyo3(signature = (path, r#type = None, size = None, parent = None, block_size = None, *, host_drive = None, read_only = false, sparse = false, format = None, logical_sector = None))]
#[allow(clippy::too_many_arguments)]
pub fn create<'py>(
    py: Python<'py>,
    path: PathBuf,
    r#type: Option<&str>,
    size: Option<u64>,
    parent: Option<PathBuf>,
    block_size: Option<u64>,
    host_drive: Option<PathBuf>,
    read_only: bool,
    sparse: bool,
    format: Option<String>,
    logical_sector: Option<u32>,
) -> PyResult<Bound<'py, PyDict>> {
    let format = crate::options::container_format(py, format)?;
    let vhdx = vhdkit_format::image::ContainerFormat::choose(format, &path)
        == vhdkit_format::image::ContainerFormat::Vhdx;
    let kind = r#type.unwrap_or(if parent.is_some() {
        "differencing"
    } else {
        "dynamic"
    });
    let block = crate::options::block_size(py, block_size)?;
    let bad = |msg: &str| Err(invalid_argument(py, msg));
    let opts = match kind {
        "fixed" | "dynamic" => {
            let Some(size) = size else {
                return bad("size= is required for a fixed or dynamic disk");
            };
            if parent.is_some() || host_drive.is_some() {
                return bad("parent= and host_drive= go with other disk types");
            }
            let kind = if kind == "fixed" {
                DiskKind::Fixed
            } else {
                DiskKind::Dynamic
            };
            if kind == DiskKind::Dynamic && sparse {
                return bad("sparse= applies to a fixed disk (a dynamic disk is sparse)");
            }
            CreateOptions {
                sparse,
                block_size: block,
                ..CreateOptions::new(kind, size)
            }
        }
        "differencing" => {
            let Some(parent) = parent else {
                return bad("parent= is required for a differencing disk");
            };
            if size.is_some() || host_drive.is_some() || sparse {
                return bad("a differencing disk takes its size from its parent: drop size=, host_drive= and sparse=");
            }
            CreateOptions {
                block_size: block,
                ..CreateOptions::differencing(parent)
            }
        }
        "host-drive" => {
            let Some(device) = host_drive else {
                return bad("host_drive= (the device) is required for a host-drive disk");
            };
            if size.is_some() || block.is_some() || parent.is_some() || sparse {
                return bad("a host-drive disk takes its size from the drive and has no blocks: drop size=, block_size=, parent= and sparse=");
            }
            CreateOptions::host_drive(device, read_only)
        }
        other => {
            return Err(invalid_argument(
                py,
                format!("type={other:?}: expected \"dynamic\", \"fixed\", \"differencing\" or \"host-drive\""),
            ))
        }
    };
    if read_only && opts.kind != DiskKind::HostDrive {
        return bad("read_only= applies to a host-drive disk");
    }
    if opts.kind == DiskKind::HostDrive && format.is_some() {
        return bad("format= applies to a fixed, dynamic or differencing disk");
    }
    if logical_sector.is_some() && (!vhdx || opts.kind == DiskKind::HostDrive) {
        return bad("logical_sector= applies to a VHDX (a VHD has 512-byte sectors)");
    }
    if opts.kind == DiskKind::Fixed && block.is_some() && !vhdx {
        return bad("a fixed disk has no blocks: drop block_size=");
    }
    let opts = vhdkit_format::CreateOptions {
        format,
        logical_sector_size: logical_sector,
        ..opts
    };
    let task = vhdkit_format::ops::create_task(&path, &opts).or_raise(py)?;
    let report = finish(py, task)?;
    docs::report(py, &report, None)
}
