//! The content repository's logic between storage and the handlers: reading
//! stored content for a response (in hand when small, streamed from the
//! database when large), waiting for an asynchronous upload, deciding
//! whether content can be its own thumbnail, and the headers content is
//! served with. The client and federation handlers both serve through here;
//! fetching from other servers is `federation::media`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#content-repository>.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::io::{AsyncBufRead, AsyncRead};
use smol::stream::Stream;

use crate::app::App;
use crate::error::{Error, Result};
use crate::protocol::media::{self, MediaId, ThumbnailRequest};
use crate::storage::{ContentReader, MediaInfo, now_ms};

/// Content up to this size is read whole and answered from memory: one
/// SQLite read on the node's connection is cheaper than a connection of its
/// own, and avatars and most images are far smaller.
const IN_MEMORY_MAX_BYTES: u64 = 1 << 20;

/// Larger content is streamed in pieces of this size, with at most
/// [`STREAM_PIECES_AHEAD`] read ahead of the socket: a download holds well
/// under a MiB whatever the content's size.
const STREAM_PIECE_BYTES: usize = 256 << 10;
const STREAM_PIECES_AHEAD: usize = 2;

/// Downloads streamed at once: each holds a SQLite connection (a file
/// descriptor and a small page cache) and a read transaction; past this,
/// downloads wait for a turn before their first byte.
pub const MAX_STREAMS: usize = 16;

/// Content served as its own thumbnail is at most this large: phone photos
/// (3 to 8 MB) still show in the timeline; past this, a client wanting a
/// thumbnail would rather not load the original.
pub const THUMBNAIL_PASSTHROUGH_MAX_BYTES: u64 = 10 << 20;

/// How much of an image is read to tell whether it is animated.
const ANIMATION_SNIFF_BYTES: usize = 64 << 10;

/// `last_access_ts` is refreshed at most this often: it serves cache
/// eviction, which works in days, and downloads stay reads.
const LAST_ACCESS_GRANULARITY_MS: i64 = 24 * 3600 * 1000;

/// Spec `timeout_ms`: the default wait for content not yet uploaded, and
/// our maximum (Synapse's: 20 s and 60 s).
const DEFAULT_UPLOAD_WAIT_MS: u64 = 20_000;
const MAX_UPLOAD_WAIT_MS: u64 = 60_000;

/// Spec: the `Content-Security-Policy` recommended for served content.
const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

/// Content ready to answer with.
pub enum Content {
    Bytes(Vec<u8>),
    Stream(ContentStream),
}

/// The wait for not-yet-uploaded content a request asks for (`timeout_ms`).
pub fn upload_wait(timeout_ms: Option<&str>) -> Duration {
    let wanted = timeout_ms.and_then(|value| value.parse::<u64>().ok()).unwrap_or(DEFAULT_UPLOAD_WAIT_MS);
    Duration::from_millis(wanted.min(MAX_UPLOAD_WAIT_MS))
}

/// Local content by ID, waiting up to `wait` while its asynchronous upload
/// is pending: 404 `M_NOT_FOUND` for unknown IDs, 504 `M_NOT_YET_UPLOADED`
/// when the wait runs out.
pub async fn local_content(app: &App, media_id: &MediaId, wait: Duration) -> Result<MediaInfo> {
    let deadline = smol::Timer::after(wait);
    let mut deadline = std::pin::pin!(deadline);
    loop {
        // Listen first: an upload finishing between the check and the wait still wakes us.
        let uploaded = app.media_uploaded.listen();
        if let Some(info) = app.storage().media(&app.config.server_name, media_id.as_str(), "")? {
            return Ok(info);
        }
        if app.storage().pending_media(media_id.as_str(), now_ms())?.is_none() {
            return Err(Error::NotFound("no such media".into()));
        }
        let woken = async {
            uploaded.await;
            true
        }
        .or(async {
            (&mut deadline).await;
            false
        })
        .await;
        if !woken {
            return Err(Error::matrix(504, "M_NOT_YET_UPLOADED", "the content has not been uploaded yet"));
        }
    }
}

/// Notes that content is being served (at most once a day per content).
pub fn record_access(app: &App, info: &MediaInfo) -> Result<()> {
    let now = now_ms();
    if now - info.last_access_ts < LAST_ACCESS_GRANULARITY_MS {
        return Ok(());
    }
    app.in_transaction(|| app.storage().touch_media(info.rowid, now))
}

/// Stored content, between `prefix` and `suffix` (a multipart frame, or
/// nothing): read now when small, streamed when large.
pub fn read(app: &Rc<App>, info: &MediaInfo, prefix: Vec<u8>, suffix: Vec<u8>) -> Result<Content> {
    if info.size <= IN_MEMORY_MAX_BYTES {
        let content = app.storage().media_content(info.rowid, info.size as usize)?;
        if prefix.is_empty() && suffix.is_empty() {
            return Ok(Content::Bytes(content));
        }
        return Ok(Content::Bytes([prefix, content, suffix].concat()));
    }
    let length = prefix.len() + info.size as usize + suffix.len();
    let (sender, pieces) = smol::channel::bounded(STREAM_PIECES_AHEAD);
    let producer =
        Producer { app: app.clone(), path: app.config.database_path(), info: info.clone(), sender };
    app.executor.spawn(producer.run(prefix, suffix)).detach();
    Ok(Content::Stream(ContentStream { pieces: Box::pin(pieces), piece: Vec::new(), position: 0, length }))
}

