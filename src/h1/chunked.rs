//! The chunked body validator (RFC 9112 §7.1): fed a chunked body in pieces of any size, it
//! says how much of each piece belongs to the body, where the data is, and where the body ends;
//! it refuses anything that two parsers could read two ways.
//!
//! The relay forwards a chunked body as it came (size lines, extensions, trailers and all), so
//! the job is validation and finding the end: this is where tether decides where a chunked
//! message ends, and no other code may guess. Decoding (the data ranges) serves the body limit
//! and the tests.
//!
//! The grammar accepted, strictly:
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ ext ] CRLF chunk-data CRLF
//! last-chunk   = 1*"0" [ ext ] CRLF
//! chunk-size   = 1*HEXDIG                    ; at most 16 significant digits (u64)
//! ext          = *( SP / HTAB ) ";" *( HTAB / SP / VCHAR / obs-text )
//! trailer-line = 1*tchar ":" *( HTAB / SP / VCHAR / obs-text ) CRLF
//! ```
//! Chunk extensions are not interpreted (no one uses them; the backend gets them as they are),
//! but their bytes cannot hide a line end: a CR is only ever the start of CRLF, and an LF only
//! ever its end. A size line (size and extensions) is at most [`ChunkedLimits::max_line`]
//! bytes, the trailer section at most [`ChunkedLimits::max_trailers`].
//!
//! Owns: the chunked framing rules. Must not touch: IO, buffers, what happens to a refused body
//! (the engine closes both sides). Allocation-free; [`reference_decode`] (tests and fuzzing
//! only) allocates.

use std::ops::Range;

use super::head::is_tchar;

/// Bounds on the parts of a chunked body that are not data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedLimits {
    /// A chunk-size line (size and extensions, without its CRLF).
    pub max_line: usize,
    /// The trailer section, from after the last chunk's line to its final CRLF included.
    pub max_trailers: usize,
}

impl Default for ChunkedLimits {
    fn default() -> Self {
        ChunkedLimits {
            max_line: 4096,
            max_trailers: 16 * 1024,
        }
    }
}

/// Why a chunked body was refused. Every one ends the message: nothing more is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk size that is not hex digits (or none).
    Size,
    /// A chunk size larger than a u64.
    Overflow,
    /// Bytes after the size that are not an extension (`;` ...).
    Extension,
    /// A size line longer than `max_line`.
    LineTooLong,
    /// A CR not followed by LF at the end of a size line or a trailer line.
    LineEnd,
    /// Chunk data not followed by CRLF.
    DataEnd,
    /// A trailer line that is not `name: value`.
    Trailer,
    /// A trailer section larger than `max_trailers`.
    TrailersTooLarge,
    /// More data than the limit given to [`Chunked::with_limit`].
    TooLarge,
}

impl std::fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkedError::Size => "invalid chunk size",
            ChunkedError::Overflow => "chunk size too large",
            ChunkedError::Extension => "invalid chunk extension",
            ChunkedError::LineTooLong => "chunk size line too long",
            ChunkedError::LineEnd => "CR without LF in a chunked body",
            ChunkedError::DataEnd => "chunk data not followed by CRLF",
            ChunkedError::Trailer => "invalid trailer field",
            ChunkedError::TrailersTooLarge => "trailer section too large",
            ChunkedError::TooLarge => "chunked body larger than the limit",
        })
    }
}

impl std::error::Error for ChunkedError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The start of a size line: a hex digit must come.
    SizeStart,
    /// In the size's hex digits.
    Size,
    /// Whitespace after the size: only `;` may end it.
    SizeWs,
    /// In an extension (after `;`), up to CR.
    Ext,
    /// A size line's CR seen: LF must come.
    SizeLf,
    /// In chunk data, this many bytes left.
    Data(u64),
    /// Data done: CR must come.
    DataCr,
    /// Data done, CR seen: LF must come.
    DataLf,
    /// The start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    /// A trailer line's CR seen.
    TrailerLf,
    /// The final CR seen.
    FinalLf,
    Done,
    Failed(ChunkedError),
}

/// What one [`Chunked::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to the body: all of it unless the body ended in it.
    pub consumed: usize,
    /// The body's last byte (the final CRLF's LF) was in this input.
    pub done: bool,
}

