//! What a request head and a response head share: byte spans into the buffer a head was read
//! into, the fixed table of header fields, the index of the fields tether reads, and the
//! message-level rules both directions apply (the byte rules of a head, `Content-Length`
//! values, `Connection` options, field names).
//!
//! Owns: the representation of a parsed head (offsets into its buffer, never copies) and the
//! rules that are the same for a request and a response. Must not touch: the rules that differ
//! between them (`request.rs`, `response.rs`), writing (`write.rs`), IO. Allocates nothing.

/// The most header fields a head may have, whatever `max_headers` says: the slot table is a
/// fixed array of this size, and the field-index bitmasks are `u128`.
pub const MAX_FIELDS: usize = 128;

/// Where a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a request without `Content-Length` or `Transfer-Encoding`; a response to HEAD,
    /// a 1xx, 204 or 304).
    None,
    /// Exactly this many bytes follow the head (0: none).
    Length(u64),
    /// A chunked body: it ends where [`super::chunked::Chunked`] says.
    Chunked,
    /// A response body that ends when the backend closes the connection. Never a request's.
    UntilClose,
}

impl Framing {
    pub fn has_body(self) -> bool {
        !matches!(self, Framing::None | Framing::Length(0))
    }
}

/// A half-open byte range `start..end` into the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span of `part`, a sub-slice of `buf` (as httparse hands them out).
    pub(crate) fn of(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        debug_assert!(start + part.len() <= buf.len(), "a span inside its buffer");
        Span::new(start, start + part.len())
    }

    pub(crate) fn new(start: usize, end: usize) -> Span {
        // Heads are at most `max_header_size` (≤ 1 MiB) long: offsets fit in u32.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The bytes of this span in `buf` (the buffer the head was parsed from).
    pub fn get(self, buf: &[u8]) -> &[u8] {
        &buf[self.start as usize..self.end as usize]
    }

    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(self) -> bool {
        self.end == self.start
    }
}

/// One header field line: its name and its value (without surrounding whitespace). The line
/// itself runs from `name.start` to the next line's start less CRLF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Field {
    pub name: Span,
    pub value: Span,
}

/// Header names a stage or the codec itself looks up, indexed once at parse time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Known {
    Host,
    Cookie,
    Connection,
    Upgrade,
    Expect,
    TransferEncoding,
    ContentLength,
    Authorization,
    XRequestId,
    Traceparent,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
}

impl Known {
    pub const COUNT: usize = 14;

    /// Whether a field named `name` never crosses from one HTTP version's hop to another's:
    /// the hop-by-hop fields and `Transfer-Encoding` (the next hop frames the body its own way).
    pub fn is_per_hop(name: &[u8]) -> bool {
        Known::classify(name)
            .is_some_and(|k| k == Known::TransferEncoding || Known::HOP_BY_HOP.contains(&k))
    }

    /// The lower-case name.
    pub fn name(self) -> &'static [u8] {
        match self {
            Known::Host => b"host",
            Known::Cookie => b"cookie",
            Known::Connection => b"connection",
            Known::Upgrade => b"upgrade",
            Known::Expect => b"expect",
            Known::TransferEncoding => b"transfer-encoding",
            Known::ContentLength => b"content-length",
            Known::Authorization => b"authorization",
            Known::XRequestId => b"x-request-id",
            Known::Traceparent => b"traceparent",
            Known::KeepAlive => b"keep-alive",
            Known::ProxyConnection => b"proxy-connection",
            Known::Te => b"te",
            Known::Trailer => b"trailer",
        }
    }

    /// Which known name `name` is (ASCII case-insensitive). Dispatches on the length first, so
    /// an unknown name costs one or two comparisons.
    pub fn classify(name: &[u8]) -> Option<Known> {
        let candidates: &[Known] = match name.len() {
            2 => &[Known::Te],
            4 => &[Known::Host],
            6 => &[Known::Cookie, Known::Expect],
            7 => &[Known::Upgrade, Known::Trailer],
            10 => &[Known::Connection, Known::KeepAlive],
            11 => &[Known::Traceparent],
            12 => &[Known::XRequestId],
            13 => &[Known::Authorization],
            14 => &[Known::ContentLength],
            16 => &[Known::ProxyConnection],
            17 => &[Known::TransferEncoding],
            _ => return None,
        };
        candidates
            .iter()
            .copied()
            .find(|k| name.eq_ignore_ascii_case(k.name()))
    }

    /// Hop-by-hop fields (RFC 9110 §7.6.1, plus the non-standard `Keep-Alive` and
    /// `Proxy-Connection`): never forwarded as they came. `Transfer-Encoding` is hop-by-hop too,
    /// but it frames the message, so the writer drops it only when told to re-frame.
    pub const HOP_BY_HOP: [Known; 6] = [
        Known::Connection,
        Known::KeepAlive,
        Known::ProxyConnection,
        Known::Te,
        Known::Trailer,
        Known::Upgrade,
    ];
}

