//! Reading a typed value out of JSON, with errors that name the field.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// The first member that is `null`, by its path (`tests[0].limits.pids`), in objects and
/// in the objects of lists: no field takes `null` (leave it out).
pub fn null_member(map: &serde_json::Map<String, Value>, at: &str) -> Option<String> {
    map.iter().find_map(|(k, v)| {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        null_within(v, path)
    })
}

fn null_within(v: &Value, path: String) -> Option<String> {
    match v {
        Value::Null => Some(path),
        Value::Object(inner) => null_member(inner, &path),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| match item {
            Value::Object(_) => null_within(item, format!("{path}[{i}]")),
            _ => None,
        }),
        _ => None,
    }
}

/// Reads a typed value; a wrong field is an `Invalid` error that names it, and no field
/// takes `null`.
pub fn typed<T: DeserializeOwned>(value: Value) -> Result<T> {
    if let Some(path) = value.as_object().and_then(|m| null_member(m, "")) {
        return Err(Error::Invalid(format!(
            "'{path}' may not be null (leave it out for the default)"
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            Error::Invalid(e.inner().to_string())
        } else {
            Error::Invalid(format!("'{path}': {}", e.inner()))
        }
    })
}
