//! Writing HTTP/1.1 messages: request and response heads (headers that
//! could split a head are left out), and bodies under the write deadline.
//!
//! Spec: <https://www.rfc-editor.org/rfc/rfc9112#section-2>.

use std::io;

use smol::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite};

use super::Shared;

/// A response body streamed from a reader is written in pieces of up to this.
const WRITE_CHUNK_BYTES: usize = 16 * 1024;
/// Responses whose head and body together fit in this go out in one write.
const ONE_WRITE_BYTES: usize = 16 * 1024;

/// A response or request body to write.
pub enum OutgoingBody {
    Bytes(Vec<u8>),
    /// Exactly `length` bytes from `reader`; a reader that ends early or
    /// fails cuts the connection.
    Stream {
        reader: Box<dyn AsyncBufRead + Unpin>,
        length: u64,
    },
    /// Bytes from `reader` until it ends, their length not known beforehand
    /// (an answer made while it is sent): in chunks (RFC 9112 §7.1), or with
    /// `chunked` false (an HTTP/1.0 peer, which knows no chunks) as they
    /// come, the connection's close ending them. A reader that fails cuts
    /// the connection before the last chunk, so the peer sees the body
    /// unfinished rather than complete.
    Unsized {
        reader: Box<dyn AsyncBufRead + Unpin>,
        chunked: bool,
    },
}

/// How a message's head delimits its body (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLength {
    /// `content-length`.
    Known(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Neither: the body ends where the connection closes.
    UntilClose,
}

impl OutgoingBody {
    /// How the body's length is told.
    pub fn length(&self) -> BodyLength {
        match self {
            OutgoingBody::Bytes(bytes) => BodyLength::Known(bytes.len() as u64),
            OutgoingBody::Stream { length, .. } => BodyLength::Known(*length),
            OutgoingBody::Unsized { chunked: true, .. } => BodyLength::Chunked,
            OutgoingBody::Unsized { chunked: false, .. } => BodyLength::UntilClose,
        }
    }
}

/// Whether `value` may be sent as a header value: visible ASCII, spaces and
/// tabs (never CR or LF, which would split the head).
pub fn is_valid_header_value(value: &str) -> bool {
    value.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ' || byte == b'\t')
}

