//! The OPMATE file repository (issue 24 item 8): upload (raw body), list, download, delete.
//! Reading needs `task.develop` or `task.execute`; uploading and deleting `task.develop`.
//! Running scripts reach the same files through their agent (`haechi file get|put`), not here.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use haechi_exec::{FileCaller, NewFile};
use haechi_types::{Code, Error};
use serde::{Deserialize, Serialize};

use super::wire::all;
use super::wire::exec::FileInfo;
use crate::error::ApiResult;
use crate::extract::{need, Allowed};
use crate::AppState;

/// Every file of the repository, without content.
#[derive(Serialize, utoipa::ToSchema)]
pub struct FileList {
    files: Vec<FileInfo>,
}

/// The query of an upload.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The file's name: 1 to 128 ASCII letters, digits, `.`, `_`, `-`; never `..`.
    name: String,
    /// A description kept with the file.
    #[serde(default)]
    description: String,
    /// Replace a file of that name (a new version) instead of answering 409.
    #[serde(default)]
    replace: bool,
}

/// Lists the repository's files (name, size, SHA-256, version, encrypted or not).
#[utoipa::path(get, path = "/api/v1/files", tag = "files",
    responses((status = 200, body = FileList), (status = 401), (status = 403)))]
pub async fn list_files(
    State(state): State<AppState>,
    _caller: Allowed<need::FileRead>,
) -> ApiResult<axum::Json<FileList>> {
    Ok(axum::Json(FileList {
        files: all(&state.exec.list_files().await?),
    }))
}

/// Uploads a file: the request body is the content as is (any content type),
/// `?name=...&description=...&replace=true|false`. Over `files.max_bytes` → 413; a bad name →
/// 400; a taken name without `replace=true` → 409; in each case nothing is stored. Audited
/// (name, size, SHA-256; never the content).
#[utoipa::path(post, path = "/api/v1/files", tag = "files", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = FileInfo), (status = 400), (status = 401), (status = 403),
        (status = 409), (status = 413), (status = 503)))]
pub async fn upload_file(
    State(state): State<AppState>,
    caller: Allowed<need::TaskDevelop>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    haechi_exec::check_file_name(&q.name)?;
    let max = state.exec.max_file_bytes();
    let too_large = || {
        Error::new(
            Code::PayloadTooLarge,
            format!("the file is larger than the repository takes: at most {max} bytes (files.max_bytes)"),
        )
    };
    let limit = usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1);
    let content = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    if content.len() as u64 > max {
        return Err(too_large().into());
    }
    let info = state
        .exec
        .put_file(
            FileCaller::User(&caller.actor),
            NewFile {
                name: q.name,
                description: q.description,
                replace: q.replace,
            },
            &content,
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(FileInfo::from(&info))))
}

/// A file's details without its content.
#[utoipa::path(get, path = "/api/v1/files/{name}/info", tag = "files",
    params(("name" = String, Path, description = "file name")),
    responses((status = 200, body = FileInfo), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn file_info(
    State(state): State<AppState>,
    _caller: Allowed<need::FileRead>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<FileInfo>> {
    Ok(axum::Json(FileInfo::from(
        &state.exec.file_info(&name).await?,
    )))
}

/// Downloads a file's content (`application/octet-stream`; its SHA-256 in `X-Haechi-Sha256`).
/// Audited before the content leaves. An encrypted file needs the vault unsealed (503).
#[utoipa::path(get, path = "/api/v1/files/{name}", tag = "files",
    params(("name" = String, Path, description = "file name")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400), (status = 401), (status = 403), (status = 404), (status = 503)))]
pub async fn download_file(
    State(state): State<AppState>,
    caller: Allowed<need::FileRead>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let (info, content) = state
        .exec
        .get_file(FileCaller::User(&caller.actor), &name)
        .await?;
    Ok(file_response(&info, content))
}

/// The response carrying a file's content (the console's download uses it too).
pub fn file_response(info: &haechi_exec::FileInfo, content: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(content));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    // Names are ASCII letters, digits, '.', '_' and '-' only: safe in the header as they are.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", info.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&info.sha256) {
        h.insert("x-haechi-sha256", v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Deletes a file. Audited.
#[utoipa::path(delete, path = "/api/v1/files/{name}", tag = "files",
    params(("name" = String, Path, description = "file name")),
    responses((status = 204), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn delete_file(
    State(state): State<AppState>,
    caller: Allowed<need::TaskDevelop>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.exec.delete_file(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
