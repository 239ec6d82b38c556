//! Sizes (`64M`, `1G`, `512K`, `1000`), durations (`2s`, `500ms`, `1.5`) and counts as users
//! type them: the one reader of these for every face (the command line, the server's
//! settings, execution limits and API-key limits in any body). Strict: the whole text is
//! the grammar (no spaces, signs or exponents), and a value that does not fit is refused,
//! never wrapped. The OpenAPI document states the same grammar as patterns.

use std::time::Duration;

/// The most a size or a count may be: what the store keeps (a signed 64-bit integer).
pub const MAX_WHOLE: u64 = i64::MAX as u64;

/// 1 to `max` digits as a number (`max` ≤ 18, so it always fits in [`MAX_WHOLE`]).
fn digits(text: &str, max: usize) -> Option<u64> {
    if text.is_empty() || text.len() > max || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parses a byte size: digits with an optional K/M/G/T suffix (powers of 1024, either
/// case). At most 18 digits (15 with K, 12 with M, 9 with G, 6 with T),
/// so that every size fits in 2^63-1 bytes: a longer one is refused, never wrapped.
/// The OpenAPI document's `ByteSize` pattern says the same.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let (max, shift) = match unit.to_ascii_uppercase().as_str() {
        "" => (18, 0),
        "K" => (15, 10),
        "M" => (12, 20),
        "G" => (9, 30),
        "T" => (6, 40),
        _ => return Err(format!("'{text}' is not a size (use e.g. 512K, 64M, 1G)")),
    };
    match digits(number, max) {
        Some(n) => Ok(n << shift),
        None if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => Err(format!(
            "size '{text}' is too large: at most {max} digits{}",
            if shift > 0 { " with that unit" } else { "" }
        )),
        None => Err(format!("'{text}' is not a size (use e.g. 512K, 64M, 1G)")),
    }
}

/// Parses a duration: a number of seconds with an optional unit, `us`, `ms`, `s`, `m`, `h`
/// or `d`: `^[0-9]{1,9}(?:\.[0-9]{1,3})?(?:us|ms|s|m|h|d)?$` (`2s`, `500ms`, `1.5`, `7d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(parse_seconds(text)?)
        .map_err(|_| format!("'{text}' is not a duration (use e.g. 2s, 500ms, 1.5)"))
}

/// A duration as [`parse_duration`] reads it, in seconds (not rounded to nanoseconds).
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let bad = || format!("'{text}' is not a duration (use e.g. 2s, 500ms, 1.5)");
    let number_end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let ok = |t: &str, max: usize| t.len() <= max && t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !ok(int, 9) || !ok(frac, 3) || number.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    Ok(value * scale)
}

/// Parses a count: 1 to 18 digits (so that it always fits in 2^63-1).
pub fn parse_count(text: &str) -> Result<u64, String> {
    digits(text, 18).ok_or_else(|| {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            format!("'{text}' is too large: at most 18 digits")
        } else {
            format!("'{text}' is not a whole number")
        }
    })
}

/// Readers for serde fields that take a size, a duration or a count either as a number or as
/// text (`"128M"`, `"2s"`, `"64"`), through the parsers above: every face (execution limits,
/// API-key limits, JSON or form bodies) reads them the same way.
pub mod de {
    use serde::de::{self, Deserializer};
    use serde::Deserialize;

    /// A JSON number or text, before it is read as a unit.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Whole(u64),
        Real(f64),
        Text(String),
    }

    const SIZE: &str = "must be a number of bytes or a size such as \"128M\"";
    const SECONDS: &str = "must be a number of seconds or a duration such as \"2s\" or \"500ms\"";
    const COUNT: &str = "must be a whole number";

    /// Bytes: `1048576` or `"1M"`.
    pub fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Given>::deserialize(d).map_err(|_| de::Error::custom(SIZE))? {
            None => Ok(None),
            Some(Given::Whole(n)) => super::fits(n, SIZE).map(Some).map_err(de::Error::custom),
            Some(Given::Text(t)) => super::parse_size(&t)
                .map(Some)
                .map_err(|e| de::Error::custom(format!("{e}: {SIZE}"))),
            Some(Given::Real(_)) => Err(de::Error::custom(SIZE)),
        }
    }

    /// Seconds: `1.5` or `"1500ms"`.
    pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        match Option::<Given>::deserialize(d).map_err(|_| de::Error::custom(SECONDS))? {
            None => Ok(None),
            // Whole numbers of seconds are far below 2^53: exact as f64.
            Some(Given::Whole(n)) => Ok(Some(n as f64)),
            Some(Given::Real(x)) if x.is_finite() && x >= 0.0 => Ok(Some(x)),
            Some(Given::Real(_)) => Err(de::Error::custom(SECONDS)),
            Some(Given::Text(t)) => super::parse_seconds(&t)
                .map(Some)
                .map_err(|e| de::Error::custom(format!("{e}: {SECONDS}"))),
        }
    }

    /// A count: `64` or `"64"`.
    pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Given>::deserialize(d).map_err(|_| de::Error::custom(COUNT))? {
            None => Ok(None),
            Some(Given::Whole(n)) => super::fits(n, COUNT).map(Some).map_err(de::Error::custom),
            Some(Given::Text(t)) => super::parse_count(&t)
                .map(Some)
                .map_err(|e| de::Error::custom(format!("{e}: {COUNT}"))),
            Some(Given::Real(_)) => Err(de::Error::custom(COUNT)),
        }
    }
}