/// The header fields of one head: a fixed table of spans, and for each [`Known`] name a bitmask
/// of the fields that carry it.
#[derive(Clone)]
pub struct Fields {
    table: [Field; MAX_FIELDS],
    len: usize,
    known: [u128; Known::COUNT],
    /// Where the head ends (just past its CRLF CRLF): the last field's line ends 4 bytes before.
    head_len: u32,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            table: [Field::default(); MAX_FIELDS],
            len: 0,
            known: [0; Known::COUNT],
            head_len: 0,
        }
    }
}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Fields {
    /// Indexes the fields httparse found in `buf` (a head of `head_len` bytes).
    pub(crate) fn fill(&mut self, buf: &[u8], parsed: &[httparse::Header<'_>], head_len: usize) {
        debug_assert!(parsed.len() <= MAX_FIELDS);
        self.len = 0;
        self.known = [0; Known::COUNT];
        self.head_len = head_len as u32;
        for (i, h) in parsed.iter().enumerate() {
            let name = Span::of(buf, h.name.as_bytes());
            let value = Span::of(buf, h.value);
            self.table[i] = Field { name, value };
            if let Some(k) = Known::classify(h.name.as_bytes()) {
                self.known[k as usize] |= 1 << i;
            }
        }
        self.len = parsed.len();
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A bit for every field of the table.
    pub fn all_mask(&self) -> u128 {
        if self.len() == 128 {
            u128::MAX
        } else {
            (1u128 << self.len()) - 1
        }
    }

    pub fn as_slice(&self) -> &[Field] {
        &self.table[..self.len]
    }

    /// The fields named `k`, as a bitmask over field indices.
    pub fn mask(&self, k: Known) -> u128 {
        self.known[k as usize]
    }

    pub fn count(&self, k: Known) -> usize {
        self.mask(k).count_ones() as usize
    }

    /// The first field named `k`.
    pub fn first(&self, k: Known) -> Option<&Field> {
        let m = self.mask(k);
        (m != 0).then(|| &self.table[m.trailing_zeros() as usize])
    }

    /// Every field named `k`, in order.
    pub fn all(&self, k: Known) -> impl Iterator<Item = &Field> + '_ {
        Bits(self.mask(k)).map(move |i| &self.table[i])
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn get<'b>(&self, buf: &'b [u8], name: &[u8]) -> Option<&'b [u8]> {
        if let Some(k) = Known::classify(name) {
            return self.first(k).map(|f| f.value.get(buf));
        }
        self.as_slice()
            .iter()
            .find(|f| f.name.get(buf).eq_ignore_ascii_case(name))
            .map(|f| f.value.get(buf))
    }

    /// The end of field `i`'s line (the offset of its CR).
    /// The `n`-th value (from 0) of the fields named `name` (ASCII case-insensitive): by the
    /// known-name masks where it can, else by comparing names.
    pub fn nth<'b>(&self, buf: &'b [u8], name: &[u8], n: usize) -> Option<&'b [u8]> {
        match Known::classify(name) {
            Some(k) => self.all(k).nth(n).map(|f| f.value.get(buf)),
            None => self
                .as_slice()
                .iter()
                .filter(|f| f.name.get(buf).eq_ignore_ascii_case(name))
                .nth(n)
                .map(|f| f.value.get(buf)),
        }
    }

    pub fn line_end(&self, i: usize) -> usize {
        match self.table[..self.len].get(i + 1) {
            Some(next) => next.name.start as usize - 2,
            None => self.head_len as usize - 4,
        }
    }

    /// Whether the `Connection` fields carry the option `token` (ASCII case-insensitive).
    pub fn connection_has(&self, buf: &[u8], token: &[u8]) -> bool {
        self.all(Known::Connection)
            .flat_map(|f| list_items(f.value.get(buf)))
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// The `Content-Length` of the head, by the rules of [`content_length`].
    pub(crate) fn content_length(&self, buf: &[u8]) -> Result<Option<u64>, LengthFault> {
        content_length(self.all(Known::ContentLength).map(|f| f.value.get(buf)))
    }
}

