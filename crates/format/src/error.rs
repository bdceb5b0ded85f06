//! The format crate's error type: every variant says what failed, in which file, in
//! which structure and at which offset, and maps to one HRESULT of the Virtual Server
//! API (see `hresult`).

use std::io;
use std::path::PathBuf;

use uuid::Uuid;

/// Result with the format crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong opening, reading, writing or creating a VHD.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed.
    #[error("{path}: {doing} at offset {offset:#x}: {source}", path = .path.display())]
    Io {
        /// File involved.
        path: PathBuf,
        /// What was being done, e.g. `reading the footer`.
        doing: &'static str,
        /// Byte offset of the access.
        offset: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file-level call (open, create, sync, rename) failed.
    #[error("{path}: {doing}: {source}", path = .path.display())]
    File {
        /// File involved.
        path: PathBuf,
        /// What was being done.
        doing: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not a VHD at all.
    #[error("{path}: not a VHD: {detail}", path = .path.display())]
    NotVhd {
        /// File involved.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A structure of the file is damaged.
    #[error("{path}: invalid {structure} at offset {offset:#x}: {detail}", path = .path.display())]
    Corrupt {
        /// File involved.
        path: PathBuf,
        /// The structure, e.g. `dynamic header`.
        structure: &'static str,
        /// Byte offset of the structure or field.
        offset: u64,
        /// What was found and what was expected.
        detail: String,
    },
    /// A valid VHD of a kind vhdkit does not handle.
    #[error("{path}: unsupported: {detail}", path = .path.display())]
    Unsupported {
        /// File involved.
        path: PathBuf,
        /// What is unsupported.
        detail: String,
    },
    /// The file does not exist.
    #[error("{path}: no such file", path = .path.display())]
    NotFound {
        /// File looked for.
        path: PathBuf,
    },
    /// A folder on the way to a file does not exist (a destination's folder), or a
    /// folder to search does not.
    #[error("{path}: no such directory", path = .path.display())]
    PathNotFound {
        /// The folder.
        path: PathBuf,
    },
    /// A differencing disk's parent could not be found.
    #[error("{child}: parent {name:?} not found (looked at: {tried}){refused}", child = .child.display(), tried = display_paths(.tried), refused = display_refused(.refused))]
    ParentNotFound {
        /// The differencing disk.
        child: PathBuf,
        /// The parent name the child records.
        name: String,
        /// Every path tried, in order.
        tried: Vec<PathBuf>,
        /// Paths the child names that the trust policy did not follow (absolute locators
        /// outside the child's folder tree).
        refused: Vec<PathBuf>,
    },
    /// The parent found is not the disk the child was made from. The message names the
    /// id the child records, never the id of the file found (an image must not learn
    /// another file's id through an error).
    #[error("{child}: {parent} is not the parent this disk was made from (it expects unique id {expected}; override: --ignore-parent-id)", child = .child.display(), parent = .parent.display())]
    ParentIdMismatch {
        /// The differencing disk.
        child: PathBuf,
        /// The parent file found.
        parent: PathBuf,
        /// Unique id the child records for its parent.
        expected: Uuid,
    },
    /// An operation would change the content or size of a disk that other disks name as
    /// their parent (they would read different bytes), or delete one (they would be
    /// orphaned). Refused before anything is written, unless forced.
    #[error("{path}: {} other disk(s) name a disk this would change as their parent: {detail} (override: --force)", .children.len(), path = .path.display())]
    HasChildren {
        /// The disk the operation was asked for.
        path: PathBuf,
        /// Every disk depending on what it would change.
        children: Vec<PathBuf>,
        /// Which disk each depends on, and what would become of it.
        detail: String,
    },
    /// A differencing chain leads back to a disk already in it.
    #[error("{path}: differencing chain loops: {again} appears twice", path = .path.display(), again = .again.display())]
    ChainLoop {
        /// The disk opened.
        path: PathBuf,
        /// The file met twice.
        again: PathBuf,
    },
    /// A differencing chain is deeper than allowed.
    #[error("{path}: differencing chain is deeper than {max} levels", path = .path.display())]
    ChainTooDeep {
        /// The disk opened.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// A host-drive stub's device is missing or is no longer the linked drive.
    #[error("{path}: host drive {device}: {detail}", path = .path.display(), device = .device.display())]
    HostDriveNotFound {
        /// The stub.
        path: PathBuf,
        /// The device it names.
        device: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The path is not a kind of file the operation opens (a FIFO, a socket, a directory,
    /// a device where none was asked for).
    #[error("{path}: is {what}; vhdkit opens only {accepted} here", path = .path.display())]
    WrongFileType {
        /// File involved.
        path: PathBuf,
        /// What it is, e.g. `a FIFO`.
        what: &'static str,
        /// What would have been accepted.
        accepted: &'static str,
    },
    /// The trust policy refused to follow a reference found inside an image (a host
    /// drive not allowed, a parent outside the child's folder). `docs/security.md`.
    #[error("{path}: {detail}", path = .path.display())]
    NotAllowed {
        /// The image holding the reference.
        path: PathBuf,
        /// What was refused and how to allow it.
        detail: String,
    },
    /// A write was asked of something read-only.
    #[error("{path}: read-only: {detail}", path = .path.display())]
    ReadOnly {
        /// File involved.
        path: PathBuf,
        /// Why it is read-only.
        detail: String,
    },
    /// The file is in use by another process (lock held).
    #[error("{path}: in use by another process", path = .path.display())]
    InUse {
        /// File involved.
        path: PathBuf,
    },
    /// The target of a create or convert already exists.
    #[error("{path}: already exists", path = .path.display())]
    AlreadyExists {
        /// The target.
        path: PathBuf,
    },
    /// A read or write outside the virtual disk.
    #[error("{path}: range {offset}+{len} is outside the {size}-byte disk", path = .path.display())]
    OutOfRange {
        /// The disk.
        path: PathBuf,
        /// Start of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Virtual size.
        size: u64,
    },
    /// A requested disk size below the minimum.
    #[error("size {size} is too small: {detail}")]
    SizeTooSmall {
        /// Requested size.
        size: u64,
        /// The rule.
        detail: String,
    },
    /// A requested disk size above the maximum.
    #[error("size {size} is too large: {detail}")]
    SizeTooLarge {
        /// Requested size.
        size: u64,
        /// The rule.
        detail: String,
    },
    /// The disk's type does not fit the operation.
    #[error("{path}: wrong disk type: {found}, {expected}", path = .path.display())]
    WrongDiskType {
        /// The disk.
        path: PathBuf,
        /// Its type.
        found: String,
        /// What the operation needs.
        expected: String,
    },
    /// A bad argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The operation was cancelled.
    #[error("cancelled")]
    Cancelled,
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "no candidate paths".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn display_refused(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return String::new();
    }
    format!(
        "; not followed, outside the child's folder: {} (name the parent with --with-parent, or allow with --allow-absolute-parent)",
        display_paths(paths)
    )
}

/// A field-less mirror of [`Error`] for callers that match on the kind. Serialized as
/// the variant's name in snake_case (`ParentNotFound` → `"parent_not_found"`), the
/// `kind` of the CLI's JSON error document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ErrorKind {
    Io,
    DiskFull,
    NotVhd,
    Corrupt,
    Unsupported,
    NotFound,
    PathNotFound,
    ParentNotFound,
    ParentIdMismatch,
    HasChildren,
    ChainLoop,
    ChainTooDeep,
    HostDriveNotFound,
    ReadOnly,
    WrongFileType,
    NotAllowed,
    InUse,
    AlreadyExists,
    OutOfRange,
    SizeTooSmall,
    SizeTooLarge,
    WrongDiskType,
    InvalidArgument,
    Cancelled,
}

impl Error {
    /// The kind of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } | Error::File { source, .. } => {
                if is_disk_full(source) {
                    ErrorKind::DiskFull
                } else {
                    ErrorKind::Io
                }
            }
            Error::NotVhd { .. } => ErrorKind::NotVhd,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::PathNotFound { .. } => ErrorKind::PathNotFound,
            Error::ParentNotFound { .. } => ErrorKind::ParentNotFound,
            Error::ParentIdMismatch { .. } => ErrorKind::ParentIdMismatch,
            Error::HasChildren { .. } => ErrorKind::HasChildren,
            Error::ChainLoop { .. } => ErrorKind::ChainLoop,
            Error::ChainTooDeep { .. } => ErrorKind::ChainTooDeep,
            Error::HostDriveNotFound { .. } => ErrorKind::HostDriveNotFound,
            Error::ReadOnly { .. } => ErrorKind::ReadOnly,
            Error::WrongFileType { .. } => ErrorKind::WrongFileType,
            Error::NotAllowed { .. } => ErrorKind::NotAllowed,
            Error::InUse { .. } => ErrorKind::InUse,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::OutOfRange { .. } => ErrorKind::OutOfRange,
            Error::SizeTooSmall { .. } => ErrorKind::SizeTooSmall,
            Error::SizeTooLarge { .. } => ErrorKind::SizeTooLarge,
            Error::WrongDiskType { .. } => ErrorKind::WrongDiskType,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Cancelled => ErrorKind::Cancelled,
        }
    }

    /// An I/O error with its context.
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        doing: &'static str,
        offset: u64,
        source: io::Error,
    ) -> Error {
        Error::Io {
            path: path.into(),
            doing,
            offset,
            source,
        }
    }

    /// A file-level error with its context; a missing file becomes [`Error::NotFound`].
    pub(crate) fn file(path: impl Into<PathBuf>, doing: &'static str, source: io::Error) -> Error {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::NotFound => Error::NotFound { path },
            io::ErrorKind::AlreadyExists => Error::AlreadyExists { path },
            _ => Error::File {
                path,
                doing,
                source,
            },
        }
    }

    /// Prefixes the detail of a [`Error::Corrupt`] with the field it concerns.
    pub(crate) fn with_field(self, field: &str) -> Error {
        match self {
            Error::Corrupt {
                path,
                structure,
                offset,
                detail,
            } => Error::Corrupt {
                path,
                structure,
                offset,
                detail: format!("{field}: {detail}"),
            },
            other => other,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        structure: &'static str,
        offset: u64,
        detail: impl Into<String>,
    ) -> Error {
        Error::Corrupt {
            path: path.into(),
            structure,
            offset,
            detail: detail.into(),
        }
    }
}

