"""vhdkit: VHD (conectix) virtual disks — fixed, dynamic, differencing, host-drive —
and the Virtual Server 2005 disk API for scripts.

    import vhdkit

    vhdkit.create("base.vhd", size=64 << 20)
    with vhdkit.open("base.vhd", writable=True) as disk:
        disk.write(0, b"hello")
    vhdkit.create("child.vhd", parent="base.vhd")
    task = vhdkit.convert("child.vhd", "flat.vhd", type="fixed")
    for event in task.events():
        print(event["percent"])
    report = task.join()

Functions that open a disk take its open options as keywords (`parent`, `strict`,
`ignore_parent_id`, `allow_absolute_parent`, `host_drive`,
`ignore_host_drive_identity`). The operations return a `Task` at once; failures raise
`VhdError` (or a subclass by kind) with the Virtual Server HRESULT. Reads, writes and
waits release the GIL.
"""

import atexit as _atexit

from . import _vhdkit
from ._errors import (
    AlreadyExists,
    Cancelled,
    Corrupt,
    DiskFull,
    HasChildren,
    InUse,
    InvalidArgument,
    NotAllowed,
    NotAVhd,
    NotFound,
    ParentIdMismatch,
    ParentNotFound,
    ReadOnly,
    Unsupported,
    VhdError,
    WrongDiskType,
)
from ._typing import (
    Buffer,
    DiskType,
    HostDrive,
    Info,
    MapRow,
    Measure,
    OpenOptions,
    ProgressEvent,
    Report,
    StrPath,
    Target,
)
from ._vhdkit import (
    Disk,
    Events,
    Problem,
    Task,
    __version__,
    check,
    compact,
    convert,
    create,
    info,
    measure,
    merge,
    merge_to,
    open,
    repair,
    resize,
)
from ._vhdkit import *  # noqa: F401,F403  (the HRESULT constants: E_ABORT, ...)

for _cls in (
    VhdError,
    NotAVhd,
    Corrupt,
    Unsupported,
    NotFound,
    AlreadyExists,
    ParentNotFound,
    ParentIdMismatch,
    InUse,
    HasChildren,
    ReadOnly,
    NotAllowed,
    InvalidArgument,
    WrongDiskType,
    DiskFull,
    Cancelled,
):
    _cls.__module__ = __name__

# A script that ends while tasks run: cancel them and wait until they have stopped.
_atexit.register(_vhdkit._shutdown)
