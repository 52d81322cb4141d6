//! The head writer (DESIGN.md §19): the head that goes out is the head that came in, copied as
//! byte ranges of its buffer, with the version normalised to `HTTP/1.1`, the hop-by-hop lines
//! dropped, the lines a stage dropped left out and the lines it added appended.
//!
//! Owns: which incoming lines never leave (hop-by-hop, `Connection`-named) and the guarantee
//! that what is written parses back as one head with the same fields less the dropped plus the
//! added: no added name or value can carry a line end, a NUL or a second message, no
//! `Connection` option can strip the fields that frame the message or route it, and a request
//! goes out with exactly one `Host`. Must not touch: which lines a stage drops or adds (the
//! caller's [`Edits`]), IO. Allocation-free by construction: it writes into the caller's slice.

use super::head::{is_field_vchar, is_token, list_items, Bits, Fields, Known, Span};
use super::request::RequestHead;
use super::response::ResponseHead;

/// A caller's test of a field line, by (name, value): true to leave it out.
pub type DropIf<'a> = &'a (dyn Fn(&[u8], &[u8]) -> bool + Sync);

/// What the caller changes in a head on its way out.
#[derive(Clone, Copy, Default)]
pub struct Edits<'a> {
    /// Fields to leave out, by name (ASCII case-insensitive).
    pub drop_names: &'a [&'a [u8]],
    /// Fields to leave out, by (name, value).
    pub drop_if: Option<DropIf<'a>>,
    /// Fields to add after the kept ones, as (name, value).
    pub add: &'a [(&'a [u8], &'a [u8])],
    /// Leave out `Content-Length` and `Transfer-Encoding`: the caller frames the body anew and
    /// adds the field that says how (only then may it add one).
    pub reframe: bool,
}

