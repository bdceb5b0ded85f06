"""The exceptions vhdkit raises: `VhdError` and its subclasses by kind.

Each carries the HRESULT of the Virtual Server API (`hresult`, an int: the unsigned
32-bit pattern, e.g. 0x80070002), the file the error concerns (`path`, or None), the
library's error kind in snake_case (`kind`, e.g. "not_found", as `"kind"` in the JSON
errors of the command line) and the message.
"""

from typing import Iterable, Optional

E_FAIL = 0x80004005


class VhdError(Exception):
    """A failure reported by vhdkit.

    Attributes:
        message: what went wrong, naming the file, structure and offset where known.
        hresult: the Virtual Server HRESULT (unsigned int, 0x80004005 E_FAIL by default).
        path: the file the error concerns, or None.
        kind: the kind in snake_case ("in_use", "not_vhd", "cancelled", ...).
        children: for kind "has_children", the disks that depend on what the refused
            operation would change; else empty.
    """

    hresult: int = E_FAIL
    path: Optional[str] = None
    kind: str = "other"

    def __init__(
        self,
        message: str = "",
        *,
        hresult: Optional[int] = None,
        path: Optional[str] = None,
        kind: Optional[str] = None,
        children: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if hresult is not None:
            self.hresult = hresult
        self.path = path
        if kind is not None:
            self.kind = kind
        self.children = list(children)


class NotAVhd(VhdError):
    """The file is not a VHD (VM_E_INVALID_HD_FILE)."""


class Corrupt(VhdError):
    """A structure of the file is damaged, or its chain loops or is too deep
    (VM_E_INVALID_HD_FILE)."""


class Unsupported(VhdError):
    """A valid VHD of a kind vhdkit does not handle, or a path that is not a kind of
    file vhdkit opens (VM_E_HD_IMAGE_OPEN_FAIL)."""


class NotFound(VhdError, FileNotFoundError):
    """The file (E_FILE_NOT_FOUND) or a folder on its way (E_PATH_NOT_FOUND) does not
    exist. Also a FileNotFoundError."""


class AlreadyExists(VhdError, FileExistsError):
    """The destination of a create, convert or merge-to exists (E_ALREADY_EXISTS). Also
    a FileExistsError."""


class ParentNotFound(VhdError):
    """A differencing disk's parent cannot be found (VM_E_PARENT_PATH_NOT_FOUND); `path`
    is the child."""


class ParentIdMismatch(VhdError):
    """The parent found is not the disk the child was made from
    (VM_E_PARENT_CHILD_ID_MISMATCH); `path` is the child."""


class InUse(VhdError):
    """The file is in use: another writer holds its lock (E_SHARING_VIOLATION)."""


class HasChildren(InUse):
    """Other disks name a disk the operation would change as their parent
    (E_SHARING_VIOLATION); `children` lists them. Refused before anything is written;
    `force=True` overrides."""


class ReadOnly(VhdError):
    """A write to something read-only, e.g. a disk opened without `writable=True`
    (VM_E_FILE_READ_ONLY)."""


class NotAllowed(VhdError, PermissionError):
    """The trust policy refused a reference found inside an image: a parent outside the
    child's folder, a host drive (E_ACCESSDENIED). Also a PermissionError."""


class InvalidArgument(VhdError, ValueError):
    """A bad argument: a size out of range (VM_E_IMAGE_SIZE_TOO_SMALL / _TOO_LARGE), a
    range outside the disk or an option that does not apply (E_INVALIDARG). Also a
    ValueError."""


class WrongDiskType(VhdError):
    """The disk's type does not fit the operation, e.g. merging a dynamic disk
    (VM_E_WRONG_HD_IMAGE_TYPE)."""


class DiskFull(VhdError):
    """The volume is full (E_DISK_FULL)."""


class Cancelled(VhdError):
    """The task was cancelled (E_ABORT): it stopped in a consistent state, a new file
    never appeared."""


# The class of each library error kind (vhdkit_format::ErrorKind in snake_case); kinds
# not listed raise VhdError itself. The extension module reads this table.
CLASS_OF_KIND = {
    "not_vhd": NotAVhd,
    "corrupt": Corrupt,
    "chain_loop": Corrupt,
    "chain_too_deep": Corrupt,
    "unsupported": Unsupported,
    "wrong_file_type": Unsupported,
    "not_found": NotFound,
    "path_not_found": NotFound,
    "already_exists": AlreadyExists,
    "parent_not_found": ParentNotFound,
    "parent_id_mismatch": ParentIdMismatch,
    "in_use": InUse,
    "has_children": HasChildren,
    "read_only": ReadOnly,
    "not_allowed": NotAllowed,
    "invalid_argument": InvalidArgument,
    "out_of_range": InvalidArgument,
    "size_too_small": InvalidArgument,
    "size_too_large": InvalidArgument,
    "wrong_disk_type": WrongDiskType,
    "disk_full": DiskFull,
    "cancelled": Cancelled,
}

__all__ = [
    "VhdError",
    "NotAVhd",
    "Corrupt",
    "Unsupported",
    "NotFound",
    "AlreadyExists",
    "ParentNotFound",
    "ParentIdMismatch",
    "InUse",
    "HasChildren",
    "ReadOnly",
    "NotAllowed",
    "InvalidArgument",
    "WrongDiskType",
    "DiskFull",
    "Cancelled",
]
