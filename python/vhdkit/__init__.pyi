"""Type stubs for vhdkit: VHD virtual disks and the Virtual Server disk API."""

from types import TracebackType
from typing import Any, Generator, Iterator, List, Literal, Optional, Sequence, Type, final

from typing_extensions import Unpack

from ._errors import (
    AlreadyExists as AlreadyExists,
    Cancelled as Cancelled,
    Corrupt as Corrupt,
    DiskFull as DiskFull,
    HasChildren as HasChildren,
    InUse as InUse,
    InvalidArgument as InvalidArgument,
    NotAllowed as NotAllowed,
    NotAVhd as NotAVhd,
    NotFound as NotFound,
    ParentIdMismatch as ParentIdMismatch,
    ParentNotFound as ParentNotFound,
    ReadOnly as ReadOnly,
    Unsupported as Unsupported,
    VhdError as VhdError,
    WrongDiskType as WrongDiskType,
)
from ._typing import (
    Buffer as Buffer,
    DiskType as DiskType,
    HostDrive as HostDrive,
    Info as Info,
    MapRow as MapRow,
    Measure as Measure,
    OpenOptions as OpenOptions,
    ProgressEvent as ProgressEvent,
    Report as Report,
    StrPath as StrPath,
    Target as Target,
)

__version__: str

@final
class Problem:
    """One problem check() found."""

    path: str
    """The file it was found in: the disk, or one of its ancestors."""
    severity: Literal["info", "warning", "error"]
    structure: str
    """The structure: "footer", "dynamic header", "BAT", ..."""
    field: str
    offset: Optional[int]
    """Byte offset in the file of the structure or field, or None."""
    message: str
    """What was found and what was expected."""

