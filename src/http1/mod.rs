//! Our HTTP/1.1 codec, for both directions: reading heads under fixed
//! limits ([`head`], parsed by `httparse`), reading bodies by
//! `Content-Length` or chunked ([`chunked`]) with read deadlines, and
//! writing heads and bodies with write deadlines.
//!
//! Knows nothing of Matrix, routing or TLS: it works on any byte stream.
//! `server.rs` drives it for requests we answer and `remote/transport.rs`
//! for requests we send. Every read is bounded in bytes and time, and a
//! connection that ends inside a head or body is an error, never a hang.

pub mod chunked;
pub mod head;
mod write;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use smol::Timer;
use smol::io::{AsyncRead, AsyncWrite};

pub use head::{Framing, HeadError, Headers, RequestHead, ResponseHead, Version};
pub use write::{BodyLength, OutgoingBody, http_date, request_head, response_head, write_message};

/// Bytes asked of the socket per read while looking for a head or chunk line.
const READ_CHUNK_BYTES: usize = 8 * 1024;
/// A body that delivers no byte for this long is cut off, and so is a
/// reader that takes none of a response for this long: generous for a phone
/// on a bad link, short enough that a stalled peer frees its slot.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A body or response may take this long regardless of its size...
pub const TRANSFER_GRACE: Duration = Duration::from_secs(60);
/// ...and after that must average at least this many bytes a second (a
/// 64 kbit/s link), so a peer trickling a byte now and then is cut off at
/// the grace period while a slow but real upload of any size goes through.
pub const MIN_TRANSFER_BYTES_PER_SECOND: u64 = 8 * 1024;

/// The interim answer to `Expect: 100-continue` (RFC 9110 §10.1.1).
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The deadline of one transfer (a body read, a response write): see
/// [`STALL_TIMEOUT`], [`TRANSFER_GRACE`] and [`MIN_TRANSFER_BYTES_PER_SECOND`].
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    started: Instant,
    last_progress: Instant,
    bytes: u64,
}

impl Pace {
    pub fn new(now: Instant) -> Pace {
        Pace { started: now, last_progress: now, bytes: 0 }
    }

    pub fn progress(&mut self, now: Instant, bytes: usize) {
        if 0 < bytes {
            self.last_progress = now;
            self.bytes = self.bytes.saturating_add(bytes as u64);
        }
    }

    /// When the transfer is cut off unless it makes progress.
    pub fn deadline(&self, stall_timeout: Duration) -> Instant {
        let earned = Duration::from_secs(self.bytes / MIN_TRANSFER_BYTES_PER_SECOND);
        let by_rate = self.started + TRANSFER_GRACE + earned;
        (self.last_progress + stall_timeout).min(by_rate)
    }
}

/// How far the body of the current message has been read.
#[derive(Debug)]
enum BodyState {
    Done,
    Length(u64),
    Chunked(chunked::Decoder),
    UntilClose,
    /// Truncated, malformed or timed out: the connection is unusable.
    Failed,
}

impl From<Framing> for BodyState {
    fn from(framing: Framing) -> BodyState {
        match framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(length) => BodyState::Length(length),
            Framing::Chunked => BodyState::Chunked(chunked::Decoder::default()),
            Framing::UntilClose => BodyState::UntilClose,
        }
    }
}

/// Whether `100 Continue` is owed for the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
    NotExpected,
    /// Owed; this many of its bytes are written.
    Owed(usize),
    Sent,
}

/// One HTTP/1.1 connection: the stream, bytes read past the current
/// message (the next pipelined request, say), and the state of the body
/// being read.
pub struct Connection<S> {
    stream: S,
    /// Bytes read but not used yet are `buffer[start..]`.
    buffer: Vec<u8>,
    start: usize,
    body: BodyState,
    /// Counts messages, so a body reader kept past its request reads nothing.
    generation: u64,
    continue_state: Continue,
    pace: Option<Pace>,
    stall_timeout: Duration,
    timer: Timer,
    timer_at: Option<Instant>,
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the peer is too slow")
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the connection ended inside a body")
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection whose transfers are cut off after `stall_timeout`
    /// without progress ([`STALL_TIMEOUT`] unless configured).
    pub fn new(stream: S, stall_timeout: Duration) -> Connection<S> {
        Connection {
            stream,
            stall_timeout,
            buffer: Vec::new(),
            start: 0,
            body: BodyState::Done,
            generation: 0,
            continue_state: Continue::NotExpected,
            pace: None,
            timer: Timer::never(),
            timer_at: None,
        }
    }

