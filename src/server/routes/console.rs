//! The web console: `GET /` and `GET /console/{file}`, plain HTML, CSS and JavaScript embedded
//! in the binary (`src/server/console/`; no build step). The page needs no token to load; it
//! asks for one and calls the API with it, like any client. The headers keep the page from
//! running anything but its own script (program output is shown as text, never as HTML).

use std::sync::Arc;

use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::Response;

use crate::app::App;
use crate::server::errors::{ApiError, ApiResult};
use crate::server::http::{full, Req, Resp};

/// The console's files: name, media type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

fn serve(name: &str) -> ApiResult<Resp> {
    let (_, media, content) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::not_found(format!("the console has no file '{name}'")))?;
    let mut resp = Response::new(full(*content));
    let headers: [(HeaderName, &'static str); 6] = [
        (CONTENT_TYPE, media),
        (CONTENT_SECURITY_POLICY, CSP),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "no-referrer"),
        (CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in headers {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    Ok(resp)
}

pub async fn index(_: Arc<App>, _: Req) -> ApiResult<Resp> {
    serve("index.html")
}

pub async fn asset(_: Arc<App>, req: Req) -> ApiResult<Resp> {
    serve(req.param(0))
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    #[test]
    fn the_page_loads_only_files_that_are_served() {
        let (_, _, html) = ASSETS[0];
        for needed in ["/console/app.js", "/console/style.css"] {
            assert!(html.contains(needed), "index.html does not load {needed}");
        }
        for (name, _, _) in ASSETS {
            assert!(!name.contains('/'), "{name}");
        }
        // No inline script or style: the CSP allows only the served files.
        assert!(!html.contains("<script>") && !html.contains("style="));
    }
}
