//! Serving our content to other servers: the `multipart/mixed` answers of
//! `/_matrix/federation/v1/media/...` (fetching theirs is `remote::media`).
//!
//! Spec: <https://spec.matrix.org/latest/server-server-api/#content-repository>.

use std::rc::Rc;

use crate::app::App;
use crate::credentials::random_string;
use crate::error::{Error, Result};
use crate::protocol::media::{self, MediaId};
use crate::request::{Request, Response};
use crate::rooms::media as content;
use crate::storage::MediaInfo;

/// Random characters in a multipart boundary (RFC 2046 allows up to 70).
const BOUNDARY_CHARS: usize = 32;

/// `GET /_matrix/federation/v1/media/download/{mediaId}`: our own content.
pub async fn download(app: &Rc<App>, request: &Request, media_id: &str) -> Result<Response> {
    let media_id = MediaId::parse(media_id).map_err(Error::NotFound)?;
    let wait = content::upload_wait(request.query("timeout_ms"));
    let info = content::local_content(app, &media_id, wait).await?;
    multipart(app, request, &info)
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`: the content itself
/// when it can serve as its own thumbnail (we make none), else 404.
pub async fn thumbnail(app: &Rc<App>, request: &Request, media_id: &str) -> Result<Response> {
    let media_id = MediaId::parse(media_id).map_err(Error::NotFound)?;
    let thumbnail = content::thumbnail_request(|name| request.query(name))?;
    let wait = content::upload_wait(request.query("timeout_ms"));
    let info = content::local_content(app, &media_id, wait).await?;
    if !content::serves_as_thumbnail(app, &info, &thumbnail)? {
        return Err(Error::NotFound("this server makes no thumbnail of this content".into()));
    }
    multipart(app, request, &info)
}

/// The spec's two-part answer: `{}` as metadata, then the content.
fn multipart(app: &Rc<App>, request: &Request, info: &MediaInfo) -> Result<Response> {
    let boundary = random_string(BOUNDARY_CHARS);
    let disposition = media::content_disposition(&info.content_type, info.upload_name.as_deref());
    let (head, tail) = media::multipart_frame(&boundary, &info.content_type, &disposition);
    content::record_access(app, info)?;
    // Streams are shared out per address (a server may have several names).
    let client = request.peer.address.ip().to_string();
    let body = content::read(&app.engine, info, head, tail, &client)?;
    Ok(Response {
        status: 200,
        content_type: media::multipart_content_type(&boundary).into(),
        body: body.into(),
        headers: Vec::new(),
    })
}