    /// The stream, to close it.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    fn buffered(&self) -> &[u8] {
        self.buffer.get(self.start..).unwrap_or_default()
    }

    fn consume(&mut self, count: usize) {
        self.start += count;
        if self.buffer.len() <= self.start {
            // An idle connection holds no buffer.
            if READ_CHUNK_BYTES < self.buffer.capacity() {
                self.buffer = Vec::new();
            } else {
                self.buffer.clear();
            }
            self.start = 0;
        }
    }

    /// Whether the body of the current message was read to its end.
    pub fn body_done(&self) -> bool {
        matches!(self.body, BodyState::Done)
    }

    /// Whether the body of the current message was truncated, malformed or
    /// too slow: the connection cannot carry another message.
    pub fn body_failed(&self) -> bool {
        matches!(self.body, BodyState::Failed)
    }

    /// Whether the client still waits for a `100 Continue` never sent: it
    /// has not sent its body, so the connection cannot carry another request.
    pub fn continue_owed(&self) -> bool {
        matches!(self.continue_state, Continue::Owed(_))
    }

    /// Starts the deadline of a new transfer (a response write).
    pub fn start_transfer(&mut self) {
        self.reset_pace();
        self.pace = Some(Pace::new(Instant::now()));
    }

    /// Forgets the deadline of the last transfer (and disarms its timer, so
    /// an idle connection is not woken for nothing).
    fn reset_pace(&mut self) {
        self.pace = None;
        if self.timer_at.take().is_some() {
            self.timer = Timer::never();
        }
    }

    /// Checks the transfer deadline after the stream said Pending.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let pace = *self.pace.get_or_insert_with(|| Pace::new(Instant::now()));
        let deadline = pace.deadline(self.stall_timeout);
        if self.timer_at != Some(deadline) {
            self.timer.set_at(deadline);
            self.timer_at = Some(deadline);
        }
        match Pin::new(&mut self.timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(timed_out()),
            Poll::Pending => Poll::Pending,
        }
    }

    fn record_progress(&mut self, bytes: usize) {
        let now = Instant::now();
        self.pace.get_or_insert_with(|| Pace::new(now)).progress(now, bytes);
    }

    /// Reads from the stream into `out` under the transfer deadline.
    fn poll_paced_read(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_read(cx, out) {
            Poll::Ready(Ok(count)) => {
                self.record_progress(count);
                Poll::Ready(Ok(count))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }

    /// Writes some of `bytes` under the transfer deadline.
    fn poll_paced_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, bytes) {
            Poll::Ready(Ok(0)) if !bytes.is_empty() => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(count)) => {
                self.record_progress(count);
                Poll::Ready(Ok(count))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }

    fn poll_paced_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => self.poll_deadline(cx).map(Err),
        }
    }

    /// Reads once more into the buffer; `Ok(0)` at the end of the stream.
    /// `paced`: under the transfer deadline (bodies), or not (heads, which
    /// the caller times as a whole).
    fn poll_fill(&mut self, cx: &mut Context<'_>, paced: bool) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        let count = if paced {
            ready!(self.poll_paced_read(cx, &mut chunk))?
        } else {
            ready!(Pin::new(&mut self.stream).poll_read(cx, &mut chunk))?
        };
        if 0 < self.start {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(chunk.get(..count).unwrap_or_default());
        Poll::Ready(Ok(count))
    }

    /// Reads the next head: `Ok(None)` if the stream ends before its first
    /// byte. Sets up the reading of the body that follows it.
    async fn read_head<H>(
        cell: &RefCell<Self>,
        request: bool,
        parse: impl Fn(&[u8]) -> Result<H, HeadError>,
        framing: impl Fn(&H) -> Framing,
    ) -> Result<Option<H>, ReadError> {
        let mut scan = head::Scan::default();
        loop {
            {
                let mut connection = cell.borrow_mut();
                if let Some(length) = head::scan(connection.buffered(), &mut scan, request)? {
                    let parsed = parse(connection.buffered().get(..length).unwrap_or_default());
                    connection.consume(length);
                    let parsed = parsed?;
                    connection.body = BodyState::from(framing(&parsed));
                    connection.generation += 1;
                    connection.continue_state = Continue::NotExpected;
                    connection.reset_pace();
                    return Ok(Some(parsed));
                }
            }
            let count = std::future::poll_fn(|cx| cell.borrow_mut().poll_fill(cx, false)).await?;
            if count == 0 {
                return match cell.borrow().buffered().iter().all(|&byte| byte == b'\r' || byte == b'\n') {
                    true => Ok(None),
                    false => Err(ReadError::Head(HeadError::Incomplete)),
                };
            }
        }
    }

    /// Reads the body of the current message into `out`; `Ok(0)` at its end.
    fn poll_read_body(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        if out.is_empty() || self.body_done() {
            return Poll::Ready(Ok(0));
        }
        ready!(self.poll_continue(cx))?;
        let result = ready!(self.poll_body_step(cx, out));
        if result.is_err() {
            self.body = BodyState::Failed;
        }
        Poll::Ready(result)
    }

    /// Writes `100 Continue` if the client waits for it.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Continue::Owed(written) = self.continue_state {
            if written < CONTINUE.len() {
                let count = ready!(self.poll_paced_write(cx, CONTINUE.get(written..).unwrap_or_default()))?;
                self.continue_state = Continue::Owed(written + count);
            } else {
                ready!(self.poll_paced_flush(cx))?;
                self.continue_state = Continue::Sent;
                // The body's own deadline starts now.
                self.reset_pace();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_body_step(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match &mut self.body {
                BodyState::Done => return Poll::Ready(Ok(0)),
                BodyState::Failed => {
                    return Poll::Ready(Err(io::Error::other("the body could not be read")));
                }
                BodyState::Length(remaining) => {
                    let want = out.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    let count = if self.buffered().is_empty() {
                        let count = ready!(self.poll_paced_read(cx, &mut out[..want]))?;
                        if count == 0 {
                            return Poll::Ready(Err(truncated()));
                        }
                        count
                    } else {
                        let count = want.min(self.buffered().len());
                        out[..count].copy_from_slice(&self.buffered()[..count]);
                        self.consume(count);
                        count
                    };
                    let left = remaining_after(&self.body, count);
                    self.body = if left == 0 { BodyState::Done } else { BodyState::Length(left) };
                    return Poll::Ready(Ok(count));
                }
                BodyState::Chunked(decoder) => {
                    let mut decoder = *decoder;
                    let input = self.buffer.get(self.start..).unwrap_or_default();
                    let (used, filled) = decoder
                        .decode(input, out)
                        .map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why))?;
                    self.consume(used);
                    self.body = if decoder.is_done() { BodyState::Done } else { BodyState::Chunked(decoder) };
                    if 0 < filled || decoder.is_done() {
                        return Poll::Ready(Ok(filled));
                    }
                    if ready!(self.poll_fill(cx, true))? == 0 {
                        return Poll::Ready(Err(truncated()));
                    }
                }
                BodyState::UntilClose => {
                    if self.buffered().is_empty() {
                        let count = ready!(self.poll_paced_read(cx, out))?;
                        if count == 0 {
                            self.body = BodyState::Done;
                        }
                        return Poll::Ready(Ok(count));
                    }
                    let count = out.len().min(self.buffered().len());
                    out[..count].copy_from_slice(&self.buffered()[..count]);
                    self.consume(count);
                    return Poll::Ready(Ok(count));
                }
            }
        }
    }
}

