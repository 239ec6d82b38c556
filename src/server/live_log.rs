//! `GET /executions/{id}/log`: the output as it is written (Railgun's proclog), as a chunked
//! `text/plain` stream, or as server-sent events when the client asks for
//! `text/event-stream`. The stream ends when the execution ends (SSE: with an `end` event
//! carrying the end reason). It follows the log file that the run's sinks write, so it works
//! for any follower, from any point, without holding the run up.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::errors::ApiResult;
use super::{App, Req, Resp};
use crate::store::Status;

const POLL: Duration = Duration::from_millis(50);

fn sse_data(chunk: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(chunk);
    let mut out = String::new();
    for line in text.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

pub async fn follow(app: Arc<App>, req: Req) -> ApiResult<Resp> {
    let who = req.auth(&app).await?;
    // Checks existence and ownership now, so a wrong id gets a 404, not an empty stream.
    let row = super::executions::get_visible(&app, &who, &req.params[0]).await?;
    let sse = req
        .headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
        || req.query("format") == Some("sse");
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let id = row.id.clone();
    let path = app.executions_dir().join(&id).join("log");
    tokio::spawn(async move {
        let mut pos = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Look at the state first: once it says ended, one more read gets the whole tail
            // (the log is complete before the end is recorded).
            let state = app.store.get_execution(&id).await;
            let ended = match &state {
                Ok(Some(r)) => r.status == Status::Ended,
                Ok(None) => true,
                Err(_) => false,
            };
            if let Ok(mut f) = tokio::fs::File::open(&path).await {
                if f.seek(std::io::SeekFrom::Start(pos)).await.is_ok() {
                    loop {
                        let n = match f.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        pos += n as u64;
                        let chunk = if sse {
                            sse_data(&buf[..n])
                        } else {
                            Bytes::copy_from_slice(&buf[..n])
                        };
                        if tx.send(chunk).await.is_err() {
                            return; // the client went away
                        }
                    }
                }
            }
            if ended {
                if sse {
                    let reason = match state {
                        Ok(Some(r)) => r.end_reason.unwrap_or_default(),
                        _ => "deleted".into(),
                    };
                    let _ = tx
                        .send(Bytes::from(format!(
                            "event: end\ndata: {{\"end_reason\":\"{reason}\"}}\n\n"
                        )))
                        .await;
                }
                return;
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    *resp.status_mut() = StatusCode::OK;
    let kind = if sse {
        "text/event-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
