//! Every error the API returns, and the one mapping from the domain's [`Error`] classes: `{"error_code": N, "message": "…"}` with the HTTP status that
//! fits. `error_code` says which error precisely; the status says its class.

use hyper::StatusCode;

use crate::env::EnvError;
use crate::error::Error;
use crate::store::StoreError;

/// The error codes, documented in the OpenAPI document.
pub mod code {
    /// The body is not well-formed (malformed JSON, bad form or multipart encoding).
    pub const MALFORMED_BODY: u32 = 1000;
    /// A field or parameter has a wrong or missing value.
    pub const INVALID_INPUT: u32 = 1001;
    /// A requested limit is over the server's maximum or the API key's.
    pub const OVER_LIMIT: u32 = 1002;
    /// A path leaves the work directory.
    pub const BAD_PATH: u32 = 1003;
    /// No token, or an unknown one.
    pub const UNAUTHORIZED: u32 = 1100;
    /// The token may not do this.
    pub const FORBIDDEN: u32 = 1200;
    /// No such resource.
    pub const NOT_FOUND: u32 = 1300;
    /// No such route.
    pub const NO_ROUTE: u32 = 1301;
    /// The route exists, the method does not.
    pub const METHOD_NOT_ALLOWED: u32 = 1302;
    /// The resource is in the wrong state for this (e.g. upload after start).
    pub const WRONG_STATE: u32 = 1400;
    /// It already exists.
    pub const ALREADY_EXISTS: u32 = 1401;
    /// The program left something else than a regular file where an output was expected.
    pub const OUTPUT_REFUSED: u32 = 1402;
    /// It is in use.
    pub const IN_USE: u32 = 1403;
    /// The body is over the size limit.
    pub const TOO_LARGE: u32 = 1500;
    /// Over a storage quota of the API key: files per execution, bytes kept
    /// on disk (executions and kept files together).
    pub const OVER_QUOTA: u32 = 1501;
    /// The request took too long to arrive (a body that stalls).
    pub const TOO_SLOW: u32 = 1800;
    /// The server is at capacity (connections, memory for request bodies); try again.
    pub const UNAVAILABLE: u32 = 1900;
    /// The content type is not one this route accepts.
    pub const UNSUPPORTED_MEDIA_TYPE: u32 = 1600;
    /// Too many executions at once for this API key.
    pub const TOO_MANY: u32 = 1700;
    /// A per-key quota on kept files is used up.
    pub const OVER_COUNT_QUOTA: u32 = 1701;
    /// The server failed.
    pub const INTERNAL: u32 = 2000;
}

/// What a caller sees of a server failure.
pub const INTERNAL_MESSAGE: &str = "the server failed to handle this request; its log says why";

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    /// Seconds, for 429.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID_INPUT, message)
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::MALFORMED_BODY, message)
    }

    pub fn bad_path(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::BAD_PATH, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::NOT_FOUND, message)
    }

    pub fn conflict(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::TOO_LARGE,
            format!("the body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            message,
        )
    }

    pub fn too_many(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code::TOO_MANY, message)
        }
    }

    /// A failure of the server: `detail` goes to the log, the caller gets a fixed text (the
    /// detail may name host paths, pids or internals).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code::INTERNAL,
            INTERNAL_MESSAGE,
        )
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code::UNAVAILABLE, message)
        }
    }

    pub fn too_slow(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, code::TOO_SLOW, message)
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error_code": self.code, "message": self.message })
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid(_) => ApiError::bad_request(message),
            Error::BadPath(_) => ApiError::bad_path(message),
            Error::OverLimit(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, code::OVER_LIMIT, message)
            }
            Error::OverQuota(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code::OVER_QUOTA, message)
            }
            Error::TooMany { retry_after, .. } => ApiError::too_many(message, retry_after),
            Error::OverCountQuota(_) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                code::OVER_COUNT_QUOTA,
                message,
            ),
            Error::Unauthorized(_) => ApiError::unauthorized(message),
            Error::Forbidden(_) => ApiError::forbidden(message),
            Error::NotFound(_) => ApiError::not_found(message),
            Error::WrongState(_) => ApiError::conflict(code::WRONG_STATE, message),
            Error::AlreadyExists(_) => ApiError::conflict(code::ALREADY_EXISTS, message),
            Error::OutputRefused(_) => ApiError::conflict(code::OUTPUT_REFUSED, message),
            Error::InUse(_) => ApiError::conflict(code::IN_USE, message),
            Error::Internal(_) => ApiError::internal(message),
            Error::Store(e) => e.into(),
            Error::Io(e) => e.into(),
        }
    }
}

impl From<EnvError> for ApiError {
    fn from(e: EnvError) -> Self {
        Error::from(e).into()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::internal(format!("the store failed: {e}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::internal(format!("file system: {e}"))
    }
}
