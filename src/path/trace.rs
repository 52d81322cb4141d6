//! W3C trace context (DESIGN.md §18, <https://www.w3.org/TR/trace-context/>): the `traceparent`
//! a request carries upstream.
//!
//! Owns: parsing the client's `traceparent`, tether's own span id, and the header sent to the
//! backend. A valid incoming one keeps its trace id and flags and gets tether's span as the new
//! parent id (`tracestate` passes through untouched); a missing or malformed one is replaced by a
//! new trace (random trace id and span id, sampled), and a `tracestate` that came with it is
//! dropped, since it described a trace that is no longer the request's. Must not touch:
//! anything else of the request.
//!
//! Ids come from a per-thread `fastrand` generator (seeded from the OS): trace ids must be
//! unique, not secret, and this keeps the request path free of a syscall per request.

use http::HeaderValue;

/// The trace context of one request, as tether forwards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: [u8; 16],
    /// tether's span: the parent id the backend sees.
    pub span_id: [u8; 8],
    pub flags: u8,
    /// The client sent a valid `traceparent` (its `tracestate` is forwarded).
    pub continued: bool,
}

impl Trace {
    /// The request's trace: the client's, continued with a new span, or a new one.
    pub fn of(req: &dyn crate::http::Head) -> Trace {
        let span_id = nonzero_id();
        match req.header(b"traceparent").and_then(parse) {
            Some((trace_id, flags)) => Trace {
                trace_id,
                span_id,
                flags,
                continued: true,
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&nonzero_id());
                trace_id[8..].copy_from_slice(&fastrand::u64(..).to_be_bytes());
                Trace {
                    trace_id,
                    span_id,
                    flags: 0x01,
                    continued: false,
                }
            }
        }
    }

    /// The trace id as 32 lower-case hex digits (the access log's `trace_id`).
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex(&self.trace_id, &mut out);
        out
    }

    /// `00-<trace id>-<span id>-<flags>`.
    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.header_bytes())
            .expect("hex digits and dashes are a valid header value")
    }

    /// [`Trace::header`]'s bytes.
    pub fn header_bytes(&self) -> [u8; 55] {
        let mut b = [0u8; 55];
        b[..3].copy_from_slice(b"00-");
        hex(&self.trace_id, &mut b[3..35]);
        b[35] = b'-';
        hex(&self.span_id, &mut b[36..52]);
        b[52] = b'-';
        hex(&[self.flags], &mut b[53..55]);
        b
    }
}

fn nonzero_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 0xf) as usize];
    }
}

/// Lower-case hex only, as the spec requires.
fn unhex(s: &[u8], out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = (digit(s[2 * i])? << 4) | digit(s[2 * i + 1])?;
    }
    Some(())
}

/// Trace id and flags of a valid `traceparent`: version `00` exactly 55 characters; a later
/// version (not `ff`) at least 55, with a `-` after the flags when longer; neither id all zeros.
fn parse(v: &[u8]) -> Option<([u8; 16], u8)> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let mut version = [0u8; 1];
    unhex(&v[..2], &mut version)?;
    match version[0] {
        0x00 if v.len() != 55 => return None,
        0xff => return None,
        0x00 => {}
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    let (mut trace_id, mut parent, mut flags) = ([0u8; 16], [0u8; 8], [0u8; 1]);
    unhex(&v[3..35], &mut trace_id)?;
    unhex(&v[36..52], &mut parent)?;
    unhex(&v[53..55], &mut flags)?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, flags[0]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::RequestHeader;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn req(tp: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(tp) = tp {
            r.insert_header("traceparent", tp).unwrap();
        }
        r.insert_header("tracestate", "congo=t61rcWkgMzE").unwrap();
        r
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_parent() {
        let r = req(Some(VALID));
        let t = Trace::of(&r);
        assert!(t.continued);
        assert_eq!(&t.trace_id_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
        let sent = t.header();
        let sent = sent.to_str().unwrap();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(sent.ends_with("-01"));
        assert_ne!(&sent[36..52], "00f067aa0ba902b7");
    }

    #[test]
    fn flags_are_kept() {
        let t = Trace::of(&req(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )));
        assert_eq!(t.flags, 0);
        assert!(t.header().to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn invalid_ones_start_a_new_sampled_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let r = req(Some(bad));
            let t = Trace::of(&r);
            assert!(!t.continued, "{bad:?} accepted");
            assert_eq!(t.flags, 1);
            assert_ne!(&t.trace_id_hex(), b"4bf92f3577b34da6a3ce929d0e0e4736");
            let sent = t.header_bytes();
            assert!(parse(&sent).is_some(), "{sent:?}");
        }
        let t = Trace::of(&req(None));
        assert!(!t.continued);
    }

    #[test]
    fn a_later_version_is_read_as_far_as_version_00_goes() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let t = Trace::of(&req(Some(v)));
        assert!(t.continued);
        let sent = t.header();
        assert!(sent
            .to_str()
            .unwrap()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    }

    #[test]
    fn new_traces_differ() {
        let a = Trace::of(&req(None));
        let b = Trace::of(&req(None));
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
    }
}
