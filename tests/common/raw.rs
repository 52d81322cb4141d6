//! Raw-socket helpers for tests that must see exactly what crosses the wire: a scriptable TCP
//! backend that records every request head it receives, and readers for heads and bodies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Tether;

pub fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

pub type Handler = dyn Fn(&str, &mut BufReader<TcpStream>, &mut TcpStream) -> bool + Send + Sync;

/// A raw TCP backend: reads each request head, hands it with the connection to `handler`
/// (which reads the body with [`read_body`] if it wants it, writes raw bytes, and returns
/// whether to keep the connection). Records every head and counts connections.
pub struct RawBackend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
    pub conns: Arc<AtomicUsize>,
}

impl RawBackend {
    pub fn start(
        handler: impl Fn(&str, &mut BufReader<TcpStream>, &mut TcpStream) -> bool
            + Send
            + Sync
            + 'static,
    ) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, h, c) = (stop.clone(), heads.clone(), conns.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        let (handler, heads) = (handler.clone(), h.clone());
                        std::thread::spawn(move || serve_raw(conn, &*handler, &heads));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        RawBackend {
            addr,
            stop,
            heads,
            conns,
        }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn serve_raw(conn: TcpStream, handler: &Handler, heads: &Mutex<Vec<String>>) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let Some(head) = read_head(&mut r) else {
            return;
        };
        heads.lock().unwrap().push(head.clone());
        if !handler(&head, &mut r, &mut w) {
            let _ = w.flush();
            return;
        }
    }
}

/// Reads a message head (up to the blank line); `None` at end of stream.
pub fn read_head(r: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

/// Reads the body a head announces (Content-Length or chunked; none otherwise), decoded.
pub fn read_body(head: &str, r: &mut impl BufRead) -> Vec<u8> {
    if header_of(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim().split(";").next().unwrap(), 16).unwrap();
            if n == 0 {
                // Trailers until the blank line.
                while read_line(r) != "\r\n" {}
                return body;
            }
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).unwrap();
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let n: usize = header_of(head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).unwrap();
    body
}

pub fn read_line(r: &mut impl BufRead) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

pub fn client(t: &Tether) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(t.listen()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// Reads one response: (head, decoded body). `head_request`: no body follows.
pub fn read_response(r: &mut BufReader<TcpStream>, head_request: bool) -> (String, Vec<u8>) {
    let head = read_head(r).expect("a response head");
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return (head, Vec::new());
    }
    if header_of(&head, "transfer-encoding").is_some()
        || header_of(&head, "content-length").is_some()
    {
        let body = read_body(&head, r);
        return (head, body);
    }
    let mut body = Vec::new();
    r.read_to_end(&mut body).unwrap();
    (head, body)
}

pub fn status(head: &str) -> u16 {
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}
