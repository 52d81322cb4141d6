//! A response head parsed in place (DESIGN.md §19): status, version and fields as spans into
//! the upstream connection's buffer, with the framing of the body that follows decided here
//! (RFC 9112 §6.3) and heads that could be read two ways refused.
//!
//! Owns: which backend response heads are refused ([`ResponseError`]), where a response body
//! ends, whether the backend keeps its connection, and the 1xx/101 classification. Must not
//! touch: IO, what the engine does with a refused response (502 and close), the request.
//! Allocation-free by construction: a stack array of slots, spans into the caller's buffer.

use std::mem::MaybeUninit;

use super::head::{
    find_head_end, is_token, list_items, ByteFault, Fields, Framing, Known, LengthFault, Span,
    MAX_FIELDS,
};

/// Why a response head was refused: the backend sent something tether will not relay, because
/// tether and the client could disagree on where it ends. The engine answers 502 and closes
/// the upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// No complete head within the limit.
    HeadTooLarge,
    /// More than [`MAX_FIELDS`] fields.
    TooManyHeaders,
    Nul,
    /// A CR not followed by LF.
    BareCr,
    /// An LF not preceded by CR.
    BareLf,
    /// Not `HTTP/1.0` or `HTTP/1.1`, a status outside 100..=599, a bad reason phrase, or an
    /// empty line before the status line.
    StatusLine,
    /// A field line that is not `token ":" value` (obs-fold, whitespace before the colon,
    /// control characters).
    FieldLine,
    InvalidContentLength,
    DifferingContentLength,
    ContentLengthWithTransferEncoding,
    TransferEncodingInHttp10,
    /// A coding list that is not tokens, or `chunked` twice or not last.
    BadTransferEncoding,
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResponseError::HeadTooLarge => "response head too large",
            ResponseError::TooManyHeaders => "too many response header fields",
            ResponseError::Nul => "NUL in the response head",
            ResponseError::BareCr => "bare CR in the response head",
            ResponseError::BareLf => "bare LF in the response head",
            ResponseError::StatusLine => "malformed status line",
            ResponseError::FieldLine => "malformed response header field",
            ResponseError::InvalidContentLength => "invalid Content-Length in the response",
            ResponseError::DifferingContentLength => "differing Content-Length in the response",
            ResponseError::ContentLengthWithTransferEncoding => {
                "both Content-Length and Transfer-Encoding in the response"
            }
            ResponseError::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 response",
            ResponseError::BadTransferEncoding => "unsupported Transfer-Encoding in the response",
        })
    }
}

impl std::error::Error for ResponseError {}

/// A parsed response head. Reused across responses: [`ResponseHead::parse`] overwrites it.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    status: u16,
    version: u8,
    /// The reason phrase as sent (possibly empty).
    reason: Span,
    len: usize,
    fields: Fields,
    framing: Framing,
}

impl Default for ResponseHead {
    fn default() -> Self {
        ResponseHead {
            status: 0,
            version: 1,
            reason: Span::default(),
            len: 0,
            fields: Fields::default(),
            framing: Framing::None,
        }
    }
}