/// `n` when it is at most [`MAX_WHOLE`]; else why not, with what the field takes.
fn fits(n: u64, takes: &str) -> Result<u64, String> {
    if n <= MAX_WHOLE {
        Ok(n)
    } else {
        Err(format!("{n} is too large (at most 2^63-1): {takes}"))
    }
}

/// Writes a byte size as `parse_size` reads it: the largest unit that divides it (`256M`).
pub fn format_size(bytes: u64) -> String {
    for (suffix, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Writes a duration as `parse_duration` reads it: `10s`, `500ms`, `250us`.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("2MiB").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("nan").is_err());
    }

    #[test]
    fn what_does_not_fit_is_refused_never_wrapped() {
        assert_eq!(parse_size("999999T").unwrap(), 999_999 << 40);
        assert_eq!(
            parse_size("999999999999999999").unwrap(),
            999_999_999_999_999_999
        );
        for (text, says) in [
            ("9999999T", "too large"),
            ("16777216T", "too large"),
            ("9999999999G", "too large"),
            ("18446744073709551616", "too large"),
            ("1e3", "not a size"),
            (" 1M", "not a size"),
            ("1M ", "not a size"),
        ] {
            let e = parse_size(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert!(parse_count("18446744073709551617")
            .unwrap_err()
            .contains("too large"));
        for bad in [
            "1e3",
            "inf",
            "1.",
            ".5",
            "1.5.2s",
            "1234567890s",
            "2 s",
            "1.2345s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        // As JSON numbers too: the store keeps a signed 64-bit integer.
        let e = fields(r#"{"size": 9223372036854775808}"#)
            .err()
            .expect("refused");
        assert!(e.contains("too large"), "{e}");
        assert_eq!(
            fields(r#"{"count": 9223372036854775807}"#).unwrap().count,
            Some(MAX_WHOLE)
        );
    }

    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default, deserialize_with = "de::size")]
        size: Option<u64>,
        #[serde(default, deserialize_with = "de::seconds")]
        secs: Option<f64>,
        #[serde(default, deserialize_with = "de::count")]
        count: Option<u64>,
    }

    fn fields(json: &str) -> Result<Fields, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_or_text() {
        let f = fields(r#"{"size": "128M", "secs": "2s", "count": "64"}"#).unwrap();
        assert_eq!(
            (f.size, f.secs, f.count),
            (Some(128 << 20), Some(2.0), Some(64))
        );
        let f = fields(r#"{"size": 1000, "secs": 1.5, "count": 3}"#).unwrap();
        assert_eq!((f.size, f.secs, f.count), (Some(1000), Some(1.5), Some(3)));
        let f = fields(r#"{"secs": 2, "size": null}"#).unwrap();
        assert_eq!((f.size, f.secs, f.count), (None, Some(2.0), None));
        assert!(fields("{}").unwrap().size.is_none());
        for bad in [
            r#"{"size": "lots"}"#,
            r#"{"size": -1}"#,
            r#"{"size": 1.5}"#,
            r#"{"secs": "soon"}"#,
            r#"{"secs": -2}"#,
            r#"{"count": "many"}"#,
            r#"{"count": [1]}"#,
        ] {
            let e = fields(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.contains("must be"), "{bad}: {e}");
        }
    }

    #[test]
    fn formatted_values_parse_back() {
        for bytes in [0, 1000, 4096, 256 << 20, 3 << 30, 5 << 40, (1 << 20) + 1] {
            assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }
        assert_eq!(format_size(256 << 20), "256M");
        assert_eq!(format_size(1536 << 10), "1536K");
        for d in [
            Duration::from_secs(10),
            Duration::from_millis(1500),
            Duration::from_micros(250),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
