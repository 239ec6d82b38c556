//! JSON bodies, bounded in depth and in values before anything is built.

use serde_json::Value;

use super::{ParseLimits, MAX_DEPTH};
use crate::server::errors::{ApiError, ApiResult};

/// Does the body look like a JSON object (its first byte that is not white space is `{`)?
/// No form field of ours starts with `{`, so a form can't be mistaken for JSON.
pub(super) fn looks_like_json(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The shape of a JSON text, found without allocating: its deepest nesting and how many
/// values it has at most (containers and separators, outside strings).
fn json_shape(text: &[u8]) -> (usize, usize) {
    let (mut depth, mut deepest, mut items) = (0usize, 0usize, 1usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
                items += 1;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' => items += 1,
            _ => {}
        }
    }
    (deepest, items)
}

/// JSON within the bounds (checked before anything is built), with the place of a syntax
/// error in the message.
pub fn parse_json(body: &[u8], limits: &ParseLimits) -> ApiResult<Value> {
    let (depth, items) = json_shape(body);
    if depth > MAX_DEPTH {
        return Err(ApiError::malformed(format!(
            "the JSON nests {depth} levels deep; at most {MAX_DEPTH} are accepted"
        )));
    }
    if items > limits.max_items {
        return Err(ApiError::malformed(format!(
            "the JSON has more than {} values; at most that many are accepted",
            limits.max_items
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::malformed(format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: ParseLimits = ParseLimits {
        max_items: 100,
        stall: Duration::from_secs(1),
    };

    #[test]
    fn json_errors_say_where() {
        let e = parse_json(b"{\n  \"a\": ,\n}", &LIMITS).unwrap_err();
        assert!(e.message.contains("line 2"), "{}", e.message);
    }
}
