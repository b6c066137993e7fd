//! The content repository's logic between storage and the handlers: reading
//! stored content for a response (in hand when small, streamed from the
//! database when large), waiting for an asynchronous upload, deciding
//! whether content can be its own thumbnail, and the headers content is
//! served with. The client and federation handlers both serve through here;
//! fetching from other servers is `remote::media`.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#content-repository>.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use smol::channel::{Receiver, Sender, WeakReceiver};
use smol::future::FutureExt;
use smol::io::{AsyncBufRead, AsyncRead};
use smol::lock::{Semaphore, SemaphoreGuard};
use smol::stream::Stream;

use crate::error::{Error, Result};
use crate::protocol::media::{self, MediaId, ThumbnailRequest};
use crate::request::Body;
use crate::rooms::Engine;
use crate::storage::{ContentReader, MediaInfo, now_ms};

/// Content up to this size is read whole and answered from memory: one
/// SQLite read on the node's connection is cheaper than a connection of its
/// own, and avatars and most images are far smaller.
const IN_MEMORY_MAX_BYTES: u64 = 1 << 20;

/// Larger content is streamed in its stored parts (256 KiB), with at most
/// this many read ahead of the socket: a download holds well under a MiB
/// whatever the content's size.
const STREAM_PIECES_AHEAD: usize = 2;

/// Downloads streamed at once: each holds a SQLite connection (a file
/// descriptor and a small page cache); past this, downloads wait for a turn
/// before their first byte (at most the stall deadline, see below).
pub const MAX_STREAMS: usize = 16;

/// Downloads one client (a user, or an address for requests without a
/// token) may stream at once; past this it gets 429 `M_LIMIT_EXCEEDED`, so
/// one client cannot take every turn. A page of a client's timeline loads a
/// few large files at once; 4 of 16 leaves room for three other clients.
pub const MAX_STREAMS_PER_CLIENT: usize = 4;

/// The wait suggested to a client refused a stream: its own downloads of
/// a timeline's images end within seconds (a stalled one within the stall
/// deadline, which is longer).
const RETRY_STREAM_AFTER_MS: u64 = 2_000;

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
pub async fn local_content(app: &Engine, media_id: &MediaId, wait: Duration) -> Result<MediaInfo> {
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
pub fn record_access(app: &Engine, info: &MediaInfo) -> Result<()> {
    let now = now_ms();
    if now - info.last_access_ts < LAST_ACCESS_GRANULARITY_MS {
        return Ok(());
    }
    app.in_transaction(|| app.storage().touch_media(info.rowid, now))
}

/// Stored content, between `prefix` and `suffix` (a multipart frame, or
/// nothing): read now when small, streamed when large. `client` names who
/// asks (a user ID, or an address), for [`MAX_STREAMS_PER_CLIENT`].
pub fn read(
    app: &Rc<Engine>,
    info: &MediaInfo,
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    client: &str,
) -> Result<Content> {
    if info.size <= IN_MEMORY_MAX_BYTES {
        let content = app.storage().media_content(info.rowid, info.size as usize)?;
        if prefix.is_empty() && suffix.is_empty() {
            return Ok(Content::Bytes(content));
        }
        return Ok(Content::Bytes([prefix, content, suffix].concat()));
    }
    let stall = app.config.limits.media_stall_timeout();
    let slot = app
        .media_stream_clients
        .try_take(client)
        .ok_or(Error::LimitExceeded { retry_after_ms: RETRY_STREAM_AFTER_MS })?;
    let length = prefix.len() + info.size as usize + suffix.len();
    let (sender, pieces) = smol::channel::bounded(STREAM_PIECES_AHEAD);
    let producer = Producer {
        app: app.clone(),
        path: app.config.database_path(),
        info: info.clone(),
        receiver: pieces.downgrade(),
        sender,
        stall,
        _slot: slot,
    };
    app.executor.spawn(producer.run(prefix, suffix)).detach();
    Ok(Content::Stream(ContentStream::new(pieces, Some(length))))
}

/// Turns shared by clients: at most `per_key` held under one key (a user
/// ID or an address), at most `total` in all. Taking one never waits.
pub struct Slots {
    total: usize,
    per_key: usize,
    in_use: Cell<usize>,
    held: RefCell<HashMap<String, usize>>,
}

/// A turn taken from [`Slots`], given back when dropped.
pub struct Slot {
    slots: Rc<Slots>,
    key: String,
}

impl Slots {
    pub fn new(total: usize, per_key: usize) -> Rc<Slots> {
        Rc::new(Slots { total, per_key, in_use: Cell::new(0), held: RefCell::default() })
    }

    /// A turn for `key`, or `None` when `key` or everyone holds the most allowed.
    pub fn try_take(self: &Rc<Self>, key: &str) -> Option<Slot> {
        let mut held = self.held.borrow_mut();
        let count = held.get(key).copied().unwrap_or(0);
        if self.total <= self.in_use.get() || self.per_key <= count {
            return None;
        }
        held.insert(key.to_owned(), count + 1);
        self.in_use.set(self.in_use.get() + 1);
        Some(Slot { slots: self.clone(), key: key.to_owned() })
    }

    /// Turns held in all.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.in_use.get()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.borrow_mut();
        match held.get_mut(&self.key) {
            Some(count) if 1 < *count => *count -= 1,
            _ => {
                held.remove(&self.key);
            }
        }
        self.slots.in_use.set(self.slots.in_use.get().saturating_sub(1));
    }
}

