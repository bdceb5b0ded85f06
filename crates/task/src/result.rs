//! The `VMTaskResult` enumeration: how a finished task ended.

use std::fmt;

/// How a finished task ended, with the numeric values of the Virtual Server
/// `VMTaskResult` enumeration.
///
/// [`TaskHandle::result`](crate::TaskHandle::result) is `None` while the task runs and one of these
/// once it is complete.
///
/// ```
/// use vhdkit_task::VMTaskResult;
///
/// assert_eq!(VMTaskResult::DiskRelatedError.as_u32(), 4);
/// assert_eq!(VMTaskResult::from_u32(8), Some(VMTaskResult::ThreadCrashError));
/// assert_eq!(VMTaskResult::from_u32(9), None);
/// ```
///
/// With the `serde` feature it serializes as its [`name`](VMTaskResult::name) in
/// snake_case (`"disk_related_error"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[repr(u32)]
pub enum VMTaskResult {
    /// The operation completed successfully.
    Success = 0,
    /// The operation was cancelled before it completed.
    Cancelled = 1,
    /// An error no other value describes.
    UnexpectedError = 2,
    /// Memory (or another resource, such as a thread) could not be allocated.
    OutOfMemoryError = 3,
    /// Reading or writing a disk failed: I/O error, disk full, corrupt image.
    DiskRelatedError = 4,
    /// A saved state is incompatible (kept for numbering; disk operations never
    /// produce it).
    IncompatibleSavedStateError = 5,
    /// The operation timed out.
    TimeOutError = 6,
    /// An argument or a value found while working was not acceptable.
    IllegalValueError = 7,
    /// The worker thread crashed (in vhdkit: panicked).
    ThreadCrashError = 8,
}

impl VMTaskResult {
    /// Every value, in numeric order.
    pub const ALL: [VMTaskResult; 9] = [
        VMTaskResult::Success,
        VMTaskResult::Cancelled,
        VMTaskResult::UnexpectedError,
        VMTaskResult::OutOfMemoryError,
        VMTaskResult::DiskRelatedError,
        VMTaskResult::IncompatibleSavedStateError,
        VMTaskResult::TimeOutError,
        VMTaskResult::IllegalValueError,
        VMTaskResult::ThreadCrashError,
    ];

    /// The numeric value of the original enumeration (0..=8).
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The value with this number, or `None` if `value` is not in 0..=8.
    pub const fn from_u32(value: u32) -> Option<VMTaskResult> {
        Some(match value {
            0 => VMTaskResult::Success,
            1 => VMTaskResult::Cancelled,
            2 => VMTaskResult::UnexpectedError,
            3 => VMTaskResult::OutOfMemoryError,
            4 => VMTaskResult::DiskRelatedError,
            5 => VMTaskResult::IncompatibleSavedStateError,
            6 => VMTaskResult::TimeOutError,
            7 => VMTaskResult::IllegalValueError,
            8 => VMTaskResult::ThreadCrashError,
            _ => return None,
        })
    }

    /// The variant's name as in the original API (`"DiskRelatedError"`).
    pub const fn name(self) -> &'static str {
        match self {
            VMTaskResult::Success => "Success",
            VMTaskResult::Cancelled => "Cancelled",
            VMTaskResult::UnexpectedError => "UnexpectedError",
            VMTaskResult::OutOfMemoryError => "OutOfMemoryError",
            VMTaskResult::DiskRelatedError => "DiskRelatedError",
            VMTaskResult::IncompatibleSavedStateError => "IncompatibleSavedStateError",
            VMTaskResult::TimeOutError => "TimeOutError",
            VMTaskResult::IllegalValueError => "IllegalValueError",
            VMTaskResult::ThreadCrashError => "ThreadCrashError",
        }
    }

    /// True only for [`VMTaskResult::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, VMTaskResult::Success)
    }
}

/// Prints the variant's name ([`VMTaskResult::name`]).
impl fmt::Display for VMTaskResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<VMTaskResult> for u32 {
    fn from(value: VMTaskResult) -> u32 {
        value.as_u32()
    }
}

#[cfg(test)]
mod tests {
    use super::VMTaskResult;

    #[test]
    fn from_u32_of_as_u32_round_trips_every_value() {
        for (i, value) in VMTaskResult::ALL.into_iter().enumerate() {
            assert_eq!(value.as_u32() as usize, i);
            assert_eq!(VMTaskResult::from_u32(value.as_u32()), Some(value));
        }
    }

    #[test]
    fn from_u32_out_of_range_is_none() {
        assert_eq!(VMTaskResult::from_u32(9), None);
        assert_eq!(VMTaskResult::from_u32(u32::MAX), None);
    }

    #[test]
    fn display_prints_original_name() {
        assert_eq!(
            VMTaskResult::ThreadCrashError.to_string(),
            "ThreadCrashError"
        );
        assert_eq!(VMTaskResult::Success.to_string(), "Success");
    }
}
