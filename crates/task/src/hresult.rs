//! COM-style `HRESULT` codes, as reported by [`TaskHandle::error`](crate::TaskHandle::error).
//!
//! The values are those listed in the Virtual Server disk API notes
//! (`docs/api.md`, "HRESULTs"): the standard COM codes, the Win32-derived file
//! system codes, and the Virtual Server `VM_E_*` codes (facility `0xA004xxxx`).

use std::fmt;

/// A 32-bit COM `HRESULT`.
///
/// The high bit is the severity: clear for success codes ([`HResult::S_OK`],
/// [`HResult::S_FALSE`]), set for failures. The wrapped value is the unsigned bit
/// pattern, as printed by Windows tools (`0x80004005`); [`HResult::as_i32`] gives the
/// signed view that COM signatures use.
///
/// `Display` prints the code as `0x%08X`; `Debug` adds the symbolic name when the code
/// is one of the named constants.
///
/// ```
/// use vhdkit_task::HResult;
///
/// assert_eq!(HResult::E_ABORT.to_string(), "0x80004004");
/// assert_eq!(HResult::E_ABORT.name(), Some("E_ABORT"));
/// assert!(HResult::S_FALSE.is_success());
/// assert!(HResult::VM_E_INVALID_HD_FILE.is_failure());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HResult(pub u32);

/// Defines the named constants, the name lookup and the table of known codes from one
/// list, so the three can never drift apart. A duplicated value is an
/// `unreachable_patterns` warning (an error under `-D warnings`).
macro_rules! hresults {
    ($( $(#[$doc:meta])* $name:ident = $value:literal; )*) => {
        impl HResult {
            $( $(#[$doc])* pub const $name: HResult = HResult($value); )*

            /// Every named code this crate knows, with its symbolic name, in
            /// declaration order (standard, Win32-derived, then Virtual Server codes).
            pub const KNOWN: &'static [(HResult, &'static str)] =
                &[ $( (HResult($value), stringify!($name)), )* ];

            /// The symbolic name of this code (`"E_FAIL"`), or `None` if it is not one
            /// of the named constants.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(stringify!($name)), )*
                    _ => None,
                }
            }
        }
    };
}

hresults! {
    /// Success.
    S_OK = 0x0000_0000;
    /// Success, with a "false" or partial meaning.
    S_FALSE = 0x0000_0001;
    /// Operation aborted. vhdkit: the task was cancelled.
    E_ABORT = 0x8000_4004;
    /// Unspecified failure. vhdkit: also a worker that panicked, and a `cancel` on a
    /// task that is not cancelable.
    E_FAIL = 0x8000_4005;
    /// Invalid pointer.
    E_POINTER = 0x8000_4003;
    /// Ran out of memory (or another resource, such as threads).
    E_OUTOFMEMORY = 0x8007_000E;
    /// One or more arguments are invalid.
    E_INVALIDARG = 0x8007_0057;
    /// An exception occurred (automation).
    DISP_E_EXCEPTION = 0x8002_0009;
    /// `HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)`: the file cannot be found.
    E_FILE_NOT_FOUND = 0x8007_0002;
    /// `HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED)`: access is denied. vhdkit: the trust
    /// policy refused to follow a reference found inside an image.
    E_ACCESSDENIED = 0x8007_0005;
    /// `HRESULT_FROM_WIN32(ERROR_PATH_NOT_FOUND)`: the path cannot be found.
    E_PATH_NOT_FOUND = 0x8007_0003;
    /// `HRESULT_FROM_WIN32(ERROR_SHARING_VIOLATION)`: the file is in use.
    E_SHARING_VIOLATION = 0x8007_0020;
    /// `HRESULT_FROM_WIN32(ERROR_BUFFER_OVERFLOW)`: the file name is too long.
    E_BUFFER_OVERFLOW = 0x8007_006F;
    /// `HRESULT_FROM_WIN32(ERROR_DISK_FULL)`: there is not enough space on the disk.
    E_DISK_FULL = 0x8007_0070;
    /// `HRESULT_FROM_WIN32(ERROR_INVALID_NAME)`: the file name syntax is incorrect.
    E_INVALID_NAME = 0x8007_007B;
    /// `HRESULT_FROM_WIN32(ERROR_BAD_PATHNAME)`: the path is invalid.
    E_BAD_PATHNAME = 0x8007_00A1;
    /// `HRESULT_FROM_WIN32(ERROR_ALREADY_EXISTS)`: the target file already exists.
    E_ALREADY_EXISTS = 0x8007_00B7;
    /// A differencing disk's parent cannot be found.
    VM_E_PARENT_PATH_NOT_FOUND = 0xA004_0677;
    /// The host file system cannot hold a file this large.
    VM_E_FILE_TOO_LARGE_FOR_VOLUME = 0xA004_0679;
    /// The target must not be read-only.
    VM_E_FILE_READ_ONLY = 0xA004_067A;
    /// The disk type is not valid for the operation.
    VM_E_WRONG_HD_IMAGE_TYPE = 0xA004_067B;
    /// The image could not be opened.
    VM_E_HD_IMAGE_OPEN_FAIL = 0xA004_067C;
    /// The linked host drive is gone.
    VM_E_HOST_DRIVE_NOT_FOUND = 0xA004_067E;
    /// Unknown error accessing the image.
    VM_E_HD_IMAGE_ACCESS = 0xA004_0681;
    /// The file is not a valid disk image.
    VM_E_INVALID_HD_FILE = 0xA004_0682;
    /// The requested size is over the 2040 GiB maximum.
    VM_E_IMAGE_SIZE_TOO_LARGE = 0xA004_0683;
    /// The requested size is under the 3 MiB minimum.
    VM_E_IMAGE_SIZE_TOO_SMALL = 0xA004_0684;
    /// The parent is not the disk the child was made from.
    VM_E_PARENT_CHILD_ID_MISMATCH = 0xA004_0685;
    /// The application is shutting down; no new operations are accepted.
    VM_E_APP_SHUTTING_DOWN = 0xA004_0209;
    /// The operation timed out.
    VM_E_TIMED_OUT = 0xA004_0202;
}