/// Whether `name` is an HTTP token (RFC 9110 §5.6.2).
pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// Appends `name: value\r\n` if both are valid; an invalid header is left
/// out (and logged) rather than written into the head.
fn push_header(head: &mut Vec<u8>, name: &str, value: &str) {
    if !is_valid_header_name(name) || !is_valid_header_value(value) {
        log::warn!("header {name:?} left out: not a valid header");
        return;
    }
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// The reason phrase we send with `status` (informative only).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// `time` as an HTTP date (RFC 9110 §5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(time: std::time::SystemTime) -> String {
    let seconds = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    // The civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1).clamp(0, 11) as usize],
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// A response head: status line, the given headers, `content-length` or
/// `transfer-encoding: chunked` (not for 1xx and 204, RFC 9110 §8.6) and
/// `connection: close` if asked.
pub fn response_head(status: u16, headers: &[(&str, &str)], body_length: BodyLength, close: bool) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (name, value) in headers {
        push_header(&mut head, name, value);
    }
    if !(100..200).contains(&status) && status != 204 {
        match body_length {
            BodyLength::Known(length) => push_header(&mut head, "content-length", &length.to_string()),
            BodyLength::Chunked => push_header(&mut head, "transfer-encoding", "chunked"),
            BodyLength::UntilClose => {}
        }
    }
    if close {
        push_header(&mut head, "connection", "close");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A request head: request line, the given headers, `content-length` if
/// there is a body (or the method expects one).
pub fn request_head(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body_length: Option<u64>,
) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        push_header(&mut head, name, value);
    }
    if let Some(length) = body_length {
        push_header(&mut head, "content-length", &length.to_string());
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes `head` and `body` (only the head when `head_only`: an answer to
/// `HEAD`), then flushes, under the write deadline.
pub async fn write_message<S: AsyncRead + AsyncWrite + Unpin>(
    connection: &Shared<S>,
    mut head: Vec<u8>,
    body: OutgoingBody,
    head_only: bool,
) -> io::Result<()> {
    connection.borrow_mut().start_transfer();
    match body {
        _ if head_only => write_all(connection, &head).await?,
        OutgoingBody::Bytes(bytes) => {
            // Head and body in one write when small: one segment for the
            // peer to wake up for, not two.
            if head.len() + bytes.len() <= ONE_WRITE_BYTES {
                head.extend_from_slice(&bytes);
                write_all(connection, &head).await?;
            } else {
                write_all(connection, &head).await?;
                write_all(connection, &bytes).await?;
            }
        }
        OutgoingBody::Stream { mut reader, length } => {
            let mut left = length;
            let mut pending = head;
            while 0 < left {
                let piece = reader.fill_buf().await?;
                if piece.is_empty() {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the body ended early"));
                }
                let count = piece.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                pending.extend_from_slice(&piece[..count]);
                reader.consume(count);
                left -= count as u64;
                if WRITE_CHUNK_BYTES <= pending.len() || left == 0 {
                    write_all(connection, &pending).await?;
                    pending.clear();
                }
            }
            if !pending.is_empty() {
                write_all(connection, &pending).await?;
            }
        }
        OutgoingBody::Unsized { mut reader, chunked } => {
            write_all(connection, &head).await?;
            let mut pending = Vec::with_capacity(WRITE_CHUNK_BYTES);
            loop {
                let piece = reader.fill_buf().await?;
                let ended = piece.is_empty();
                let count = piece.len().min(WRITE_CHUNK_BYTES - pending.len());
                pending.extend_from_slice(&piece[..count]);
                reader.consume(count);
                if WRITE_CHUNK_BYTES <= pending.len() || (ended && !pending.is_empty()) {
                    write_piece(connection, &pending, chunked).await?;
                    pending.clear();
                }
                if ended {
                    break;
                }
            }
            if chunked {
                write_all(connection, b"0\r\n\r\n").await?;
            }
        }
    }
    std::future::poll_fn(|cx| connection.borrow_mut().poll_paced_flush(cx)).await
}

/// Writes `bytes` (not empty) as one chunk, or as they are when not `chunked`.
async fn write_piece<S: AsyncRead + AsyncWrite + Unpin>(
    connection: &Shared<S>,
    bytes: &[u8],
    chunked: bool,
) -> io::Result<()> {
    if !chunked {
        return write_all(connection, bytes).await;
    }
    let mut framed = Vec::with_capacity(bytes.len() + 12);
    framed.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
    framed.extend_from_slice(bytes);
    framed.extend_from_slice(b"\r\n");
    write_all(connection, &framed).await
}

async fn write_all<S: AsyncRead + AsyncWrite + Unpin>(
    connection: &Shared<S>,
    bytes: &[u8],
) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        let rest = bytes.get(written..).unwrap_or_default();
        written += std::future::poll_fn(|cx| connection.borrow_mut().poll_paced_write(cx, rest)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn http_dates() {
        let at = |seconds| http_date(std::time::UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn heads_leave_out_invalid_headers() {
        let head = response_head(
            200,
            &[("content-type", "text/plain"), ("x-bad", "a\r\nSet-Cookie: b")],
            BodyLength::Known(5),
            true,
        );
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
        );
        let head = response_head(204, &[], BodyLength::Known(0), false);
        assert_eq!(
            String::from_utf8(response_head(200, &[], BodyLength::Chunked, false)).unwrap(),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            String::from_utf8(response_head(200, &[], BodyLength::UntilClose, true)).unwrap(),
            "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n"
        );
        assert_eq!(String::from_utf8(head).unwrap(), "HTTP/1.1 204 No Content\r\n\r\n");
    }
}
