//! Environments (Pythia): list and show for every token; import (an uploaded OCI archive) and
//! delete for the master token. The [`crate::env::Catalog`] does the work.

use std::path::Path;
use std::sync::Arc;

use hyper::StatusCode;
use serde_json::Value;

use crate::app::App;
use crate::auth::Principal;
use crate::env::NewEnvironment;
use crate::error::{blocking, Error};
use crate::server::body::{self, Field};
use crate::server::errors::{ApiError, ApiResult};
use crate::server::http::{json_response, Req, Resp};
use crate::server::observe;
use crate::server::views;

pub async fn list(app: Arc<App>, _: Req, _: Principal) -> ApiResult<Resp> {
    let envs = app.envs.clone();
    let entries = blocking(move || Ok(envs.list()?)).await?;
    let items: Vec<Value> = entries.iter().map(views::entry_summary).collect();
    Ok(json_response(StatusCode::OK, &Value::Array(items)))
}

pub async fn get(app: Arc<App>, req: Req, _: Principal) -> ApiResult<Resp> {
    let envid = req.param(0);
    match app.envs.get(envid)? {
        Some(e) => Ok(json_response(StatusCode::OK, &views::entry(&e))),
        None => Err(ApiError::not_found(format!("no environment '{envid}'"))),
    }
}

/// `POST /environments`: the body is the OCI archive (a tar, as `docker save` or
/// `skopeo copy … oci-archive:` write it), with `envid`, `name`, `authors`, `description` in
/// the query; or a multipart form with those fields and the archive as the `image` file part.
pub async fn import(app: Arc<App>, mut req: Req, _: Principal) -> ApiResult<Resp> {
    let tmp_dir = app.cfg.tmp_dir();
    tokio::fs::create_dir_all(&tmp_dir).await?;
    let upload = tmp_dir.join(format!("import-{}.tar", uuid::Uuid::new_v4().simple()));
    let mut meta = NewEnvironment {
        envid: req.query("envid").map(str::to_string),
        name: req.query("name").map(str::to_string),
        authors: req.query("authors").map(str::to_string),
        description: req.query("description").map(str::to_string),
    };
    let media = body::media_type(&req.headers);
    let saved = match media.as_str() {
        "application/x-tar"
        | "application/octet-stream"
        | "application/tar"
        | "application/gzip"
        | "application/x-gzip" => match req.body.take() {
            Some(b) => body::save_to_file(&req.headers, b, app.cfg.max_upload, &upload)
                .await
                .map(|_| ()),
            None => Err(ApiError::malformed("no body")),
        },
        "multipart/form-data" => match req.read_body(app.cfg.max_upload).await {
            Ok(bytes) => save_multipart(&req, bytes, &upload, &mut meta).await,
            Err(e) => Err(e),
        },
        other => Err(ApiError::unsupported(format!(
            "content type '{other}' is not accepted here: send the OCI archive as \
             application/x-tar (or multipart/form-data with an 'image' file part)"
        ))),
    };
    if let Err(e) = saved {
        let _ = tokio::fs::remove_file(&upload).await;
        return Err(e);
    }
    let envs = app.envs.clone();
    let path = upload.clone();
    let imported = blocking(move || Ok(envs.import(&path, meta)?)).await;
    let _ = tokio::fs::remove_file(&upload).await;
    let env = imported?;
    let mut resp = json_response(StatusCode::CREATED, &views::environment(&env));
    observe::set_target(&mut resp, env.envid);
    Ok(resp)
}

/// The form's fields into `meta`, its `image` part into `upload`.
async fn save_multipart(
    req: &Req,
    bytes: bytes::Bytes,
    upload: &Path,
    meta: &mut NewEnvironment,
) -> ApiResult<()> {
    let mut got_image = false;
    for (name, field) in body::multipart_fields(&req.headers, bytes).await? {
        let text = match field {
            Field::File { content, .. } => {
                tokio::fs::write(upload, content).await?;
                got_image = true;
                continue;
            }
            Field::Text(text) if name == "image" => {
                tokio::fs::write(upload, text).await?;
                got_image = true;
                continue;
            }
            Field::Text(text) => text,
        };
        match name.as_str() {
            "envid" => meta.envid = Some(text),
            "name" => meta.name = Some(text),
            "authors" => meta.authors = Some(text),
            "description" => meta.description = Some(text),
            other => return Err(ApiError::bad_request(format!("unknown field '{other}'"))),
        }
    }
    if !got_image {
        return Err(ApiError::bad_request("no 'image' file part in the form"));
    }
    Ok(())
}

pub async fn delete(app: Arc<App>, req: Req, _: Principal) -> ApiResult<Resp> {
    let envid = req.param(0).to_string();
    let envs = app.envs.clone();
    let removed = blocking(move || envs.remove(&envid).map_err(Error::from)).await?;
    Ok(json_response(StatusCode::OK, &views::environment(&removed)))
}