/// The incremental validator of one chunked body. Fed the body's bytes in pieces of any size;
/// keeps no bytes, only its place in the grammar.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    /// Bytes of the current size line so far (without CRLF).
    line: usize,
    /// Bytes of the trailer section so far.
    trailers: usize,
    data: u64,
    limit: u64,
    limits: ChunkedLimits,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

impl Chunked {
    pub fn new() -> Self {
        Chunked::with_limits(ChunkedLimits::default())
    }

    pub fn with_limits(limits: ChunkedLimits) -> Self {
        Chunked {
            state: State::SizeStart,
            size: 0,
            line: 0,
            trailers: 0,
            data: 0,
            limit: u64::MAX,
            limits,
        }
    }

    /// Refuses a body whose data (the chunks' contents) exceeds `limit` bytes, as soon as a
    /// chunk size says it will (before its data is forwarded).
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The data bytes so far (the chunks' contents, declared sizes of chunks begun).
    pub fn data_len(&self) -> u64 {
        self.data
    }

    /// Validates the next piece of the body. `on_data` is called with each range of `input`
    /// that is chunk data, in order. After an error every later call returns it again; after
    /// the end, a call consumes nothing.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(Range<usize>),
    ) -> Result<Progress, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(e) => return Err(e),
                State::Data(left) => {
                    let n = left.min((input.len() - i) as u64) as usize;
                    on_data(i..i + n);
                    i += n;
                    self.state = if left == n as u64 {
                        State::DataCr
                    } else {
                        State::Data(left - n as u64)
                    };
                }
                _ => {
                    if let Err(e) = self.step(input[i]) {
                        self.state = State::Failed(e);
                        return Err(e);
                    }
                    i += 1;
                }
            }
        }
        if let State::Failed(e) = self.state {
            return Err(e);
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    /// One byte outside chunk data.
    fn step(&mut self, c: u8) -> Result<(), ChunkedError> {
        use State::*;
        match self.state {
            SizeStart | Size | SizeWs | Ext if c != b'\r' => {
                self.line += 1;
                if self.line > self.limits.max_line {
                    return Err(ChunkedError::LineTooLong);
                }
            }
            TrailerStart | TrailerName | TrailerValue | TrailerLf | FinalLf => {
                self.trailers += 1;
                if self.trailers > self.limits.max_trailers {
                    return Err(ChunkedError::TrailersTooLarge);
                }
            }
            _ => {}
        }
        self.state = match (self.state, c) {
            (SizeStart, _) => {
                let d = hex(c).ok_or(ChunkedError::Size)?;
                self.size = u64::from(d);
                Size
            }
            (Size, b'\r') => SizeLf,
            (Size, b';') => Ext,
            (Size, b' ' | b'\t') => SizeWs,
            (Size, _) => {
                let d = hex(c).ok_or(ChunkedError::Size)?;
                if self.size > u64::MAX >> 4 {
                    return Err(ChunkedError::Overflow);
                }
                self.size = self.size << 4 | u64::from(d);
                Size
            }
            (SizeWs, b' ' | b'\t') => SizeWs,
            (SizeWs, b';') => Ext,
            (SizeWs, _) => return Err(ChunkedError::Extension),
            (Ext, b'\r') => SizeLf,
            (Ext, _) if is_text(c) => Ext,
            (Ext, _) => return Err(ChunkedError::Extension),
            (SizeLf, b'\n') => {
                self.line = 0;
                if self.size == 0 {
                    TrailerStart
                } else {
                    self.data = self.data.saturating_add(self.size);
                    if self.data > self.limit {
                        return Err(ChunkedError::TooLarge);
                    }
                    Data(self.size)
                }
            }
            (SizeLf, _) => return Err(ChunkedError::LineEnd),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => SizeStart,
            (DataCr | DataLf, _) => return Err(ChunkedError::DataEnd),
            (TrailerStart, b'\r') => FinalLf,
            (TrailerStart | TrailerName, _) if is_tchar(c) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerStart | TrailerName, _) => return Err(ChunkedError::Trailer),
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if is_text(c) => TrailerValue,
            (TrailerValue, _) => return Err(ChunkedError::Trailer),
            (TrailerLf, b'\n') => TrailerStart,
            (TrailerLf | FinalLf, _) if c != b'\n' => return Err(ChunkedError::LineEnd),
            (FinalLf, _) => Done,
            (TrailerLf, _) | (Data(_) | Done | Failed(_), _) => {
                unreachable!("handled by feed")
            }
        };
        Ok(())
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// HTAB, SP, VCHAR, obs-text: what an extension or a trailer value may hold.
fn is_text(c: u8) -> bool {
    c == b'\t' || c == b' ' || (0x21..=0x7e).contains(&c) || c >= 0x80
}

/// How [`reference_decode`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefError {
    /// The input is a proper prefix of a valid chunked body.
    Incomplete,
    /// No continuation of the input is a valid chunked body.
    Malformed,
}

