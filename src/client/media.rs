//! The content repository for clients: uploads (direct, and asynchronous
//! with `create` first), downloads and thumbnails of local and remote
//! content, and the repository's configuration.
//!
//! Authenticated media (`/_matrix/client/v1/media/...`, spec v1.11) serves
//! everything, fetching remote content through its server and caching it.
//! The deprecated unauthenticated `/_matrix/media/{r0,v1,v3}/download` and
//! `/thumbnail` serve local content only, as Synapse serves media it holds
//! from before its freeze, and as servers that do not know the federation
//! media endpoints fetch our content: remote content, which is cached only
//! since the freeze (all of it, here), is not served there (spec: "freeze").
//!
//! Thumbnails: we do not decode images (no image crate: binary size and
//! memory on a board). A thumbnail request is answered with the content
//! itself when it is a PNG, JPEG, GIF or WebP image clients can scale, of at
//! most [`content::THUMBNAIL_PASSTHROUGH_MAX_BYTES`], and not animated
//! unless animation was asked for; otherwise 404 `M_NOT_FOUND`, as the spec
//! allows when a thumbnail cannot be made. Remote thumbnails are asked of
//! the content's server and cached. URL previews (`preview_url`, both
//! families) are fetched by `remote/preview.rs` when the config's
//! `url_preview_enabled` says so; otherwise 404 `M_UNRECOGNIZED`, as Synapse
//! answers when they are disabled.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#content-repository>.

use std::rc::Rc;

use http_types::Method;
use serde_json::json;

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::identifiers::ServerName;
use crate::protocol::media::{self, MediaId};
use crate::remote::media::{Fetched, fetch_content, fetch_thumbnail};
use crate::remote::preview;
use crate::request::{Request, Response};
use crate::rooms::media::{self as content, Content};
use crate::rooms::upload;
use crate::storage::{MediaInfo, NewMedia, Storage, now_ms};

/// Random characters in a new media ID (Synapse's length; 62^24 is ample).
const MEDIA_ID_CHARS: usize = 24;

/// Spec: an unused ID from `create` SHOULD expire, 24 hours recommended.
const PENDING_UPLOAD_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// Spec: the number of pending uploads per user SHOULD be limited
/// (`M_LIMIT_EXCEEDED`); Synapse's default is 5.
const MAX_PENDING_UPLOADS_PER_USER: usize = 5;

/// A file name is a file name: file systems cap them at 255 bytes.
const MAX_UPLOAD_NAME_BYTES: usize = 255;

/// What is stored when an upload names no content type (spec default).
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Which family of endpoints a download came through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// `/_matrix/client/v1/media/...` with an access token.
    Authenticated,
    /// The deprecated `/_matrix/media/...`: local content only.
    Unauthenticated,
}

/// Routes `/_matrix/media/{r0,v1,v3}/...` (uploads, and the deprecated
/// unauthenticated downloads).
pub async fn route_legacy(app: &Rc<App>, request: &Request) -> Result<Response> {
    let path = request.path();
    let (version, rest) = match path.as_slice() {
        ["_matrix", "media", version @ ("r0" | "v1" | "v3"), rest @ ..] => (*version, rest),
        _ => return Err(Error::Unrecognized { method_not_allowed: false }),
    };
    let method = &request.method;
    use Method::{Get, Post, Put};
    let result = match rest {
        ["upload"] if *method == Post => upload(app, request).await,
        ["create"] if *method == Post && version == "v1" => create(app, request),
        ["upload", server, media_id] if *method == Put => upload_to(app, request, server, media_id).await,
        ["download", server, media_id] if *method == Get => {
            download(app, request, server, media_id, None, Access::Unauthenticated).await
        }
        ["download", server, media_id, file_name] if *method == Get => {
            download(app, request, server, media_id, Some(file_name), Access::Unauthenticated).await
        }
        ["thumbnail", server, media_id] if *method == Get => {
            thumbnail(app, request, server, media_id, Access::Unauthenticated).await
        }
        ["config"] if *method == Get => config(app, request),
        ["preview_url"] if *method == Get => preview_url(app, request).await,
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    };
    if result.is_err() {
        // An upload refused before its body was taken (no token, a bad name).
        if let Some(body) = request.upload.take() {
            body.discard().await;
        }
    }
    result
}