/// A thumbnail request's parameters from its query string (`query` answers
/// a parameter by name), or 400: `M_MISSING_PARAM` or `M_INVALID_PARAM`.
pub fn thumbnail_request<'a>(query: impl Fn(&str) -> Option<&'a str>) -> Result<ThumbnailRequest> {
    ThumbnailRequest::parse(query).map_err(|(missing, message)| {
        if missing { Error::MissingParam(message) } else { Error::InvalidParam(message) }
    })
}

/// Whether stored content can answer a thumbnail request as it is (we make
/// no thumbnails: see [`media::serves_as_thumbnail`]); false for content
/// too large to be a thumbnail.
pub fn serves_as_thumbnail(app: &Engine, info: &MediaInfo, request: &ThumbnailRequest) -> Result<bool> {
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

/// Reads one row's content part by part on a connection of its own and
/// hands it over; ends early when the response is dropped (the client went
/// away), and gives up on a response that takes no piece for `stall` (a
/// reader that stopped reading), freeing its turns.
struct Producer {
    app: Rc<Engine>,
    path: PathBuf,
    info: MediaInfo,
    sender: Sender<io::Result<Vec<u8>>>,
    /// The response's end, to empty the channel of a stalled response.
    receiver: WeakReceiver<io::Result<Vec<u8>>>,
    stall: Duration,
    _slot: Slot,
}

/// Why a stream's producer (a download, or a state answer) stopped before
/// its end.
pub enum Stop {
    /// The response was dropped.
    Gone,
    /// The response took no piece for the stall deadline, or no turn came.
    Stalled,
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Stop {
        Stop::Failed(error)
    }
}

impl Producer {
    async fn run(self, prefix: Vec<u8>, suffix: Vec<u8>) {
        match self.send_all(prefix, suffix).await {
            Ok(()) | Err(Stop::Gone) => {}
            Err(Stop::Stalled) => {
                log::debug!("a download of media row {} stalled: given up", self.info.rowid);
                self.abandon();
            }
            Err(Stop::Failed(error)) => {
                log::warn!("streaming media row {} failed: {error}", self.info.rowid);
                if self.sender.try_send(Err(io::Error::other(error.to_string()))).is_err() {
                    self.abandon();
                }
            }
        }
    }

    /// Ends the stream: what waits in the channel is dropped now, and the
    /// response fails (short of its length) whenever it is read again.
    fn abandon(&self) {
        self.sender.close();
        if let Some(receiver) = self.receiver.upgrade() {
            while receiver.try_recv().is_ok() {}
        }
    }

    async fn send_all(&self, prefix: Vec<u8>, suffix: Vec<u8>) -> Result<(), Stop> {
        // The reader sees committed data only: content cached by a request
        // still in the group transaction is committed first.
        self.app.durable().await?;
        let _turn = take_turn(&self.app.media_streams, self.stall).await?;
        let reader = ContentReader::open(&self.path)?;
        if !prefix.is_empty() {
            self.send(prefix).await?;
        }
        let mut sent = 0u64;
        for seq in 0.. {
            // Each part in a statement of its own: no read transaction stays
            // open while the socket is waited for, so the WAL can be folded.
            let Some(part) = reader.part(self.info.rowid, seq)? else {
                break;
            };
            sent += part.len() as u64;
            self.send(part).await?;
        }
        if sent != self.info.size {
            return Err(Stop::Failed(Error::Internal("the stored content changed size".into())));
        }
        if !suffix.is_empty() {
            self.send(suffix).await?;
        }
        Ok(())
    }

    /// Hands a piece over, waiting at most the stall deadline for room.
    async fn send(&self, piece: Vec<u8>) -> Result<(), Stop> {
        hand_over(&self.sender, piece, self.stall).await
    }
}

/// One of a stream producer's `turns` (media downloads, state answers),
/// waiting at most `stall` for it.
pub async fn take_turn(turns: &Semaphore, stall: Duration) -> Result<SemaphoreGuard<'_>, Stop> {
    async { Ok(turns.acquire().await) }
        .or(async {
            smol::Timer::after(stall).await;
            Err(Stop::Stalled)
        })
        .await
}

