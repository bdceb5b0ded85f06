"""Names for annotations: the shapes of the dicts vhdkit returns and of its arguments.
Re-exported by the package (`vhdkit.ProgressEvent`, `vhdkit.StrPath`, ...)."""

import os
from typing import Any, Dict, Optional, Union

from typing import Literal, TypedDict

StrPath = Union[str, "os.PathLike[str]"]
"""A path: a str or an os.PathLike (pathlib.Path)."""

DiskType = Literal["dynamic", "fixed", "differencing", "host-drive"]
"""The types create() makes and Disk.type says."""

Target = Literal["fixed", "dynamic", "raw"]
"""What convert(), merge_to() and measure() write."""

HostDrive = Union[bool, Literal["files"]]
"""The open option host_drive: follow no host-drive stub (False), those naming a block
device (True), or also those naming a regular file ("files")."""

Buffer = Union[bytes, bytearray, memoryview]
"""What Disk.write() takes."""

Report = Dict[str, Any]
"""An operation's report: the fields of the command line's --json report
(docs/json.md, "Operation reports"), some only for some operations."""

Info = Dict[str, Any]
"""info(): the fields of `vhdkit info --json` (docs/json.md)."""


class OpenOptions(TypedDict, total=False):
    """The open options: keywords of every function that opens a disk."""

    parent: Optional[StrPath]
    """Use this file as the differencing disk's parent (--with-parent)."""
    strict: bool
    """Refuse bad checksums and an inconsistent batmap instead of reading with a warning."""
    ignore_parent_id: bool
    """Accept a parent whose unique id differs from the one the child records."""
    allow_absolute_parent: bool
    """Follow a parent's absolute locator that points outside the child's folder."""
    host_drive: HostDrive
    """Follow a host-drive stub to the device it names (see HostDrive)."""
    ignore_host_drive_identity: bool
    """Accept a host drive whose first and last MiB changed since it was linked."""


class ProgressEvent(TypedDict):
    """One progress event: the fields of a `--progress json` line (docs/json.md)."""

    schema: int
    task_id: int
    phase: str
    percent: int
    phase_percent: int
    phase_blocks_done: int
    phase_blocks_total: int
    phase_bytes_done: int
    phase_bytes_total: int
    block_index: Optional[int]
    lost: int
    final: bool
    result: Optional[str]


class MapRow(TypedDict, total=False):
    """One row of Disk.map(); `layer`, `file`, `file_offset` only for stored bytes."""

    start: int
    length: int
    kind: Literal["allocated", "parent", "zero"]
    layer: int
    file: str
    file_offset: int


class Measure(TypedDict):
    """What measure() returns: the fields of `measure --json`."""

    schema: int
    path: str
    target: Target
    format: Optional[Literal["vhd", "vhdx"]]
    source_size: int
    virtual_size: int
    required_bytes: int
    block_size: Optional[int]
    blocks_total: Optional[int]
    allocated_blocks: Optional[int]
    blocks_scanned: Optional[int]


__all__ = [
    "StrPath",
    "DiskType",
    "Target",
    "HostDrive",
    "Buffer",
    "Report",
    "Info",
    "OpenOptions",
    "ProgressEvent",
    "MapRow",
    "Measure",
]