impl ResponseHead {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the response head at the start of `buf` (which may hold the body's start after
    /// it). `head_request`: the request was `HEAD` (the response has no body whatever its
    /// fields say). `max_size`: the most bytes a head may take. `Ok(Some(len))`: a head of `len`
    /// bytes; `Ok(None)`: not complete yet, nothing refused so far.
    pub fn parse(
        &mut self,
        buf: &[u8],
        head_request: bool,
        max_size: usize,
    ) -> Result<Option<usize>, ResponseError> {
        let end = match find_head_end(buf, max_size) {
            Err(ByteFault::Nul) => return Err(ResponseError::Nul),
            Err(ByteFault::BareCr) => return Err(ResponseError::BareCr),
            Err(ByteFault::BareLf) => return Err(ResponseError::BareLf),
            Ok(None) if buf.len() >= max_size => return Err(ResponseError::HeadTooLarge),
            Ok(None) if buf.starts_with(b"\r\n") => return Err(ResponseError::StatusLine),
            Ok(None) => return Ok(None),
            Ok(Some(end)) => end,
        };
        let head = &buf[..end];
        if head.starts_with(b"\r\n") {
            return Err(ResponseError::StatusLine);
        }
        let mut headers: [MaybeUninit<httparse::Header<'_>>; MAX_FIELDS] =
            [const { MaybeUninit::uninit() }; MAX_FIELDS];
        let mut res = httparse::Response::new(&mut []);
        // Default config: no obs-fold, no space before the colon, no multiple spaces.
        let config = httparse::ParserConfig::default();
        match config.parse_response_with_uninit_headers(&mut res, head, &mut headers) {
            Ok(httparse::Status::Complete(n)) if n == end => {}
            Ok(_) => return Err(ResponseError::FieldLine),
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
            Err(httparse::Error::Version | httparse::Error::Status) => {
                return Err(ResponseError::StatusLine)
            }
            Err(_) => return Err(ResponseError::FieldLine),
        }
        let (Some(version), Some(status)) = (res.version, res.code) else {
            return Err(ResponseError::StatusLine);
        };
        if !(100..=599).contains(&status) {
            return Err(ResponseError::StatusLine);
        }
        // "HTTP/1.x ddd" then CRLF, or SP and the reason phrase (httparse checked its bytes).
        let line_end = head.iter().position(|&c| c == b'\r').unwrap_or(0);
        self.reason = Span::new(13.min(line_end), line_end);
        self.status = status;
        self.version = version;
        self.len = end;
        self.fields.fill(buf, res.headers, end);
        if !self
            .fields
            .as_slice()
            .iter()
            .all(|f| is_token(f.name.get(buf)))
        {
            return Err(ResponseError::FieldLine);
        }

        let length = match self.fields.content_length(buf) {
            Ok(l) => l,
            Err(LengthFault::Invalid) => return Err(ResponseError::InvalidContentLength),
            Err(LengthFault::Differing) => return Err(ResponseError::DifferingContentLength),
        };
        let chunked = if self.fields.count(Known::TransferEncoding) > 0 {
            if version == 0 {
                return Err(ResponseError::TransferEncodingInHttp10);
            }
            if length.is_some() {
                return Err(ResponseError::ContentLengthWithTransferEncoding);
            }
            Some(self.final_coding_is_chunked(buf)?)
        } else {
            None
        };
        self.framing = if head_request || status < 200 || status == 204 || status == 304 {
            Framing::None
        } else {
            match (chunked, length) {
                (Some(true), _) => Framing::Chunked,
                // A coding other than chunked last: the body ends at the close (RFC 9112 §6.3).
                (Some(false), _) => Framing::UntilClose,
                (None, Some(n)) => Framing::Length(n),
                (None, None) => Framing::UntilClose,
            }
        };
        Ok(Some(end))
    }

    /// The `Transfer-Encoding` codings, over all its fields: tokens, `chunked` at most once and
    /// only last. Whether `chunked` is there (and so last).
    fn final_coding_is_chunked(&self, buf: &[u8]) -> Result<bool, ResponseError> {
        let mut codings = 0;
        let mut chunked_at = None;
        for coding in self
            .fields
            .all(Known::TransferEncoding)
            .flat_map(|f| list_items(f.value.get(buf)))
        {
            if !is_token(coding) || chunked_at.is_some() {
                // Parameters, junk, or anything after `chunked`.
                return Err(ResponseError::BadTransferEncoding);
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                chunked_at = Some(codings);
            }
            codings += 1;
        }
        if codings == 0 {
            return Err(ResponseError::BadTransferEncoding);
        }
        Ok(chunked_at.is_some())
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn is_http10(&self) -> bool {
        self.version == 0
    }

    /// The head's length in its buffer (the body starts here).
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

    pub(crate) fn reason_span(&self) -> Span {
        self.reason
    }

    /// The reason phrase as sent (possibly empty).
    pub fn reason<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        self.reason.get(buf)
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn header<'a>(&self, buf: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
        self.fields.get(buf, name)
    }

    /// An interim response (1xx other than 101): relayed, then the final response follows on
    /// the same connection.
    pub fn is_interim(&self) -> bool {
        self.status < 200 && self.status != 101
    }

    /// `101 Switching Protocols`: after this head the connection pair is a tunnel.
    pub fn is_switching_protocols(&self) -> bool {
        self.status == 101
    }

    /// Whether the backend's connection can carry another request once this response's body
    /// is read: not after a body that ends at the close, a 101, `Connection: close`, or an
    /// HTTP/1.0 response without `Connection: keep-alive`.
    pub fn keep_alive(&self, buf: &[u8]) -> bool {
        if self.framing == Framing::UntilClose || self.status == 101 {
            return false;
        }
        if self.fields.connection_has(buf, b"close") {
            return false;
        }
        !self.is_http10() || self.fields.connection_has(buf, b"keep-alive")
    }
}

/// A response head with the buffer it was parsed from: its fields by name (`http::Fields`),
/// for the respond stage.
#[derive(Clone, Copy)]
pub struct ResponseView<'a> {
    pub head: &'a ResponseHead,
    pub buf: &'a [u8],
}

impl crate::http::Fields for ResponseView<'_> {
    fn value(&self, name: &[u8], n: usize) -> Option<&[u8]> {
        self.head.fields().nth(self.buf, name, n)
    }
}

