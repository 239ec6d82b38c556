//! Following a file while it is written, until what writes it ends: `GET
//! /executions/{id}/log` (the output as it is written, Railgun's proclog) and `GET
//! /submissions/{id}/progress` (a grading's progress, one JSON object a line). Plain (chunked
//! text) or server-sent events when the client asks for `text/event-stream`; the stream ends
//! when the execution or submission ends (SSE: with an `end` event), which it hears from the
//! domain's events. It follows the file the domain writes, so it works for any follower, from
//! any point, without holding the writer up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::broadcast::error::TryRecvError;
use tokio::sync::{broadcast, mpsc};

use crate::app::App;
use crate::auth::Principal;
use crate::exec::{EndReason, Ended, Status};
use crate::server::errors::ApiResult;
use crate::server::http::{Req, Resp};

/// How often the file is read for more.
const POLL: Duration = Duration::from_millis(50);

/// What ends a followed file's stream.
#[async_trait]
pub(crate) trait EndWatch: Send + 'static {
    /// `Some(the SSE end event's data)` once the followed thing has ended; takes in what has
    /// happened by now, without waiting.
    async fn ended(&mut self) -> Option<String>;
}

/// How the file's bytes become server-sent events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Any bytes: each chunk read is one event, its lines `data:` lines.
    Chunks,
    /// One JSON object a line: each line is one event.
    Lines,
}

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

/// Whether the client asked for server-sent events.
pub(crate) fn wants_sse(req: &Req) -> bool {
    req.headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
        || req.query("format") == Some("sse")
}

/// Streams `path` as it grows until `end` says it is over.
pub(crate) fn follow_file(
    path: PathBuf,
    sse: bool,
    framing: Framing,
    plain_type: &'static str,
    mut end: impl EndWatch,
) -> Resp {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut pos = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        // Lines framing: the start of a line not yet complete.
        let mut partial: Vec<u8> = Vec::new();
        loop {
            // Take in the end first: once it is known, one more read gets the whole tail
            // (the file is complete before the end is announced).
            let over = end.ended().await;
            if let Ok(mut f) = tokio::fs::File::open(&path).await {
                if f.seek(std::io::SeekFrom::Start(pos)).await.is_ok() {
                    loop {
                        let n = match f.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        pos += n as u64;
                        let chunks = match (sse, framing) {
                            (false, _) => vec![Bytes::copy_from_slice(&buf[..n])],
                            (true, Framing::Chunks) => vec![sse_data(&buf[..n])],
                            (true, Framing::Lines) => {
                                partial.extend_from_slice(&buf[..n]);
                                let mut events = Vec::new();
                                while let Some(i) = partial.iter().position(|&c| c == b'\n') {
                                    let line: Vec<u8> = partial.drain(..=i).collect();
                                    let line = &line[..line.len() - 1];
                                    if !line.is_empty() {
                                        events.push(sse_data(line));
                                    }
                                }
                                events
                            }
                        };
                        for chunk in chunks {
                            if tx.send(chunk).await.is_err() {
                                return; // the client went away
                            }
                        }
                    }
                }
            }
            if let Some(data) = over {
                if sse {
                    if !partial.is_empty() {
                        let _ = tx.send(sse_data(&partial)).await;
                    }
                    let _ = tx
                        .send(Bytes::from(format!("event: end\ndata: {data}\n\n")))
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
    let kind = if sse { "text/event-stream" } else { plain_type };
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// An execution's end: from its events, or from the store when they fell behind.
struct ExecutionEnd {
    app: Arc<App>,
    id: String,
    events: broadcast::Receiver<Ended>,
    /// Once known: `Some(reason)`, `None` inside when the execution is gone.
    end: Option<Option<EndReason>>,
}

#[async_trait]
impl EndWatch for ExecutionEnd {
    async fn ended(&mut self) -> Option<String> {
        while self.end.is_none() {
            match self.events.try_recv() {
                Ok(e) if e.id == self.id => self.end = Some(Some(e.ending.reason)),
                Ok(_) => {}
                Err(TryRecvError::Empty) => break,
                // Fell behind or no more events: the store says how it stands.
                Err(TryRecvError::Lagged(_) | TryRecvError::Closed) => {
                    match self.app.store.get_execution(&self.id).await {
                        Ok(Some(r)) if r.status == Status::Ended => self.end = Some(r.end_reason),
                        Ok(Some(_)) | Err(_) => {}
                        Ok(None) => self.end = Some(None),
                    }
                    break;
                }
            }
        }
        self.end.map(|reason| {
            let reason = reason.map_or("deleted", EndReason::as_str);
            format!("{{\"end_reason\":\"{reason}\"}}")
        })
    }
}

pub async fn follow(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    // Subscribed before the state is read, so the end can't slip in between.
    let events = app.exec.events().subscribe();
    // Checks existence and ownership now, so a wrong id gets a 404, not an empty stream.
    let row = app.exec.get(&who, req.param(0)).await?;
    let path = app.exec.dir(&row.id).log();
    let end = ExecutionEnd {
        end: (row.status == Status::Ended).then_some(row.end_reason),
        app,
        id: row.id,
        events,
    };
    Ok(follow_file(
        path,
        wants_sse(&req),
        Framing::Chunks,
        "text/plain; charset=utf-8",
        end,
    ))
}