fn remaining_after(body: &BodyState, count: usize) -> u64 {
    match body {
        BodyState::Length(remaining) => remaining.saturating_sub(count as u64),
        _ => 0,
    }
}

/// Why reading a message failed.
#[derive(Debug)]
pub enum ReadError {
    Head(HeadError),
    Io(io::Error),
}

impl From<HeadError> for ReadError {
    fn from(error: HeadError) -> ReadError {
        ReadError::Head(error)
    }
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> ReadError {
        ReadError::Io(error)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Head(error) => error.fmt(formatter),
            ReadError::Io(error) => error.fmt(formatter),
        }
    }
}

/// A connection shared between the loop serving it and the body reader
/// handed to a request's handler (one thread: borrows last one poll).
pub type Shared<S> = Rc<RefCell<Connection<S>>>;

/// Reads the next request head on `connection`; `Ok(None)` if the client
/// closed the connection between requests.
pub async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(
    connection: &Shared<S>,
) -> Result<Option<(RequestHead, Body<S>)>, ReadError> {
    let Some(head) =
        Connection::read_head(connection, true, head::parse_request_head, |head| head.framing).await?
    else {
        return Ok(None);
    };
    let mut state = connection.borrow_mut();
    if head.expect_continue && !state.body_done() {
        state.continue_state = Continue::Owed(0);
    }
    let body = Body { connection: connection.clone(), generation: state.generation };
    Ok(Some((head, body)))
}

