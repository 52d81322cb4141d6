//! A real HTTP/2 client for the tests: TLS with ALPN `h2` (rustls), then the `h2` crate — the
//! same crate pingora's HTTP/2 speaks, but as a client. One connection carries every request of
//! an [`H2`], so tests exercise multiplexed streams, not a connection per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, ServerName};

use super::Resp;

pub struct H2 {
    rt: tokio::runtime::Runtime,
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    scheme: &'static str,
    /// Set when the connection ended (the server closed it, or sent GOAWAY and finished).
    closed: Arc<std::sync::atomic::AtomicBool>,
}

/// A file of `tests/fixtures/tls/` (the test CA's certificate and key for `localhost`).
pub fn tls_fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
        .display()
        .to_string()
}

/// Reads the first certificate of a PEM file (the tests' self-signed server certificate).
pub fn cert_of(pem_path: &str) -> CertificateDer<'static> {
    let pem = std::fs::read(pem_path).expect("read certificate");
    let cert = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .expect("a certificate")
        .expect("valid PEM");
    cert
}

impl H2 {
    /// Connects to `addr`, trusting `trust`, for the name `server_name`; the `:authority` of every
    /// request is `authority` (a host, optionally with a port). Panics unless ALPN chose `h2`.
    pub fn connect(
        addr: SocketAddr,
        trust: CertificateDer<'static>,
        server_name: &str,
        authority: &str,
    ) -> H2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trust).expect("trust anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(server_name.to_owned()).expect("server name");
        let send = rt.block_on(async {
            // The TLS listener may come up a moment after the plain one the harness waited
            // for: poll (bounded) until it accepts.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let tcp = loop {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(tcp) => break tcp,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        panic!("connect to {addr} within 5 s: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .expect("TLS handshake");
            assert_eq!(
                tls.get_ref().1.alpn_protocol(),
                Some(&b"h2"[..]),
                "ALPN must choose h2"
            );
            h2::client::handshake(tls).await.expect("h2 handshake")
        });
        H2::run(rt, send, authority, "https")
    }

    /// Connects to `addr` over cleartext HTTP/2 with prior knowledge (`h2c`).
    pub fn h2c(addr: SocketAddr, authority: &str) -> H2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let send = rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
            h2::client::handshake(tcp).await.expect("h2c handshake")
        });
        H2::run(rt, send, authority, "http")
    }

    fn run<T>(
        rt: tokio::runtime::Runtime,
        (send, conn): (
            h2::client::SendRequest<Bytes>,
            h2::client::Connection<T, Bytes>,
        ),
        authority: &str,
        scheme: &'static str,
    ) -> H2
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = closed.clone();
        rt.spawn(async move {
            let _ = conn.await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        H2 {
            rt,
            send,
            authority: authority.to_owned(),
            scheme,
            closed,
        }
    }

    /// Whether the connection has ended. Drives the connection for a moment first.
    pub fn is_closed(&mut self) -> bool {
        self.rt
            .block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS`, as the client applies it.
    pub fn max_send_streams(&mut self) -> usize {
        // The server's SETTINGS arrive with its first frames: give them a moment.
        self.rt
            .block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        self.send.current_max_send_streams()
    }

    /// A request whose body is sent as `chunks` (one DATA frame each; no `content-length`
    /// unless `headers` has one); with `reset_after = Some(n)` the stream is reset (CANCEL)
    /// after `n` chunks instead of ending, and `Err` is returned.
    pub fn request_chunks(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        chunks: &[&[u8]],
        reset_after: Option<usize>,
    ) -> Result<Resp, String> {
        let uri = format!("{}://{}{path}", self.scheme, self.authority);
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let req = b.body(()).map_err(|e| e.to_string())?;
        let send = self.send.clone();
        let chunks: Vec<Bytes> = chunks.iter().map(|c| Bytes::copy_from_slice(c)).collect();
        self.rt.block_on(async move {
            let fut = async move {
                let mut send = send.ready().await.map_err(|e| e.to_string())?;
                let (resp, mut stream) = send
                    .send_request(req, chunks.is_empty())
                    .map_err(|e| e.to_string())?;
                let last = chunks.len();
                for (i, c) in chunks.into_iter().enumerate() {
                    if reset_after == Some(i) {
                        // Let the chunks so far reach the proxy and the backend first.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        stream.send_reset(h2::Reason::CANCEL);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        return Err("reset".to_owned());
                    }
                    stream
                        .send_data(c, i + 1 == last)
                        .map_err(|e| e.to_string())?;
                    tokio::task::yield_now().await;
                }
                read_response(resp).await
            };
            tokio::time::timeout(Duration::from_secs(10), fut)
                .await
                .map_err(|_| "timed out".to_owned())?
        })
    }

    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", path, headers, None)
            .unwrap_or_else(|e| panic!("h2 GET {path}: {e}"))
    }

    /// Sends a GET and, without waiting for its response, resets the stream after `after` (the
    /// client gives up: `RST_STREAM` with `CANCEL`).
    pub fn get_then_cancel(&mut self, path: &str, after: Duration) {
        let uri = format!("{}://{}{path}", self.scheme, self.authority);
        let req = http::Request::builder()
            .method("GET")
            .uri(uri)
            .body(())
            .expect("request");
        let send = self.send.clone();
        self.rt.block_on(async move {
            let mut send = send.ready().await.expect("connection ready");
            let (resp, mut stream) = send.send_request(req, true).expect("send request");
            tokio::time::sleep(after).await;
            stream.send_reset(h2::Reason::CANCEL);
            drop(resp);
            // Let the connection task write the reset.
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
    }

    /// One request on the connection's next stream; the whole response body is read.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<Resp, String> {
        let uri = format!("{}://{}{path}", self.scheme, self.authority);
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let req = b.body(()).map_err(|e| e.to_string())?;
        let send = self.send.clone();
        let body = body.map(|s| Bytes::copy_from_slice(s.as_bytes()));
        self.rt.block_on(async move {
            let fut = async move {
                let mut send = send.ready().await.map_err(|e| e.to_string())?;
                let (resp, mut stream) = send
                    .send_request(req, body.is_none())
                    .map_err(|e| e.to_string())?;
                if let Some(body) = body {
                    stream.send_data(body, true).map_err(|e| e.to_string())?;
                }
                read_response(resp).await
            };
            tokio::time::timeout(Duration::from_secs(10), fut)
                .await
                .map_err(|_| "timed out".to_owned())?
        })
    }
}

/// The response of `resp`, its whole body read.
async fn read_response(resp: h2::client::ResponseFuture) -> Result<Resp, String> {
    let resp = resp.await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&out).into_owned(),
    })
}
