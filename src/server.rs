//! The accept loop on the single smol thread: TCP, TLS handshakes, and an
//! HTTP/1.1 keep-alive loop built on async-h1's decoder and encoder.
//!
//! Knows nothing about Matrix: requests go to a handler closure.
//!
//! Two traps of async-h1 are handled here. Its `accept` arms a timer of the
//! old async-io 1.x (which starts a reactor thread of its own), so the
//! keep-alive loop is ours. And it answers `Expect: 100-continue` by spawning
//! onto a global multi-threaded executor, so [`HeadFilter`] renames that header
//! before async-h1 sees it and [`Interim::send_continue`] answers it on this thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_dup::{Arc as SharedArc, Mutex as SharedMutex};
use futures_rustls::TlsAcceptor;
use http_types::{Request, Response, StatusCode};
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::{Async, LocalExecutor, Timer};

/// Spec-less but sane: a client gets this long to finish a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive connection is closed after this long.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Unread request body the loop drains before reusing a connection; past this it closes.
const MAX_DRAIN_BYTES: u64 = 64 * 1024;
/// Responses are written through a buffer this big: a typical answer (head
/// and JSON body) leaves in one write; bigger ones in chunks of this size.
const RESPONSE_BUFFER_BYTES: usize = 16 * 1024;
/// async-h1 refuses heads of 8 KiB; lines are buffered up to this before passing through.
const MAX_HEAD_LINE_BYTES: usize = 16 * 1024;
/// The marker header [`HeadFilter`] puts in place of `Expect: 100-continue`.
pub const EXPECT_CONTINUE_MARKER: &str = "x-hearth-expect-continue";

/// Where a request came from.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub address: SocketAddr,
    /// Index of the listener in the list given to [`Server::start`].
    pub listener: usize,
}

/// One listening socket and its TLS config (reloadable), if any.
pub struct ListenerSpec {
    pub address: SocketAddr,
    pub tls: Option<Rc<RefCell<Arc<rustls::ServerConfig>>>>,
}

/// The request handler: every request of every connection goes here.
pub type Handler = Rc<dyn Fn(Request, Peer, Interim) -> Pin<Box<dyn Future<Output = Response>>>>;

/// A plain or TLS connection.
enum Stream {
    Plain(Async<std::net::TcpStream>),
    Tls(Box<futures_rustls::server::TlsStream<Async<std::net::TcpStream>>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_close(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_close(cx),
        }
    }
}

/// Sits between the socket and async-h1. While a request head is being read it
/// passes whole lines only, and replaces an `Expect: 100-continue` line with
/// [`EXPECT_CONTINUE_MARKER`]; once the blank line ends the head, bytes pass
/// through untouched, so bodies are never altered.
pub struct HeadFilter<S> {
    inner: S,
    in_head: bool,
    /// Bytes read from `inner` but not yet sorted into lines.
    raw: Vec<u8>,
    /// Bytes ready for the reader, from `ready_from` on.
    ready: Vec<u8>,
    ready_from: usize,
}

impl<S> HeadFilter<S> {
    fn new(inner: S) -> Self {
        HeadFilter { inner, in_head: true, raw: Vec::new(), ready: Vec::new(), ready_from: 0 }
    }

    /// The next bytes read start a new request head.
    fn start_head(&mut self) {
        self.in_head = true;
    }

    fn take_line(&mut self, end: usize) {
        let line: Vec<u8> = self.raw.drain(..=end).collect();
        if line == b"\r\n" || line == b"\n" {
            self.in_head = false;
            self.ready.extend_from_slice(&line);
        } else if is_expect_continue(&line) {
            self.ready.extend_from_slice(EXPECT_CONTINUE_MARKER.as_bytes());
            self.ready.extend_from_slice(b": 1\r\n");
        } else {
            self.ready.extend_from_slice(&line);
        }
    }
}