/// The body of a request (or response) as it arrives: ends exactly where
/// the message's framing says, fails if the connection ends first, is
/// malformed or too slow (see [`STALL_TIMEOUT`]). Sends `100 Continue` on
/// its first read if the client waits for it. Once its message is over
/// (the handler returned), it reads nothing more.
pub struct Body<S> {
    connection: Shared<S>,
    generation: u64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Body<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut connection = self.connection.borrow_mut();
        if connection.generation != self.generation {
            return Poll::Ready(Err(io::Error::other("the request is over")));
        }
        connection.poll_read_body(cx, out)
    }
}

/// Reads and drops what is left of the current body, at most `limit`
/// bytes; true if the body ended within them (the connection can carry
/// another message).
pub async fn drain<S: AsyncRead + AsyncWrite + Unpin>(connection: &Shared<S>, limit: u64) -> bool {
    if connection.borrow().body_done() {
        return true;
    }
    let mut left = limit;
    // On the heap, and only here: a buffer on the stack would be part of
    // every idle connection's task.
    let mut scratch = vec![0u8; READ_CHUNK_BYTES];
    loop {
        if connection.borrow().body_done() {
            return true;
        }
        let room = scratch.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if room == 0 {
            return false;
        }
        let read =
            std::future::poll_fn(|cx| connection.borrow_mut().poll_read_body(cx, &mut scratch[..room])).await;
        match read {
            Ok(0) => return connection.borrow().body_done(),
            Ok(count) => left -= count as u64,
            Err(_) => return false,
        }
    }
}

/// Why an outbound exchange failed.
#[derive(Debug)]
pub enum ClientError {
    Read(ReadError),
    /// The response body is larger than the caller's bound.
    TooLarge,
}

impl From<io::Error> for ClientError {
    fn from(error: io::Error) -> ClientError {
        ClientError::Read(ReadError::Io(error))
    }
}

impl From<ReadError> for ClientError {
    fn from(error: ReadError) -> ClientError {
        ClientError::Read(error)
    }
}

/// The most interim (1xx) responses skipped before the real one.
const MAX_INTERIM_RESPONSES: usize = 8;

/// Bytes of a response body read at a time by [`exchange_to`].
const BODY_PIECE: usize = 64 << 10;

