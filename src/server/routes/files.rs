//! Files kept by reference (`crate::files`): list a key's files, download one (streamed from
//! disk), delete one. Files are made by executions (`keep`) and used by executions
//! (`files: {"a.out": {"file_id": …}}`).

use std::sync::Arc;

use hyper::header::{HeaderValue, CONTENT_DISPOSITION, ETAG};
use hyper::StatusCode;
use serde_json::json;

use crate::app::App;
use crate::auth::Principal;
use crate::server::errors::ApiResult;
use crate::server::http::{file_response, json_response, Req, Resp};
use crate::server::views;

pub async fn list(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let limit = req.query_number("limit", 20, 100)?;
    let offset = req.query_number("offset", 0, i64::MAX)?;
    let (rows, total) = app.files.list(&who, limit, offset).await?;
    let items: Vec<_> = rows.iter().map(views::file).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "paging": { "limit": limit, "offset": offset, "total": total } }),
    ))
}

/// The bytes, streamed; `ETag` is the content's SHA-256, the file name its kept path's last
/// part.
pub async fn download(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let row = app.files.get(&who, req.param(0)).await?;
    let file = app.files.open_blob(&row).await?;
    let len = u64::try_from(row.size).unwrap_or(0);
    let mut resp = file_response("application/octet-stream", file, len);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", row.sha256)) {
        headers.insert(ETAG, v);
    }
    let base = row.name.rsplit('/').next().unwrap_or_default();
    // Only a plain name goes into the header (no quoting games).
    if !base.is_empty()
        && base
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-+".contains(&c))
    {
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{base}\"")) {
            headers.insert(CONTENT_DISPOSITION, v);
        }
    }
    Ok(resp)
}

pub async fn delete(app: Arc<App>, req: Req, who: Principal) -> ApiResult<Resp> {
    let row = app.files.delete(&who, req.param(0)).await?;
    Ok(json_response(StatusCode::OK, &views::file(&row)))
}
