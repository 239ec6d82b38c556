//! `GET /executions/{id}/log`: the output as it is written (Railgun's proclog), as a chunked
//! `text/plain` stream, or as server-sent events when the client asks for
//! `text/event-stream`. The stream ends when the execution ends (SSE: with an `end` event
//! carrying the end reason), which it hears from the execution events. It follows the log
//! file that the run's sinks write, so it works for any follower, from any point, without
//! holding the run up.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::mpsc;

use crate::app::App;
use crate::auth::Principal;
use crate::exec::{EndReason, Status};
use crate::server::errors::ApiResult;
use crate::server::http::{Req, Resp};

/// How often the log file is read for more.
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

/// The end, once known: `Some(reason)` (`None` inside when the execution is gone).
type End = Option<Option<EndReason>>;

pub async fn follow(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    // Subscribed before the state is read, so the end can't slip in between.
    let mut ended = app.exec.events().subscribe();
    // Checks existence and ownership now, so a wrong id gets a 404, not an empty stream.
    let row = app.exec.get(&who, req.param(0)).await?;
    let sse = req
        .headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
        || req.query("format") == Some("sse");
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let id = row.id.clone();
    let path = app.exec.dir(&id).log();
    let mut end: End = (row.status == Status::Ended).then_some(row.end_reason);
    tokio::spawn(async move {
        let mut pos = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Take in the end first: once it is known, one more read gets the whole tail
            // (the log is complete before the end is announced).
            loop {
                match ended.try_recv() {
                    Ok(e) if e.id == id => end = Some(Some(e.ending.reason)),
                    Ok(_) => {}
                    Err(TryRecvError::Empty) => break,
                    // Fell behind or no more events: the store says how it stands.
                    Err(TryRecvError::Lagged(_) | TryRecvError::Closed) => {
                        match app.store.get_execution(&id).await {
                            Ok(Some(r)) if r.status == Status::Ended => end = Some(r.end_reason),
                            Ok(Some(_)) | Err(_) => {}
                            Ok(None) => end = Some(None),
                        }
                        break;
                    }
                }
            }
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
            if let Some(reason) = end {
                if sse {
                    let reason = reason.map_or("deleted", EndReason::as_str);
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
