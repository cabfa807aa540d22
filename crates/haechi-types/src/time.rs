//! Time as Haechi stores it (unix milliseconds, UTC) and the formats the families print.

use time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

/// Milliseconds since the unix epoch, UTC. The store keeps every instant in this form.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// ISO 8601 UTC with milliseconds (`2024-05-20T09:00:00.000Z`), the vault's and admin API's form.
pub fn iso_ms(ms: i64) -> String {
    let t = from_ms(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses ISO 8601 / RFC 3339 into unix milliseconds.
pub fn parse_iso(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// `YYYYMMDDHHMMSS` in the given offset (OPMATE's date form).
pub fn compact(ms: i64, offset: UtcOffset) -> String {
    let t = from_ms(ms).to_offset(offset);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let ms = 1_716_195_600_123;
        let s = iso_ms(ms);
        assert_eq!(s, "2024-05-20T09:00:00.123Z");
        assert_eq!(parse_iso(&s), Some(ms));
    }

    #[test]
    fn compact_in_offset() {
        let kst = UtcOffset::from_hms(9, 0, 0).unwrap();
        assert_eq!(compact(1_716_195_600_123, kst), "20240520180000");
    }
}
