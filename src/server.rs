//! The accept loop on the single smol thread: TCP, TLS handshakes, and an
//! HTTP/1.1 keep-alive loop on our codec (`http1`).
//!
//! Knows nothing about Matrix: requests go to a handler closure. Refused
//! heads are answered here (400, 414, 431, 501) and close the connection.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_rustls::TlsAcceptor;
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncWrite};
use smol::{Async, LocalExecutor, Timer};

use crate::http1::{self, HeadError, OutgoingBody, ReadError, RequestHead, Version};
use crate::protocol::acme::ALPN_ACME_TLS;

/// Spec-less but sane: a client gets this long to finish a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive connection is closed after this long.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Unread request body the loop drains before reusing a connection; past this it closes.
const MAX_DRAIN_BYTES: u64 = 64 * 1024;
/// Closing a connection (a TLS close_notify to a peer that reads nothing)
/// waits at most this long.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

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
pub type Handler = Rc<dyn Fn(Request, Peer) -> Pin<Box<dyn Future<Output = Response>>>>;

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

/// A request: its head, and its body as it arrives.
pub struct Request {
    pub head: RequestHead,
    pub body: RequestBody,
}

/// A request body as it arrives (see [`http1::Body`]): bounded by its
/// framing, failing on truncation, malformed chunks or a stalled client,
/// sending `100 Continue` on the first read if the client waits for it.
pub struct RequestBody(http1::Body<Stream>);

impl AsyncRead for RequestBody {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

/// A response: status, headers (`content-length` and `connection` are
/// added here) and body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub body: OutgoingBody,
}

/// The running listeners and what they share.
pub struct Server {
    executor: Rc<LocalExecutor<'static>>,
    handler: Handler,
    shutdown: smol::channel::Receiver<()>,
    active_connections: Rc<Cell<usize>>,
    /// How long a request body or response may go without moving a byte.
    stall_timeout: Duration,
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
        stall_timeout: Duration,
    ) -> io::Result<Rc<Server>> {
        let server = Rc::new(Server {
            executor: executor.clone(),
            handler,
            shutdown,
            active_connections: Rc::new(Cell::new(0)),
            stall_timeout,
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
                    // A TLS-ALPN-01 validation needs only the handshake (RFC 8737 §3).
                    Some(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(ALPN_ACME_TLS) => {
                        log::debug!("answered an ACME TLS-ALPN-01 validation from {}", peer.address);
                        return;
                    }
                    Some(Ok(stream)) => Stream::Tls(Box::new(stream)),
                    Some(Err(error)) => {
                        log::debug!("TLS handshake with {} failed: {error}", peer.address);
                        return;
                    }
                    None => return,
                }
            }
        };
        let connection = Rc::new(RefCell::new(http1::Connection::new(stream, self.stall_timeout)));
        while self.exchange(&connection, peer).await {}
        let close = std::future::poll_fn(|cx| Pin::new(connection.borrow_mut().stream_mut()).poll_close(cx));
        let _ = close
            .or(async {
                Timer::after(CLOSE_TIMEOUT).await;
                Ok(())
            })
            .await;
    }

    /// Serves one request on the connection; false when the connection should close.
    async fn exchange(&self, connection: &http1::Shared<Stream>, peer: Peer) -> bool {
        let read = async { Some(http1::read_request(connection).await) }
            .or(async {
                Timer::after(KEEP_ALIVE_TIMEOUT).await;
                None
            })
            .or(async {
                let _ = self.shutdown.recv().await;
                None
            })
            .await;
        let (head, body) = match read {
            None | Some(Ok(None)) => return false,
            Some(Ok(Some(request))) => request,
            Some(Err(ReadError::Head(HeadError::Incomplete) | ReadError::Io(_))) => return false,
            Some(Err(ReadError::Head(error))) => {
                log::debug!("bad request from {}: {error}", peer.address);
                let status = error.status();
                let text = format!("{error}\n").into_bytes();
                let head = http1::response_head(
                    status,
                    &[("content-type", "text/plain")],
                    http1::BodyLength::Known(text.len() as u64),
                    true,
                );
                let _ = http1::write_message(connection, head, OutgoingBody::Bytes(text), false).await;
                return false;
            }
        };
        let keep_alive = head.keep_alive;
        let head_only = head.method == "HEAD";
        let http10 = head.version == Version::Http10;
        let mut response = (self.handler)(Request { head, body: RequestBody(body) }, peer).await;
        // An HTTP/1.0 peer knows no chunks: a body of unknown length goes to
        // it as it comes, and the connection's close ends it.
        if let OutgoingBody::Unsized { chunked, .. } = &mut response.body {
            *chunked = !http10;
        }
        let close_delimited = response.body.length() == http1::BodyLength::UntilClose;
        // A client that waited for 100-continue and never got it has not sent
        // its body, and a body that failed leaves no request boundary: either
        // way the connection cannot carry another request.
        let reusable = keep_alive
            && !close_delimited
            && !connection.borrow().continue_owed()
            && !connection.borrow().body_failed();
        let date = http1::http_date(std::time::SystemTime::now());
        let mut headers: Vec<(&str, &str)> =
            response.headers.iter().map(|(name, value)| (name.as_ref(), value.as_str())).collect();
        headers.push(("date", &date));
        if reusable && http10 {
            headers.push(("connection", "keep-alive"));
        }
        let head = http1::response_head(response.status, &headers, response.body.length(), !reusable);
        if http1::write_message(connection, head, response.body, head_only).await.is_err() {
            return false;
        }
        // What the handler left of the body is read and dropped, up to a bound.
        reusable && http1::drain(connection, MAX_DRAIN_BYTES).await
    }
}