/// Why a head was not written. Nothing written is valid then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// The output slice is too small.
    NoRoom,
    /// An added name is not a token (index into `Edits::add`).
    InvalidName(usize),
    /// An added value holds a byte a field value may not (CR, LF, NUL, other controls).
    InvalidValue(usize),
    /// `Content-Length` or `Transfer-Encoding` added without `reframe`.
    FramingAdded(usize),
    /// The request would go out without a `Host`, or with two.
    Host,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::NoRoom => write!(f, "head does not fit the output buffer"),
            WriteError::InvalidName(i) => write!(f, "added field {i}: invalid name"),
            WriteError::InvalidValue(i) => write!(f, "added field {i}: invalid value"),
            WriteError::FramingAdded(i) => {
                write!(f, "added field {i}: a framing field without re-framing")
            }
            WriteError::Host => write!(f, "a request needs exactly one Host"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Writes the outgoing request head for `head` (parsed from `buf`) into `out`: the request
/// line with `HTTP/1.1`, the kept fields as they came, `Connection: upgrade` if it is an
/// upgrade request, the added fields, the empty line. The length written.
pub fn write_request(
    head: &RequestHead,
    buf: &[u8],
    edits: &Edits<'_>,
    out: &mut [u8],
) -> Result<usize, WriteError> {
    let upgrade = head.view(buf).is_upgrade();
    let fields = head.fields();
    let dropped = dropped(fields, buf, edits, upgrade);
    check_added(edits)?;
    let kept_hosts = (fields.mask(Known::Host) & !dropped).count_ones() as usize;
    let added_hosts = edits
        .add
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .count();
    if kept_hosts + added_hosts != 1 {
        return Err(WriteError::Host);
    }
    let mut w = Out { out, n: 0 };
    w.put(head.method_span().get(buf))?;
    w.put(b" ")?;
    w.put(head.target_span().get(buf))?;
    w.put(b" HTTP/1.1\r\n")?;
    finish(&mut w, fields, buf, dropped, upgrade, edits)?;
    Ok(w.n)
}

/// Writes an HTTP/1.1 request head for a request that came as fields (an HTTP/2 stream) into
/// `out`: `METHOD TARGET HTTP/1.1`, the fields but the hop-by-hop ones, the `Content-Length` and
/// `Transfer-Encoding` ones (the caller frames the body: `framing`, when it has one, is the
/// field that says how), the `Cookie` ones joined into one line (RFC 9113 §8.2.3: HTTP/2 may
/// split them, HTTP/1.1 must not) and the caller's dropped ones, then the added fields. The
/// same guarantees as [`write_request`]: exactly one `Host`, nothing that could end a line.
pub fn write_request_fields<'f, I: Iterator<Item = (&'f [u8], &'f [u8])>>(
    method: &[u8],
    target: &[u8],
    fields: impl Fn() -> I,
    framing: Option<(&[u8], &[u8])>,
    edits: &Edits<'_>,
    out: &mut [u8],
) -> Result<usize, WriteError> {
    check_added(&Edits {
        reframe: true,
        ..*edits
    })?;
    if !is_token(method) || target.is_empty() || !target.iter().all(|&c| c > b' ' && c < 0x7f) {
        return Err(WriteError::InvalidValue(usize::MAX));
    }
    let dropped = |name: &[u8], value: &[u8]| {
        Known::is_per_hop(name)
            || name.eq_ignore_ascii_case(b"content-length")
            || edits
                .drop_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
            || edits.drop_if.is_some_and(|p| p(name, value))
    };
    let mut hosts = edits
        .add
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .count();
    let mut w = Out { out, n: 0 };
    w.put(method)?;
    w.put(b" ")?;
    w.put(target)?;
    w.put(b" HTTP/1.1\r\n")?;
    let mut cookies = 0;
    for (name, value) in fields() {
        if dropped(name, value) {
            continue;
        }
        if !is_token(name) || !value.iter().all(|&c| is_field_vchar(c)) {
            return Err(WriteError::InvalidValue(usize::MAX));
        }
        if name.eq_ignore_ascii_case(b"cookie") {
            cookies += 1;
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
        w.put(name)?;
        w.put(b": ")?;
        w.put(value)?;
        w.put(b"\r\n")?;
    }
    if hosts != 1 {
        return Err(WriteError::Host);
    }
    if cookies > 0 {
        w.put(b"cookie: ")?;
        let mut first = true;
        for (name, value) in fields() {
            if name.eq_ignore_ascii_case(b"cookie") && !dropped(name, value) {
                if !first {
                    w.put(b"; ")?;
                }
                w.put(value)?;
                first = false;
            }
        }
        w.put(b"\r\n")?;
    }
    if let Some((name, value)) = framing {
        w.put(name)?;
        w.put(b": ")?;
        w.put(value)?;
        w.put(b"\r\n")?;
    }
    for (name, value) in edits.add {
        w.put(name)?;
        w.put(b": ")?;
        w.put(value)?;
        w.put(b"\r\n")?;
    }
    w.put(b"\r\n")?;
    Ok(w.n)
}

/// Writes the outgoing response head for `head` (parsed from `buf`) into `out`: the status
/// line with `HTTP/1.1` (status and reason as they came), the kept fields, `Connection:
/// upgrade` after a 101, the added fields, the empty line. The length written.
pub fn write_response(
    head: &ResponseHead,
    buf: &[u8],
    edits: &Edits<'_>,
    out: &mut [u8],
) -> Result<usize, WriteError> {
    let upgrade = head.is_switching_protocols();
    let fields = head.fields();
    let dropped = dropped(fields, buf, edits, upgrade);
    check_added(edits)?;
    let mut w = Out { out, n: 0 };
    let s = head.status();
    w.put(b"HTTP/1.1 ")?;
    w.put(&[
        b'0' + (s / 100 % 10) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
        b' ',
    ])?;
    w.put(head.reason_span().get(buf))?;
    w.put(b"\r\n")?;
    finish(&mut w, fields, buf, dropped, upgrade, edits)?;
    Ok(w.n)
}

/// The fields that do not go out, as a bitmask: hop-by-hop ones (`Upgrade` kept when the
/// exchange is an upgrade), the framing ones when re-framing, the ones `Connection` names
/// (except `Host`, `Content-Length` and `Transfer-Encoding`: a client must not be able to strip
/// the fields that route and frame the request), and the caller's.
pub(crate) fn dropped(fields: &Fields, buf: &[u8], edits: &Edits<'_>, upgrade: bool) -> u128 {
    let mut drop = 0u128;
    for k in Known::HOP_BY_HOP {
        if !(k == Known::Upgrade && upgrade) {
            drop |= fields.mask(k);
        }
    }
    if edits.reframe {
        drop |= fields.mask(Known::ContentLength) | fields.mask(Known::TransferEncoding);
    }
    for f in fields.all(Known::Connection) {
        for option in list_items(f.value.get(buf)) {
            match Known::classify(option) {
                Some(Known::Host | Known::ContentLength | Known::TransferEncoding) => {}
                Some(Known::Upgrade) if upgrade => {}
                Some(k) => drop |= fields.mask(k),
                None => {
                    for (i, g) in fields.as_slice().iter().enumerate() {
                        if g.name.get(buf).eq_ignore_ascii_case(option) {
                            drop |= 1 << i;
                        }
                    }
                }
            }
        }
    }
    if !edits.drop_names.is_empty() || edits.drop_if.is_some() {
        for (i, f) in fields.as_slice().iter().enumerate() {
            let name = f.name.get(buf);
            if edits
                .drop_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
                || edits.drop_if.is_some_and(|p| p(name, f.value.get(buf)))
            {
                drop |= 1 << i;
            }
        }
    }
    drop
}

/// Added fields must be `token: value` with nothing in the value that could end the line, and
/// framing fields only when the caller re-frames.
fn check_added(edits: &Edits<'_>) -> Result<(), WriteError> {
    for (i, (name, value)) in edits.add.iter().enumerate() {
        if !is_token(name) {
            return Err(WriteError::InvalidName(i));
        }
        if !value.iter().all(|&c| is_field_vchar(c)) {
            return Err(WriteError::InvalidValue(i));
        }
        if !edits.reframe
            && matches!(
                Known::classify(name),
                Some(Known::ContentLength | Known::TransferEncoding)
            )
        {
            return Err(WriteError::FramingAdded(i));
        }
    }
    Ok(())
}

/// The field lines (kept ones copied in runs: consecutive kept lines are one copy), then the
/// upgrade option, the added lines and the empty line.
fn finish(
    w: &mut Out<'_>,
    fields: &Fields,
    buf: &[u8],
    dropped: u128,
    upgrade: bool,
    edits: &Edits<'_>,
) -> Result<(), WriteError> {
    let all = fields.all_mask();
    let mut run: Option<Span> = None;
    for i in Bits(all & !dropped) {
        let start = fields.as_slice()[i].name.start as usize;
        let end = fields.line_end(i) + 2;
        run = match run {
            Some(r) if r.end as usize == start => Some(Span::new(r.start as usize, end)),
            Some(r) => {
                w.put(r.get(buf))?;
                Some(Span::new(start, end))
            }
            None => Some(Span::new(start, end)),
        };
    }
    if let Some(r) = run {
        w.put(r.get(buf))?;
    }
    // The option goes with the field: not if the caller dropped `Upgrade`.
    if upgrade && fields.mask(Known::Upgrade) & !dropped != 0 {
        w.put(b"Connection: upgrade\r\n")?;
    }
    for (name, value) in edits.add {
        w.put(name)?;
        w.put(b": ")?;
        w.put(value)?;
        w.put(b"\r\n")?;
    }
    w.put(b"\r\n")
}

struct Out<'o> {
    out: &'o mut [u8],
    n: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let to = self
            .out
            .get_mut(self.n..self.n + bytes.len())
            .ok_or(WriteError::NoRoom)?;
        to.copy_from_slice(bytes);
        self.n += bytes.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::h1::head::Framing;
    use proptest::prelude::*;

    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    fn request(text: &str) -> RequestHead {
        let mut h = RequestHead::new();
        h.parse(text.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        h
    }

    fn pairs(it: impl Iterator<Item = (impl AsRef<[u8]>, impl AsRef<[u8]>)>) -> Pairs {
        it.map(|(n, v)| (n.as_ref().to_vec(), v.as_ref().to_vec()))
            .collect()
    }

    /// Writes `text`'s request with `edits` and parses the result back.
    fn round_trip(text: &str, edits: &Edits<'_>) -> (Vec<u8>, RequestHead) {
        let head = request(text);
        let mut out = [0u8; 4096];
        let n = write_request(&head, text.as_bytes(), edits, &mut out).unwrap();
        let written = out[..n].to_vec();
        let mut again = RequestHead::new();
        assert_eq!(
            again.parse(&written, &Limits::default()),
            Ok(Some(n)),
            "{:?}",
            String::from_utf8_lossy(&written)
        );
        (written, again)
    }

    #[test]
    fn the_head_goes_out_as_it_came_less_hop_by_hop() {
        let text = "GET /p?q=1 HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive, X-Secret\r\n\
                    Keep-Alive: timeout=5\r\nUser-Agent:  curl/8  \r\nX-Secret: s\r\nTE: trailers\r\n\
                    Trailer: X\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n";
        let (written, _) = round_trip(text, &Edits::default());
        assert_eq!(
            String::from_utf8(written).unwrap(),
            "GET /p?q=1 HTTP/1.1\r\nHost: a.example\r\nUser-Agent:  curl/8  \r\nAccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn edits_drop_and_add() {
        let text =
            "POST /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nContent-Length: 3\r\n\
                    Cookie: a=1\r\nX-Request-Id: client\r\nCookie: b=2\r\n\r\nabc";
        let pred =
            |name: &[u8], value: &[u8]| name.eq_ignore_ascii_case(b"cookie") && value == b"b=2";
        let edits = Edits {
            drop_names: &[b"x-forwarded-for", b"X-REQUEST-ID"],
            drop_if: Some(&pred),
            add: &[
                (b"X-Forwarded-For", b"10.0.0.1"),
                (b"X-Request-Id", b"abc-123"),
            ],
            reframe: false,
        };
        let (written, again) = round_trip(text, &edits);
        let v = again.view(&written);
        assert_eq!(
            pairs(v.headers()),
            pairs(
                [
                    ("Host", "a"),
                    ("Content-Length", "3"),
                    ("Cookie", "a=1"),
                    ("X-Forwarded-For", "10.0.0.1"),
                    ("X-Request-Id", "abc-123"),
                ]
                .into_iter()
            )
        );
        assert_eq!(v.framing(), Framing::Length(3));
        assert_eq!(v.method(), b"POST");
        assert_eq!(v.target(), b"/x");
    }

    #[test]
    fn version_is_normalised_and_a_request_has_one_host() {
        let text = "GET / HTTP/1.0\r\nAccept: x\r\n\r\n";
        let head = request(text);
        let mut out = [0u8; 256];
        assert_eq!(
            write_request(&head, text.as_bytes(), &Edits::default(), &mut out),
            Err(WriteError::Host)
        );
        let edits = Edits {
            add: &[(b"Host", b"backend:8080")],
            ..Edits::default()
        };
        let (written, again) = round_trip(text, &edits);
        assert!(written.starts_with(b"GET / HTTP/1.1\r\n"));
        assert!(!again.is_http10());
        assert_eq!(again.view(&written).host(), Some(&b"backend:8080"[..]));

        // A second Host, or none left.
        let text = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let head = request(text);
        for edits in [
            Edits {
                add: &[(b"host", b"b")],
                ..Edits::default()
            },
            Edits {
                drop_names: &[b"host"],
                ..Edits::default()
            },
        ] {
            assert_eq!(
                write_request(&head, text.as_bytes(), &edits, &mut out),
                Err(WriteError::Host)
            );
        }
        // Replacing it is fine.
        let edits = Edits {
            drop_names: &[b"host"],
            add: &[(b"Host", b"b")],
            ..Edits::default()
        };
        let (written, again) = round_trip(text, &edits);
        assert_eq!(again.view(&written).host(), Some(&b"b"[..]));
    }

    #[test]
    fn upgrade_requests_keep_upgrade() {
        let text = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\
                    Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";
        let (written, again) = round_trip(text, &Edits::default());
        assert_eq!(
            String::from_utf8(written.clone()).unwrap(),
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\
             Connection: upgrade\r\n\r\n"
        );
        assert!(again.view(&written).is_upgrade());
        // A caller that drops Upgrade sends no upgrade option either.
        let edits = Edits {
            drop_names: &[b"upgrade"],
            ..Edits::default()
        };
        let (written, again) = round_trip(text, &edits);
        assert_eq!(
            String::from_utf8(written.clone()).unwrap(),
            "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\n\r\n"
        );
        assert!(!again.view(&written).is_upgrade());
    }

    #[test]
    fn connection_cannot_strip_framing_or_host() {
        let text = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\
                    Connection: Content-Length, Host, Transfer-Encoding, Cookie\r\nCookie: c\r\n\r\nhi";
        let (written, again) = round_trip(text, &Edits::default());
        let v = again.view(&written);
        assert_eq!(v.framing(), Framing::Length(2));
        assert_eq!(v.host(), Some(&b"a"[..]));
        assert_eq!(v.known(Known::Cookie), None, "Cookie was named: dropped");
    }

    #[test]
    fn reframing() {
        let text = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = request(text);
        let mut out = [0u8; 256];
        let add_cl = [(&b"Content-Length"[..], &b"5"[..])];
        let edits = Edits {
            add: &add_cl,
            ..Edits::default()
        };
        assert_eq!(
            write_request(&head, text.as_bytes(), &edits, &mut out),
            Err(WriteError::FramingAdded(0)),
            "framing comes from one place"
        );
        let edits = Edits {
            add: &add_cl,
            reframe: true,
            ..Edits::default()
        };
        let (written, again) = round_trip(text, &edits);
        assert_eq!(again.view(&written).framing(), Framing::Length(5));
        assert_eq!(again.fields().count(Known::TransferEncoding), 0);
    }

    #[test]
    fn nothing_added_can_smuggle() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let head = request(text);
        let mut out = [0u8; 512];
        let bad_values: [&[u8]; 6] = [
            b"x\r\n\r\nGET /admin HTTP/1.1\r\nHost: a",
            b"x\r\nX-Injected: 1",
            b"x\ny",
            b"x\ry",
            b"x\0y",
            b"x\x7fy",
        ];
        for value in bad_values {
            let add = [(&b"X-Ok"[..], value)];
            let edits = Edits {
                add: &add,
                ..Edits::default()
            };
            assert_eq!(
                write_request(&head, text.as_bytes(), &edits, &mut out),
                Err(WriteError::InvalidValue(0)),
                "{value:?}"
            );
        }
        let bad_names: [&[u8]; 5] = [
            b"",
            b"X Y",
            b"X:Y",
            b"X\r\nY",
            b"Host\r\n\r\nGET / HTTP/1.1",
        ];
        for name in bad_names {
            let add = [(name, &b"v"[..])];
            let edits = Edits {
                add: &add,
                ..Edits::default()
            };
            assert_eq!(
                write_request(&head, text.as_bytes(), &edits, &mut out),
                Err(WriteError::InvalidName(0)),
                "{name:?}"
            );
        }
        // A request inside a value, without line ends, stays a value of one field.
        let add = [(&b"X-Note"[..], &b"GET /admin HTTP/1.1 Host: a"[..])];
        let edits = Edits {
            add: &add,
            ..Edits::default()
        };
        let (written, again) = round_trip(text, &edits);
        assert_eq!(again.len(), written.len(), "one head, nothing after it");
        assert_eq!(again.fields().len(), 2);
    }

    #[test]
    fn no_room_is_an_error() {
        let text = "GET /long/path HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
        let head = request(text);
        let mut out = [0u8; 512];
        let n = write_request(&head, text.as_bytes(), &Edits::default(), &mut out).unwrap();
        for short in [0, 10, n - 1] {
            assert_eq!(
                write_request(&head, text.as_bytes(), &Edits::default(), &mut out[..short]),
                Err(WriteError::NoRoom)
            );
        }
    }

    fn response(text: &str) -> ResponseHead {
        let mut h = ResponseHead::new();
        h.parse(text.as_bytes(), false, 64 * 1024).unwrap().unwrap();
        h
    }

    #[test]
    fn responses_keep_status_and_reason() {
        let text = "HTTP/1.0 404 Not  Found\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\
                    Keep-Alive: timeout=5\r\nServer: x\r\n\r\nabc";
        let head = response(text);
        let mut out = [0u8; 512];
        let edits = Edits {
            drop_names: &[b"server"],
            add: &[(b"Set-Cookie", b"s=1; Path=/")],
            ..Edits::default()
        };
        let n = write_response(&head, text.as_bytes(), &edits, &mut out).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out[..n]),
            "HTTP/1.1 404 Not  Found\r\nContent-Length: 3\r\nSet-Cookie: s=1; Path=/\r\n\r\n"
        );
        let mut again = ResponseHead::new();
        assert_eq!(again.parse(&out[..n], false, 1024), Ok(Some(n)));
        assert_eq!(again.status(), 404);
        assert_eq!(again.reason(&out[..n]), b"Not  Found");
        assert_eq!(again.framing(), Framing::Length(3));

        let text = "HTTP/1.1 200\r\n\r\n";
        let n = write_response(
            &response(text),
            text.as_bytes(),
            &Edits::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..n], b"HTTP/1.1 200 \r\n\r\n");

        let text =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: x\r\n\r\n";
        let n = write_response(
            &response(text),
            text.as_bytes(),
            &Edits::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out[..n]),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\
             Connection: upgrade\r\n\r\n"
        );
        let text = "HTTP/1.1 426 Upgrade Required\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n";
        let n = write_response(
            &response(text),
            text.as_bytes(),
            &Edits::default(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out[..n]),
            "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"
        );
    }

    const NAMES: [&str; 12] = [
        "Host",
        "Cookie",
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Upgrade",
        "Accept",
        "X-A",
        "x-b",
        "Proxy-Connection",
        "Content-Length",
    ];

    proptest! {
        /// Any head and any edits: the written head parses back to the incoming fields, less
        /// the hop-by-hop ones, the `Connection`-named ones and the dropped ones, plus the
        /// added ones, in order.
        #[test]
        fn written_heads_parse_back_to_the_edited_fields(
            fields in prop::collection::vec((0..NAMES.len(), "[ -~]{0,12}"), 0..12),
            drop in prop::collection::vec(0..NAMES.len(), 0..3),
            add in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,8}", "[!-~]([ -~]{0,10}[!-~])?"), 0..4),
        ) {
            let mut text = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
            for (n, v) in &fields {
                let name = NAMES[*n];
                // Keep the head valid: one Host, one Content-Length value.
                let value = match name {
                    "Host" => continue,
                    "Content-Length" => "7".to_string(),
                    _ => v.clone(),
                };
                text.push_str(&format!("{name}: {value}\r\n"));
            }
            text.push_str("\r\n");
            let head = request(&text);
            let buf = text.as_bytes();
            let add: Vec<(Vec<u8>, Vec<u8>)> = add
                .into_iter()
                .filter(|(n, _)| !matches!(Known::classify(n.as_bytes()), Some(Known::Host | Known::ContentLength | Known::TransferEncoding)))
                .map(|(n, v)| (n.into_bytes(), v.into_bytes()))
                .collect();
            let add_refs: Vec<(&[u8], &[u8])> = add.iter().map(|(n, v)| (&n[..], &v[..])).collect();
            let drop_names: Vec<&[u8]> = drop
                .iter()
                .map(|&i| NAMES[i].as_bytes())
                .filter(|n| !n.eq_ignore_ascii_case(b"host"))
                .collect();
            let edits = Edits { drop_names: &drop_names, add: &add_refs, ..Edits::default() };
            let mut out = [0u8; 4096];
            let n = write_request(&head, buf, &edits, &mut out).unwrap();
            let mut again = RequestHead::new();
            prop_assert_eq!(again.parse(&out[..n], &Limits::default()), Ok(Some(n)));

            let view = head.view(buf);
            let options: Vec<Vec<u8>> = view
                .known_all(Known::Connection)
                .flat_map(list_items)
                .map(|o| o.to_ascii_lowercase())
                .collect();
            let hop = ["connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"];
            let mut want: Pairs = view
                .headers()
                .filter(|(n, _)| {
                    let lower = n.to_ascii_lowercase();
                    let protected = matches!(&lower[..], b"host" | b"content-length");
                    !hop.iter().any(|h| h.as_bytes() == &lower[..])
                        && (protected || !options.contains(&lower))
                        && !drop_names.iter().any(|d| d.eq_ignore_ascii_case(n))
                })
                .map(|(n, v)| (n.to_vec(), v.to_vec()))
                .collect();
            if view.is_upgrade() {
                // Upgrade is kept (unless dropped by name) and the option said anew.
                want = view
                    .headers()
                    .filter(|(n, _)| {
                        let lower = n.to_ascii_lowercase();
                        let kept_hop = &lower[..] == b"upgrade";
                        let protected = matches!(&lower[..], b"host" | b"content-length" | b"upgrade");
                        (kept_hop || !hop.iter().any(|h| h.as_bytes() == &lower[..]))
                            && (protected || !options.contains(&lower))
                            && !drop_names.iter().any(|d| d.eq_ignore_ascii_case(n))
                    })
                    .map(|(n, v)| (n.to_vec(), v.to_vec()))
                    .collect();
                if want.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"upgrade")) {
                    want.push((b"Connection".to_vec(), b"upgrade".to_vec()));
                }
            }
            want.extend(add.iter().cloned());
            prop_assert_eq!(pairs(again.view(&out[..n]).headers()), want);
        }
    }
}