/// Hands `piece` to a stream's reading end, waiting at most `stall` for
/// room in the channel.
pub async fn hand_over(
    sender: &Sender<io::Result<Vec<u8>>>,
    piece: Vec<u8>,
    stall: Duration,
) -> Result<(), Stop> {
    async { sender.send(Ok(piece)).await.map_err(|_| Stop::Gone) }
        .or(async {
            smol::Timer::after(stall).await;
            Err(Stop::Stalled)
        })
        .await
}

/// Content arriving in pieces from a producer task (a [`Producer`], or the
/// resident's `send_join` answer), as a byte stream.
pub struct ContentStream {
    /// Boxed: the receiver is not `Unpin`.
    pieces: Pin<Box<Receiver<io::Result<Vec<u8>>>>>,
    piece: Vec<u8>,
    position: usize,
    /// Bytes handed out so far.
    delivered: usize,
    /// The bytes the stream delivers in all; `None` when not known before:
    /// the producer then ends the stream with an empty piece (its end mark).
    pub length: Option<usize>,
    /// The end mark came.
    ended: bool,
}

impl ContentStream {
    /// The stream of what a producer sends on `pieces`: `length` bytes, or
    /// with `None` whatever comes before the end mark.
    pub fn new(pieces: Receiver<io::Result<Vec<u8>>>, length: Option<usize>) -> ContentStream {
        ContentStream {
            pieces: Box::pin(pieces),
            piece: Vec::new(),
            position: 0,
            delivered: 0,
            length,
            ended: false,
        }
    }

    /// Whether the stream has delivered all it is to: its length, or up to
    /// the end mark.
    fn complete(&self) -> bool {
        match self.length {
            Some(length) => length <= self.delivered,
            None => self.ended,
        }
    }
}

impl AsyncBufRead for ContentStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.position == this.piece.len() {
            if this.ended {
                return Poll::Ready(Ok(&[]));
            }
            match this.pieces.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                // A producer that gave up leaves the response short: that must
                // fail (and cut the connection), not end as if complete.
                Poll::Ready(None) if !this.complete() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the content stream was abandoned",
                    )));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(&[])),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                Poll::Ready(Some(Ok(piece))) if piece.is_empty() && this.length.is_none() => {
                    this.ended = true;
                }
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
        let position = (this.position + amount).min(this.piece.len());
        this.delivered += position - this.position;
        this.position = position;
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

