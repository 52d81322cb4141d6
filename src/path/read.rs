//! The read stage (DESIGN.md §11, §12): a request head off the wire, within the head deadline and
//! size limits, checked against the HTTP/1.1 message rules that keep requests from being
//! smuggled past tether (RFC 9112).
//!
//! Owns: how long a head may take, how large it may be, and which heads are refused before any
//! parser or backend sees them. Must not touch: routing (a head that passes is parsed by the
//! HTTP/1 session, then routed). Pure over bytes, except [`read_head`]'s reads.

use bytes::BytesMut;
use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

use crate::config::Limits;
use crate::h1::head::{trim_ows, trim_zeros};

/// Why a request was refused at the edge (the `reason` of `tether_downstream_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The head did not arrive within `header_timeout`: 408.
    HeaderTimeout,
    /// The head is larger than `max_header_size`: 431.
    HeaderTooLarge,
    /// More than `max_headers` fields: 431.
    TooManyHeaders,
    /// The body is larger than the pool's `max_request_body`: 413.
    BodyTooLarge,
    /// A head that breaks the message rules: 400.
    BadRequest(&'static str),
}

/// Metric label values, in handle order (see [`Reject::index`]); the metric's label set is
/// defined with it (`tether_downstream_rejected_total`).
pub use crate::state::metrics::REJECT_REASONS as REASONS;

impl Reject {
    pub fn status(self) -> u16 {
        match self {
            Reject::HeaderTimeout => 408,
            Reject::HeaderTooLarge | Reject::TooManyHeaders => 431,
            Reject::BodyTooLarge => 413,
            Reject::BadRequest(_) => 400,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Reject::HeaderTimeout => 0,
            Reject::HeaderTooLarge => 1,
            Reject::TooManyHeaders => 2,
            Reject::BodyTooLarge => 3,
            Reject::BadRequest(_) => 4,
        }
    }

    pub fn reason(self) -> &'static str {
        REASONS[self.index()]
    }

    /// What the client is told (one line of text).
    pub fn message(self) -> &'static str {
        match self {
            Reject::HeaderTimeout => "request head not received in time\n",
            Reject::HeaderTooLarge => "request head too large\n",
            Reject::TooManyHeaders => "too many header fields\n",
            Reject::BodyTooLarge => "request body too large\n",
            Reject::BadRequest(why) => why,
        }
    }
}

/// How a head read ended without a head.
#[derive(Debug)]
pub enum NoHead {
    /// The client closed (or failed) before a complete head; nobody to answer.
    Closed,
    /// Refused: answer and close.
    Rejected(Reject),
}

const HEAD_END: &[u8] = b"\r\n\r\n";

