//! Time, in one representation: [`Micros`], whole microseconds since the Unix epoch (UTC).
//! The store keeps it as an integer; RFC 3339 text exists only at the edge (the API's JSON).

use chrono::{DateTime, SecondsFormat, Utc};

/// A point in time: microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

impl Micros {
    pub fn now() -> Micros {
        Micros(Utc::now().timestamp_micros())
    }

    /// `2026-08-21T12:34:56.123456Z`: always UTC, always six decimals.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_micros(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// Reads RFC 3339 text (any offset); `None` when it is not.
    pub fn parse_rfc3339(text: &str) -> Option<Micros> {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Micros(t.timestamp_micros()))
    }
}

#[cfg(test)]
mod tests {
    use super::Micros;

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Micros(1_787_000_000_123_456);
        let text = t.to_rfc3339();
        assert!(text.ends_with(".123456Z"), "{text}");
        assert_eq!(Micros::parse_rfc3339(&text), Some(t));
        assert_eq!(
            Micros::parse_rfc3339("2026-08-21T14:00:00.5+02:00"),
            Micros::parse_rfc3339("2026-08-21T12:00:00.500000Z")
        );
        assert_eq!(Micros::parse_rfc3339("yesterday"), None);
        assert!(Micros::now() > t);
    }
}
