//! A request head parsed in place (DESIGN.md §19): httparse over the bytes as they sit in the
//! connection's buffer, into a fixed table of header slots, with §12's HTTP/1.1 message rules
//! applied in the same pass and the body's framing decided once, here.
//!
//! Owns: which request heads are refused and why ([`Reject`], the same verdicts and reasons as
//! the read stage's `check_head`), where a request's body ends ([`Framing`]), and the head view
//! the stages read ([`RequestView`]). Must not touch: IO, deadlines, what a stage does with a
//! header, the pool's body limit. Allocation-free by construction: the slots are a stack array,
//! the head is spans into the caller's buffer.

use std::mem::MaybeUninit;

use crate::config::Limits;

use super::head::{
    content_length, find_head_end, is_field_vchar, is_token, trim_ows, ByteFault, Field, Fields,
    Framing, Known, LengthFault, MAX_FIELDS,
};

/// Why a request head was refused. Mirrors the read stage's `path::read::Reject` (the engine
/// maps one onto the other): the same variants the codec can produce, the same statuses, metric
/// reasons and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The head is larger than `max_header_size` (or its buffer): 431.
    HeaderTooLarge,
    /// More than `max_headers` fields (or [`MAX_FIELDS`]): 431.
    TooManyHeaders,
    /// A head that breaks the message rules: 400, with the one line the client is told.
    BadRequest(&'static str),
}

impl Reject {
    pub fn status(self) -> u16 {
        match self {
            Reject::HeaderTooLarge | Reject::TooManyHeaders => 431,
            Reject::BadRequest(_) => 400,
        }
    }

    /// The `reason` label of `tether_downstream_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Reject::HeaderTooLarge => "header_too_large",
            Reject::TooManyHeaders => "too_many_headers",
            Reject::BadRequest(_) => "bad_request",
        }
    }

    /// What the client is told (one line of text).
    pub fn message(self) -> &'static str {
        match self {
            Reject::HeaderTooLarge => "request head too large\n",
            Reject::TooManyHeaders => "too many header fields\n",
            Reject::BadRequest(why) => why,
        }
    }
}

/// A parsed request head: spans into the buffer it was parsed from, the field table, and the
/// decisions taken while parsing. Reused across requests: [`RequestHead::parse`] overwrites it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    method: super::head::Span,
    target: super::head::Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    len: usize,
    fields: Fields,
    framing: Framing,
}

impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            method: Default::default(),
            target: Default::default(),
            version: 1,
            len: 0,
            fields: Fields::default(),
            framing: Framing::None,
        }
    }
}

fn bad(why: &'static str) -> Result<Option<usize>, Reject> {
    Err(Reject::BadRequest(why))
}

