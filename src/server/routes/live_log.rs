//! Following what is written while it is written: `GET /executions/{id}/log` (an execution's
//! output, Railgun's proclog) and `GET /submissions/{id}/progress` (a grading's progress, one
//! JSON object a line, through [`follow_file`]).
//!
//! The execution's log, from `exec/log.rs`, until the execution ends (also after the end,
//! whole), in two forms:
//! - server-sent events (`Accept: text/event-stream` or `?format=sse`): each chunk is one
//!   event named after its stream (`stdout`, `stderr`) whose data is JSON,
//!   `{"text": "…"}` (UTF-8) or `{"base64": "…"}` (other bytes), so program bytes can never
//!   form an event; its `id` is where the next chunk starts (send it back as
//!   `Last-Event-ID` to resume). A comment goes out at once (the headers with it) and every
//!   15 s (a keep-alive); the stream ends with an `end` event:
//!   `{"status": "ended", "end_reason", "exit_code", "message"}` (or `{"deleted": true}`).
//! - plain text (`text/plain`, the default, for `curl`): the bytes as written, both streams
//!   merged, ending when the execution ends.
//!
//! A group's programs share the log: each event's data says which `program` wrote it, and
//! `?program=N` keeps one program's output.
//!
//! `?stream=stdout|stderr` keeps one stream: after the end, the whole of it as kept (up to
//! `limits.output_bytes`), where the execution object shows only its first 64 KiB.
//! Followers are woken by the engine's events (output appended, execution ended); they never
//! poll, and each reads only when its client takes more.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{mpsc, watch};

use crate::app::App;
use crate::auth::Principal;
use crate::exec::log::{Chunk, LogReader, Stream};
use crate::exec::{Ended, Status};
use crate::server::errors::{ApiError, ApiResult};
use crate::server::http::{stream_body, Req, Resp};
use crate::store::ExecutionRow;

/// How often an idle event stream says it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The `end` event's data.
fn end_of_row(row: &ExecutionRow) -> Value {
    json!({
        "status": "ended",
        "end_reason": row.end_reason,
        "exit_code": row.result.as_ref().and_then(|r| r.exit_code()),
        "message": row.message,
    })
}

fn end_of_event(e: &Ended) -> Value {
    json!({
        "status": "ended",
        "end_reason": e.ending.reason,
        "exit_code": e.ending.result.as_ref().and_then(|r| r.exit_code()),
        "message": e.ending.message,
    })
}

/// One chunk as an event: named after its stream, JSON data on one line (with the program
/// that wrote it, in a group).
fn sse_chunk(c: &Chunk, group: bool) -> Bytes {
    let mut data = match std::str::from_utf8(&c.bytes) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(&c.bytes) }),
    };
    if group {
        data["program"] = c.program.into();
    }
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        c.next,
        c.stream.as_str()
    ))
}

/// A follower of one execution's log: the state of the response body.
struct Follower {
    app: Arc<App>,
    id: String,
    log: PathBuf,
    reader: Option<LogReader>,
    /// Where reading starts (0, or a `Last-Event-ID`).
    from: u64,
    /// The log is whole up to here.
    complete: u64,
    /// The run's announcements of output; `None` once the run is over.
    progress: Option<watch::Receiver<u64>>,
    ended: broadcast::Receiver<Ended>,
    /// The `end` event, once the end is known.
    end: Option<Value>,
    sse: bool,
    /// A group's log: each chunk says which program wrote it.
    group: bool,
    only: Option<Stream>,
    /// `?program=N`: one program's output only (a group's).
    program: Option<usize>,
    keep_alive: tokio::time::Interval,
    greeted: bool,
    done: bool,
}

impl Follower {
    /// The whole log is final: the run is over.
    async fn whole_log(&mut self) {
        self.complete = tokio::fs::metadata(&self.log).await.map_or(0, |m| m.len());
    }

