//! Environments (Pythia): list and show for every token; import (an uploaded OCI archive) and
//! delete for the master token.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::errors::{code, ApiError, ApiResult};
use super::{body, dir_env_map, json_response, App, Req, Resp};
use crate::env::{EnvError, Environment, NewEnvironment};

/// Pythia gives authors as a list; we keep them as one comma-separated string.
fn authors(text: &str) -> Value {
    Value::Array(
        text.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| Value::String(a.to_string()))
            .collect(),
    )
}

fn summary(e: &Environment) -> Value {
    json!({ "envid": e.envid, "name": e.name, "authors": authors(&e.authors) })
}

fn detail(e: &Environment) -> Value {
    let mut v = summary(e);
    v["description"] = Value::String(e.description.clone());
    v["image_digest"] = Value::String(e.image_digest.clone());
    v
}

fn dir_env(envid: &str) -> Value {
    json!({
        "envid": envid,
        "name": envid,
        "authors": [],
        "description": "a root file system directory given to the server at start",
    })
}

pub fn env_error(e: EnvError) -> ApiError {
    match e {
        EnvError::NotFound(id) => ApiError::not_found(format!("no environment '{id}'")),
        EnvError::AlreadyExists(id) => ApiError::conflict(
            code::ALREADY_EXISTS,
            format!("environment '{id}' already exists"),
        ),
        EnvError::InUse(id) => ApiError::conflict(
            code::IN_USE,
            format!("environment '{id}' is in use by a running execution"),
        ),
        EnvError::InvalidId(id) => {
            ApiError::bad_request(format!("'{id}' is not a valid environment id"))
        }
        e @ (EnvError::Io { .. } | EnvError::Corrupt { .. }) => {
            ApiError::internal(format!("environment store: {e}"))
        }
        // The image itself is wrong: a bad archive, a digest mismatch, an escaping entry.
        other => ApiError::bad_request(format!("environment: {other}")),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EnvError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("environment task: {e}")))?
        .map_err(env_error)
}

pub async fn list(app: &App, req: Req) -> ApiResult<Resp> {
    req.auth(app).await?;
    let mut items: Vec<Value> = app
        .cfg
        .dir_envs
        .iter()
        .map(|(id, _)| dir_env(id))
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("description");
            }
            v
        })
        .collect();
    let store = app.envs.clone();
    let envs = blocking(move || store.list()).await?;
    items.extend(envs.iter().map(summary));
    Ok(json_response(StatusCode::OK, &Value::Array(items)))
}

pub async fn get(app: &App, req: Req) -> ApiResult<Resp> {
    req.auth(app).await?;
    let envid = req.params[0].clone();
    if dir_env_map(&app.cfg).contains_key(envid.as_str()) {
        return Ok(json_response(StatusCode::OK, &dir_env(&envid)));
    }
    if !crate::env::valid_envid(&envid) {
        return Err(ApiError::not_found(format!("no environment '{envid}'")));
    }
    match app.envs.get(&envid).map_err(env_error)? {
        Some(e) => Ok(json_response(StatusCode::OK, &detail(&e))),
        None => Err(ApiError::not_found(format!("no environment '{envid}'"))),
    }
}

/// `POST /environments`: the body is the OCI archive (a tar, as `docker save` or
/// `skopeo copy … oci-archive:` write it), with `envid`, `name`, `authors`, `description` in
/// the query; or a multipart form with those fields and the archive as the `image` file part.
pub async fn import(app: &App, mut req: Req) -> ApiResult<Resp> {
    req.auth(app).await?.require_master("import environments")?;
    let tmp_dir = app.cfg.data.join("tmp");
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
        | "application/x-gzip" => {
            let b = req
                .body
                .take()
                .ok_or_else(|| ApiError::malformed("no body"))?;
            body::save_to_file(&req.headers, b, app.cfg.max_upload, &upload)
                .await
                .map(|_| ())
        }
        "multipart/form-data" => {
            let bytes = req.read_body(app.cfg.max_upload).await?;
            save_multipart(&req, bytes, &upload, &mut meta).await
        }
        other => Err(ApiError::unsupported(format!(
            "content type '{other}' is not accepted here: send the OCI archive as \
             application/x-tar (or multipart/form-data with an 'image' file part)"
        ))),
    };
    if let Err(e) = saved {
        let _ = tokio::fs::remove_file(&upload).await;
        return Err(e);
    }
    if let Some(id) = &meta.envid {
        if dir_env_map(&app.cfg).contains_key(id.as_str()) {
            let _ = tokio::fs::remove_file(&upload).await;
            return Err(env_error(EnvError::AlreadyExists(id.clone())));
        }
    }
    let store = app.envs.clone();
    let path = upload.clone();
    let result = blocking(move || store.import(&path, meta)).await;
    let _ = tokio::fs::remove_file(&upload).await;
    Ok(json_response(StatusCode::CREATED, &detail(&result?)))
}

async fn save_multipart(
    req: &Req,
    bytes: bytes::Bytes,
    upload: &std::path::Path,
    meta: &mut NewEnvironment,
) -> ApiResult<()> {
    let content_type = req
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| ApiError::malformed(format!("multipart body: {e}")))?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let bad = |e: multer::Error| ApiError::malformed(format!("multipart body: {e}"));
    let mut got_image = false;
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        if field.file_name().is_some() || name == "image" {
            tokio::fs::write(upload, field.bytes().await.map_err(bad)?).await?;
            got_image = true;
            continue;
        }
        let text = field.text().await.map_err(bad)?;
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

pub async fn delete(app: &App, req: Req) -> ApiResult<Resp> {
    req.auth(app).await?.require_master("delete environments")?;
    let envid = req.params[0].clone();
    if dir_env_map(&app.cfg).contains_key(envid.as_str()) {
        return Err(ApiError::forbidden(format!(
            "environment '{envid}' was given to the server at start and can't be deleted"
        )));
    }
    if !crate::env::valid_envid(&envid) {
        return Err(ApiError::not_found(format!("no environment '{envid}'")));
    }
    let env = app
        .envs
        .get(&envid)
        .map_err(env_error)?
        .ok_or_else(|| ApiError::not_found(format!("no environment '{envid}'")))?;
    let store = app.envs.clone();
    blocking(move || store.remove(&envid)).await?;
    Ok(json_response(StatusCode::OK, &detail(&env)))
}
