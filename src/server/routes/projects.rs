//! Projects (Sphere Engine Containers): list and show for every token; create, replace and
//! delete for the master token and API keys allowed to (`manage_projects`). A project comes
//! as JSON (`project.json`'s fields and the files' contents) or as an archive of a project
//! directory (a tar, compressed or not, or a zip, sent as `application/x-tar`,
//! `application/zip` or `application/octet-stream`; `?id=`, and `?environment=` for an
//! archive without `project.json`). The judge service (`crate::judge`) does the work.

use std::sync::Arc;

use hyper::StatusCode;
use serde_json::json;

use crate::app::App;
use crate::auth::Principal;
use crate::judge::project::ManifestDefaults;
use crate::judge::service::{NewProject, ProjectInput};
use crate::server::body;
use crate::server::errors::{ApiError, ApiResult};
use crate::server::http::{json_response, Req, Resp};
use crate::server::requests::project_from_body;
use crate::server::views;

/// Media types of an archive upload. Which format it is (tar, compressed or not, or zip) the
/// unpacker tells from its first bytes: the type only says "an archive, not a form".
pub(crate) fn is_archive(media: &str) -> bool {
    matches!(
        media,
        "application/x-tar"
            | "application/zip"
            | "application/x-zip-compressed"
            | "application/octet-stream"
            | "application/tar"
            | "application/gzip"
            | "application/x-gzip"
            | "application/x-compressed-tar"
            | "application/zstd"
    )
}

/// The project a request gives, and the id it asks for; the path of an uploaded archive,
/// to remove once used.
async fn read_project(
    app: &App,
    req: &mut Req,
) -> ApiResult<(Option<String>, NewProject, Option<std::path::PathBuf>)> {
    let defaults = ManifestDefaults {
        name: req.query("name").map(str::to_string),
        environment: req.query("environment").map(str::to_string),
    };
    if is_archive(&body::media_type(&req.headers)) {
        let (mut file, upload) = app.exec.dirs().scratch_file().await?;
        let limit = app.cfg.max_upload;
        let stall = req.bounds.parse.stall;
        let saved = match req.body.take() {
            Some(b) => body::save_to_file(&req.headers, b, limit, stall, &mut file, || {
                ApiError::too_large(limit)
            })
            .await
            .map(drop),
            None => Err(ApiError::malformed("no body")),
        };
        drop(file);
        if let Err(e) = saved {
            let _ = tokio::fs::remove_file(&upload).await;
            return Err(e);
        }
        let id = req.query("id").map(str::to_string);
        return Ok((
            id,
            NewProject {
                input: ProjectInput::Archive(upload.clone()),
                defaults,
            },
            Some(upload),
        ));
    }
    let map = req.read_object(app.cfg.max_body).await?;
    let (id, inline) = project_from_body(map)?;
    Ok((
        id.or_else(|| req.query("id").map(str::to_string)),
        NewProject {
            input: ProjectInput::Inline(inline),
            defaults,
        },
        None,
    ))
}

async fn remove_upload(upload: Option<std::path::PathBuf>) {
    if let Some(path) = upload {
        let _ = tokio::fs::remove_file(path).await;
    }
}

pub async fn create(app: Arc<App>, mut req: Req, who: Principal) -> ApiResult<Resp> {
    let (id, new, upload) = read_project(&app, &mut req).await?;
    let created = app.judge.create_project(&who, id, new).await;
    remove_upload(upload).await;
    Ok(json_response(
        StatusCode::CREATED,
        &views::project(&created?),
    ))
}

/// Replaces the project (a new revision; submissions already made keep theirs), or creates
/// it under this id.
pub async fn replace(app: Arc<App>, mut req: Req, who: Principal) -> ApiResult<Resp> {
    let id = req.param(0).to_string();
    let (asked, new, upload) = read_project(&app, &mut req).await?;
    if asked.as_deref().is_some_and(|a| a != id) {
        remove_upload(upload).await;
        return Err(ApiError::bad_request(format!(
            "'id' says '{}' but the path says '{id}'",
            asked.unwrap_or_default()
        )));
    }
    let replaced = app.judge.replace_project(&who, &id, new).await;
    remove_upload(upload).await;
    let (row, created) = replaced?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &views::project(&row)))
}

pub async fn get(app: Arc<App>, req: Req, _: Principal) -> ApiResult<Resp> {
    let row = app.judge.get_project(req.param(0)).await?;
    Ok(json_response(StatusCode::OK, &views::project(&row)))
}

pub async fn list(app: Arc<App>, req: Req, _: Principal) -> ApiResult<Resp> {
    let limit = req.query_number("limit", 20, 100)?;
    let offset = req.query_number("offset", 0, i64::MAX)?;
    let (rows, total) = app.judge.list_projects(limit, offset).await?;
    let items: Vec<serde_json::Value> = rows.iter().map(views::project).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "items": items, "paging": { "limit": limit, "offset": offset, "total": total } }),
    ))
}

pub async fn delete(app: Arc<App>, req: Req, _: Principal) -> ApiResult<Resp> {
    let row = app.judge.delete_project(req.param(0)).await?;
    Ok(json_response(StatusCode::OK, &views::project(&row)))
}