impl RequestHead {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the request head at the start of `buf` (which may hold more: a body's start, a
    /// pipelined request). `Ok(Some(len))`: a head of `len` bytes, accepted, now in `self`;
    /// `Ok(None)`: no complete head yet, and nothing refused so far (read more, unless `buf` is
    /// full); `Err`: refuse and close. A head must fit `limits.max_header_size` and at most
    /// `limits.max_headers` (and [`MAX_FIELDS`]) fields.
    ///
    /// The rules, in the order the read stage applies them: no NUL, bare CR or bare LF; a valid
    /// request line (HTTP/1.0 or HTTP/1.1) and field lines (no obs-fold, no whitespace before
    /// the colon, token names); `Content-Length` all the same valid number; exactly one `Host`
    /// in HTTP/1.1, at most one in HTTP/1.0; `Transfer-Encoding` only in HTTP/1.1, never with
    /// `Content-Length`, and exactly one field whose value is `chunked`.
    ///
    /// After an `Err` the head holds nothing valid; after `Ok(None)` it is unchanged.
    pub fn parse(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, Reject> {
        let end = match find_head_end(buf, limits.max_header_size) {
            Err(ByteFault::Nul) => return bad("NUL in the request head\n"),
            Err(ByteFault::BareCr) => return bad("bare CR in the request head\n"),
            Err(ByteFault::BareLf) => return bad("bare LF in the request head\n"),
            Ok(None) if buf.len() >= limits.max_header_size => return Err(Reject::HeaderTooLarge),
            Ok(None) => {
                if buf.starts_with(b"\r\n") {
                    return bad("empty line before the request line\n");
                }
                return Ok(None);
            }
            Ok(Some(end)) => end,
        };
        let head = &buf[..end];
        if head.starts_with(b"\r\n") {
            // httparse would skip it; the read stage does not, and neither do we: the peer
            // and tether must agree on where a request starts.
            return bad("empty line before the request line\n");
        }
        let first_line_end = head.iter().position(|&c| c == b'\r').unwrap_or(0);

        let slots = limits.max_headers.min(MAX_FIELDS);
        let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_FIELDS] =
            [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(head, &mut headers[..slots]) {
            Ok(httparse::Status::Complete(n)) if n == end => {}
            Ok(_) => return bad("malformed request head\n"),
            Err(httparse::Error::Token | httparse::Error::Version | httparse::Error::NewLine)
                if !request_line_ok(&head[..first_line_end]) =>
            {
                return bad("malformed request line\n")
            }
            // Too many fields, or a bad field line: which comes first, as the read stage sees
            // it (a bad length before the field over the limit is the reason given).
            Err(_) => return Err(diagnose(head, first_line_end, slots)),
        }
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return bad("malformed request line\n");
        };
        self.method = super::head::Span::of(buf, method.as_bytes());
        self.target = super::head::Span::of(buf, target.as_bytes());
        self.version = version;
        self.len = end;
        self.fields.fill(buf, req.headers, end);
        // httparse's names are tokens already; the check is cheap and keeps the rule here.
        if !self
            .fields
            .as_slice()
            .iter()
            .all(|f| is_token(f.name.get(buf)))
        {
            return bad("invalid header field name\n");
        }

        let length = match self.fields.content_length(buf) {
            Ok(l) => l,
            Err(LengthFault::Invalid) => return bad("invalid Content-Length\n"),
            Err(LengthFault::Differing) => return bad("differing Content-Length values\n"),
        };
        let http10 = version == 0;
        let hosts = self.fields.count(Known::Host);
        if hosts > 1 {
            return bad("more than one Host\n");
        }
        if !http10 && hosts == 0 {
            return bad("HTTP/1.1 request without Host\n");
        }
        let te = self.fields.count(Known::TransferEncoding);
        self.framing = if te > 0 {
            if http10 {
                return bad("Transfer-Encoding in HTTP/1.0\n");
            }
            if length.is_some() {
                return bad("both Content-Length and Transfer-Encoding\n");
            }
            // Exactly one coding, `chunked`: anything else (another coding, `chunked` twice, an
            // obfuscated spelling) is a framing the backend might read differently.
            let value = self
                .fields
                .first(Known::TransferEncoding)
                .map(|f| f.value.get(buf));
            if te != 1 || !value.is_some_and(|v| v.eq_ignore_ascii_case(b"chunked")) {
                return bad("unsupported Transfer-Encoding\n");
            }
            Framing::Chunked
        } else {
            match length {
                Some(n) => Framing::Length(n),
                None => Framing::None,
            }
        };
        Ok(Some(end))
    }

    /// The head's length in its buffer (the body, or the next request, starts here).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    pub(crate) fn method_span(&self) -> super::head::Span {
        self.method
    }

    pub(crate) fn target_span(&self) -> super::head::Span {
        self.target
    }

    pub fn is_http10(&self) -> bool {
        self.version == 0
    }

    /// The head view over `buf`, the buffer this head was parsed from.
    pub fn view<'a>(&'a self, buf: &'a [u8]) -> RequestView<'a> {
        debug_assert!(buf.len() >= self.len, "the head's own buffer");
        RequestView { head: self, buf }
    }
}