    /// The end, known from the store (after a missed event).
    async fn end_from_store(&mut self) {
        match self.app.store.get_execution(&self.id).await {
            Ok(Some(row)) if row.status == Status::Ended => {
                self.end = Some(end_of_row(&row));
                self.whole_log().await;
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => self.end = Some(json!({ "deleted": true })),
        }
    }

    /// The next whole record of the log, if there is one to read now.
    async fn next_chunk(&mut self) -> Option<Chunk> {
        if self.reader.is_none() {
            if self.complete <= self.from {
                return None;
            }
            self.reader = LogReader::open(&self.log, self.from).await.ok().flatten();
        }
        let reader = self.reader.as_mut()?;
        match reader.next(self.complete).await {
            Ok(chunk) => chunk,
            Err(e) => {
                // Not a record boundary (a bad Last-Event-ID) or a log gone: no more output.
                tracing::debug!("log of {}: {e}", self.id);
                self.complete = 0;
                self.reader = None;
                self.from = u64::MAX;
                None
            }
        }
    }

    /// The next piece of the response; `None` ends it.
    async fn next(&mut self) -> Option<Bytes> {
        if !self.greeted {
            self.greeted = true;
            self.keep_alive.reset();
            if self.sse {
                // Sent at once, so the headers go out before any output.
                return Some(Bytes::from(format!(
                    ": following {}\nretry: 1000\n\n",
                    self.id
                )));
            }
        }
        loop {
            if self.done {
                return None;
            }
            if let Some(chunk) = self.next_chunk().await {
                if self.only.is_some_and(|s| s != chunk.stream)
                    || self.program.is_some_and(|p| p != chunk.program)
                {
                    continue;
                }
                self.keep_alive.reset();
                return Some(if self.sse {
                    sse_chunk(&chunk, self.group)
                } else {
                    Bytes::from(chunk.bytes)
                });
            }
            if let Some(end) = self.end.take() {
                self.done = true;
                if self.sse {
                    return Some(Bytes::from(format!("event: end\ndata: {end}\n\n")));
                }
                return None;
            }
            let progress = self.progress.as_mut();
            let has_progress = progress.is_some();
            tokio::select! {
                changed = async {
                    match progress {
                        Some(rx) => rx.changed().await.map(|()| *rx.borrow_and_update()),
                        None => std::future::pending().await,
                    }
                }, if has_progress => match changed {
                    Ok(len) => self.complete = self.complete.max(len),
                    // The run is over; its end event follows.
                    Err(_) => {
                        if let Some(rx) = self.progress.take() {
                            self.app.exec.events().unfollow(&self.id, rx);
                        }
                    }
                },
                event = self.ended.recv() => match event {
                    Ok(e) if e.id == self.id => {
                        self.end = Some(end_of_event(&e));
                        self.whole_log().await;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_) | RecvError::Closed) => self.end_from_store().await,
                },
                _ = self.keep_alive.tick(), if self.sse => {
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(rx) = self.progress.take() {
            self.app.exec.events().unfollow(&self.id, rx);
        }
    }
}

pub async fn follow(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let sse = wants_sse(&req);
    check_format(&req, &["sse", "text"])?;
    let only = match req.query("stream") {
        None => None,
        Some(s) => Some(Stream::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "query parameter 'stream' must be stdout or stderr, not '{s}'"
            ))
        })?),
    };
    // Where to resume (either form: an event id is a position in the log).
    let from = match req.headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .filter(|t| (1..=19).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID must be an event id of this log")
            })?,
        None => 0,
    };
    // Checks existence and ownership now, so a wrong id gets a 404, not an empty stream.
    let row = app.exec.get(&who, req.param(0)).await?;
    let programs = row.request.programs().len();
    let program = match req.query("program") {
        None => None,
        Some(p) => match p.parse::<usize>() {
            // A single execution's one program is program 0: the whole log.
            Ok(i) if i < programs => row.request.is_group().then_some(i),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "query parameter 'program' must name a program of this group (0 to {}), \
                     not '{p}'",
                    programs.saturating_sub(1)
                )))
            }
        },
    };
    // Subscribed before the state is read again, so no output and no end slips in between.
    let ended = app.exec.events().subscribe();
    let progress = app.exec.events().follow_output(&row.id);
    let row = match app.exec.get(&who, &row.id).await {
        Ok(row) => row,
        Err(e) => {
            app.exec.events().unfollow(&row.id, progress);
            return Err(e.into());
        }
    };
    let complete = *progress.borrow();
    let mut f = Follower {
        log: app.exec.dir(&row.id).log(),
        app: app.clone(),
        id: row.id.clone(),
        reader: None,
        from,
        complete,
        progress: Some(progress),
        ended,
        end: None,
        sse,
        group: row.request.is_group(),
        only,
        program,
        keep_alive: tokio::time::interval(KEEP_ALIVE),
        greeted: false,
        done: false,
    };
    if row.status == Status::Ended {
        f.end = Some(end_of_row(&row));
        f.whole_log().await;
    }
    let chunks =
        futures_util::stream::unfold(f, |mut f| async move { f.next().await.map(|b| (b, f)) });
    Ok(streaming(
        stream_body(chunks),
        sse,
        "text/plain; charset=utf-8",
    ))
}

/// A streamed answer: 200, server-sent events or `plain_type`, never cached.
fn streaming(body: crate::server::http::Body, sse: bool, plain_type: &'static str) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let kind = if sse { "text/event-stream" } else { plain_type };
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

// A followed file (a submission's progress).

/// How often the file is read for more.
const POLL: Duration = Duration::from_millis(50);

/// What ends a followed file's stream.
#[async_trait]
pub(crate) trait EndWatch: Send + 'static {
    /// `Some(the SSE end event's data)` once the followed thing has ended; takes in what has
    /// happened by now, without waiting.
    async fn ended(&mut self) -> Option<String>;
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

/// The `format` query parameter, when given, is one of `accepted`.
pub(crate) fn check_format(req: &Req, accepted: &[&str]) -> ApiResult<()> {
    match req.query("format") {
        Some(f) if !accepted.contains(&f) => Err(ApiError::bad_request(format!(
            "query parameter 'format' must be {}, not '{f}'",
            accepted.join(" or ")
        ))),
        _ => Ok(()),
    }
}

/// Whether the client asked for server-sent events.
pub(crate) fn wants_sse(req: &Req) -> bool {
    req.headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
        || req.query("format") == Some("sse")
}

/// Streams `path` (a file of one JSON object a line, written by appending) as it grows until
/// `end` says it is over; as server-sent events, each line is one event.
pub(crate) fn follow_file(
    path: PathBuf,
    sse: bool,
    plain_type: &'static str,
    mut end: impl EndWatch,
) -> Resp {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let mut pos = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        // The start of a line not yet complete.
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
                        let chunks = match sse {
                            false => vec![Bytes::copy_from_slice(&buf[..n])],
                            true => {
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
    let chunks =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    streaming(stream_body(chunks), sse, plain_type)
}