/// Routes `/_matrix/client/v1/media/...` (authenticated media).
pub async fn route_authenticated(app: &Rc<App>, request: &Request, rest: &[&str]) -> Result<Response> {
    if request.method != Method::Get {
        return Err(Error::Unrecognized { method_not_allowed: false });
    }
    match rest {
        ["download", server, media_id] => {
            app.authenticate(request)?;
            download(app, request, server, media_id, None, Access::Authenticated).await
        }
        ["download", server, media_id, file_name] => {
            app.authenticate(request)?;
            download(app, request, server, media_id, Some(file_name), Access::Authenticated).await
        }
        ["thumbnail", server, media_id] => {
            app.authenticate(request)?;
            thumbnail(app, request, server, media_id, Access::Authenticated).await
        }
        ["config"] => config(app, request),
        ["preview_url"] => preview_url(app, request).await,
        _ => Err(Error::Unrecognized { method_not_allowed: false }),
    }
}

/// `GET .../config`: the largest upload.
fn config(app: &App, request: &Request) -> Result<Response> {
    app.authenticate(request)?;
    Ok(Response::ok(json!({ "m.upload.size": app.config.limits.max_media_body })))
}

/// `GET .../preview_url?url=&ts=`: the Open Graph metadata of a page.
/// Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1mediapreview_url>.
async fn preview_url(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    if !app.config.url_preview_enabled {
        return Err(Error::Unrecognized { method_not_allowed: false });
    }
    let url = request.query("url").ok_or_else(|| Error::MissingParam("url is required".into()))?;
    if url.len() > preview::MAX_URL_BYTES {
        return Err(Error::InvalidParam(format!("url is longer than {} bytes", preview::MAX_URL_BYTES)));
    }
    let scheme = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        return Err(Error::InvalidParam("url must be an http or https URL".into()));
    }
    let ts = match request.query("ts") {
        Some(text) => text.parse::<i64>().map_err(|_| Error::InvalidParam("ts must be an integer".into()))?,
        None => now_ms(),
    };
    let _turn =
        app.url_previews.try_take(&owner.user_id).ok_or(Error::LimitExceeded { retry_after_ms: 1_000 })?;
    Ok(Response::ok(preview::preview(app, &owner.user_id, url, ts).await?))
}

/// `POST /_matrix/media/v3/upload?filename=`: stores the body as new content.
async fn upload(app: &Rc<App>, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let (content_type, upload_name) = upload_metadata(request)?;
    let server = own_server(app)?;
    let media_id = new_media_id()?;
    let media = NewMedia {
        origin: server.as_str(),
        media_id: media_id.as_str(),
        variant: "",
        content_type: &content_type,
        upload_name: upload_name.as_deref(),
        uploader: Some(&owner.user_id),
        content: &[],
    };
    receive(app, request, &media, |_| Ok(()), |_| Ok(())).await?;
    Ok(Response::ok(json!({ "content_uri": media::mxc_uri(&server, &media_id) })))
}

/// Admits an upload (see [`upload::start`]), then streams its body into the
/// database, finishing with `finish` in the transaction that makes it visible.
async fn receive(
    app: &Rc<App>,
    request: &Request,
    media: &NewMedia<'_>,
    check: impl FnOnce(&Storage) -> Result<()>,
    finish: impl FnOnce(&Storage) -> Result<()>,
) -> Result<()> {
    let body = request.upload.take().ok_or_else(|| Error::Internal("the upload body was taken".into()))?;
    let upload = match upload::start(&app.engine, media, body.length, check) {
        Ok(upload) => upload,
        Err(error) => {
            body.discard().await;
            return Err(error);
        }
    };
    let reader = body.into_reader().await;
    upload.receive(reader, app.config.limits.media_stall_timeout(), finish).await
}