/// Whether stored content can answer a thumbnail request as it is (we make
/// no thumbnails: see [`media::serves_as_thumbnail`]); false for content
/// too large to be a thumbnail.
pub fn serves_as_thumbnail(app: &App, info: &MediaInfo, request: &ThumbnailRequest) -> Result<bool> {
    if THUMBNAIL_PASSTHROUGH_MAX_BYTES < info.size {
        return Ok(false);
    }
    let first_bytes = app.storage().media_content(info.rowid, ANIMATION_SNIFF_BYTES)?;
    let animation = media::animation(&info.content_type, &first_bytes);
    Ok(media::serves_as_thumbnail(&info.content_type, animation, request))
}

/// The headers content is served with: its disposition (with `file_name`),
/// the spec's sandboxing policy, and cross-origin use for web clients.
pub fn content_headers(content_type: &str, file_name: Option<&str>) -> Vec<(&'static str, String)> {
    vec![
        ("content-disposition", media::content_disposition(content_type, file_name)),
        ("content-security-policy", CONTENT_SECURITY_POLICY.to_owned()),
        ("cross-origin-resource-policy", "cross-origin".to_owned()),
        // Content never changes under its ID; the answer is for this user only.
        ("cache-control", "private, max-age=86400".to_owned()),
        ("x-robots-tag", "noindex, nofollow, noarchive, noimageindex".to_owned()),
    ]
}

/// Reads one row's content on a connection of its own and hands it over in
/// pieces; ends early when the response is dropped (the client went away).
struct Producer {
    app: Rc<App>,
    path: PathBuf,
    info: MediaInfo,
    sender: Sender<io::Result<Vec<u8>>>,
}

impl Producer {
    async fn run(self, prefix: Vec<u8>, suffix: Vec<u8>) {
        if let Err(error) = self.send_all(prefix, suffix).await {
            log::warn!("streaming media row {} failed: {error}", self.info.rowid);
            let _ = self.sender.send(Err(io::Error::other(error.to_string()))).await;
        }
    }

    async fn send_all(&self, prefix: Vec<u8>, suffix: Vec<u8>) -> Result<()> {
        // The reader sees committed data only: content cached by a request
        // still in the group transaction is committed first.
        self.app.durable().await?;
        let _turn = self.app.media_streams.acquire().await;
        let reader = ContentReader::open(&self.path)?;
        let mut blob = reader.content(self.info.rowid)?;
        if blob.len() as u64 != self.info.size {
            return Err(Error::Internal("the stored content changed size".into()));
        }
        if !prefix.is_empty() && self.sender.send(Ok(prefix)).await.is_err() {
            return Ok(());
        }
        loop {
            let piece = blob.next_piece(STREAM_PIECE_BYTES)?;
            if piece.is_empty() {
                break;
            }
            if self.sender.send(Ok(piece)).await.is_err() {
                return Ok(());
            }
        }
        if !suffix.is_empty() {
            let _ = self.sender.send(Ok(suffix)).await;
        }
        Ok(())
    }
}

/// Content arriving in pieces from a [`Producer`], as a byte stream.
pub struct ContentStream {
    /// Boxed: the receiver is not `Unpin`.
    pieces: Pin<Box<Receiver<io::Result<Vec<u8>>>>>,
    piece: Vec<u8>,
    position: usize,
    /// The bytes the stream delivers in all.
    pub length: usize,
}

impl AsyncBufRead for ContentStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.position == this.piece.len() {
            match this.pieces.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(&[])),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(Some(Ok(piece))) => {
                    this.piece = piece;
                    this.position = 0;
                }
            }
        }
        Poll::Ready(Ok(&this.piece[this.position..]))
    }

    fn consume(self: Pin<&mut Self>, amount: usize) {
        let this = self.get_mut();
        this.position = (this.position + amount).min(this.piece.len());
    }
}

impl AsyncRead for ContentStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(available)) => available,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Pending => return Poll::Pending,
        };
        let count = available.len().min(buf.len());
        buf[..count].copy_from_slice(&available[..count]);
        self.consume(count);
        Poll::Ready(Ok(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::AsyncReadExt;

    #[test]
    fn a_content_stream_reads_its_pieces_in_order_and_ends_when_the_producer_does() {
        let (sender, pieces) = smol::channel::bounded(4);
        let mut stream =
            ContentStream { pieces: Box::pin(pieces), piece: Vec::new(), position: 0, length: 7 };
        smol::block_on(async {
            for piece in [b"ab".to_vec(), Vec::new(), b"cde".to_vec(), b"fg".to_vec()] {
                sender.send(Ok(piece)).await.unwrap();
            }
            drop(sender);
            let mut read = Vec::new();
            stream.read_to_end(&mut read).await.unwrap();
            assert_eq!(read, b"abcdefg");
        });
    }

    #[test]
    fn a_producer_error_fails_the_stream() {
        let (sender, pieces) = smol::channel::bounded(4);
        let mut stream =
            ContentStream { pieces: Box::pin(pieces), piece: Vec::new(), position: 0, length: 9 };
        smol::block_on(async {
            sender.send(Ok(b"abc".to_vec())).await.unwrap();
            sender.send(Err(io::Error::other("disk on fire"))).await.unwrap();
            let mut read = Vec::new();
            assert!(stream.read_to_end(&mut read).await.is_err());
        });
    }

    #[test]
    fn upload_waits_default_and_are_capped() {
        assert_eq!(upload_wait(None), Duration::from_millis(DEFAULT_UPLOAD_WAIT_MS));
        assert_eq!(upload_wait(Some("5000")), Duration::from_millis(5000));
        assert_eq!(upload_wait(Some("99999999")), Duration::from_millis(MAX_UPLOAD_WAIT_MS));
        assert_eq!(upload_wait(Some("soon")), Duration::from_millis(DEFAULT_UPLOAD_WAIT_MS));
    }
}
