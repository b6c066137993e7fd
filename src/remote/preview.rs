//! Link previews (`GET /_matrix/client/v1/media/preview_url`): fetching a
//! page a user links to, its Open Graph metadata (`protocol/url_preview.rs`),
//! its `og:image` copied into our content repository, and the answer cached
//! in SQLite for an hour.
//!
//! Fetches go through the outbound transport every request uses: `http://`
//! and `https://` only, never to a private, loopback or link-local address
//! `[federation] allow_ips` does not name, redirects followed at most
//! [`discovery::MAX_REDIRECTS`] times, each checked like the first; the page
//! is read up to [`MAX_PAGE_BYTES`], the image up to [`MAX_IMAGE_BYTES`],
//! and everything (redirects and image included) within [`FETCH_TIMEOUT`].
//! A copied image belongs to the user who asked (as in Synapse) and counts
//! against their `media_quota_per_user`; past it, a page is previewed
//! without its image.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1mediapreview_url>.

use std::time::Duration;

use serde_json::{Map, Value, json};
use smol::future::FutureExt;

use super::discovery::{self, Schemes};
use crate::credentials::random_string;
use crate::error::{Error, Result};
use crate::protocol::url_preview;
use crate::remote::Remote;
use crate::storage::{NewMedia, now_ms};

/// Pages are read up to this size; a larger one answers 502 `M_TOO_LARGE`.
pub const MAX_PAGE_BYTES: usize = 1 << 20;

/// An `og:image` (or an image linked to directly) is copied up to this size.
pub const MAX_IMAGE_BYTES: usize = 4 << 20;

/// A whole preview (page, redirects, image) takes at most this long.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A preview stays fresh this long (Synapse's hour).
pub const FRESH_MS: i64 = 3_600_000;

/// Cached previews stale for longer than this are forgotten.
const FORGET_AFTER_MS: i64 = 24 * 3_600_000;

/// Longest URL we preview.
pub const MAX_URL_BYTES: usize = 4096;

/// Previews fetched at once on the node, and per user; past these, 429.
pub const MAX_PREVIEWS: usize = 8;
pub const MAX_PREVIEWS_PER_USER: usize = 2;

/// Random characters in the media ID of a copied image (as uploads).
const MEDIA_ID_CHARS: usize = 24;

/// The preview of `url` as of `ts` (ms) for `user`: from the cache when a
/// preview current at `ts` is still fresh at `ts`, else fetched now and
/// cached. A copied image is `user`'s content (as Synapse records it), so it
/// counts against their storage quota.
pub async fn preview(app: &Remote, user: &str, url: &str, ts: i64) -> Result<Value> {
    let cached = app.in_snapshot(|| app.storage().url_preview(url, ts))?;
    if let Some(cached) = cached.filter(|cached| ts < cached.expires_ts) {
        if let Ok(Value::Object(og)) = serde_json::from_str(&cached.og) {
            return Ok(Value::Object(og));
        }
    }
    let fetched_ts = now_ms();
    let og = fetch(app, user, url)
        .or(async {
            smol::Timer::after(FETCH_TIMEOUT).await;
            Err(Error::matrix(504, "M_UNKNOWN", format!("{url}: no answer in time")))
        })
        .await?;
    let text = Value::Object(og.clone()).to_string();
    app.in_transaction(|| {
        let forget_before = fetched_ts - FORGET_AFTER_MS;
        app.storage().insert_url_preview(url, fetched_ts, fetched_ts + FRESH_MS, &text, forget_before)
    })?;
    Ok(Value::Object(og))
}

/// Fetches `url` and builds its preview: an HTML page's metadata with its
/// image copied, or an image itself.
async fn fetch(app: &Remote, user: &str, url: &str) -> Result<Map<String, Value>> {
    let (response, final_url) =
        discovery::fetch_url(&app.federation, url, MAX_PAGE_BYTES, Schemes::HttpOrHttps).await?;
    if !(200..300).contains(&response.status) {
        return Err(bad_gateway(format!("{url}: status {}", response.status)));
    }
    let content_type = response.header("content-type").unwrap_or_default().to_owned();
    if url_preview::is_image(&content_type) {
        return store_image(app, user, &content_type, &response.body);
    }
    if !url_preview::is_html(&content_type) {
        return Err(bad_gateway(format!("{url}: {content_type:?} is not HTML or an image")));
    }
    let mut og = url_preview::extract(&String::from_utf8_lossy(&response.body));
    // Dimensions are numbers in the answer.
    for key in ["og:image:width", "og:image:height"] {
        match og.get(key).and_then(Value::as_str).and_then(|text| text.trim().parse::<u32>().ok()) {
            Some(number) => og.insert(key.to_owned(), json!(number)),
            None => og.remove(key),
        };
    }
    let Some(image) = og.remove("og:image") else {
        return Ok(og);
    };
    let image_url = image.as_str().and_then(|link| final_url.join(link).ok());
    let copied = match image_url {
        Some(image_url) => fetch_image(app, user, image_url.as_str()).await,
        None => Err(bad_gateway("og:image is not a URL".to_owned())),
    };
    match copied {
        Ok(image) => og.extend(image),
        // A page whose image cannot be had is still previewed.
        Err(error) => {
            log::debug!("link preview of {url}: image not copied: {error}");
            og.remove("og:image:width");
            og.remove("og:image:height");
        }
    }
    Ok(og)
}

/// Copies an `og:image` into the content repository.
async fn fetch_image(app: &Remote, user: &str, url: &str) -> Result<Map<String, Value>> {
    let (response, _) =
        discovery::fetch_url(&app.federation, url, MAX_IMAGE_BYTES, Schemes::HttpOrHttps).await?;
    let content_type = response.header("content-type").unwrap_or_default().to_owned();
    if !(200..300).contains(&response.status) || !url_preview::is_image(&content_type) {
        return Err(bad_gateway(format!("{url}: status {}, {content_type:?}", response.status)));
    }
    store_image(app, user, &content_type, &response.body)
}

/// Stores an image as our content; answers its `og:image` (mxc URI),
/// `og:image:type` and `matrix:image:size`.
fn store_image(app: &Remote, user: &str, content_type: &str, content: &[u8]) -> Result<Map<String, Value>> {
    if content.len() > MAX_IMAGE_BYTES {
        return Err(Error::matrix(502, "M_TOO_LARGE", "the image is too large"));
    }
    let media_id = random_string(MEDIA_ID_CHARS);
    let server = app.config.server_name.as_str();
    let media = NewMedia {
        origin: server,
        media_id: &media_id,
        variant: "",
        content_type,
        upload_name: None,
        uploader: Some(user),
        content,
    };
    let quota = app.config.limits.media_quota_per_user;
    app.in_transaction(|| {
        let storage = app.storage();
        if quota.saturating_sub(storage.media_used_by(user)?) < content.len() as u64 {
            return Err(Error::TooLarge(format!(
                "the image would take you past your storage quota of {quota} bytes"
            )));
        }
        storage.insert_media(&media)
    })?;
    let mut og = Map::new();
    og.insert("og:image".into(), json!(format!("mxc://{server}/{media_id}")));
    og.insert("og:image:type".into(), json!(content_type));
    og.insert("matrix:image:size".into(), json!(content.len()));
    // The image's own header says its size better than the page can.
    if let Some((width, height)) = url_preview::image_dimensions(content) {
        og.insert("og:image:width".into(), json!(width));
        og.insert("og:image:height".into(), json!(height));
    }
    Ok(og)
}

fn bad_gateway(message: String) -> Error {
    Error::matrix(502, "M_UNKNOWN", message)
}