/// `POST /_matrix/media/v1/create`: a media ID whose content comes later.
fn create(app: &App, request: &Request) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let server = own_server(app)?;
    let media_id = new_media_id()?;
    let now = now_ms();
    let expires = now + PENDING_UPLOAD_LIFETIME_MS;
    app.in_transaction(|| {
        let storage = app.storage();
        storage.delete_expired_pending_media(now)?;
        let (pending, first_expiry) = storage.pending_media_of(&owner.user_id, now)?;
        if MAX_PENDING_UPLOADS_PER_USER <= pending {
            let retry_after_ms = first_expiry.map_or(0, |expiry| expiry.saturating_sub(now).max(0) as u64);
            return Err(Error::LimitExceeded { retry_after_ms });
        }
        storage.insert_pending_media(media_id.as_str(), &owner.user_id, expires)
    })?;
    Ok(Response::ok(json!({
        "content_uri": media::mxc_uri(&server, &media_id),
        "unused_expires_at": expires,
    })))
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`: the content of an
/// ID from `create`, once, by the user who created it.
async fn upload_to(app: &Rc<App>, request: &Request, server: &str, media_id: &str) -> Result<Response> {
    let owner = app.authenticate(request)?;
    let not_found = || Error::NotFound("no such media ID was created".into());
    if server != app.config.server_name {
        return Err(not_found());
    }
    let media_id = MediaId::parse(media_id).map_err(|_| not_found())?;
    let (content_type, upload_name) = upload_metadata(request)?;
    let check = |storage: &Storage| {
        let Some(pending) = storage.pending_media(media_id.as_str(), now_ms())? else {
            return match storage.media(server, media_id.as_str(), "")? {
                Some(info) if info.uploader.as_deref() == Some(&owner.user_id) => {
                    Err(Error::matrix(409, "M_CANNOT_OVERWRITE_MEDIA", "this media already has content"))
                }
                Some(_) => Err(Error::Forbidden("only the user who created this media ID may upload".into())),
                None => Err(not_found()),
            };
        };
        if pending.uploader != owner.user_id {
            return Err(Error::Forbidden("only the user who created this media ID may upload".into()));
        }
        Ok(())
    };
    let media = NewMedia {
        origin: server,
        media_id: media_id.as_str(),
        variant: "",
        content_type: &content_type,
        upload_name: upload_name.as_deref(),
        uploader: Some(&owner.user_id),
        content: &[],
    };
    receive(app, request, &media, check, |storage| storage.delete_pending_media(media_id.as_str())).await?;
    app.media_uploaded.notify(usize::MAX);
    Ok(Response::ok(json!({})))
}

/// The content type (header, spec default `application/octet-stream`) and
/// file name (`?filename=`) of an upload.
fn upload_metadata(request: &Request) -> Result<(String, Option<String>)> {
    let content_type = match request.header("content-type") {
        None => DEFAULT_CONTENT_TYPE.to_owned(),
        Some(value) => media::clean_content_type(value)
            .ok_or_else(|| Error::InvalidParam("the Content-Type is not a media type".into()))?,
    };
    let upload_name = request.query("filename").filter(|name| !name.is_empty());
    if let Some(name) = upload_name {
        if MAX_UPLOAD_NAME_BYTES < name.len() || name.chars().any(char::is_control) {
            return Err(Error::InvalidParam(format!(
                "`filename` must be at most {MAX_UPLOAD_NAME_BYTES} bytes without control characters"
            )));
        }
    }
    Ok((content_type, upload_name.map(str::to_owned)))
}

/// `GET .../download/{serverName}/{mediaId}[/{fileName}]`.
async fn download(
    app: &Rc<App>,
    request: &Request,
    server: &str,
    media_id: &str,
    file_name: Option<&str>,
    access: Access,
) -> Result<Response> {
    let (server, media_id) = parse_mxc(server, media_id)?;
    let wait = content::upload_wait(request.query("timeout_ms"));
    if server.as_str() == app.config.server_name {
        let info = content::local_content(app, &media_id, wait).await?;
        return serve(app, request, &info, file_name);
    }
    if access == Access::Unauthenticated {
        return Err(remote_refused());
    }
    let cached = app.storage().media(server.as_str(), media_id.as_str(), "")?;
    if let Some(info) = cached {
        return serve(app, request, &info, file_name);
    }
    let fetched = fetch_content(app, &server, &media_id, wait).await?;
    cache(app, &server, &media_id, "", &fetched)?;
    Ok(serve_fetched(fetched, file_name))
}

/// `GET .../thumbnail/{serverName}/{mediaId}?width&height&method&animated`.
async fn thumbnail(
    app: &Rc<App>,
    request: &Request,
    server: &str,
    media_id: &str,
    access: Access,
) -> Result<Response> {
    let (server, media_id) = parse_mxc(server, media_id)?;
    let thumbnail = content::thumbnail_request(|name| request.query(name))?;
    let wait = content::upload_wait(request.query("timeout_ms"));
    if server.as_str() == app.config.server_name {
        let info = content::local_content(app, &media_id, wait).await?;
        if !content::serves_as_thumbnail(app, &info, &thumbnail)? {
            return Err(Error::NotFound("this server makes no thumbnail of this content".into()));
        }
        return serve(app, request, &info, None);
    }
    if access == Access::Unauthenticated {
        return Err(remote_refused());
    }
    // The content itself when we hold it and it will do, then a thumbnail
    // its server made before, then a new one from its server.
    let original = app.storage().media(server.as_str(), media_id.as_str(), "")?;
    if let Some(info) = original {
        if content::serves_as_thumbnail(app, &info, &thumbnail)? {
            return serve(app, request, &info, None);
        }
    }
    let variant = thumbnail.variant();
    let cached = app.storage().media(server.as_str(), media_id.as_str(), &variant)?;
    if let Some(info) = cached {
        return serve(app, request, &info, None);
    }
    let fetched = fetch_thumbnail(app, &server, &media_id, &thumbnail, wait).await?;
    cache(app, &server, &media_id, &variant, &fetched)?;
    Ok(serve_fetched(fetched, None))
}

/// Serves stored content, named `file_name` or else its upload name.
fn serve(app: &Rc<App>, request: &Request, info: &MediaInfo, file_name: Option<&str>) -> Result<Response> {
    content::record_access(app, info)?;
    // Streams are shared out per user, or per address without a token.
    let client = match app.authenticate(request) {
        Ok(owner) => owner.user_id,
        Err(_) => request.peer.address.ip().to_string(),
    };
    let body = content::read(&app.engine, info, Vec::new(), Vec::new(), &client)?;
    Ok(content_response(&info.content_type, file_name.or(info.upload_name.as_deref()), body))
}

/// Serves content just fetched from another server.
fn serve_fetched(fetched: Fetched, file_name: Option<&str>) -> Response {
    let file_name = file_name.or(fetched.upload_name.as_deref()).map(str::to_owned);
    content_response(&fetched.content_type, file_name.as_deref(), Content::Bytes(fetched.content))
}

fn content_response(content_type: &str, file_name: Option<&str>, body: Content) -> Response {
    Response {
        status: 200,
        content_type: media::content_type_header(content_type).into(),
        body: body.into(),
        headers: content::content_headers(content_type, file_name),
    }
}

/// Keeps a copy of remote content (or of a thumbnail of it).
fn cache(app: &App, server: &ServerName, media_id: &MediaId, variant: &str, fetched: &Fetched) -> Result<()> {
    app.in_transaction(|| {
        // A concurrent request may have cached it first: that copy stays.
        app.storage().insert_media(&NewMedia {
            origin: server.as_str(),
            media_id: media_id.as_str(),
            variant,
            content_type: &fetched.content_type,
            upload_name: fetched.upload_name.as_deref(),
            uploader: None,
            content: &fetched.content,
        })?;
        Ok(())
    })
}

/// The two parts of an `mxc://` URI from a path, validated (spec: server
/// names by their grammar, media IDs by their characters).
fn parse_mxc(server: &str, media_id: &str) -> Result<(ServerName, MediaId)> {
    let server = ServerName::parse(server)
        .map_err(|error| Error::InvalidParam(format!("server name {server:?}: {error}")))?;
    let media_id = MediaId::parse(media_id).map_err(Error::InvalidParam)?;
    Ok((server, media_id))
}

fn remote_refused() -> Error {
    Error::NotFound(
        "remote media is served on the authenticated /_matrix/client/v1/media endpoints only".into(),
    )
}

fn own_server(app: &App) -> Result<ServerName> {
    ServerName::parse(&app.config.server_name).map_err(|error| Error::Internal(error.to_string()))
}

fn new_media_id() -> Result<MediaId> {
    MediaId::parse(&crate::credentials::random_string(MEDIA_ID_CHARS)).map_err(Error::Internal)
}