/// Content as a response body.
impl From<Content> for Body {
    fn from(content: Content) -> Body {
        match content {
            Content::Bytes(bytes) => Body::Bytes(bytes),
            Content::Stream(stream) => match stream.length {
                Some(length) => Body::Stream { length, reader: Box::new(stream) },
                None => Body::Unsized { reader: Box::new(stream) },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::AsyncReadExt;

    /// A stream of `length` bytes fed from `pieces`.
    fn stream_of(pieces: smol::channel::Receiver<io::Result<Vec<u8>>>, length: usize) -> ContentStream {
        ContentStream::new(pieces, Some(length))
    }

    #[test]
    fn a_stream_of_unknown_length_ends_at_its_end_mark_and_fails_without_it() {
        smol::block_on(async {
            let (sender, pieces) = smol::channel::bounded(4);
            let mut stream = ContentStream::new(pieces, None);
            for piece in [b"ab".to_vec(), b"cde".to_vec(), Vec::new()] {
                sender.send(Ok(piece)).await.unwrap();
            }
            let mut read = Vec::new();
            stream.read_to_end(&mut read).await.unwrap();
            assert_eq!(read, b"abcde");

            let (sender, pieces) = smol::channel::bounded(4);
            let mut stream = ContentStream::new(pieces, None);
            sender.send(Ok(b"abc".to_vec())).await.unwrap();
            drop(sender);
            let mut read = Vec::new();
            let error = stream.read_to_end(&mut read).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        });
    }

    #[test]
    fn a_content_stream_reads_its_pieces_in_order_and_ends_when_the_producer_does() {
        let (sender, pieces) = smol::channel::bounded(4);
        let mut stream = stream_of(pieces, 7);
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
        let mut stream = stream_of(pieces, 9);
        smol::block_on(async {
            sender.send(Ok(b"abc".to_vec())).await.unwrap();
            sender.send(Err(io::Error::other("disk on fire"))).await.unwrap();
            let mut read = Vec::new();
            assert!(stream.read_to_end(&mut read).await.is_err());
        });
    }

    #[test]
    fn a_stream_closed_short_of_its_length_fails() {
        let (sender, pieces) = smol::channel::bounded(4);
        let mut stream = stream_of(pieces, 9);
        smol::block_on(async {
            sender.send(Ok(b"abc".to_vec())).await.unwrap();
            sender.close();
            let mut read = Vec::new();
            let error = stream.read_to_end(&mut read).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
            assert_eq!(read, b"abc");
        });
    }

    #[test]
    fn slots_are_limited_per_key_and_in_all_and_come_back_when_dropped() {
        let slots = Slots::new(3, 2);
        let first = slots.try_take("a").unwrap();
        let _second = slots.try_take("a").unwrap();
        assert!(slots.try_take("a").is_none(), "two per key");
        let _third = slots.try_take("b").unwrap();
        assert!(slots.try_take("c").is_none(), "three in all");
        drop(first);
        assert_eq!(slots.in_use(), 2);
        assert!(slots.try_take("c").is_some());
        assert!(slots.try_take("a").is_some(), "a holds one again");
    }

    #[test]
    fn upload_waits_default_and_are_capped() {
        assert_eq!(upload_wait(None), Duration::from_millis(DEFAULT_UPLOAD_WAIT_MS));
        assert_eq!(upload_wait(Some("5000")), Duration::from_millis(5000));
        assert_eq!(upload_wait(Some("99999999")), Duration::from_millis(MAX_UPLOAD_WAIT_MS));
        assert_eq!(upload_wait(Some("soon")), Duration::from_millis(DEFAULT_UPLOAD_WAIT_MS));
    }
}
