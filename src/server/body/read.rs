//! Reading a body within its bounds: its size (413), the time it may stall (408), and the
//! memory all bodies read whole may take together (503 when it is short).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::server::errors::{ApiError, ApiResult};

/// The declared length, when there is one that parses.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The next piece of a body, within the stall bound.
async fn next_frame(body: &mut Incoming, stall: Duration) -> ApiResult<Option<Bytes>> {
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                return Err(ApiError::too_slow(format!(
                    "the body stalled: nothing arrived for {} s",
                    stall.as_secs()
                )))
            }
            Ok(None) => return Ok(None),
            Ok(Some(frame)) => {
                frame.map_err(|e| ApiError::malformed(format!("reading the body: {e}")))?
            }
        };
        if let Ok(data) = frame.into_data() {
            return Ok(Some(data));
        }
    }
}

/// The memory all bodies read whole may take together (in KiB permits).
#[derive(Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    /// How long a request waits for memory before it gets 503.
    wait: Duration,
}

impl Budget {
    pub fn new(bytes: u64, wait: Duration) -> Budget {
        let kib = (bytes / 1024).clamp(1, u64::from(u32::MAX >> 3)) as usize;
        Budget {
            permits: Arc::new(Semaphore::new(kib)),
            wait,
        }
    }

    pub fn hold(&self) -> Held {
        Held {
            budget: self.clone(),
            permit: None,
        }
    }
}

/// What one request holds of the [`Budget`]: given back when it is dropped (the request is
/// done).
pub struct Held {
    budget: Budget,
    permit: Option<OwnedSemaphorePermit>,
}

impl Held {
    /// Holds enough for `bytes` in all; 503 when that much does not free up in time (or
    /// could never: more than the whole budget).
    async fn grow_to(&mut self, bytes: u64) -> ApiResult<()> {
        let want = bytes.div_ceil(1024);
        let have = self.permit.as_ref().map_or(0, |p| p.num_permits() as u64);
        if want <= have {
            return Ok(());
        }
        let busy = || {
            ApiError::unavailable(
                "the server is short of memory for request bodies (other large requests \
                 hold it): try again in a moment",
                1,
            )
        };
        let more = u32::try_from(want - have).map_err(|_| busy())?;
        let acquire = self.budget.permits.clone().acquire_many_owned(more);
        let permit = match tokio::time::timeout(self.budget.wait, acquire).await {
            Ok(Ok(p)) => p,
            _ => return Err(busy()),
        };
        match &mut self.permit {
            Some(p) => p.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

/// Reads the whole body, refusing more than `limit` bytes (before reading, when the length is
/// declared; while reading, when it is chunked), holding memory for it in `held` before the
/// buffer grows.
pub async fn read_limited(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: u64,
    stall: Duration,
    held: &mut Held,
) -> ApiResult<Bytes> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let mut buf = Vec::new();
    if let Some(n) = declared {
        held.grow_to(n).await?;
        buf.reserve_exact(n as usize);
    }
    while let Some(data) = next_frame(&mut body, stall).await? {
        let len = buf.len() as u64 + data.len() as u64;
        if len > limit {
            return Err(ApiError::too_large(limit));
        }
        if !matches!(declared, Some(n) if len <= n) {
            held.grow_to(len).await?;
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Streams the body into `file` (large uploads), refusing more than `limit` bytes (and saying
/// `too_large` of it). Returns the bytes written.
pub async fn save_to_file(
    headers: &HeaderMap,
    mut body: Incoming,
    limit: u64,
    stall: Duration,
    file: &mut tokio::fs::File,
    too_large: impl Fn() -> ApiError,
) -> ApiResult<u64> {
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut written = 0u64;
    while let Some(data) = next_frame(&mut body, stall).await? {
        written += data.len() as u64;
        if written > limit {
            return Err(too_large());
        }
        file.write_all(&data).await?;
    }
    file.flush().await?;
    Ok(written)
}