/// Whether an OS error means the volume is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
}

impl From<vhdkit_task::Cancelled> for Error {
    fn from(_: vhdkit_task::Cancelled) -> Error {
        Error::Cancelled
    }
}

impl Error {
    /// The HRESULT of the Virtual Server API for this error (docs/api.md, "HRESULTs").
    pub fn hresult(&self) -> vhdkit_task::HResult {
        use vhdkit_task::HResult as H;
        match self {
            Error::Io { source, .. } | Error::File { source, .. } => io_hresult(source),
            Error::NotVhd { .. } | Error::Corrupt { .. } => H::VM_E_INVALID_HD_FILE,
            Error::Unsupported { .. } => H::VM_E_HD_IMAGE_OPEN_FAIL,
            Error::NotFound { .. } => H::E_FILE_NOT_FOUND,
            Error::PathNotFound { .. } => H::E_PATH_NOT_FOUND,
            Error::ParentNotFound { .. } => H::VM_E_PARENT_PATH_NOT_FOUND,
            Error::ParentIdMismatch { .. } => H::VM_E_PARENT_CHILD_ID_MISMATCH,
            Error::ChainLoop { .. } | Error::ChainTooDeep { .. } => H::VM_E_INVALID_HD_FILE,
            Error::HostDriveNotFound { .. } => H::VM_E_HOST_DRIVE_NOT_FOUND,
            Error::ReadOnly { .. } => H::VM_E_FILE_READ_ONLY,
            Error::InUse { .. } | Error::HasChildren { .. } => H::E_SHARING_VIOLATION,
            Error::WrongFileType { .. } => H::VM_E_HD_IMAGE_OPEN_FAIL,
            Error::NotAllowed { .. } => H::E_ACCESSDENIED,
            Error::AlreadyExists { .. } => H::E_ALREADY_EXISTS,
            Error::OutOfRange { .. } | Error::InvalidArgument(_) => H::E_INVALIDARG,
            Error::SizeTooSmall { .. } => H::VM_E_IMAGE_SIZE_TOO_SMALL,
            Error::SizeTooLarge { .. } => H::VM_E_IMAGE_SIZE_TOO_LARGE,
            Error::WrongDiskType { .. } => H::VM_E_WRONG_HD_IMAGE_TYPE,
            Error::Cancelled => H::E_ABORT,
        }
    }
}