/// Sends one request (`head` as made by [`request_head`], then `body`) on
/// `stream` and reads the response, writing its body to `sink` piece by
/// piece as it arrives (a `Vec`, or a spool file for answers too large to
/// hold). The body may be at most `max_body` bytes (checked against
/// `Content-Length` before reading, and while reading chunked or
/// close-delimited bodies). The caller times the whole.
pub async fn exchange_to<S: AsyncRead + AsyncWrite + Unpin, W: io::Write>(
    stream: S,
    head: Vec<u8>,
    body: Vec<u8>,
    max_body: usize,
    sink: &mut W,
) -> Result<ResponseHead, ClientError> {
    let connection = Rc::new(RefCell::new(Connection::new(stream, STALL_TIMEOUT)));
    write_message(&connection, head, OutgoingBody::Bytes(body), false).await?;
    let mut interim = 0;
    let response = loop {
        let response =
            Connection::read_head(&connection, false, head::parse_response_head, |head| head.framing)
                .await?
                .ok_or(ReadError::Head(HeadError::Incomplete))?;
        if response.status < 200 && interim < MAX_INTERIM_RESPONSES {
            interim += 1;
            continue;
        }
        if response.status < 200 {
            return Err(ReadError::Head(HeadError::Malformed("too many interim responses")).into());
        }
        break response;
    };
    if let Framing::Length(length) = response.framing {
        if max_body as u64 <= length.saturating_sub(1) {
            return Err(ClientError::TooLarge);
        }
    }
    let generation = connection.borrow().generation;
    let mut reader = Body { connection: connection.clone(), generation };
    let mut piece = vec![0; BODY_PIECE];
    let mut total = 0usize;
    loop {
        let count = smol::io::AsyncReadExt::read(&mut reader, &mut piece).await?;
        if count == 0 {
            break;
        }
        total = total.saturating_add(count);
        if max_body < total {
            return Err(ClientError::TooLarge);
        }
        sink.write_all(&piece[..count])?;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::AsyncReadExt;

    /// A stream fed from fixed input (in pieces of `piece` bytes) that
    /// records what is written to it.
    struct Script {
        input: Vec<u8>,
        piece: usize,
        written: Rc<RefCell<Vec<u8>>>,
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let count = self.input.len().min(self.piece).min(out.len());
            out[..count].copy_from_slice(&self.input[..count]);
            self.input.drain(..count);
            Poll::Ready(Ok(count))
        }
    }

    impl AsyncWrite for Script {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
            self.written.borrow_mut().extend_from_slice(bytes);
            Poll::Ready(Ok(bytes.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A request's target and body, or the error that ended the connection.
    type Served = Result<(String, Vec<u8>), String>;

    /// Reads every request of `input` with its body; also returns what was written.
    fn serve(input: &[u8], piece: usize) -> (Vec<Served>, Vec<u8>) {
        let written = Rc::new(RefCell::new(Vec::new()));
        let script = Script { input: input.to_vec(), piece, written: written.clone() };
        let connection = Rc::new(RefCell::new(Connection::new(script, STALL_TIMEOUT)));
        let mut seen = Vec::new();
        smol::block_on(async {
            loop {
                match read_request(&connection).await {
                    Ok(None) => break,
                    Ok(Some((head, mut body))) => {
                        let mut bytes = Vec::new();
                        match body.read_to_end(&mut bytes).await {
                            Ok(_) => seen.push(Ok((head.target, bytes))),
                            Err(error) => {
                                seen.push(Err(error.to_string()));
                                break;
                            }
                        }
                    }
                    Err(error) => {
                        seen.push(Err(error.to_string()));
                        break;
                    }
                }
            }
        });
        let written = written.borrow().clone();
        (seen, written)
    }

    #[test]
    fn pipelined_requests_with_bodies_are_read_in_order() {
        let input = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\nGET /c HTTP/1.1\r\n\r\n";
        for piece in [1, 7, 4096] {
            let (seen, _) = serve(input, piece);
            assert_eq!(
                seen,
                vec![
                    Ok(("/a".to_string(), b"abc".to_vec())),
                    Ok(("/b".to_string(), b"de".to_vec())),
                    Ok(("/c".to_string(), Vec::new())),
                ],
                "piece {piece}"
            );
        }
    }

    #[test]
    fn truncated_bodies_are_errors() {
        let (seen, _) = serve(b"PUT /a HTTP/1.1\r\nContent-Length: 1000\r\n\r\n0123456789", 4096);
        assert!(matches!(&seen[..], [Err(_)]), "{seen:?}");
        let (seen, _) = serve(b"PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX", 4096);
        assert!(matches!(&seen[..], [Err(_)]), "{seen:?}");
        let (seen, _) = serve(b"GET /a HTTP/1.1\r\nHost: x", 4096);
        assert!(matches!(&seen[..], [Err(_)]), "{seen:?}");
    }

    #[test]
    fn continue_is_sent_on_the_first_read() {
        let (seen, written) =
            serve(b"PUT /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", 4096);
        assert_eq!(seen, vec![Ok(("/a".to_string(), b"hi".to_vec()))]);
        assert_eq!(written, CONTINUE);
    }

    #[test]
    fn pace_cuts_stalls_and_trickles() {
        let start = Instant::now();
        let mut pace = Pace::new(start);
        assert_eq!(pace.deadline(STALL_TIMEOUT), start + STALL_TIMEOUT);
        // A byte every 20 s keeps it under the stall timeout but not past the grace period.
        for step in 1..=3 {
            pace.progress(start + Duration::from_secs(20 * step), 1);
        }
        assert_eq!(pace.deadline(STALL_TIMEOUT), start + TRANSFER_GRACE);
        // A steady upload earns its time.
        let mut pace = Pace::new(start);
        pace.progress(start + Duration::from_secs(100), 100 * MIN_TRANSFER_BYTES_PER_SECOND as usize);
        assert_eq!(pace.deadline(STALL_TIMEOUT), start + Duration::from_secs(100) + STALL_TIMEOUT);
    }

    /// A body of unknown length goes out in chunks that our own client reads
    /// back whole; a reader that fails leaves the last chunk unwritten, so
    /// the peer cannot take the body as complete.
    /// RFC 9112 §7.1: <https://www.rfc-editor.org/rfc/rfc9112#section-7.1>.
    #[test]
    fn unsized_bodies_are_chunked_and_read_back_whole() {
        let write = |reader: Box<dyn smol::io::AsyncBufRead + Unpin>| {
            let written = Rc::new(RefCell::new(Vec::new()));
            let script = Script { input: Vec::new(), piece: 1, written: written.clone() };
            let connection = Rc::new(RefCell::new(Connection::new(script, STALL_TIMEOUT)));
            let head = response_head(200, &[], BodyLength::Chunked, false);
            let outcome = smol::block_on(write_message(
                &connection,
                head,
                OutgoingBody::Unsized { reader, chunked: true },
                false,
            ));
            (outcome, written.take())
        };
        let body: Vec<u8> = (0..40_000u32).map(|index| (index % 251) as u8).collect();
        let reader = smol::io::BufReader::with_capacity(7_000, smol::io::Cursor::new(body.clone()));
        let (outcome, written) = write(Box::new(reader));
        outcome.unwrap();
        assert!(written.starts_with(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"));
        assert!(written.ends_with(b"\r\n0\r\n\r\n"));
        let script = Script { input: written, piece: 999, written: Rc::new(RefCell::new(Vec::new())) };
        let mut read = Vec::new();
        let head = request_head("GET", "/", &[], None);
        let response = smol::block_on(exchange_to(script, head, Vec::new(), body.len(), &mut read)).unwrap();
        assert_eq!((response.status, read == body), (200, true));

        let failing = smol::io::AsyncReadExt::chain(
            smol::io::Cursor::new(b"partial".to_vec()),
            smol::io::AsyncReadExt::take(FailingReader, 1),
        );
        let (outcome, written) = write(Box::new(smol::io::BufReader::new(failing)));
        assert!(outcome.is_err());
        assert!(!written.ends_with(b"0\r\n\r\n"), "{:?}", String::from_utf8_lossy(&written));
    }

    struct FailingReader;

    impl AsyncRead for FailingReader {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut [u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Err(io::Error::other("the producer failed")))
        }
    }

    #[test]
    fn client_exchanges_bound_the_body() {
        let run = |input: &[u8], max_body: usize| {
            let written = Rc::new(RefCell::new(Vec::new()));
            let script = Script { input: input.to_vec(), piece: 5, written };
            let mut body = Vec::new();
            let head = request_head("GET", "/", &[], None);
            smol::block_on(exchange_to(script, head, Vec::new(), max_body, &mut body))
                .map(|head| (head.status, body))
        };
        assert_eq!(run(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 2).unwrap(), (200, b"hi".to_vec()));
        assert!(matches!(
            run(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhey", 2),
            Err(ClientError::TooLarge)
        ));
        assert!(matches!(
            run(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhey\r\n0\r\n\r\n", 2),
            Err(ClientError::TooLarge)
        ));
        assert_eq!(
            run(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nall", 10).unwrap(),
            (200, b"all".to_vec())
        );
        assert!(run(b"HTTP/1.1 200 OK\r\nX-Evil: \xc3\xa9\r\nContent-Length: 0\r\n\r\n", 10).is_err());
        assert!(run(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhi", 10).is_err());
    }
}