/// The indices of the set bits of a mask, lowest first.
pub struct Bits(pub u128);

impl Iterator for Bits {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(i)
    }
}

/// The items of a comma-separated field value (RFC 9110 §5.6.1), trimmed, empty ones skipped.
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&c| c == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// A byte that may never appear in a head, or a line end that is not CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteFault {
    Nul,
    BareCr,
    BareLf,
}

/// Finds the end of a head in `buf` (just past the first empty line), refusing on the way NUL,
/// a CR not followed by LF and an LF not preceded by CR: tether and the peer must agree on where
/// each line ends, so a bare LF is refused rather than guessed at. Looks at no more than
/// `limit` bytes. `Ok(None)`: no end yet (a trailing CR may still be waiting for its LF).
/// An empty first line ends nothing: the caller refuses a head that starts with one.
pub(crate) fn find_head_end(buf: &[u8], limit: usize) -> Result<Option<usize>, ByteFault> {
    let buf = &buf[..buf.len().min(limit)];
    let mut line_start = 0;
    for (i, &c) in buf.iter().enumerate() {
        match c {
            0 => return Err(ByteFault::Nul),
            b'\r' if i + 1 < buf.len() && buf[i + 1] != b'\n' => return Err(ByteFault::BareCr),
            b'\n' => {
                if i == 0 || buf[i - 1] != b'\r' {
                    return Err(ByteFault::BareLf);
                }
                if i == line_start + 1 && line_start > 0 {
                    return Ok(Some(i + 1));
                }
                line_start = i + 1;
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Why a set of `Content-Length` values is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LengthFault {
    /// Not a run of 1 to 19 digits (so it fits a u64), or an empty list item.
    Invalid,
    /// Two values that differ (`5` and `6`; `5` and `005` are the same).
    Differing,
}

/// The message's length from its `Content-Length` field values: each value is a list of
/// decimal lengths (`5, 5` is allowed, as RFC 9110 §8.6 lets a recipient accept identical
/// repeats), and every length in every field must be the same number.
pub(crate) fn content_length<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<u64>, LengthFault> {
    let mut length: Option<&[u8]> = None;
    for value in values {
        for v in value.split(|&c| c == b',').map(trim_ows) {
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(LengthFault::Invalid);
            }
            match length {
                Some(prev) if trim_zeros(prev) != trim_zeros(v) => {
                    return Err(LengthFault::Differing)
                }
                _ => length = Some(v),
            }
        }
    }
    // At most 19 digits: always fits.
    Ok(length.map(|v| v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))))
}

/// `v` without surrounding spaces and tabs (RFC 9110 OWS).
pub fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|c| *c != b' ' && *c != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|c| *c != b' ' && *c != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// `v` without leading zeros.
pub fn trim_zeros(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|c| *c != b'0').unwrap_or(v.len());
    &v[start..]
}

/// Byte classes, one table lookup each: bit 0 a token character, bit 1 a field-value one.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let tchar = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        let vchar = b == b'\t' || b == b' ' || (b >= 0x21 && b <= 0x7e) || b >= 0x80;
        t[c] = (tchar as u8) | ((vchar as u8) << 1);
        c += 1;
    }
    t
};

