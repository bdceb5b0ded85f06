//! VHD timestamps: seconds since 2000-01-01 00:00:00 UTC, in a `u32`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds between the Unix epoch and the VHD epoch (2000-01-01 UTC).
pub const VHD_EPOCH_UNIX: u64 = 946_684_800;

/// A VHD timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VhdTime(pub u32);

impl VhdTime {
    /// The current time, clamped into the representable range.
    pub fn now() -> VhdTime {
        VhdTime::from_system_time(SystemTime::now())
    }

    /// Converts a system time, clamping to 2000-01-01 … 2136-02-07.
    pub fn from_system_time(t: SystemTime) -> VhdTime {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .saturating_sub(VHD_EPOCH_UNIX);
        VhdTime(u32::try_from(secs).unwrap_or(u32::MAX))
    }

    /// The system time this timestamp stands for.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(VHD_EPOCH_UNIX + u64::from(self.0))
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> u64 {
        VHD_EPOCH_UNIX + u64::from(self.0)
    }

    /// RFC 3339 rendering in UTC, e.g. `2012-01-05T16:23:53Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.unix_seconds();
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's civil algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_of_windows7_vector_renders_as_utc() {
        assert_eq!(VhdTime(0x1698_8B19).to_rfc3339(), "2012-01-05T16:23:53Z");
    }

    #[test]
    fn timestamp_zero_is_the_vhd_epoch() {
        assert_eq!(VhdTime(0).to_rfc3339(), "2000-01-01T00:00:00Z");
    }

    #[test]
    fn timestamp_before_2000_clamps_to_zero() {
        assert_eq!(VhdTime::from_system_time(UNIX_EPOCH), VhdTime(0));
    }
}
