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
    iso_text(ms).as_str().to_owned()
}

/// An instant (unix ms) that serializes as [`iso_ms`]'s text, written from a buffer on the
/// stack: a list answer's timestamps need no `String` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoMs(pub i64);

impl serde::Serialize for IsoMs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(iso_text(self.0).as_str())
    }
}

impl std::fmt::Display for IsoMs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(iso_text(self.0).as_str())
    }
}

fn iso_text(ms: i64) -> Digits {
    let t = from_ms(ms);
    let mut s = Digits::default();
    year(&mut s, t.year());
    for (sep, v) in [
        (b'-', u8::from(t.month())),
        (b'-', t.day()),
        (b'T', t.hour()),
        (b':', t.minute()),
        (b':', t.second()),
    ] {
        s.push(sep);
        two(&mut s, v);
    }
    s.push(b'.');
    let milli = t.millisecond();
    s.push(b'0' + (milli / 100) as u8);
    two(&mut s, (milli % 100) as u8);
    s.push(b'Z');
    s
}

/// ASCII written straight into a buffer on the stack: every timestamp of every list answer
/// goes through it, and `format!` was a twentieth of a list's time (bench/reads.sh). The
/// longest text is an ISO instant with a five-character year (`-9999`): 25 bytes.
#[derive(Default)]
struct Digits {
    buf: [u8; 32],
    len: usize,
}

impl Digits {
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever pushed.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

fn two(s: &mut Digits, v: u8) {
    s.push(b'0' + v / 10 % 10);
    s.push(b'0' + v % 10);
}

fn year(s: &mut Digits, y: i32) {
    match u16::try_from(y) {
        Ok(y) if y <= 9999 => {
            two(s, (y / 100) as u8);
            two(s, (y % 100) as u8);
        }
        _ => format!("{y:04}").bytes().for_each(|b| s.push(b)),
    }
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
    let mut s = Digits::default();
    year(&mut s, t.year());
    for v in [
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    ] {
        two(&mut s, v);
    }
    s.as_str().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let ms = 1_716_195_600_123;
        let s = iso_ms(ms);
        assert_eq!(s, "2024-05-20T09:00:00.123Z");
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_716_195_600_007), "2024-05-20T09:00:00.007Z");
        assert_eq!(iso_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            compact(1_716_195_600_123, UtcOffset::from_hms(9, 0, 0).unwrap()),
            "20240520180000"
        );
        assert_eq!(parse_iso(&s), Some(ms));
        // The same text serialized without a string, and for the earliest year there is.
        assert_eq!(
            serde_json::to_string(&IsoMs(ms)).unwrap(),
            "\"2024-05-20T09:00:00.123Z\""
        );
        assert_eq!(IsoMs(ms).to_string(), s);
        assert_eq!(iso_ms(-377_705_116_800_000), "-9999-01-01T00:00:00.000Z");
    }

    #[test]
    fn compact_in_offset() {
        let kst = UtcOffset::from_hms(9, 0, 0).unwrap();
        assert_eq!(compact(1_716_195_600_123, kst), "20240520180000");
    }
}
