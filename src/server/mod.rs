//! `sandpit serve`: the HTTP API on hyper, a face over the engine. Handlers parse (typed
//! request structs, `requests.rs`), call the domain (`crate::exec`, `crate::env`,
//! `crate::auth`), and render (`views.rs`); the route table (`router.rs`) says which token each
//! route needs.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::app::App;

pub mod body;
pub mod errors;
pub mod http;
pub mod observe;
pub mod openapi;
pub mod requests;
pub mod router;
pub mod routes;
pub mod views;

/// Serves until the process ends.
pub async fn serve(app: Arc<App>, listener: TcpListener) -> std::io::Result<()> {
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
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(router::dispatch(app, req, Some(peer)).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection: {e}");
            }
        });
    }
}
