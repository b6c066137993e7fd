//! Media over federation: fetching other servers' content and thumbnails for
//! our users (serving ours is `federation::media`), falling
//! back to the deprecated `/_matrix/media/v3/...` endpoints for servers that
//! do not know the federation ones.
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#content-repository>.

use std::time::Duration;

use http_types::Method;
use serde_json::Value;

use super::transport::RawResponse;
use super::{client, discovery, pdus::encode};
use crate::error::{Error, Result};
use crate::protocol::identifiers::ServerName;
use crate::protocol::media::{self, MediaId, ThumbnailRequest};
use crate::remote::Remote;

/// Room in a multipart answer for its part headers and the JSON part, on
/// top of the content itself.
const MULTIPART_OVERHEAD_BYTES: usize = 64 << 10;

/// What is served when no content type is known.
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Content fetched from another server.
pub struct Fetched {
    pub content_type: String,
    pub upload_name: Option<String>,
    pub content: Vec<u8>,
}

/// What the federation endpoint answered.
enum Answer {
    Content(Fetched),
    /// The server does not know the endpoint: try the deprecated one.
    Unrecognized,
}

/// Fetches `mxc://{server}/{media_id}` from its server.
pub async fn fetch_content(
    app: &Remote,
    server: &ServerName,
    media_id: &MediaId,
    wait: Duration,
) -> Result<Fetched> {
    let timeout = wait.as_millis();
    let path = format!("/_matrix/federation/v1/media/download/{media_id}?timeout_ms={timeout}");
    let legacy = format!(
        "/_matrix/media/v3/download/{}/{media_id}?allow_remote=false&timeout_ms={timeout}",
        encode(server.as_str())
    );
    fetch(app, server, &path, &legacy).await
}

/// Fetches a thumbnail of `mxc://{server}/{media_id}` from its server.
pub async fn fetch_thumbnail(
    app: &Remote,
    server: &ServerName,
    media_id: &MediaId,
    thumbnail: &ThumbnailRequest,
    wait: Duration,
) -> Result<Fetched> {
    let query = format!("{}&timeout_ms={}", thumbnail.query_string(), wait.as_millis());
    let path = format!("/_matrix/federation/v1/media/thumbnail/{media_id}?{query}");
    let legacy = format!(
        "/_matrix/media/v3/thumbnail/{}/{media_id}?{query}&allow_remote=false",
        encode(server.as_str())
    );
    fetch(app, server, &path, &legacy).await
}

/// Asks the federation endpoint `path`, then the deprecated `legacy` one if
/// the server does not know the first (spec: after a 404 `M_UNRECOGNIZED`).
async fn fetch(app: &Remote, server: &ServerName, path: &str, legacy: &str) -> Result<Fetched> {
    let max = app.config.limits.max_media_body;
    let response =
        client::request_raw(app, server.as_str(), Method::Get, path, None, max + MULTIPART_OVERHEAD_BYTES)
            .await?;
    match multipart_answer(app, server, response).await? {
        Answer::Content(fetched) => Ok(fetched),
        Answer::Unrecognized => {
            log::debug!("{} has no federation media endpoints, trying the deprecated ones", server.as_str());
            let response = client::request_raw(app, server.as_str(), Method::Get, legacy, None, max).await?;
            check_status(server, &response)?;
            Ok(plain_content(response))
        }
    }
}

async fn multipart_answer(app: &Remote, server: &ServerName, response: RawResponse) -> Result<Answer> {
    let errcode = if response.status == 200 { None } else { errcode(&response) };
    let unrecognized =
        errcode.as_deref() == Some("M_UNRECOGNIZED") && matches!(response.status, 400 | 404 | 405);
    // A plain 404 without a Matrix error: a proxy that knows no such path.
    if unrecognized || (response.status == 404 && errcode.is_none()) {
        return Ok(Answer::Unrecognized);
    }
    check_status(server, &response)?;
    let bad = |why: String| {
        Error::matrix(502, "M_UNKNOWN", format!("{} sent a bad media answer: {why}", server.as_str()))
    };
    let header = response.header("content-type").unwrap_or_default();
    let part = media::parse_multipart(header, &response.body).map_err(bad)?;
    if let Some(location) = part.location {
        let redirected =
            discovery::get_url(&app.federation, &location, app.config.limits.max_media_body).await?;
        if redirected.status != 200 {
            return Err(bad(format!("{location} answered {}", redirected.status)));
        }
        return Ok(Answer::Content(plain_content(redirected)));
    }
    let content_type = part.content_type.as_deref().and_then(media::clean_content_type);
    let upload_name = part.disposition.as_deref().and_then(media::file_name_from_disposition);
    let mut body = response.body;
    body.truncate(part.content.end);
    body.drain(..part.content.start);
    if app.config.limits.max_media_body < body.len() {
        return Err(Error::matrix(502, "M_TOO_LARGE", "the remote content is too large"));
    }
    Ok(Answer::Content(Fetched {
        content_type: content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
        upload_name,
        content: body,
    }))
}

/// Content answered as a plain body (the deprecated endpoints, a redirect).
fn plain_content(response: RawResponse) -> Fetched {
    let content_type = response.header("content-type").and_then(media::clean_content_type);
    let upload_name = response.header("content-disposition").and_then(media::file_name_from_disposition);
    Fetched {
        content_type: content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
        upload_name,
        content: response.body,
    }
}

/// Maps another server's refusal to ours: its 404 is ours, "not yet
/// uploaded" and "too large" pass through, anything else is a bad gateway.
fn check_status(server: &ServerName, response: &RawResponse) -> Result<()> {
    let server = server.as_str();
    if response.status == 200 {
        return Ok(());
    }
    match (response.status, errcode(response).as_deref()) {
        (404, _) => Err(Error::NotFound(format!("{server} has no such media"))),
        (504, Some("M_NOT_YET_UPLOADED")) => Err(Error::matrix(
            504,
            "M_NOT_YET_UPLOADED",
            format!("{server} has not received the content yet"),
        )),
        (_, Some("M_TOO_LARGE")) => {
            Err(Error::matrix(502, "M_TOO_LARGE", format!("{server}: the content is too large")))
        }
        (status, _) => Err(Error::matrix(502, "M_UNKNOWN", format!("{server} answered {status}"))),
    }
}

/// The `errcode` of an error answer, if it is a Matrix error.
fn errcode(response: &RawResponse) -> Option<String> {
    let value: Value = serde_json::from_slice(&response.body).ok()?;
    value.get("errcode").and_then(Value::as_str).map(str::to_owned)
}
