//! Certificate times (RFC 5280 §4.1.2.5): UTCTime through 2049, GeneralizedTime from 2050.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::asn1::{GeneralizedTime, UtcTime};
use der::DateTime;
use x509_cert::time::Time;

use crate::CaError;

/// Drops sub-second precision: certificates carry whole seconds, and the times we report
/// back must equal the ones encoded.
pub(crate) fn whole_seconds(time: SystemTime) -> Result<SystemTime, CaError> {
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CaError::TimeOutOfRange("before 1970".into()))?;
    Ok(UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs()))
}

/// Encodes `time` (truncated to whole seconds) as RFC 5280 requires: UTCTime for years
/// before 2050, GeneralizedTime after.
pub(crate) fn x509_time(time: SystemTime) -> Result<Time, CaError> {
    let since_epoch = whole_seconds(time)?
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CaError::TimeOutOfRange("before 1970".into()))?;
    let date_time = DateTime::from_unix_duration(since_epoch)
        .map_err(|e| CaError::TimeOutOfRange(e.to_string()))?;
    if date_time.year() < 2050 {
        let utc = UtcTime::from_date_time(date_time)
            .map_err(|e| CaError::TimeOutOfRange(e.to_string()))?;
        Ok(Time::UtcTime(utc))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(
            date_time,
        )))
    }
}

/// `time + days` as a calendar-free duration (days of 86400 seconds).
pub(crate) fn add_days(time: SystemTime, days: u32) -> Result<SystemTime, CaError> {
    time.checked_add(Duration::from_secs(u64::from(days) * 86_400))
        .ok_or_else(|| CaError::TimeOutOfRange(format!("now + {days} days")))
}

/// `time + months` in calendar months (UTC), the day of month clamped to the target month's
/// length (Jan 31 + 1 month = Feb 28/29).
pub(crate) fn add_months(time: SystemTime, months: u32) -> Result<SystemTime, CaError> {
    let out_of_range = || CaError::TimeOutOfRange(format!("now + {months} months"));
    let start = ::time::OffsetDateTime::from(time);
    let month_index =
        i64::from(start.year()) * 12 + i64::from(u8::from(start.month())) - 1 + i64::from(months);
    let year = i32::try_from(month_index.div_euclid(12)).map_err(|_| out_of_range())?;
    let month = u8::try_from(month_index.rem_euclid(12) + 1)
        .ok()
        .and_then(|m| ::time::Month::try_from(m).ok())
        .ok_or_else(out_of_range)?;
    let day = start.day().min(month.length(year));
    let date = ::time::Date::from_calendar_date(year, month, day).map_err(|_| out_of_range())?;
    Ok(SystemTime::from(start.replace_date(date)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_before_2050_generalized_after() {
        let before = UNIX_EPOCH + Duration::from_secs(2_524_607_999); // 2049-12-31T23:59:59Z
        assert!(matches!(x509_time(before), Ok(Time::UtcTime(_))));
        let after = UNIX_EPOCH + Duration::from_secs(2_524_608_000); // 2050-01-01T00:00:00Z
        assert!(matches!(x509_time(after), Ok(Time::GeneralTime(_))));
    }

    #[test]
    fn months_are_calendar_months() {
        let jan_31 = UNIX_EPOCH + Duration::from_secs(1_706_659_200); // 2024-01-31T00:00:00Z
        let feb_29 = UNIX_EPOCH + Duration::from_secs(1_709_164_800); // 2024-02-29T00:00:00Z
        assert_eq!(add_months(jan_31, 1).ok(), Some(feb_29));
        let jan_31_2025 = UNIX_EPOCH + Duration::from_secs(1_738_281_600);
        assert_eq!(add_months(jan_31, 12).ok(), Some(jan_31_2025));
    }
}