/// A plain whole-input decoder, written for obviousness rather than speed, to check
/// [`Chunked`] against (tests and the fuzz target only): the data, and the offset just past the
/// body's end. Default limits.
#[doc(hidden)]
pub fn reference_decode(input: &[u8]) -> Result<(Vec<u8>, usize), RefError> {
    reference_decode_with(input, ChunkedLimits::default())
}

/// [`reference_decode`] with the given limits.
#[doc(hidden)]
pub fn reference_decode_with(
    input: &[u8],
    limits: ChunkedLimits,
) -> Result<(Vec<u8>, usize), RefError> {
    use RefError::{Incomplete, Malformed};
    let mut data = Vec::new();
    let mut pos = 0;
    // Chunks, up to and including the last chunk's line.
    loop {
        let (line, ended) = take_line(input, pos);
        if line.len() > limits.max_line {
            return Err(Malformed);
        }
        let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
        let (size, rest) = line.split_at(digits);
        if size.iter().skip_while(|&&c| c == b'0').count() > 16 {
            return Err(Malformed);
        }
        if digits == 0 && (ended || !line.is_empty()) {
            return Err(Malformed);
        }
        // After the size: nothing, or whitespace then `;` then text. A line not ended yet may
        // still be waiting for its `;`.
        let ws = rest
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        let ext_ok = match rest.get(ws) {
            None => !ended || ws == 0,
            Some(b';') => rest[ws + 1..].iter().all(|&c| is_text(c)),
            Some(_) => false,
        };
        if !ext_ok {
            return Err(Malformed);
        }
        pos = line_end(input, pos + line.len())?;
        let size = u64::from_str_radix(std::str::from_utf8(size).unwrap(), 16).unwrap();
        if size == 0 {
            break;
        }
        if ((input.len() - pos) as u64) < size {
            return Err(Incomplete);
        }
        let size = size as usize;
        data.extend_from_slice(&input[pos..pos + size]);
        pos = line_end(input, pos + size)?;
    }
    // The trailer section: lines of `name: value`, then an empty line.
    let trailers = pos;
    loop {
        let (line, ended) = take_line(input, pos);
        // The section's bytes seen so far, this line's line end included.
        let seen = input.len().min(pos + line.len() + 2) - trailers;
        if seen > limits.max_trailers {
            return Err(Malformed);
        }
        let line_ok = match line.iter().position(|&c| c == b':') {
            Some(k) => {
                k > 0
                    && line[..k].iter().all(|&c| is_tchar(c))
                    && line[k + 1..].iter().all(|&c| is_text(c))
            }
            // The final empty line, or the start of a name.
            None if ended => line.is_empty(),
            None => line.iter().all(|&c| is_tchar(c)),
        };
        if !line_ok {
            return Err(Malformed);
        }
        let last = line.is_empty();
        pos = line_end(input, pos + line.len())?;
        if last {
            return Ok((data, pos));
        }
    }
}

/// The bytes from `pos` up to the first CR or LF (or the end), and whether a CR or LF ends
/// them.
fn take_line(input: &[u8], pos: usize) -> (&[u8], bool) {
    let rest = &input[pos..];
    match rest.iter().position(|&c| c == b'\r' || c == b'\n') {
        Some(end) => (&rest[..end], true),
        None => (rest, false),
    }
}