impl HResult {
    /// `HRESULT_FROM_WIN32`: maps a Win32 error code into facility 7 (`0x8007xxxx`).
    ///
    /// Zero maps to [`HResult::S_OK`]; a value that already has the severity bit set
    /// is returned unchanged, as the Windows macro does.
    ///
    /// ```
    /// use vhdkit_task::HResult;
    /// assert_eq!(HResult::from_win32(112), HResult::E_DISK_FULL);
    /// ```
    pub const fn from_win32(code: u32) -> HResult {
        if code == 0 || code & 0x8000_0000 != 0 {
            HResult(code)
        } else {
            HResult((code & 0xFFFF) | 0x8007_0000)
        }
    }

    /// True for success codes (severity bit clear), including [`HResult::S_FALSE`].
    pub const fn is_success(self) -> bool {
        self.0 & 0x8000_0000 == 0
    }

    /// True for failure codes (severity bit set).
    pub const fn is_failure(self) -> bool {
        !self.is_success()
    }

    /// The signed 32-bit view of the code, as COM signatures declare `HRESULT`.
    pub const fn as_i32(self) -> i32 {
        self.0 as i32
    }
}

impl fmt::Display for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08X}", self.0)
    }
}

impl fmt::Debug for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "HResult(0x{:08X} {name})", self.0),
            None => write!(f, "HResult(0x{:08X})", self.0),
        }
    }
}

/// An `HResult` is an error value in its own right: [`TaskHandle::cancel`] returns one,
/// so `task.cancel()?` works in a function returning `Box<dyn Error>` (or any error type
/// with a `From<HResult>`). Its message is the `Display` form, `0x80004005`; the
/// [`name`](HResult::name) says which code that is.
///
/// ```
/// use vhdkit_task::{HResult, Task};
///
/// fn stop(task: &Task<(), std::io::Error>) -> Result<(), Box<dyn std::error::Error>> {
///     task.cancel()?; // Err(E_FAIL) for a task that is not cancelable
///     Ok(())
/// }
/// let task: Task<(), std::io::Error> = Task::spawn("Counting", false, |_| Ok(()));
/// let refused = stop(&task).expect_err("not cancelable");
/// assert_eq!(refused.downcast_ref::<HResult>(), Some(&HResult::E_FAIL));
/// # task.join().expect("the worker succeeds");
/// ```
///
/// [`TaskHandle::cancel`]: crate::TaskHandle::cancel
impl std::error::Error for HResult {}

impl From<HResult> for u32 {
    fn from(value: HResult) -> u32 {
        value.0
    }
}

impl From<u32> for HResult {
    fn from(value: u32) -> HResult {
        HResult(value)
    }
}

#[cfg(test)]
mod tests {
    use super::HResult;

    #[test]
    fn display_of_e_fail_is_zero_padded_upper_hex() {
        assert_eq!(HResult::E_FAIL.to_string(), "0x80004005");
        assert_eq!(HResult::S_OK.to_string(), "0x00000000");
    }

    #[test]
    fn name_of_every_known_code_round_trips() {
        for &(code, name) in HResult::KNOWN {
            assert_eq!(code.name(), Some(name));
        }
        assert_eq!(HResult::KNOWN.len(), 30);
    }

    #[test]
    fn name_of_unknown_code_is_none() {
        assert_eq!(HResult(0x8000_FFFF).name(), None);
    }

    #[test]
    fn documented_values_match_the_api_table() {
        assert_eq!(HResult::E_ABORT.0, 0x8000_4004);
        assert_eq!(HResult::VM_E_PARENT_PATH_NOT_FOUND.0, 0xA004_0677);
        assert_eq!(HResult::VM_E_TIMED_OUT.0, 0xA004_0202);
        assert_eq!(HResult::E_ALREADY_EXISTS.0, 0x8007_00B7);
    }

    #[test]
    fn severity_bit_decides_success_and_failure() {
        assert!(HResult::S_OK.is_success());
        assert!(HResult::S_FALSE.is_success());
        assert!(HResult::E_ABORT.is_failure());
        assert!(HResult::VM_E_APP_SHUTTING_DOWN.is_failure());
        assert!(!HResult::E_FAIL.is_success());
    }

    #[test]
    fn from_win32_maps_into_facility_seven() {
        assert_eq!(HResult::from_win32(0), HResult::S_OK);
        assert_eq!(HResult::from_win32(2), HResult::E_FILE_NOT_FOUND);
        assert_eq!(HResult::from_win32(183), HResult::E_ALREADY_EXISTS);
        assert_eq!(HResult::from_win32(0x8000_4005), HResult::E_FAIL);
    }

    #[test]
    fn hresult_is_an_error_that_prints_its_code() {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(HResult::E_ABORT);
        assert_eq!(boxed.to_string(), "0x80004004");
        assert!(boxed.source().is_none());
    }

    #[test]
    fn debug_includes_symbolic_name() {
        assert_eq!(
            format!("{:?}", HResult::E_ABORT),
            "HResult(0x80004004 E_ABORT)"
        );
        assert_eq!(format!("{:?}", HResult(7)), "HResult(0x00000007)");
    }
}
