//! A minimal gRPC backend for `benches/grpc_load.sh` (DESIGN.md §21): cleartext HTTP/2 (prior
//! knowledge) on the `h2` crate, one thread; every stream's request body is read and answered
//! with `200`, `content-type: application/grpc`, `x-backend: NAME`, one length-prefixed message
//! `NAME` and the trailers `grpc-status: 0`. Fast enough that the proxy in front of it, not the
//! backend, is what a load run measures (the Python gRPC server of the tests is not).
//!
//!   grpc-backend 127.0.0.1:PORT NAME

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use tokio::net::TcpListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(name)) = (args.next(), args.next()) else {
        eprintln!("usage: grpc-backend 127.0.0.1:PORT NAME");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        let mut message = vec![0u8];
        message.extend_from_slice(&(name.len() as u32).to_be_bytes());
        message.extend_from_slice(name.as_bytes());
        let message = Bytes::from(message);
        let name = HeaderValue::from_str(&name).expect("a header-safe name");
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            sock.set_nodelay(true).ok();
            let (message, name) = (message.clone(), name.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::Builder::new()
                    .max_concurrent_streams(1000)
                    .handshake::<_, Bytes>(sock)
                    .await
                else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let (message, name) = (message.clone(), name.clone());
                    tokio::spawn(async move {
                        let mut body = req.into_body();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                        }
                        let mut resp = Response::new(());
                        let h = resp.headers_mut();
                        h.insert("content-type", HeaderValue::from_static("application/grpc"));
                        h.insert("x-backend", name);
                        let Ok(mut send) = respond.send_response(resp, false) else {
                            return;
                        };
                        let _ = send.send_data(message, false);
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", HeaderValue::from_static("0"));
                        let _ = send.send_trailers(trailers);
                    });
                }
            });
        }
    });
}