/// Whether a request line (without its CRLF) has the shape `token SP target SP HTTP/1.x`; only
/// used to tell a bad request line from a bad field after httparse refused the head.
fn request_line_ok(line: &[u8]) -> bool {
    let mut parts = line.split(|&c| c == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    is_token(method)
        && !target.is_empty()
        && target.iter().all(|&c| c > 0x20 && c != 0x7f)
        && (version == b"HTTP/1.0" || version == b"HTTP/1.1")
}

/// Why a head whose request line is fine was refused by httparse, told the way the read stage
/// (`path::read::check_head`) tells it: its checks line by line, in its order — the field
/// count against `max_fields`, then the line's shape, then `Content-Length` (a bad length
/// before a bad line is the reason given) — and the value bytes the codec refuses besides.
/// Only on the error path, so the common path scans the head once.
fn diagnose(head: &[u8], first_line_end: usize, max_fields: usize) -> Reject {
    Reject::BadRequest(match diagnose_line(head, first_line_end, max_fields) {
        Some(why) => why,
        None => return Reject::TooManyHeaders,
    })
}

/// [`diagnose`]'s walk: the first bad line's reason, `None` for too many fields.
fn diagnose_line(head: &[u8], first_line_end: usize, max_fields: usize) -> Option<&'static str> {
    let end = head.len().saturating_sub(4).max(first_line_end);
    let fields = head
        .get(first_line_end + 2..end)
        .unwrap_or_default()
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut first_length: Option<&[u8]> = None;
    for (count, line) in fields.enumerate() {
        if count + 1 > max_fields {
            return None;
        }
        if line.first().is_some_and(|c| *c == b' ' || *c == b'\t') {
            return Some("obsolete line folding\n");
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return Some("header field without a colon\n");
        };
        if !is_token(&line[..colon]) {
            return Some("invalid header field name\n");
        }
        let value = trim_ows(&line[colon + 1..]);
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            // Every length must equal the first one's: checking each against it is enough.
            let values = first_length.into_iter().chain(std::iter::once(value));
            match content_length(values) {
                Err(LengthFault::Invalid) => return Some("invalid Content-Length\n"),
                Err(LengthFault::Differing) => return Some("differing Content-Length values\n"),
                Ok(_) => first_length = first_length.or(Some(value)),
            }
        }
        if !line[colon + 1..].iter().all(|&c| is_field_vchar(c)) {
            return Some("invalid header field value\n");
        }
    }
    Some("malformed request head\n")
}

/// What a stage reads of a request: the head's spans resolved against its buffer. Borrows
/// both; allocates nothing.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    head: &'a RequestHead,
    buf: &'a [u8],
}

impl<'a> RequestView<'a> {
    pub fn method(&self) -> &'a [u8] {
        self.head.method.get(self.buf)
    }

    /// The request target as sent (origin form `/p?q`, absolute form, `*`, authority form).
    pub fn target(&self) -> &'a [u8] {
        self.head.target.get(self.buf)
    }

    pub fn is_http10(&self) -> bool {
        self.head.is_http10()
    }

    pub fn framing(&self) -> Framing {
        self.head.framing
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.head.fields.get(self.buf, name)
    }

    /// The value of the first field with a known name: an index lookup, no comparison.
    pub fn known(&self, k: Known) -> Option<&'a [u8]> {
        let buf = self.buf;
        self.head.fields.first(k).map(|f| f.value.get(buf))
    }

    /// Every value of a known name, in order (e.g. all `Cookie` fields).
    pub fn known_all(&self, k: Known) -> impl Iterator<Item = &'a [u8]> + 'a {
        let buf = self.buf;
        self.head.fields.all(k).map(move |f| f.value.get(buf))
    }

    pub fn host(&self) -> Option<&'a [u8]> {
        self.known(Known::Host)
    }

    /// Every header field, in order, as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let buf = self.buf;
        self.head
            .fields
            .as_slice()
            .iter()
            .map(move |f: &Field| (f.name.get(buf), f.value.get(buf)))
    }

    /// Whether the client wants the connection kept after this request (RFC 9112 §9.3): not if
    /// `Connection` says `close`; in HTTP/1.1 unless it does; in HTTP/1.0 only if it says
    /// `keep-alive`.
    pub fn keep_alive(&self) -> bool {
        let f = &self.head.fields;
        if f.connection_has(self.buf, b"close") {
            return false;
        }
        !self.is_http10() || f.connection_has(self.buf, b"keep-alive")
    }

    /// `Expect: 100-continue` in an HTTP/1.1 request (an HTTP/1.0 one's is ignored, RFC 9110
    /// §10.1.1).
    pub fn expects_continue(&self) -> bool {
        !self.is_http10()
            && self
                .known(Known::Expect)
                .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
    }

    /// An HTTP/1.1 request asking to switch protocols: an `Upgrade` field and `upgrade` among
    /// the `Connection` options (RFC 9110 §7.8; an HTTP/1.0 request's Upgrade is ignored).
    pub fn is_upgrade(&self) -> bool {
        !self.is_http10()
            && self.head.fields.count(Known::Upgrade) > 0
            && self.head.fields.connection_has(self.buf, b"upgrade")
    }
}

