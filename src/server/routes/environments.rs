//! Environments (Pythia): list and show for every token; import (an uploaded OCI archive) and
//! delete for the master token. The [`crate::env::Catalog`] does the work.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::Value;

use crate::app::App;
use crate::auth::Principal;
use crate::env::NewEnvironment;
use crate::error::{blocking, Error};
use crate::server::body::{self, Received};
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
/// Either way the archive is streamed to scratch space as it arrives, never whole in memory.
pub async fn import(app: Arc<App>, mut req: Req, _: Principal) -> ApiResult<Resp> {
    let mut meta = NewEnvironment {
        envid: req.query("envid").map(str::to_string),
        name: req.query("name").map(str::to_string),
        authors: req.query("authors").map(str::to_string),
        description: req.query("description").map(str::to_string),
    };
    let media = body::media_type(&req.headers);
    let tar = matches!(
        media.as_str(),
        "application/x-tar"
            | "application/octet-stream"
            | "application/tar"
            | "application/gzip"
            | "application/x-gzip"
    );
    if !tar && media != "multipart/form-data" {
        return Err(ApiError::unsupported(format!(
            "content type '{media}' is not accepted here: send the OCI archive as \
             application/x-tar (or multipart/form-data with an 'image' file part)"
        )));
    }
    let incoming = req
        .body
        .take()
        .ok_or_else(|| ApiError::malformed("no body"))?;
    let (mut file, path) = app.exec.dirs().scratch_file().await?;
    let upload = Received { path };
    let limit = app.cfg.max_upload;
    if tar {
        let stall = req.bounds.parse.stall;
        body::save_to_file(&req.headers, incoming, limit, stall, &mut file, || {
            ApiError::too_large(limit)
        })
        .await?;
    } else {
        let (fields, got_image) = body::save_multipart(
            &req.headers,
            incoming,
            limit,
            &req.bounds.parse,
            "image",
            &mut file,
        )
        .await?;
        for (name, text) in fields {
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
    }
    drop(file);
    let envs = app.envs.clone();
    let path = upload.path.clone();
    let imported = blocking(move || Ok(envs.import(&path, meta)?)).await;
    drop(upload);
    let env = imported?;
    let mut resp = json_response(StatusCode::CREATED, &views::environment(&env));
    observe::set_target(&mut resp, env.envid);
    Ok(resp)
}

pub async fn delete(app: Arc<App>, req: Req, _: Principal) -> ApiResult<Resp> {
    let envid = req.param(0).to_string();
    let envs = app.envs.clone();
    let removed = blocking(move || envs.remove(&envid).map_err(Error::from)).await?;
    Ok(json_response(StatusCode::OK, &views::environment(&removed)))
}
