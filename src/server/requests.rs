//! The request bodies, typed: each route's body (normalised to one JSON object by `body.rs`,
//! whichever encoding it came in) is read into one of these structs, unknown fields refused,
//! and every error names the field it is about. A new execution's body is the execution
//! domain's own shape (`crate::exec::parse`), shared with `sandpit run --spec`.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::errors::{ApiError, ApiResult};
use crate::callbacks::AllowList;
use crate::exec::parse::typed;
pub use crate::exec::parse::Mode;
use crate::exec::NewExecution;

/// Reads a typed body; a wrong field is a 400 that names it (`'limits.pids': …`).
pub fn from_body<T: serde::de::DeserializeOwned>(map: Map<String, Value>) -> ApiResult<T> {
    Ok(typed(Value::Object(map))?)
}

/// `POST /executions`: one program or a group (see `crate::exec::parse`); a callback's host
/// must be on `allow`.
pub fn new_execution(map: Map<String, Value>, allow: &AllowList) -> ApiResult<NewExecution> {
    Ok(crate::exec::parse::new_execution(
        Value::Object(map),
        allow,
    )?)
}

/// A size in bytes: a positive number, or text like `256M`.
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub i64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => crate::units::parse_size(&s).ok(),
            _ => None,
        };
        bytes
            .filter(|b| *b > 0)
            .and_then(|b| i64::try_from(b).ok())
            .map(ByteSize)
            .ok_or_else(|| {
                de::Error::custom("must be a positive number of bytes (or e.g. \"256M\")")
            })
    }
}

/// Seconds: a positive number, or text like `2s`.
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let secs = match Value::deserialize(d)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => crate::units::parse_duration(&s)
                .ok()
                .map(|d| d.as_secs_f64()),
            _ => None,
        };
        secs.filter(|s| *s > 0.0 && s.is_finite())
            .map(Seconds)
            .ok_or_else(|| {
                de::Error::custom("must be a positive number of seconds (or e.g. \"2s\")")
            })
    }
}

/// A whole number of at least 1, as a number or text.
#[derive(Debug, Clone, Copy)]
pub struct Count(pub i64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        n.filter(|n| *n >= 1)
            .and_then(|n| i64::try_from(n).ok())
            .map(Count)
            .ok_or_else(|| de::Error::custom("must be a whole number of at least 1"))
    }
}

/// `POST /api_keys`: fields in the body, or in the query string as PIFOP sends them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    name: Option<String>,
    key_name: Option<String>,
    max_memory: Option<ByteSize>,
    max_time: Option<Seconds>,
    max_executions: Option<Count>,
}

impl CreateApiKey {
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "key_name",
        "max_memory",
        "max_time",
        "max_executions",
    ];

    pub fn into_new(self) -> ApiResult<crate::auth::NewApiKey> {
        Ok(crate::auth::NewApiKey {
            name: self
                .name
                .or(self.key_name)
                .ok_or_else(|| ApiError::bad_request("'name' is required"))?,
            max_memory: self.max_memory.map(|b| b.0),
            max_time: self.max_time.map(|s| s.0),
            max_executions: self.max_executions.map(|c| c.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn api_key_fields_take_numbers_or_text() {
        let k = from_body::<CreateApiKey>(body(
            json!({"key_name": "k", "max_memory": "64M", "max_time": "2s", "max_executions": "3"}),
        ))
        .and_then(CreateApiKey::into_new)
        .unwrap();
        assert_eq!(
            (k.name.as_str(), k.max_memory, k.max_time, k.max_executions),
            ("k", Some(64 << 20), Some(2.0), Some(3))
        );
        for bad in [
            json!({"name": "x", "max_memory": -1}),
            json!({"name": "x", "max_executions": 0}),
        ] {
            assert!(from_body::<CreateApiKey>(body(bad)).is_err());
        }
    }
}
