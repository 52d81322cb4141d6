//! The read stage's rules (DESIGN.md §11, §12): why a request is refused at the edge
//! ([`Reject`]: status, metric reason, message), and the HTTP/1.1 message rules that keep
//! requests from being smuggled past tether (RFC 9112) written out plainly in [`check_head`].
//!
//! The engine reads heads through tether's codec (`h1::RequestHead::parse`), which applies the
//! same rules in its one parsing pass; `check_head` is their reference statement, which the
//! codec's tests and fuzz targets hold it to (never more lenient, the same reasons). Owns: the
//! refusal reasons and the reference rules. Must not touch: IO, routing. Pure over bytes.

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
    /// An HTTP/2 connection closed for a protocol error or a flood (rapid reset,
    /// CONTINUATION): `GOAWAY`, no status.
    H2Protocol,
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
            Reject::H2Protocol => 0,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Reject::HeaderTimeout => 0,
            Reject::HeaderTooLarge => 1,
            Reject::TooManyHeaders => 2,
            Reject::BodyTooLarge => 3,
            Reject::BadRequest(_) => 4,
            Reject::H2Protocol => 5,
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
            Reject::H2Protocol => "HTTP/2 protocol error\n",
        }
    }
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
pub fn content_length(req: &dyn crate::http::Head) -> Option<u64> {
    let v = req.header(b"content-length")?;
    let first = v.split(|&c| c == b',').next()?;
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