fn is_expect_continue(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    match line.split_once(':') {
        Some((name, value)) => {
            name.eq_ignore_ascii_case("expect") && value.trim().eq_ignore_ascii_case("100-continue")
        }
        None => false,
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadFilter<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.ready_from < this.ready.len() {
                let available = &this.ready[this.ready_from..];
                let count = available.len().min(buf.len());
                buf[..count].copy_from_slice(&available[..count]);
                this.ready_from += count;
                if this.ready_from == this.ready.len() {
                    this.ready.clear();
                    this.ready_from = 0;
                }
                return Poll::Ready(Ok(count));
            }
            if !this.in_head {
                if !this.raw.is_empty() {
                    std::mem::swap(&mut this.ready, &mut this.raw);
                    continue;
                }
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if let Some(end) = this.raw.iter().position(|byte| *byte == b'\n') {
                this.take_line(end);
                continue;
            }
            if this.raw.len() > MAX_HEAD_LINE_BYTES {
                // Let async-h1 see the oversized head and refuse it.
                this.ready.append(&mut this.raw);
                continue;
            }
            let mut chunk = [0u8; 4096];
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => {
                    if this.raw.is_empty() {
                        return Poll::Ready(Ok(0));
                    }
                    this.ready.append(&mut this.raw);
                }
                Poll::Ready(Ok(count)) => this.raw.extend_from_slice(&chunk[..count]),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadFilter<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

type Io = SharedArc<SharedMutex<HeadFilter<Stream>>>;

/// Lets a handler answer `Expect: 100-continue` before it reads the body.
pub struct Interim {
    io: Io,
    expected: bool,
    sent: Rc<Cell<bool>>,
}

impl Interim {
    /// Whether the client waits for `100 Continue` before sending its body.
    pub fn continue_expected(&self) -> bool {
        self.expected && !self.sent.get()
    }

    /// Sends `100 Continue` if the client asked for it and it was not sent yet.
    pub async fn send_continue(&self) {
        if self.continue_expected() {
            self.sent.set(true);
            let mut io = self.io.clone();
            let _ = io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
            let _ = io.flush().await;
        }
    }
}

/// The running listeners and what they share.
pub struct Server {
    executor: Rc<LocalExecutor<'static>>,
    handler: Handler,
    shutdown: smol::channel::Receiver<()>,
    active_connections: Rc<Cell<usize>>,
}

impl Server {
    /// Binds every listener (failing fast on the first that cannot bind) and
    /// starts accepting on `executor`. Dropping or closing the sender paired
    /// with `shutdown` stops accepting and closes idle connections.
    pub fn start(
        executor: Rc<LocalExecutor<'static>>,
        listeners: Vec<ListenerSpec>,
        handler: Handler,
        shutdown: smol::channel::Receiver<()>,
    ) -> io::Result<Rc<Server>> {
        let server = Rc::new(Server {
            executor: executor.clone(),
            handler,
            shutdown,
            active_connections: Rc::new(Cell::new(0)),
        });
        let mut bound = Vec::new();
        for (index, spec) in listeners.into_iter().enumerate() {
            let listener = TcpListener::bind(spec.address).map_err(|error| {
                io::Error::new(error.kind(), format!("cannot listen on {}: {error}", spec.address))
            })?;
            log::info!(
                "listening on {}{}",
                listener.local_addr()?,
                if spec.tls.is_some() { " (TLS)" } else { "" }
            );
            bound.push((index, Async::new(listener)?, spec.tls));
        }
        for (index, listener, tls) in bound {
            let server_for_loop = server.clone();
            executor.spawn(async move { server_for_loop.accept_loop(index, listener, tls).await }).detach();
        }
        Ok(server)
    }

    /// How many connections are open.
    pub fn active_connections(&self) -> usize {
        self.active_connections.get()
    }

    async fn accept_loop(
        self: Rc<Self>,
        index: usize,
        listener: Async<TcpListener>,
        tls: Option<Rc<RefCell<Arc<rustls::ServerConfig>>>>,
    ) {
        loop {
            let accepted = async { Some(listener.accept().await) }
                .or(async {
                    let _ = self.shutdown.recv().await;
                    None
                })
                .await;
            let (stream, address) = match accepted {
                None => return,
                Some(Ok(accepted)) => accepted,
                Some(Err(error)) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    log::warn!("accept failed: {error}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Without this every response waits ~40 ms (Nagle vs delayed ACK).
            let _ = stream.get_ref().set_nodelay(true);
            let peer = Peer { address, listener: index };
            let tls_config = tls.as_ref().map(|config| config.borrow().clone());
            let server = self.clone();
            self.executor
                .spawn(async move {
                    server.active_connections.set(server.active_connections.get() + 1);
                    server.connection(stream, peer, tls_config).await;
                    server.active_connections.set(server.active_connections.get() - 1);
                })
                .detach();
        }
    }

    async fn connection(
        &self,
        stream: Async<std::net::TcpStream>,
        peer: Peer,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) {
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(config) => {
                let handshake = async { Some(TlsAcceptor::from(config).accept(stream).await) }
                    .or(async {
                        Timer::after(TLS_HANDSHAKE_TIMEOUT).await;
                        None
                    })
                    .await;
                match handshake {
                    Some(Ok(stream)) => Stream::Tls(Box::new(stream)),
                    Some(Err(error)) => {
                        log::debug!("TLS handshake with {} failed: {error}", peer.address);
                        return;
                    }
                    None => return,
                }
            }
        };
        let io: Io = SharedArc::new(SharedMutex::new(HeadFilter::new(stream)));
        while self.exchange(&io, peer).await {}
        let _ = io.clone().close().await;
    }

    /// Serves one request on the connection; false when the connection should close.
    async fn exchange(&self, io: &Io, peer: Peer) -> bool {
        io.lock().start_head();
        let decoded = async { Some(async_h1::server::decode(io.clone()).await) }
            .or(async {
                Timer::after(KEEP_ALIVE_TIMEOUT).await;
                None
            })
            .or(async {
                let _ = self.shutdown.recv().await;
                None
            })
            .await;
        let (mut request, mut body) = match decoded {
            None | Some(Ok(None)) => return false,
            Some(Ok(Some(decoded))) => decoded,
            Some(Err(error)) => {
                log::debug!("bad request from {}: {error}", peer.address);
                let mut response = Response::new(StatusCode::BadRequest);
                response.insert_header("connection", "close");
                let mut encoder = async_h1::server::Encoder::new(response, http_types::Method::Get);
                let _ = smol::io::copy(&mut encoder, &mut io.clone()).await;
                return false;
            }
        };
        let expected = request.remove_header(EXPECT_CONTINUE_MARKER).is_some();
        let client_closes =
            request.header("connection").is_some_and(|value| value.as_str().eq_ignore_ascii_case("close"));
        let method = request.method();
        let sent = Rc::new(Cell::new(false));
        let interim = Interim { io: io.clone(), expected, sent: sent.clone() };
        let mut response = (self.handler)(request, peer, interim).await;
        // A client that waited for 100-continue and never got it has not sent its
        // body; one that sent more than we will drain is cut off. Either way the
        // connection cannot carry another request.
        let continue_owed = expected && !sent.get();
        let mut reusable = !client_closes && !continue_owed;
        if !reusable {
            response.insert_header("connection", "close");
        }
        let mut encoder = async_h1::server::Encoder::new(response, method);
        // Head and body in one write (the encoder yields them separately):
        // one segment for the client to wake up for, not two.
        let mut writer = smol::io::BufWriter::with_capacity(RESPONSE_BUFFER_BYTES, io.clone());
        if smol::io::copy(&mut encoder, &mut writer).await.is_err() || writer.flush().await.is_err() {
            return false;
        }
        if reusable {
            let drained = smol::io::copy((&mut body).take(MAX_DRAIN_BYTES), &mut smol::io::sink())
                .await
                .unwrap_or(MAX_DRAIN_BYTES);
            reusable = drained < MAX_DRAIN_BYTES;
        }
        reusable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(input: &[u8], chunk: usize) -> Vec<u8> {
        struct Chunks<'a>(&'a [u8], usize);
        impl AsyncRead for Chunks<'_> {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                let count = self.0.len().min(self.1).min(buf.len());
                buf[..count].copy_from_slice(&self.0[..count]);
                self.0 = &self.0[count..];
                Poll::Ready(Ok(count))
            }
        }
        let mut filter = HeadFilter::new(Chunks(input, chunk));
        let mut output = Vec::new();
        smol::block_on(filter.read_to_end(&mut output)).unwrap();
        output
    }

    #[test]
    fn expect_continue_is_renamed_in_the_head_only() {
        let input = b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\nExpect: 100-continue\r\n";
        for chunk in [1, 3, 7, 4096] {
            let output = filtered(input, chunk);
            let text = String::from_utf8(output).unwrap();
            assert_eq!(
                text,
                "PUT /x HTTP/1.1\r\nHost: a\r\nx-hearth-expect-continue: 1\r\n\r\nExpect: 100-continue\r\n",
                "chunk size {chunk}"
            );
        }
    }

    #[test]
    fn heads_without_expect_pass_unchanged() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody\x00\xff";
        assert_eq!(filtered(input, 5), input.to_vec());
    }
}
