//! WebSockets through a cookie pool: the `101 Switching Protocols` answer carries the affinity
//! cookie, bytes flow both ways after the upgrade, and a reconnect with the cookie lands on the
//! same backend.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A raw upgrade-capable backend: answers every request with 101 and then echoes bytes.
struct WsBackend {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WsBackend {
    fn start(name: &'static str) -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            // Bounded: stops when told, checked every 10 ms.
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        std::thread::spawn(move || serve(conn, name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        WsBackend {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, name: &str) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    // Read the request head.
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut w = conn;
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nx-backend: {name}\r\n\r\n"
    );
    if w.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 1024];
    // Echo until the peer closes (or 5 s of silence).
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 || w.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Opens an upgraded connection through tether; returns the response head and the stream.
fn upgrade(t: &Tether, cookie: Option<&str>) -> (String, BufReader<TcpStream>) {
    let s = TcpStream::connect(t.listen()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = String::from(
        "GET /chat HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: tether_chat={c}\r\n"));
    }
    req.push_str("\r\n");
    (&s).write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "connection closed: {head}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    (head, r)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn websocket_upgrade_is_sticky_and_bidirectional() {
    let (a, b) = (WsBackend::start("ws1"), WsBackend::start("ws2"));
    let t = Tether::start(&format!(
        r#"
[server]
listen = ["{{LISTEN}}"]
admin = "{{ADMIN}}"
grace_period = "1s"
[affinity]
secret = "websocket-test-secret-0123456789"
[[route]]
pool = "chat"
[pool.chat]
policy = "cookie"
[[pool.chat.backend]]
id = "ws1"
addr = "{}"
[[pool.chat.backend]]
id = "ws2"
addr = "{}"
"#,
        a.addr, b.addr
    ));
    let (head, mut conn) = upgrade(&t, None);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let home = header(&head, "x-backend").unwrap().to_owned();
    let set_cookie = header(&head, "set-cookie").expect("the 101 carries the affinity cookie");
    let cookie = set_cookie
        .strip_prefix("tether_chat=")
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    for msg in [&b"hello"[..], b"second frame", b"\x81\x05bytes"] {
        conn.get_mut().write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        conn.read_exact(&mut back).unwrap();
        assert_eq!(back, msg, "bytes flow both ways after the upgrade");
    }
    drop(conn);
    for _ in 0..5 {
        let (head, _c) = upgrade(&t, Some(&cookie));
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert_eq!(
            header(&head, "x-backend"),
            Some(home.as_str()),
            "reconnects are sticky"
        );
        assert_eq!(header(&head, "set-cookie"), None);
    }
}
