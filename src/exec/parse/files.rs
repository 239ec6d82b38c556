//! A file in a request: text, `{content, encoding, mode}`, or a kept file by reference
//! `{file_id, mode}`; and permission bits.

use base64::Engine;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Permission bits: octal text (`"755"`, `"0644"`: `^0?[0-7]{1,3}$`) or a number up to 511.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        let digits = text
            .strip_prefix('0')
            .filter(|d| !d.is_empty())
            .unwrap_or(text);
        if digits.is_empty()
            || digits.len() > 3
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return None;
        }
        u32::from_str_radix(digits, 8).ok().map(Mode)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bad = || de::Error::custom("must be permission bits, e.g. \"755\" or 493");
        match Value::deserialize(d)? {
            Value::String(s) => Mode::parse(&s).ok_or_else(bad),
            Value::Number(n) => n
                .as_u64()
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| *m <= 0o777)
                .map(Mode)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Encoding {
    #[serde(rename = "text", alias = "utf-8", alias = "utf8")]
    Text,
    #[serde(rename = "base64")]
    Base64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncodedFile {
    content: String,
    encoding: Option<Encoding>,
    mode: Option<Mode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileById {
    file_id: String,
    mode: Option<Mode>,
}

/// A file in a request: its content (text, or `{content, encoding, mode}`), or a kept file
/// by reference (`{file_id, mode}`).
#[derive(Debug)]
pub enum FileContent {
    Content(EncodedFileContent),
    ById { file_id: String, mode: Option<u32> },
}

/// Content given in the request.
#[derive(Debug)]
pub struct EncodedFileContent(EncodedFile);

impl<'de> Deserialize<'de> for FileContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(content) => Ok(FileContent::Content(EncodedFileContent(EncodedFile {
                content,
                encoding: None,
                mode: None,
            }))),
            Value::Object(map) if map.contains_key("file_id") => {
                serde_json::from_value::<FileById>(Value::Object(map))
                    .map(|f| FileContent::ById {
                        file_id: f.file_id,
                        mode: f.mode.map(|m| m.0),
                    })
                    .map_err(de::Error::custom)
            }
            v @ Value::Object(_) => serde_json::from_value(v)
                .map(|f| FileContent::Content(EncodedFileContent(f)))
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom(
                "give the content as a string, as {\"content\", \"encoding\"}, or a kept file as {\"file_id\"}",
            )),
        }
    }
}

/// Content only (no kept file): text, or `{content, encoding, mode}`.
impl<'de> Deserialize<'de> for EncodedFileContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(content) => Ok(EncodedFileContent(EncodedFile {
                content,
                encoding: None,
                mode: None,
            })),
            v @ Value::Object(_) => serde_json::from_value(v)
                .map(EncodedFileContent)
                .map_err(de::Error::custom),
            _ => Err(de::Error::custom(
                "give the content as a string or as {\"content\", \"encoding\"}",
            )),
        }
    }
}

impl EncodedFileContent {
    /// The bytes and the mode asked for.
    pub fn decode(self, what: &str) -> Result<(Vec<u8>, Option<u32>)> {
        let f = self.0;
        let bytes = match f.encoding {
            None | Some(Encoding::Text) => f.content.into_bytes(),
            Some(Encoding::Base64) => base64::engine::general_purpose::STANDARD
                .decode(&f.content)
                .map_err(|e| Error::Invalid(format!("{what}: bad base64: {e}")))?,
        };
        Ok((bytes, f.mode.map(|m| m.0)))
    }
}

impl FileContent {
    /// Content given in the request (stdin may not name a kept file).
    pub(super) fn into_bytes(self, what: &str) -> Result<Vec<u8>> {
        match self {
            FileContent::Content(c) => Ok(c.decode(what)?.0),
            FileContent::ById { .. } => Err(Error::Invalid(format!(
                "{what}: give the content itself; a kept file ({{\"file_id\"}}) can be put in 'files'"
            ))),
        }
    }
}