@final
class Disk:
    """An open disk (or differencing chain), from open(). A context manager. Reads and
    writes release the GIL; several threads may use one Disk."""

    @property
    def path(self) -> str: ...
    @property
    def virtual_size(self) -> int: ...
    @property
    def type(self) -> DiskType: ...
    @property
    def writable(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    def read(self, offset: int, length: int) -> bytes:
        """The virtual bytes offset .. offset + length (InvalidArgument outside the disk)."""
    def write(self, offset: int, data: Buffer) -> int:
        """Writes data at offset, crash-safely; returns its length. ReadOnly unless
        opened with writable=True."""
    def flush(self) -> None:
        """Makes every write durable (fsync)."""
    def discard(self, offset: int, length: int) -> int:
        """Releases the dynamic disk's blocks the range covers entirely; returns the
        bytes released."""
    def close(self) -> None:
        """Closes the disk (flushing a writable one). Closing twice does nothing."""
    def info(self) -> Info:
        """The fields of `vhdkit info --json`."""
    def map(self, offset: int = 0, length: Optional[int] = None) -> List[MapRow]:
        """Where the virtual bytes live: the rows of `vhdkit map --json`."""
    def check(self) -> List[Problem]:
        """Every problem found in the disk and its chain, as `vhdkit check`."""
    def __enter__(self) -> "Disk": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class Events(Iterator[ProgressEvent]):
    """A task's progress events; ends after the final one."""

    def __iter__(self) -> "Events": ...
    def __next__(self) -> ProgressEvent: ...

@final
class Task:
    """A running operation with the members of Virtual Server's IVMTask2."""

    @property
    def id(self) -> int: ...
    @property
    def description(self) -> str: ...
    @property
    def percent_completed(self) -> int:
        """0..100, never decreasing; 100 exactly when the task has succeeded."""
    @property
    def is_complete(self) -> bool: ...
    @property
    def is_cancelable(self) -> bool: ...
    def cancel(self) -> None:
        """Asks the task to stop at its next chunk; then `error` is E_ABORT."""
    def wait_for_completion(self, timeout_ms: Optional[int] = -1) -> bool:
        """Waits up to timeout_ms (-1/None: forever); returns whether complete."""
    @property
    def result(self) -> Optional[Report]:
        """The report once succeeded; None while running, failed or cancelled."""
    @property
    def task_result(self) -> Optional[str]:
        """VMTaskResult in snake_case ("success", "cancelled", ...); None while running."""
    @property
    def error(self) -> int:
        """The HRESULT: 0 while running and on success, E_ABORT when cancelled."""
    @property
    def error_description(self) -> str: ...
    @property
    def elapsed(self) -> float: ...
    def events(self, capacity: Optional[int] = None) -> Events:
        """The task's progress events, as `--progress json` lines (dicts)."""
    def join(self) -> Report:
        """Waits; returns the report or raises the task's VhdError (Cancelled...)."""
    def __await__(self) -> Generator[Any, None, Report]: ...

def open(
    path: StrPath,
    writable: bool = False,
    **options: Unpack[OpenOptions],
) -> Disk:
    """Opens a disk and its parent chain (for writing with writable=True)."""

def create(
    path: StrPath,
    type: Optional[DiskType] = None,
    size: Optional[int] = None,
    parent: Optional[StrPath] = None,
    block_size: Optional[int] = None,
    *,
    host_drive: Optional[StrPath] = None,
    read_only: bool = False,
    sparse: bool = False,
    format: Optional[Literal["vhd", "vhdx"]] = None,
    logical_sector: Optional[Literal[512, 4096]] = None,
) -> Report:
    """Creates a disk (differencing when parent= is given, else dynamic by default)."""

def info(
    path: StrPath,
    **options: Unpack[OpenOptions],
) -> Info:
    """The fields of `vhdkit info --json`; a broken chain is described too."""

def check(
    path: StrPath,
    **options: Unpack[OpenOptions],
) -> List[Problem]:
    """Every problem found in the disk and its chain, even one that will not open."""

def repair(path: StrPath) -> List[str]:
    """Restores what is safely restorable; returns the actions taken."""

def compact(
    path: StrPath,
    *,
    dedupe: bool = True,
    fs_aware: bool = False,
    dry_run: bool = False,
    verify: bool = False,
    force: bool = False,
    also_check: Optional[Sequence[StrPath]] = None,
    **options: Unpack[OpenOptions],
) -> Task:
    """Starts compacting a dynamic or differencing disk in place."""

def convert(
    src: StrPath,
    dst: StrPath,
    type: Target,
    *,
    block_size: Optional[int] = None,
    sparse: bool = False,
    align: Optional[int] = None,
    replace: bool = False,
    fs_aware: bool = False,
    verify: bool = False,
    source_format: Literal["auto", "raw"] = "auto",
    format: Optional[Literal["vhd", "vhdx"]] = None,
    logical_sector: Optional[Literal[512, 4096]] = None,
    **options: Unpack[OpenOptions],
) -> Task:
    """Starts converting any disk (a chain flattened) or raw image into a new file."""

def merge(
    child: StrPath,
    into: Optional[StrPath] = None,
    depth: Optional[int] = None,
    *,
    delete_child: bool = False,
    force: bool = False,
    also_check: Optional[Sequence[StrPath]] = None,
    keep_intermediates: bool = False,
    **options: Unpack[OpenOptions],
) -> Task:
    """Starts merging a differencing disk into its parent (or an ancestor) in place."""

def merge_to(
    child: StrPath,
    dst: StrPath,
    type: Target,
    *,
    block_size: Optional[int] = None,
    sparse: bool = False,
    align: Optional[int] = None,
    replace: bool = False,
    fs_aware: bool = False,
    verify: bool = False,
    format: Optional[Literal["vhd", "vhdx"]] = None,
    logical_sector: Optional[Literal[512, 4096]] = None,
    **options: Unpack[OpenOptions],
) -> Task:
    """Starts flattening a differencing chain into a new file."""

def resize(
    path: StrPath,
    size: Optional[int] = None,
    *,
    align: Optional[int] = None,
    allow_shrink: bool = False,
    to_minimum: bool = False,
    force: bool = False,
    also_check: Optional[Sequence[StrPath]] = None,
    sparse: bool = False,
    **options: Unpack[OpenOptions],
) -> Task:
    """Starts resizing a fixed, dynamic or differencing disk in place."""

def measure(
    src: StrPath,
    type: Target,
    *,
    block_size: Optional[int] = None,
    align: Optional[int] = None,
    source_format: Literal["auto", "raw"] = "auto",
    format: Optional[Literal["vhd", "vhdx"]] = None,
    logical_sector: Optional[Literal[512, 4096]] = None,
    **options: Unpack[OpenOptions],
) -> Measure:
    """The exact length of the file convert() would write, without writing."""

# The HRESULTs of the Virtual Server API (unsigned 32-bit patterns).
S_OK: int
S_FALSE: int
E_ABORT: int
E_FAIL: int
E_POINTER: int
E_OUTOFMEMORY: int
E_INVALIDARG: int
DISP_E_EXCEPTION: int
E_FILE_NOT_FOUND: int
E_ACCESSDENIED: int
E_PATH_NOT_FOUND: int
E_SHARING_VIOLATION: int
E_BUFFER_OVERFLOW: int
E_DISK_FULL: int
E_INVALID_NAME: int
E_BAD_PATHNAME: int
E_ALREADY_EXISTS: int
VM_E_PARENT_PATH_NOT_FOUND: int
VM_E_FILE_TOO_LARGE_FOR_VOLUME: int
VM_E_FILE_READ_ONLY: int
VM_E_WRONG_HD_IMAGE_TYPE: int
VM_E_HD_IMAGE_OPEN_FAIL: int
VM_E_HOST_DRIVE_NOT_FOUND: int
VM_E_HD_IMAGE_ACCESS: int
VM_E_INVALID_HD_FILE: int
VM_E_IMAGE_SIZE_TOO_LARGE: int
VM_E_IMAGE_SIZE_TOO_SMALL: int
VM_E_PARENT_CHILD_ID_MISMATCH: int
VM_E_APP_SHUTTING_DOWN: int
VM_E_TIMED_OUT: int
