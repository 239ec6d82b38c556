//! `sandpit serve`: the HTTP API on hyper, a face over the engine. Handlers parse (typed
//! request structs, `requests.rs`), call the domain (`crate::exec`, `crate::env`,
//! `crate::auth`), and render (`views.rs`); the route table (`router.rs`) says which token each
//! route needs.
//!
//! Connections are bounded in number (a semaphore around accept: one more is answered 503
//! and closed) and in time: hyper's own timer closes a connection whose request head does not
//! arrive within the header-read timeout (also between requests on a kept-alive one), a body
//! that stalls gets 408 (`body/read.rs`), and a response the client stops reading ends the
//! connection after the idle timeout.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::app::App;
use crate::config::ConnectionLimits;

pub mod body;
pub mod errors;
pub mod http;
pub mod observe;
pub mod openapi;
pub mod requests;
pub mod router;
pub mod routes;
pub mod views;

/// File descriptors the server needs besides its connections: the store, the data files,
/// and each slot's sandbox (its pipes, pidfd, cgroup files, layers).
pub fn fds_besides_connections(slots: usize) -> u64 {
    128 + 64 * slots as u64
}

/// Raises the soft limit of open files to `wanted` (as far as the hard limit allows: raising
/// that needs CAP_SYS_RESOURCE, which the engine may lack). Returns the limit now in force.
pub fn raise_fd_limit(wanted: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= wanted {
        return soft;
    }
    // The hard limit too where we may; else as far as it goes.
    if wanted > hard && setrlimit(Resource::RLIMIT_NOFILE, wanted, wanted).is_ok() {
        return wanted;
    }
    let target = wanted.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
        Ok(()) => target,
        Err(_) => soft,
    }
}

/// The answer to a connection over the cap: written, then the connection closes.
fn busy_response(max: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error_code": errors::code::UNAVAILABLE,
        "message": format!(
            "the server has {max} connections open, its most: try again in a moment"
        ),
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Retry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers 503 and closes, reading what the client sent meanwhile (a close with unread data
/// would reset the connection before the client reads the answer). At most a second or two.
async fn refuse(mut stream: TcpStream, answer: Arc<Vec<u8>>) {
    let step = std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(step, stream.write_all(&answer)).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(step, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Serves until the process ends.
pub async fn serve(app: Arc<App>, listener: TcpListener) -> std::io::Result<()> {
    let limits: ConnectionLimits = app.cfg.connections;
    let open = Arc::new(Semaphore::new(limits.max_connections));
    // Refusals are cheap but not free: past this many at once, a connection is just closed.
    let refusing = Arc::new(Semaphore::new(64));
    let busy = Arc::new(busy_response(limits.max_connections));
    let bounds = Arc::new(http::RequestBounds::new(&app.cfg));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait a moment, keep serving.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if let Ok(refusal) = refusing.clone().try_acquire_owned() {
                let answer = busy.clone();
                tokio::spawn(async move {
                    refuse(stream, answer).await;
                    drop(refusal);
                });
            }
            continue;
        };
        let (app, bounds) = (app.clone(), bounds.clone());
        tokio::spawn(async move {
            // A write that makes no progress for the idle timeout (a client that stopped
            // reading) fails, and the connection with it.
            let mut io = tokio_io_timeout::TimeoutStream::new(stream);
            io.set_write_timeout(Some(limits.idle_timeout));
            let service = service_fn(move |req| {
                let (app, bounds) = (app.clone(), bounds.clone());
                async move { Ok::<_, Infallible>(router::dispatch(app, &bounds, req, Some(peer)).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(Box::pin(io)), service)
                .await
            {
                tracing::debug!("connection: {e}");
            }
            drop(permit);
        });
    }
}