fn io_hresult(e: &io::Error) -> vhdkit_task::HResult {
    use vhdkit_task::HResult as H;
    if is_disk_full(e) {
        return H::E_DISK_FULL;
    }
    match e.kind() {
        io::ErrorKind::FileTooLarge => H::VM_E_FILE_TOO_LARGE_FOR_VOLUME, // EFBIG
        io::ErrorKind::ReadOnlyFilesystem => H::VM_E_FILE_READ_ONLY,      // EROFS
        io::ErrorKind::NotFound => H::E_FILE_NOT_FOUND,
        io::ErrorKind::PermissionDenied => H::VM_E_FILE_READ_ONLY,
        io::ErrorKind::OutOfMemory => H::E_OUTOFMEMORY,
        _ => H::VM_E_HD_IMAGE_ACCESS,
    }
}

impl vhdkit_task::TaskError for Error {
    fn hresult(&self) -> vhdkit_task::HResult {
        Error::hresult(self)
    }

    fn task_result(&self) -> vhdkit_task::VMTaskResult {
        use vhdkit_task::VMTaskResult as R;
        match self.kind() {
            ErrorKind::Cancelled => R::Cancelled,
            ErrorKind::Io | ErrorKind::DiskFull => R::DiskRelatedError,
            ErrorKind::OutOfRange
            | ErrorKind::InvalidArgument
            | ErrorKind::SizeTooSmall
            | ErrorKind::SizeTooLarge
            | ErrorKind::WrongDiskType
            | ErrorKind::AlreadyExists
            | ErrorKind::PathNotFound
            | ErrorKind::ReadOnly => R::IllegalValueError,
            _ => R::UnexpectedError,
        }
    }

    fn is_cancelled(&self) -> bool {
        matches!(self, Error::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhdkit_task::HResult;

    #[test]
    fn enospc_maps_to_disk_full() {
        let e = Error::io(
            "/x",
            "writing",
            0,
            io::Error::from(io::ErrorKind::StorageFull),
        );
        assert_eq!(e.kind(), ErrorKind::DiskFull);
        assert_eq!(e.hresult(), HResult::E_DISK_FULL);
    }

    #[test]
    fn every_kind_has_a_failure_hresult() {
        let samples = [
            Error::NotFound { path: "/x".into() },
            Error::ParentNotFound {
                child: "/c".into(),
                name: "p".into(),
                tried: vec![],
                refused: vec![],
            },
            Error::Cancelled,
            Error::InvalidArgument("x".into()),
        ];
        for e in samples {
            assert!(e.hresult().is_failure(), "{e}");
        }
        assert_eq!(Error::Cancelled.hresult(), HResult::E_ABORT);
    }
}