/// At `at` a CRLF must come: the offset after it, or why not.
fn line_end(input: &[u8], at: usize) -> Result<usize, RefError> {
    match &input[at..] {
        [b'\r', b'\n', ..] => Ok(at + 2),
        [] | [b'\r'] => Err(RefError::Incomplete),
        _ => Err(RefError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` cut at `cuts` (sorted offsets); the data, the end, or the error.
    fn run(
        mut dec: Chunked,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, Option<usize>), ChunkedError> {
        let mut data = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            let end = end.clamp(start, input.len());
            let piece = &input[start..end];
            let p = dec.feed(piece, |r| data.extend_from_slice(&piece[r]))?;
            if p.done {
                assert!(dec.is_done());
                return Ok((data, Some(start + p.consumed)));
            }
            assert_eq!(p.consumed, piece.len(), "all consumed until the end");
            start = end;
        }
        Ok((data, None))
    }

    fn whole(input: &[u8]) -> Result<(Vec<u8>, Option<usize>), ChunkedError> {
        run(Chunked::new(), input, &[])
    }

    #[test]
    fn decodes_and_finds_the_end() {
        let body =
            b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\nNEXT";
        let (data, end) = whole(body).unwrap();
        assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(end, Some(body.len() - 4));
        assert_eq!(reference_decode(body), Ok((data, body.len() - 4)));
        for i in 0..body.len() {
            let (d, e) = run(Chunked::new(), body, &[i]).unwrap();
            assert_eq!(
                (d.as_slice(), e),
                (&b"Wikipedia in\r\n\r\nchunks."[..], end)
            );
        }
        let every: Vec<usize> = (0..body.len()).collect();
        assert_eq!(run(Chunked::new(), body, &every).unwrap().1, end);
    }

    #[test]
    fn trailers_and_extensions() {
        let ok = [
            &b"0\r\n\r\n"[..],
            b"000\r\n\r\n",
            b"0;x\r\n\r\n",
            b"1 ;a=\"b;c\"\r\nx\r\n0\t; y\r\n\r\n",
            b"1;\r\nx\r\n0\r\n\r\n",
            b"0\r\nExpires: never\r\nX-Sum:abc\r\nX-E:\r\n\r\n",
            b"a\r\n0123456789\r\n0\r\n\r\n",
            b"A\r\n0123456789\r\n0\r\n\r\n",
            b"0000000000000000000000001\r\nx\r\n0\r\n\r\n",
        ];
        for body in ok {
            let (_, end) = whole(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
            assert_eq!(end, Some(body.len()), "{body:?}");
            assert!(reference_decode(body).is_ok(), "{body:?}");
        }
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let cases: &[(&[u8], ChunkedError)] = &[
            (b"x\r\n", ChunkedError::Size),
            (b"\r\n", ChunkedError::Size),
            (b";x\r\n", ChunkedError::Size),
            (b"-1\r\n", ChunkedError::Size),
            (b"0x5\r\n", ChunkedError::Size),
            (b"+5\r\n", ChunkedError::Size),
            (b"5\n", ChunkedError::Size),
            (b"11111111111111111\r\n", ChunkedError::Overflow),
            (b"5 \r\nhello\r\n", ChunkedError::Extension),
            (b"5 x\r\n", ChunkedError::Extension),
            (b"5;a\nb\r\n", ChunkedError::Extension),
            (b"5;a\0\r\n", ChunkedError::Extension),
            (b"5\rx", ChunkedError::LineEnd),
            (b"5\r\nhelloX", ChunkedError::DataEnd),
            (b"5\r\nhello\rX", ChunkedError::DataEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkedError::DataEnd),
            (b"0\r\n folded: x\r\n\r\n", ChunkedError::Trailer),
            (b"0\r\nX : y\r\n\r\n", ChunkedError::Trailer),
            (b"0\r\n: y\r\n\r\n", ChunkedError::Trailer),
            (b"0\r\nX: a\x01\r\n\r\n", ChunkedError::Trailer),
            (b"0\r\nX: y\n\r\n", ChunkedError::Trailer),
            (b"0\r\n\rX", ChunkedError::LineEnd),
        ];
        for &(body, want) in cases {
            assert_eq!(whole(body), Err(want), "{body:?}");
            assert_eq!(reference_decode(body), Err(RefError::Malformed), "{body:?}");
        }
        // A smuggling shape: a size line with a bare LF then a "request".
        let smuggle = b"5\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(whole(smuggle).is_err());
        // The error sticks.
        let mut dec = Chunked::new();
        assert!(dec.feed(b"z", |_| {}).is_err());
        assert_eq!(dec.feed(b"0\r\n\r\n", |_| {}), Err(ChunkedError::Size));
    }

    #[test]
    fn bounds() {
        let limits = ChunkedLimits {
            max_line: 8,
            max_trailers: 10,
        };
        let dec = || Chunked::with_limits(limits);
        // A size line of exactly max_line bytes passes; one more is refused.
        assert!(run(dec(), b"1;abcdef\r\nx\r\n0\r\n\r\n", &[]).is_ok());
        assert_eq!(
            run(dec(), b"1;abcdefg\r\n", &[]),
            Err(ChunkedError::LineTooLong)
        );
        assert_eq!(
            run(dec(), b"000000001\r\n", &[]),
            Err(ChunkedError::LineTooLong)
        );
        // Trailer section: 10 bytes with its final CRLF pass, 11 do not.
        assert!(run(dec(), b"0\r\nAb: cdef\r\n\r\n", &[]).is_err());
        assert!(run(dec(), b"0\r\nA: cde\r\n\r\n", &[]).is_ok());
        assert_eq!(
            run(dec(), b"0\r\nA: cdef\r\n\r\n", &[]),
            Err(ChunkedError::TrailersTooLarge)
        );
        assert_eq!(
            reference_decode_with(b"0\r\nA: cdef\r\n\r\n", limits),
            Err(RefError::Malformed)
        );
        assert!(reference_decode_with(b"0\r\nA: cde\r\n\r\n", limits).is_ok());
        // The data limit is checked when a size line declares the chunk.
        let mut dec = Chunked::new().with_limit(5);
        assert!(dec.feed(b"3\r\nabc\r\n2\r\nde\r\n", |_| {}).is_ok());
        assert_eq!(dec.data_len(), 5);
        assert_eq!(dec.feed(b"1\r\n", |_| {}), Err(ChunkedError::TooLarge));
        // The largest size: 16 hex digits.
        let mut dec = Chunked::new();
        assert!(dec.feed(b"ffffffffffffffff\r\n", |_| {}).is_ok());
    }

    #[test]
    fn incomplete_bodies_wait() {
        let body = b"5;x\r\nhello\r\n0\r\nA: b\r\n\r\n";
        for cut in 0..body.len() {
            assert_eq!(whole(&body[..cut]).map(|(_, e)| e), Ok(None), "{cut}");
            assert_eq!(
                reference_decode(&body[..cut]),
                Err(RefError::Incomplete),
                "{cut}"
            );
        }
        assert!(reference_decode(b"").is_err());
    }

    /// A valid chunked encoding of `chunks` and the data it carries.
    fn encode(
        chunks: &[(Vec<u8>, usize, usize)],
        last_ext: usize,
        trailers: &[(String, String)],
    ) -> (Vec<u8>, Vec<u8>) {
        const EXTS: [&str; 6] = ["", ";a", ";a=b", " ;q=\"x;y\"", "\t;\t", ";\u{e9}"];
        let mut out = Vec::new();
        let mut data = Vec::new();
        for (chunk, zeros, ext) in chunks {
            let size = format!("{}{:x}", "0".repeat(*zeros % 3), chunk.len());
            let size = if zeros % 2 == 0 {
                size
            } else {
                size.to_uppercase()
            };
            out.extend_from_slice(size.as_bytes());
            out.extend_from_slice(EXTS[ext % EXTS.len()].as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
            data.extend_from_slice(chunk);
        }
        out.extend_from_slice(b"0");
        out.extend_from_slice(EXTS[last_ext % EXTS.len()].as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in trailers {
            out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        (out, data)
    }

    fn chunks() -> impl Strategy<Value = Vec<(Vec<u8>, usize, usize)>> {
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 1..40),
                0..6usize,
                0..12usize,
            ),
            0..6,
        )
    }

    fn trailers() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(("[A-Za-z0-9-]{1,8}", "[ -~]{0,10}"), 0..3)
    }

    /// The verdict both sides agree on: data and end, not yet, or refused.
    #[derive(Debug, PartialEq)]
    enum Verdict {
        Body(Vec<u8>, usize),
        Incomplete,
        Malformed,
    }

    fn reference(input: &[u8], limits: ChunkedLimits) -> Verdict {
        match reference_decode_with(input, limits) {
            Ok((d, e)) => Verdict::Body(d, e),
            Err(RefError::Incomplete) => Verdict::Incomplete,
            Err(RefError::Malformed) => Verdict::Malformed,
        }
    }

    fn incremental(input: &[u8], limits: ChunkedLimits, cuts: &[usize]) -> Verdict {
        match run(Chunked::with_limits(limits), input, cuts) {
            Ok((d, Some(e))) => Verdict::Body(d, e),
            Ok((_, None)) => Verdict::Incomplete,
            Err(_) => Verdict::Malformed,
        }
    }

    fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
        let mut c: Vec<usize> = raw.iter().map(|r| r % (len + 1)).collect();
        c.sort_unstable();
        c
    }

    const SMALL: ChunkedLimits = ChunkedLimits {
        max_line: 12,
        max_trailers: 24,
    };

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any valid encoding, fed in any split, gives the data and the end the reference
        /// decoder gives (and what was encoded), whatever follows it.
        #[test]
        fn valid_encodings_decode_in_any_split(
            chunks in chunks(),
            last_ext in 0..12usize,
            trailers in trailers(),
            tail in prop::collection::vec(any::<u8>(), 0..8),
            raw_cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let (mut body, data) = encode(&chunks, last_ext, &trailers);
            let end = body.len();
            body.extend_from_slice(&tail);
            let want = Verdict::Body(data, end);
            prop_assert_eq!(&reference(&body, ChunkedLimits::default()), &want);
            let cuts = cuts(body.len(), &raw_cuts);
            prop_assert_eq!(&incremental(&body, ChunkedLimits::default(), &cuts), &want);
            let every: Vec<usize> = (0..body.len()).collect();
            prop_assert_eq!(&incremental(&body, ChunkedLimits::default(), &every), &want);
            // Every proper prefix is incomplete, for both.
            let cut = raw_cuts.first().map_or(0, |c| c % end);
            prop_assert_eq!(reference(&body[..cut], ChunkedLimits::default()), Verdict::Incomplete);
            prop_assert_eq!(incremental(&body[..cut], ChunkedLimits::default(), &cuts), Verdict::Incomplete);
        }

        /// A valid encoding with a few bytes changed, inserted or removed: both say the same,
        /// under the default and under small bounds.
        #[test]
        fn mutated_encodings_get_the_same_verdict(
            chunks in chunks(),
            last_ext in 0..12usize,
            trailers in trailers(),
            edits in prop::collection::vec((any::<usize>(), 0..3u8, any::<u8>(), 0..24usize), 1..4),
            raw_cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            const INTERESTING: &[u8] = b"0123456789abcdefABCDEFgxX;:= \t\r\n\"\\\0\x7f\xff";
            let (mut body, _) = encode(&chunks, last_ext, &trailers);
            for (at, kind, byte, pick) in edits {
                let b = if pick < INTERESTING.len() { INTERESTING[pick] } else { byte };
                let at = at % (body.len() + 1);
                match kind {
                    0 if at < body.len() => body[at] = b,
                    1 => body.insert(at, b),
                    _ if at < body.len() => { body.remove(at); }
                    _ => {}
                }
            }
            for limits in [ChunkedLimits::default(), SMALL] {
                let want = reference(&body, limits);
                let cuts = cuts(body.len(), &raw_cuts);
                prop_assert_eq!(incremental(&body, limits, &cuts), want, "{:?}", String::from_utf8_lossy(&body));
            }
        }

        /// Random bytes over the grammar's alphabet: the same verdict.
        #[test]
        fn random_bytes_get_the_same_verdict(
            body in prop::collection::vec(prop::sample::select(b"0123456789aAfFgx;:= \t\r\n\"\\".to_vec()), 0..64),
            raw_cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            for limits in [ChunkedLimits::default(), SMALL] {
                let want = reference(&body, limits);
                let cuts = cuts(body.len(), &raw_cuts);
                prop_assert_eq!(incremental(&body, limits, &cuts), want);
            }
        }

        /// Any bytes at all.
        #[test]
        fn any_bytes_get_the_same_verdict(
            body in prop::collection::vec(any::<u8>(), 0..64),
            raw_cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let want = reference(&body, ChunkedLimits::default());
            let cuts = cuts(body.len(), &raw_cuts);
            prop_assert_eq!(incremental(&body, ChunkedLimits::default(), &cuts), want);
        }
    }
}