/// The stages' head view (`http::Head`) over a head this codec parsed: field lookups go by the
/// known-name masks where they can, spans resolve against the buffer, nothing is copied.
impl crate::http::Head for RequestView<'_> {
    fn method(&self) -> &[u8] {
        RequestView::method(self)
    }

    fn path_and_query(&self) -> &[u8] {
        let t = self.target();
        if t.first() == Some(&b'/') {
            return t;
        }
        // Absolute form (`http://host/p?q`): what follows the authority, `/` when nothing does.
        match absolute_parts(t) {
            Some((_, b"")) => b"/",
            Some((_, rest)) if rest[0] == b'?' => t, // no path: leave as sent
            Some((_, rest)) => rest,
            None => t,
        }
    }

    fn authority(&self) -> Option<&[u8]> {
        absolute_parts(self.target()).map(|(a, _)| a)
    }
}

impl crate::http::Fields for RequestView<'_> {
    fn value(&self, name: &[u8], n: usize) -> Option<&[u8]> {
        self.head.fields.nth(self.buf, name, n)
    }
}

/// An absolute-form target's authority and what follows it (path and query).
fn absolute_parts(t: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = t.windows(3).position(|w| w == b"://")?;
    if i == 0
        || !t[..i]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
    {
        return None;
    }
    let rest = &t[i + 3..];
    let end = rest
        .iter()
        .position(|&c| c == b'/' || c == b'?')
        .unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

impl super::buf::Poolable for RequestHead {
    fn pool() -> &'static std::thread::LocalKey<super::buf::BoxPool<Self>> {
        thread_local! {
            static POOL: super::buf::BoxPool<RequestHead> = const { std::cell::RefCell::new(Vec::new()) };
        }
        &POOL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Option<usize>, Reject> {
        RequestHead::new().parse(head.as_bytes(), &Limits::default())
    }

    fn ok(head: &str) -> RequestHead {
        let mut h = RequestHead::new();
        assert_eq!(
            h.parse(head.as_bytes(), &Limits::default()),
            Ok(Some(head.len())),
            "{head:?}"
        );
        h
    }

    fn refused(head: &str) -> &'static str {
        match parse(head) {
            Err(Reject::BadRequest(why)) => why,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    #[test]
    fn a_head_parses_in_place() {
        let text = "POST /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\
                    X-Empty:\r\nCookie: a=1\r\nX-Pad:   v  \r\ncookie: b=2\r\n\r\nabc";
        let buf = text.as_bytes();
        let mut h = RequestHead::new();
        let len = h.parse(buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(&buf[len..], b"abc");
        let v = h.view(buf);
        assert_eq!(v.method(), b"POST");
        assert_eq!(v.target(), b"/a/b?c=d");
        assert!(!v.is_http10());
        assert_eq!(v.host(), Some(&b"example.com"[..]));
        assert_eq!(v.header(b"HOST"), Some(&b"example.com"[..]));
        assert_eq!(v.header(b"x-pad"), Some(&b"v"[..]), "value without OWS");
        assert_eq!(v.header(b"x-empty"), Some(&b""[..]));
        assert_eq!(v.header(b"x-missing"), None);
        let cookies: Vec<&[u8]> = v.known_all(Known::Cookie).collect();
        assert_eq!(cookies, [&b"a=1"[..], b"b=2"]);
        assert_eq!(v.framing(), Framing::Length(3));
        let names: Vec<&[u8]> = v.headers().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                &b"Host"[..],
                b"Content-Length",
                b"X-Empty",
                b"Cookie",
                b"X-Pad",
                b"cookie"
            ]
        );
        // The field lines end where the next begins, less CRLF.
        let f = h.fields();
        for i in 0..f.len() {
            let end = f.line_end(i);
            assert_eq!(&buf[end..end + 2], b"\r\n");
            assert!(end >= f.as_slice()[i].value.end as usize);
        }
        assert_eq!(
            &buf[f.line_end(1) - 17..f.line_end(1)],
            b"Content-Length: 3"
        );
        assert_eq!(&buf[f.line_end(4) - 12..f.line_end(4)], b"X-Pad:   v  ");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let full = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "{cut}");
        }
        ok(full);
    }

    #[test]
    fn ordinary_heads_pass() {
        ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED \r\n\r\n");
        ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
        ok("GET / HTTP/1.0\r\n\r\n");
        ok("GET / HTTP/1.0\r\nHost: a\r\n\r\n");
        ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        ok("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n");
    }

    #[test]
    fn framing_is_decided() {
        let f = |h: &str| ok(h).framing();
        assert_eq!(f("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Framing::None);
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            Framing::Length(0)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007, 7\r\n\r\n"),
            Framing::Length(7)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert!(!Framing::Length(0).has_body());
        assert!(!Framing::None.has_body());
        assert!(Framing::Length(1).has_body());
        assert!(Framing::Chunked.has_body());
    }

    /// Every rule of `path::read::check_head`, with its message.
    #[test]
    fn message_rules_refuse_with_the_read_stages_reasons() {
        let cases = [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", "both Content-Length and Transfer-Encoding\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "differing Content-Length values\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", "differing Content-Length values\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", "invalid Content-Length\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", "invalid Content-Length\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", "invalid Content-Length\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", "invalid Content-Length\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "unsupported Transfer-Encoding\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "unsupported Transfer-Encoding\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", "unsupported Transfer-Encoding\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", "unsupported Transfer-Encoding\n"),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding in HTTP/1.0\n"),
            ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 request without Host\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "more than one Host\n"),
            ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", "NUL in the request head\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", "bare CR in the request head\n"),
            ("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", "bare LF in the request head\n"),
            ("GET / HTTP/1.1\nHost: a\n\n", "bare LF in the request head\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", "obsolete line folding\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tfolded\r\n\r\n", "obsolete line folding\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", "header field without a colon\n"),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", "invalid header field name\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\n: empty name\r\n\r\n", "invalid header field name\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", "invalid header field name\n"),
            ("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n", "invalid header field value\n"),
            ("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "empty line before the request line\n"),
            ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", "malformed request line\n"),
            ("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", "malformed request line\n"),
            ("GET / x HTTP/1.1\r\nHost: a\r\n\r\n", "malformed request line\n"),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", "malformed request line\n"),
            ("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", "malformed request line\n"),
        ];
        for (head, why) in cases {
            assert_eq!(refused(head), why, "{head:?}");
        }
        // Refused before the head is complete: a NUL, a bare CR or LF, a leading empty line.
        assert_eq!(refused("GET /\0"), "NUL in the request head\n");
        assert_eq!(refused("GET / HTTP/1.1\n"), "bare LF in the request head\n");
        assert_eq!(refused("GET /\rx"), "bare CR in the request head\n");
        assert_eq!(refused("\r\n"), "empty line before the request line\n");
    }

    #[test]
    fn limits_give_431() {
        let mut h = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..99 {
            h.push_str(&format!("X-{i}: v\r\n"));
        }
        h.push_str("\r\n");
        ok(&h); // 100 fields: the default max
        let more = h.replace("Host: a\r\n", "Host: a\r\nX-100: v\r\n");
        assert_eq!(parse(&more), Err(Reject::TooManyHeaders));
        // Which comes first decides, as in the read stage: the field over the limit before a
        // bad line, a bad length before the field over the limit.
        let folded = h.replace("\r\n\r\n", "\r\n folded\r\n\r\n");
        assert_eq!(parse(&folded), Err(Reject::TooManyHeaders));
        let bad_length = more.replace("Host: a\r\n", "Host: a\r\nContent-Length: x\r\n");
        assert_eq!(
            parse(&bad_length),
            Err(Reject::BadRequest("invalid Content-Length\n"))
        );
        for head in [&folded, &bad_length] {
            assert_eq!(
                crate::path::read::check_head(head.as_bytes(), &Limits::default())
                    .map_err(|r| r.message()),
                parse(head).map(|_| ()).map_err(|r| r.message())
            );
        }
        let limits = Limits {
            max_headers: 3,
            ..Limits::default()
        };
        let three = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        let four = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert!(RequestHead::new().parse(three.as_bytes(), &limits).is_ok());
        assert_eq!(
            RequestHead::new().parse(four.as_bytes(), &limits),
            Err(Reject::TooManyHeaders)
        );
        // The slot table is the cap whatever max_headers says.
        let limits = Limits {
            max_headers: 1000,
            ..Limits::default()
        };
        let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX_FIELDS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            RequestHead::new().parse(many.as_bytes(), &limits),
            Err(Reject::TooManyHeaders)
        );

        // Size: a head of exactly max_header_size passes; one byte more is 431, complete or
        // not.
        let limits = Limits {
            max_header_size: 1024,
            ..Limits::default()
        };
        let base = "GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n";
        let exact = base.replace("X: ", &format!("X: {}", "v".repeat(1024 - base.len())));
        assert_eq!(exact.len(), 1024);
        let mut head = RequestHead::new();
        assert_eq!(head.parse(exact.as_bytes(), &limits), Ok(Some(1024)));
        let over = exact.replace("X: v", "X: vv");
        assert_eq!(
            head.parse(over.as_bytes(), &limits),
            Err(Reject::HeaderTooLarge)
        );
        assert_eq!(
            head.parse(&over.as_bytes()[..1024], &limits),
            Err(Reject::HeaderTooLarge)
        );
        assert_eq!(head.parse(&over.as_bytes()[..1023], &limits), Ok(None));
        assert_eq!(Reject::HeaderTooLarge.status(), 431);
        assert_eq!(Reject::TooManyHeaders.status(), 431);
        assert_eq!(Reject::BadRequest("x\n").status(), 400);
    }

    #[test]
    fn keep_alive_follows_rfc_9112() {
        let ka = |h: &str| {
            let head = ok(h);
            head.view(h.as_bytes()).keep_alive()
        };
        assert!(ka("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!ka(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: x, CLOSE\r\n\r\n"
        ));
        assert!(!ka(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!ka(
            "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"
        ));
        assert!(ka(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"
        ));
    }

    #[test]
    fn expect_and_upgrade() {
        let v = |h: &'static str| (ok(h), h.as_bytes());
        let (h, b) = v("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n\r\n");
        assert!(h.view(b).expects_continue());
        let (h, b) = v("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
        assert!(!h.view(b).expects_continue());
        let (h, b) = v("PUT / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n");
        assert!(!h.view(b).expects_continue());

        let (h, b) = v(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(h.view(b).is_upgrade());
        let (h, b) = v("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert!(!h.view(b).is_upgrade(), "no Connection: upgrade");
        let (h, b) = v("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n");
        assert!(!h.view(b).is_upgrade(), "no Upgrade");
        let (h, b) = v("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(!h.view(b).is_upgrade(), "HTTP/1.0");
    }

    #[test]
    fn a_head_is_reused_without_leftovers() {
        let mut h = RequestHead::new();
        let first = "POST /x HTTP/1.1\r\nHost: a\r\nCookie: c\r\nContent-Length: 3\r\n\r\n";
        h.parse(first.as_bytes(), &Limits::default()).unwrap();
        let second = "GET / HTTP/1.0\r\n\r\n";
        h.parse(second.as_bytes(), &Limits::default()).unwrap();
        let v = h.view(second.as_bytes());
        assert_eq!(v.headers().count(), 0);
        assert_eq!(v.known(Known::Cookie), None);
        assert_eq!(v.framing(), Framing::None);
        assert!(v.is_http10());
    }

    /// Request lines and field lines to build heads from: (line, whether the read stage and the
    /// codec judge it alike). The read stage leaves the request line and field values to the
    /// parser after it; the codec refuses a bad one itself, so it is stricter there.
    const LINES: &[(&str, bool)] = &[
        ("Host: a", true),
        ("host: b", true),
        ("Content-Length: 5", true),
        ("Content-Length: 05", true),
        ("Content-Length: 6", true),
        ("Content-Length: 5, 5", true),
        ("Content-Length: +5", true),
        ("Content-Length:", true),
        ("Transfer-Encoding: chunked", true),
        ("Transfer-Encoding: Chunked ", true),
        ("Transfer-Encoding: gzip", true),
        ("Transfer-Encoding : chunked", true),
        ("Connection: close", true),
        ("Upgrade: websocket", true),
        ("X-A: v", true),
        ("X-B:", true),
        (" folded", true),
        ("\tfolded", true),
        ("no colon", true),
        (": x", true),
        ("X(: y", true),
        ("X: a\0b", true),
        ("X: a\rb", true),
        ("X: a\nb", true),
        ("X: a\x0bb", false),
        ("X: a\x7fb", false),
    ];
    const REQUEST_LINES: &[(&str, bool)] = &[
        ("GET / HTTP/1.1", true),
        ("POST /x?y HTTP/1.1", true),
        ("GET / HTTP/1.0", true),
        ("GET  / HTTP/1.1", false),
        ("GET / HTTP/1.2", false),
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// On heads built from the lines above: the codec never accepts what the read stage
        /// refuses, and where both judge the lines alike they give the same verdict, status and
        /// message.
        #[test]
        fn built_heads_get_the_read_stages_verdict(
            first in 0..REQUEST_LINES.len(),
            lines in proptest::collection::vec(0..LINES.len(), 0..6),
            max_headers in 1..8usize,
        ) {
            let (request_line, mut alike) = REQUEST_LINES[first];
            let mut head = format!("{request_line}\r\n");
            for &i in &lines {
                let (line, same) = LINES[i];
                alike &= same;
                head.push_str(line);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            let limits = Limits { max_headers, ..Limits::default() };
            let theirs = crate::path::read::check_head(head.as_bytes(), &limits);
            // The read stage is handed a head up to its first CRLF CRLF; so is the codec.
            let ours = RequestHead::new().parse(head.as_bytes(), &limits);
            if ours.is_ok_and(|r| r.is_some()) {
                proptest::prop_assert_eq!(theirs, Ok(()), "{:?}", head);
            }
            if alike {
                match (theirs, ours) {
                    (Ok(()), Ok(Some(n))) => proptest::prop_assert_eq!(n, head.len()),
                    (Err(t), Err(o)) => {
                        proptest::prop_assert_eq!(t.status(), o.status(), "{:?}", head);
                        proptest::prop_assert_eq!(t.message(), o.message(), "{:?}", head);
                    }
                    (t, o) => proptest::prop_assert!(false, "{:?}: read stage {:?}, codec {:?}", head, t, o),
                }
            }
        }
    }

    /// The codec and the read stage agree on every seed of the head fuzz corpus, and on the
    /// heads of the read stage's own tests.
    #[test]
    fn verdicts_agree_with_the_read_stage() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/head");
        let mut seeds = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            seeds.push(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(seeds.len() >= 10, "the head corpus is there");
        let limits = Limits::default();
        let mut compared = 0;
        for seed in seeds {
            let Some(end) = seed.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = &seed[..end + 4];
            let theirs = crate::path::read::check_head(head, &limits);
            let ours = RequestHead::new().parse(head, &limits);
            match (theirs, ours) {
                (Ok(()), Ok(Some(n))) => assert_eq!(n, head.len()),
                (Err(t), Err(o)) => {
                    assert_eq!(
                        t.status(),
                        o.status(),
                        "{:?}",
                        String::from_utf8_lossy(head)
                    );
                    assert_eq!(
                        t.message(),
                        o.message(),
                        "{:?}",
                        String::from_utf8_lossy(head)
                    );
                    assert_eq!(t.reason(), o.reason());
                }
                (t, o) => panic!(
                    "{:?}: read stage {t:?}, codec {o:?}",
                    String::from_utf8_lossy(head)
                ),
            }
            compared += 1;
        }
        assert!(compared >= 10);
    }
}
