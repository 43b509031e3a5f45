//! Wall-clock times for the outside world: findings carry the kernel's `CLOCK_BOOTTIME`, while
//! audit records and alerts need RFC 3339 UTC timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::boottime_ns;

/// The wall-clock time of a `CLOCK_BOOTTIME` instant in the past, as of now (a wall clock set
/// since then shifts it).
pub fn from_boottime(at_ns: u64) -> SystemTime {
    let ago = Duration::from_nanos(boottime_ns().saturating_sub(at_ns));
    SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH)
}

/// `time` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let of_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm,
/// restricted to dates from 1970 on).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_767_225_599)), "2025-12-31T23:59:59.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(4_107_542_400)), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn a_boottime_instant_maps_to_the_past() {
        let now = SystemTime::now();
        let then = from_boottime(boottime_ns() - 2_000_000_000);
        let ago = now.duration_since(then).unwrap();
        assert!(ago >= Duration::from_millis(1900) && ago < Duration::from_secs(3), "{ago:?}");
    }
}