/// The per-thread scratch buffer of [`poll_first_read`].
const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Reads and discards what the client sent (a lingering close), into the per-thread scratch
/// buffer: the number of bytes, 0 at the end of the stream.
pub fn poll_discard(
    stream: &mut Stream,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<usize>> {
    use tokio::io::{AsyncRead, ReadBuf};
    SCRATCH_BUF.with(|b| {
        let mut b = b.borrow_mut();
        let mut rb = ReadBuf::new(&mut b[..]);
        std::pin::Pin::new(&mut *stream)
            .poll_read(cx, &mut rb)
            .map_ok(|()| rb.filled().len())
    })
}

/// The first read of a request: the bytes land in a per-thread scratch buffer and are copied
/// into a buffer of their own size, so a connection waiting for its next request holds no read
/// buffer and needs no extra syscall to learn that data has come (a peek would be one more
/// `recv` per request). `Ok(None)`: the client closed.
pub fn poll_first_read(
    stream: &mut Stream,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<Option<BytesMut>>> {
    use std::task::Poll;
    use tokio::io::{AsyncRead, ReadBuf};
    SCRATCH_BUF.with(|b| {
        let mut b = b.borrow_mut();
        let mut rb = ReadBuf::new(&mut b[..]);
        match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Ok(None)),
            Poll::Ready(Ok(())) => {
                let filled = rb.filled();
                let mut out = BytesMut::with_capacity(filled.len().max(1024));
                out.extend_from_slice(filled);
                Poll::Ready(Ok(Some(out)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Reads until `buf` holds a complete request head, at most `limits.max_header_size` bytes of it,
/// all within `limits.header_timeout` (counted from now: the caller calls once the head's first
/// byte is there or expected). `buf` may already hold pipelined bytes. Returns the head's
/// length; the bytes after it (a body's start, a pipelined request) stay in `buf`.
pub async fn read_head(
    stream: &mut Stream,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<usize, NoHead> {
    let deadline = tokio::time::Instant::now() + limits.header_timeout;
    let mut scanned: usize = 0;
    loop {
        // A head may end only at a CRLF CRLF; search from a little before the new bytes.
        let from = scanned.saturating_sub(HEAD_END.len() - 1);
        if let Some(pos) = find(&buf[from..], HEAD_END) {
            let len = from + pos + HEAD_END.len();
            if len > limits.max_header_size {
                return Err(NoHead::Rejected(Reject::HeaderTooLarge));
            }
            check_head(&buf[..len], limits).map_err(NoHead::Rejected)?;
            return Ok(len);
        }
        // Refuse what can never become a valid head as soon as it is seen.
        check_bytes(&buf[..]).map_err(NoHead::Rejected)?;
        scanned = buf.len();
        if buf.len() >= limits.max_header_size {
            return Err(NoHead::Rejected(Reject::HeaderTooLarge));
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096.min(limits.max_header_size + 4 - buf.len()).max(1024));
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match pingora::time::fast_timeout::fast_timeout(left, stream.read_buf(buf)).await {
            Err(_) => return Err(NoHead::Rejected(Reject::HeaderTimeout)),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(NoHead::Closed),
            Ok(Ok(_)) => {}
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Byte rules that hold anywhere in a head: no NUL, every CR followed by LF, every LF preceded
/// by CR (a bare LF line end is refused rather than guessed at: tether and the backend must
/// agree on where each line ends). A trailing CR may still be waiting for its LF.
fn check_bytes(head: &[u8]) -> Result<(), Reject> {
    for (i, &c) in head.iter().enumerate() {
        match c {
            0 => return Err(Reject::BadRequest("NUL in the request head\n")),
            b'\r' if i + 1 < head.len() && head[i + 1] != b'\n' => {
                return Err(Reject::BadRequest("bare CR in the request head\n"))
            }
            b'\n' if i == 0 || head[i - 1] != b'\r' => {
                return Err(Reject::BadRequest("bare LF in the request head\n"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The message rules of DESIGN.md §12 over a complete head (ending in CRLF CRLF).
pub fn check_head(head: &[u8], limits: &Limits) -> Result<(), Reject> {
    check_bytes(head)?;
    let mut lines = head[..head.len() - 4]
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let http10 = request_line.ends_with(b" HTTP/1.0");
    let mut fields = 0usize;
    let mut hosts = 0usize;
    let mut lengths: Option<&[u8]> = None;
    let mut te: Vec<&[u8]> = Vec::new();
    for line in lines {
        fields += 1;
        if fields > limits.max_headers {
            return Err(Reject::TooManyHeaders);
        }
        if line.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
            return Err(Reject::BadRequest("obsolete line folding\n"));
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return Err(Reject::BadRequest("header field without a colon\n"));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|c| is_tchar(*c)) {
            return Err(Reject::BadRequest("invalid header field name\n"));
        }
        let value = trim_ows(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for v in value.split(|&c| c == b',').map(trim_ows) {
                if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 19 {
                    return Err(Reject::BadRequest("invalid Content-Length\n"));
                }
                match lengths {
                    Some(prev) if trim_zeros(prev) != trim_zeros(v) => {
                        return Err(Reject::BadRequest("differing Content-Length values\n"))
                    }
                    _ => lengths = Some(v),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te.push(value);
        }
    }
    if !http10 && hosts != 1 {
        return Err(Reject::BadRequest(if hosts == 0 {
            "HTTP/1.1 request without Host\n"
        } else {
            "more than one Host\n"
        }));
    }
    if hosts > 1 {
        return Err(Reject::BadRequest("more than one Host\n"));
    }
    if !te.is_empty() {
        if http10 {
            return Err(Reject::BadRequest("Transfer-Encoding in HTTP/1.0\n"));
        }
        if lengths.is_some() {
            return Err(Reject::BadRequest(
                "both Content-Length and Transfer-Encoding\n",
            ));
        }
        // Exactly one coding, `chunked`: anything else (another coding, `chunked` twice, an
        // obfuscated spelling) is a framing the backend might read differently.
        if te.len() != 1 || !te[0].eq_ignore_ascii_case(b"chunked") {
            return Err(Reject::BadRequest("unsupported Transfer-Encoding\n"));
        }
    }
    Ok(())
}

/// The request's Content-Length, from a head that passed [`check_head`].
pub fn content_length(req: &pingora::http::RequestHeader) -> Option<u64> {
    let v = req.headers.get(http::header::CONTENT_LENGTH)?;
    let first = v.as_bytes().split(|&c| c == b',').next()?;
    std::str::from_utf8(trim_ows(first)).ok()?.parse().ok()
}

/// RFC 9110 token characters (header field names).
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str) -> Result<(), Reject> {
        check_head(head.as_bytes(), &Limits::default())
    }

    #[test]
    fn ordinary_heads_pass() {
        check("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
        check("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        check("GET / HTTP/1.0\r\n\r\n").unwrap();
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let bad = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        ];
        for h in bad {
            assert!(matches!(check(h), Err(Reject::BadRequest(_))), "{h:?}");
        }
    }

    #[test]
    fn too_many_headers() {
        let mut h = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..100 {
            h.push_str(&format!("X-{i}: v\r\n"));
        }
        h.push_str("\r\n");
        assert_eq!(check(&h), Err(Reject::TooManyHeaders));
    }
}