impl super::buf::Poolable for ResponseHead {
    fn pool() -> &'static std::thread::LocalKey<super::buf::BoxPool<Self>> {
        thread_local! {
            static POOL: super::buf::BoxPool<ResponseHead> = const { std::cell::RefCell::new(Vec::new()) };
        }
        &POOL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64 * 1024;

    fn parse(head: &str, head_request: bool) -> Result<ResponseHead, ResponseError> {
        let mut h = ResponseHead::new();
        match h.parse(head.as_bytes(), head_request, MAX)? {
            Some(n) => {
                assert_eq!(n, head.len());
                Ok(h)
            }
            None => panic!("{head:?}: incomplete"),
        }
    }

    fn framing(head: &str) -> Framing {
        parse(head, false).unwrap().framing()
    }

    #[test]
    fn status_reason_and_fields() {
        let text = "HTTP/1.1 404 Not Found Here\r\nContent-Length: 3\r\nX-A:  b \r\n\r\nabc";
        let buf = text.as_bytes();
        let mut h = ResponseHead::new();
        let n = h.parse(buf, false, MAX).unwrap().unwrap();
        assert_eq!(&buf[n..], b"abc");
        assert_eq!(h.status(), 404);
        assert_eq!(h.reason(buf), b"Not Found Here");
        assert!(!h.is_http10());
        assert_eq!(h.header(buf, b"x-a"), Some(&b"b"[..]));
        assert_eq!(h.framing(), Framing::Length(3));
        assert!(h.keep_alive(buf));

        let text = "HTTP/1.0 200\r\n\r\n";
        let h = parse(text, false).unwrap();
        assert_eq!(h.reason(text.as_bytes()), b"");
        assert!(h.is_http10());
        let text = "HTTP/1.1 200 \r\n\r\n";
        assert_eq!(parse(text, false).unwrap().reason(text.as_bytes()), b"");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        let full = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(
                ResponseHead::new().parse(&full.as_bytes()[..cut], false, MAX),
                Ok(None)
            );
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Framing::Length(5)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            Framing::Chunked
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Framing::UntilClose
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
        assert_eq!(framing("HTTP/1.0 200 OK\r\n\r\n"), Framing::UntilClose);
        // No body whatever the fields say: 1xx, 204, 304, and any response to HEAD.
        for status in [
            "100 Continue",
            "101 Switching Protocols",
            "103 Early Hints",
            "204 No Content",
            "304 Not Modified",
        ] {
            let h = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n");
            assert_eq!(framing(&h), Framing::None, "{status}");
            let h = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n");
            assert_eq!(framing(&h), Framing::None, "{status}");
        }
        for h in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
        ] {
            assert_eq!(parse(h, true).unwrap().framing(), Framing::None, "{h:?}");
        }
    }

    #[test]
    fn keep_alive_and_classes() {
        let ka = |h: &str| parse(h, false).unwrap().keep_alive(h.as_bytes());
        assert!(ka("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.1 200 OK\r\n\r\n"), "body until close");
        assert!(!ka("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(ka("HTTP/1.1 204 No Content\r\n\r\n"));
        assert!(ka("HTTP/1.1 304 Not Modified\r\n\r\n"));

        let h = parse(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(h.is_switching_protocols());
        assert!(!h.is_interim());
        assert!(!h.keep_alive(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"));
        let h = parse("HTTP/1.1 100 Continue\r\n\r\n", false).unwrap();
        assert!(h.is_interim());
        assert!(!h.is_switching_protocols());
        assert!(!parse("HTTP/1.1 200 OK\r\n\r\n", false)
            .unwrap()
            .is_interim());
    }

    #[test]
    fn malformed_heads_are_refused() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ResponseError::ContentLengthWithTransferEncoding),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", ResponseError::DifferingContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", ResponseError::InvalidContentLength),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n", ResponseError::InvalidContentLength),
            ("HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n", ResponseError::InvalidContentLength),
            ("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ResponseError::TransferEncodingInHttp10),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", ResponseError::BadTransferEncoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", ResponseError::BadTransferEncoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", ResponseError::BadTransferEncoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip;q=1, chunked\r\n\r\n", ResponseError::BadTransferEncoding),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n", ResponseError::BadTransferEncoding),
            ("HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n", ResponseError::Nul),
            ("HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", ResponseError::BareCr),
            ("HTTP/1.1 200 OK\nContent-Length: 0\n\n", ResponseError::BareLf),
            ("HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n", ResponseError::FieldLine),
            ("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n", ResponseError::FieldLine),
            ("HTTP/1.1 200 OK\r\nno colon\r\n\r\n", ResponseError::FieldLine),
            ("HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n", ResponseError::FieldLine),
            ("HTTP/1.2 200 OK\r\n\r\n", ResponseError::StatusLine),
            ("HTTP/2 200 OK\r\n\r\n", ResponseError::StatusLine),
            ("HTTP/1.1 99 OK\r\n\r\n", ResponseError::StatusLine),
            ("HTTP/1.1 099 OK\r\n\r\n", ResponseError::StatusLine),
            ("HTTP/1.1 600 OK\r\n\r\n", ResponseError::StatusLine),
            ("HTTP/1.1 2000 OK\r\n\r\n", ResponseError::StatusLine),
            ("HTTP/1.1 200 O\x01K\r\n\r\n", ResponseError::StatusLine),
            ("\r\nHTTP/1.1 200 OK\r\n\r\n", ResponseError::StatusLine),
            ("ICY 200 OK\r\n\r\n", ResponseError::StatusLine),
        ];
        for (head, want) in cases {
            assert_eq!(
                ResponseHead::new().parse(head.as_bytes(), false, MAX),
                Err(want),
                "{head:?}"
            );
        }
        // Too large, complete or not; too many fields.
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "v".repeat(2000));
        assert_eq!(
            ResponseHead::new().parse(big.as_bytes(), false, 1024),
            Err(ResponseError::HeadTooLarge)
        );
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_FIELDS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            ResponseHead::new().parse(many.as_bytes(), false, MAX),
            Err(ResponseError::TooManyHeaders)
        );
        assert_eq!(
            ResponseError::ContentLengthWithTransferEncoding.to_string(),
            "both Content-Length and Transfer-Encoding in the response"
        );
    }
}
