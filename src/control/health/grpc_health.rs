//! The health probe over HTTP/2 (DESIGN.md §21), for pools with `protocol = "h2c"` or `"h2"`:
//! `grpc.health.v1.Health/Check` for `grpc_service` (its two protobuf messages encoded and
//! decoded here: one string field out, one enum field back), else `GET path`. A new connection
//! per check, as the HTTP/1.1 probe does, so a check never rides on a connection traffic uses.
//!
//! Owns: the probe's wire format. Must not touch: the verdict's consequences (`health`'s).

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderValue;
use pingora::upstreams::peer::HttpPeer;
use tokio::net::TcpStream;

use crate::config::HealthOpts;

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: u64 = 1;

/// The largest response body a probe reads.
const MAX_BODY: usize = 64 * 1024;

/// What a probe found.
pub enum Answer {
    /// A gRPC check's serving status.
    Grpc(u64),
    /// An HTTP check's status.
    Http(u16),
}

/// The request a check sends, built once per check task.
pub struct Probe {
    method: http::Method,
    uri: http::Uri,
    /// The length-prefixed `HealthCheckRequest` of a gRPC check.
    body: Option<Bytes>,
}

impl Probe {
    pub fn new(h: &HealthOpts, host: &str, tls: bool) -> Probe {
        let scheme = if tls { "https" } else { "http" };
        let (method, path, body) = match &h.grpc_service {
            Some(service) => (
                http::Method::POST,
                "/grpc.health.v1.Health/Check",
                Some(check_request(service)),
            ),
            None => (http::Method::GET, h.path.as_str(), None),
        };
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority(host)
            .path_and_query(path)
            .build()
            .unwrap_or_else(|_| http::Uri::from_static("http://localhost/"));
        Probe { method, uri, body }
    }

    /// One check of the backend at `addr` (over TLS with ALPN `h2` when `tls` is its peer).
    pub async fn run(&self, addr: SocketAddr, tls: Option<&HttpPeer>) -> Result<Answer, String> {
        match tls {
            None => {
                let s = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                s.set_nodelay(true).ok();
                self.exchange(s).await
            }
            Some(peer) => {
                let s = crate::state::upstream_tls::connector()
                    .new_stream(peer)
                    .await
                    .map_err(|e| format!("TLS connect: {e}"))?;
                if s.selected_alpn_proto() != Some(pingora::protocols::ALPN::H2) {
                    return Err("the backend did not negotiate HTTP/2 (ALPN h2)".into());
                }
                self.exchange(s).await
            }
        }
    }

    async fn exchange(
        &self,
        io: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    ) -> Result<Answer, String> {
        let (mut send, conn) = h2::client::handshake(io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let r = self.call(&mut send).await;
        drop(send);
        conn.abort();
        r
    }

    async fn call(&self, send: &mut h2::client::SendRequest<Bytes>) -> Result<Answer, String> {
        let mut req = http::Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("tether-health-check"),
        );
        if self.body.is_some() {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        let (resp, mut body_out) = send
            .send_request(req, self.body.is_none())
            .map_err(|e| format!("request: {e}"))?;
        if let Some(b) = &self.body {
            body_out
                .send_data(b.clone(), true)
                .map_err(|e| format!("request body: {e}"))?;
        }
        let resp = resp.await.map_err(|e| format!("response: {e}"))?;
        let status = resp.status().as_u16();
        if self.body.is_none() {
            return Ok(Answer::Http(status));
        }
        if status != 200 {
            return Err(format!("gRPC health check answered HTTP {status}"));
        }
        let (parts, mut body) = resp.into_parts();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("response body: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            if data.len() + chunk.len() > MAX_BODY {
                return Err("gRPC health response too large".into());
            }
            data.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .map_err(|e| format!("response trailers: {e}"))?;
        // A trailers-only answer carries its status in the head.
        let grpc_status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        match grpc_status {
            Some(0) => {}
            Some(code) => {
                let message = trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-message"))
                    .or_else(|| parts.headers.get("grpc-message"))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                return Err(format!(
                    "gRPC health check failed: grpc-status {code} {message}"
                ));
            }
            None => return Err("gRPC health check answered without grpc-status".into()),
        }
        serving_status(data.freeze())
            .map(Answer::Grpc)
            .ok_or_else(|| "malformed gRPC health response".into())
    }
}

/// A length-prefixed, uncompressed `HealthCheckRequest { string service = 1; }`.
fn check_request(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        put_varint(&mut msg, service.len() as u64);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut out = Vec::with_capacity(5 + msg.len());
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    Bytes::from(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !b.has_remaining() {
            return None;
        }
        let c = b.get_u8();
        v |= u64::from(c & 0x7f) << shift;
        if c & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` (field 1) of a length-prefixed `HealthCheckResponse`; 0 (UNKNOWN) when absent
/// (proto3 leaves default values out). Other fields are skipped; a compressed message is not
/// understood.
fn serving_status(mut b: Bytes) -> Option<u64> {
    if b.len() < 5 || b[0] != 0 {
        return None;
    }
    b.advance(1);
    let len = b.get_u32() as usize;
    if b.len() < len {
        return None;
    }
    let mut msg = b.split_to(len);
    let mut status = 0;
    while msg.has_remaining() {
        let key = get_varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = get_varint(&mut msg)?,
            (_, 0) => {
                get_varint(&mut msg)?;
            }
            (_, 1) if msg.remaining() >= 8 => msg.advance(8),
            (_, 2) => {
                let n = get_varint(&mut msg)? as usize;
                if msg.remaining() < n {
                    return None;
                }
                msg.advance(n);
            }
            (_, 5) if msg.remaining() >= 4 => msg.advance(4),
            _ => return None,
        }
    }
    Some(status)
}

/// The name of a serving status, for the log.
pub fn status_name(s: u64) -> &'static str {
    match s {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "unrecognised",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_request_encodes_the_service_name() {
        assert_eq!(&check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &check_request("a.B")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
    }

    #[test]
    fn serving_status_is_read_from_field_one() {
        let serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 1]);
        assert_eq!(serving_status(serving), Some(SERVING));
        let not_serving = Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 2]);
        assert_eq!(serving_status(not_serving), Some(2));
        // Proto3 leaves UNKNOWN (0) out: an empty message.
        assert_eq!(
            serving_status(Bytes::from_static(&[0, 0, 0, 0, 0])),
            Some(0)
        );
        // An unknown field before it is skipped.
        let with_extra = Bytes::from_static(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]);
        assert_eq!(serving_status(with_extra), Some(SERVING));
        // Compressed or truncated: not understood.
        assert_eq!(
            serving_status(Bytes::from_static(&[1, 0, 0, 0, 2, 0x08, 1])),
            None
        );
        assert_eq!(
            serving_status(Bytes::from_static(&[0, 0, 0, 0, 9, 0x08])),
            None
        );
    }
}