/// RFC 9110 token characters (field names, methods, codings).
#[inline]
pub fn is_tchar(c: u8) -> bool {
    CLASS[c as usize] & 1 != 0
}

pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_tchar(c))
}

/// A byte allowed in a field value (RFC 9110 §5.5: VCHAR, obs-text, SP, HTAB).
#[inline]
pub fn is_field_vchar(c: u8) -> bool {
    CLASS[c as usize] & 2 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_classes_are_rfc_9110s() {
        for c in 0..=255u8 {
            let tchar = c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
            let vchar = c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80;
            assert_eq!(is_tchar(c), tchar, "{c}");
            assert_eq!(is_field_vchar(c), vchar, "{c}");
        }
    }

    #[test]
    fn classify_finds_every_known_name_in_any_case() {
        let all = [
            Known::Host,
            Known::Cookie,
            Known::Connection,
            Known::Upgrade,
            Known::Expect,
            Known::TransferEncoding,
            Known::ContentLength,
            Known::Authorization,
            Known::XRequestId,
            Known::Traceparent,
            Known::KeepAlive,
            Known::ProxyConnection,
            Known::Te,
            Known::Trailer,
        ];
        assert_eq!(all.len(), Known::COUNT);
        for k in all {
            assert_eq!(Known::classify(k.name()), Some(k));
            let upper = k.name().to_ascii_uppercase();
            assert_eq!(Known::classify(&upper), Some(k));
        }
        for other in [
            &b"hosts"[..],
            b"x-request-ids",
            b"",
            b"t",
            b"cookies",
            b"ab",
        ] {
            assert_eq!(Known::classify(other), None, "{other:?}");
        }
    }

    #[test]
    fn head_end_and_byte_faults() {
        let lim = usize::MAX;
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\n\r\nbody", lim),
            Ok(Some(18))
        );
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\n", lim),
            Ok(Some(24))
        );
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r", lim),
            Ok(None)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r", lim), Ok(None));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", lim), Ok(None));
        assert_eq!(find_head_end(b"GET /\0 HTTP/1.1", lim), Err(ByteFault::Nul));
        assert_eq!(
            find_head_end(b"GET /\r HTTP/1.1", lim),
            Err(ByteFault::BareCr)
        );
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\n", lim),
            Err(ByteFault::BareLf)
        );
        assert_eq!(find_head_end(b"\n", lim), Err(ByteFault::BareLf));
        // A leading empty line ends nothing.
        assert_eq!(find_head_end(b"\r\nGET", lim), Ok(None));
        // Bytes past the limit are not looked at.
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n", 10), Ok(None));
        assert_eq!(find_head_end(b"GET / HT\0", 8), Ok(None));
    }

    #[test]
    fn content_length_rules() {
        let cl = |vs: &[&str]| content_length(vs.iter().map(|v| v.as_bytes()));
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&["5"]), Ok(Some(5)));
        assert_eq!(cl(&["0"]), Ok(Some(0)));
        assert_eq!(cl(&["5", "005"]), Ok(Some(5)));
        assert_eq!(cl(&["5, 5"]), Ok(Some(5)));
        assert_eq!(
            cl(&["9999999999999999999"]),
            Ok(Some(9_999_999_999_999_999_999))
        );
        assert_eq!(cl(&["5", "6"]), Err(LengthFault::Differing));
        assert_eq!(cl(&["5, 6"]), Err(LengthFault::Differing));
        for bad in [
            "",
            "+5",
            "-5",
            "5a",
            "0x5",
            "5,",
            " ",
            "5 5",
            "10000000000000000000",
        ] {
            assert_eq!(cl(&[bad]), Err(LengthFault::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn list_items_trim_and_skip_empty() {
        let items: Vec<&[u8]> = list_items(b" close ,, Keep-Alive,\tx ").collect();
        assert_eq!(items, [&b"close"[..], b"Keep-Alive", b"x"]);
    }

    #[test]
    fn bits_iterates_set_indices() {
        let v: Vec<usize> = Bits((1 << 0) | (1 << 5) | (1 << 127)).collect();
        assert_eq!(v, [0, 5, 127]);
        assert_eq!(Bits(0).count(), 0);
    }
}
