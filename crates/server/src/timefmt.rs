//! Time formatting for replies (RFC 3339, UTC).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix milliseconds as RFC 3339 (e.g. `2026-11-21T10:35:00.123Z`).
pub fn rfc3339_ms(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Parses an RFC 3339 time into Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let ms = 1_700_000_000_123;
        let s = super::rfc3339_ms(ms);
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(super::parse_rfc3339_ms(&s), Some(ms));
        assert_eq!(super::parse_rfc3339_ms("yesterday"), None);
    }
}
