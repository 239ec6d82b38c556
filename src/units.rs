//! Sizes (`64M`, `1G`, `512K`, `1000`) and durations (`2s`, `500ms`, `1.5`) as users type them.

use std::time::Duration;

/// Parses a byte size with an optional K/M/G/T suffix (powers of 1024; `B` and `iB` allowed).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let upper = t.to_ascii_uppercase();
    let stripped = upper
        .strip_suffix("IB")
        .or_else(|| upper.strip_suffix('B'))
        .unwrap_or(&upper);
    let (number, shift) = match stripped.chars().last() {
        Some('K') => (&stripped[..stripped.len() - 1], 10),
        Some('M') => (&stripped[..stripped.len() - 1], 20),
        Some('G') => (&stripped[..stripped.len() - 1], 30),
        Some('T') => (&stripped[..stripped.len() - 1], 40),
        _ => (stripped, 0),
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a size (use e.g. 512K, 64M, 1G)"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{text}' is too large"))
}

/// Parses a duration: `2s`, `500ms`, `1.5s`, `250us`, `1m`, `12h`, `7d`, or a bare number of
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("'{text}' is not a duration (use e.g. 2s, 500ms, 1.5)");
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = t.strip_suffix('d') {
        (n, 86_400.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
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
            Some(Given::Whole(n)) => Ok(Some(n)),
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
            Some(Given::Text(t)) => super::parse_duration(&t)
                .map(|d| Some(d.as_secs_f64()))
                .map_err(|e| de::Error::custom(format!("{e}: {SECONDS}"))),
        }
    }

    /// A count: `64` or `"64"`.
    pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Given>::deserialize(d).map_err(|_| de::Error::custom(COUNT))? {
            None => Ok(None),
            Some(Given::Whole(n)) => Ok(Some(n)),
            Some(Given::Text(t)) => t
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| de::Error::custom(COUNT)),
            Some(Given::Real(_)) => Err(de::Error::custom(COUNT)),
        }
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
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
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
