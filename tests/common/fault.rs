//! A fault-injecting TCP relay for tests: sits between tether and a backend on a loopback port
//! and misbehaves on purpose — adds latency, resets the connection after a number of response
//! bytes, or accepts and never answers. Threads only; every loop is bounded by the relay's
//! lifetime (dropping it stops accepting; open relays end with their sockets).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the relay misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Forward faithfully, each chunk of the backend's answer delayed by this.
    Latency(Duration),
    /// Forward the request; pass on this many bytes of the answer, then reset the client side
    /// (RST: SO_LINGER 0).
    ResetAfter(usize),
    /// Accept, read what comes, never answer (until the client closes).
    Blackhole,
}

pub struct FaultRelay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    pub accepted: Arc<AtomicUsize>,
}

impl FaultRelay {
    pub fn start(target: SocketAddr, fault: Fault) -> FaultRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        let stop = s.clone();
                        std::thread::spawn(move || relay(client, target, fault, stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultRelay {
            addr,
            stop,
            accepted,
        }
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(client: TcpStream, target: SocketAddr, fault: Fault, stop: Arc<AtomicBool>) {
    client.set_nonblocking(false).ok();
    client.set_read_timeout(Some(Duration::from_secs(10))).ok();
    if let Fault::Blackhole = fault {
        let mut c = client;
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        return;
    }
    let Ok(backend) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        return;
    };
    backend.set_read_timeout(Some(Duration::from_secs(10))).ok();
    // Client -> backend: faithful.
    let (mut c_in, mut b_out) = (client.try_clone().unwrap(), backend.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match c_in.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = b_out.shutdown(Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    if b_out.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    // Backend -> client: the fault.
    let (mut b_in, mut c_out) = (backend, client);
    let mut passed = 0usize;
    let mut buf = [0u8; 16384];
    loop {
        let n = match b_in.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = c_out.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        match fault {
            Fault::Latency(d) => {
                std::thread::sleep(d);
                if c_out.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Fault::ResetAfter(limit) => {
                let take = n.min(limit - passed.min(limit));
                let _ = c_out.write_all(&buf[..take]);
                passed += take;
                if passed >= limit {
                    reset(c_out);
                    return;
                }
            }
            Fault::Blackhole => unreachable!(),
        }
    }
}

/// Closes with RST instead of FIN (SO_LINGER with a zero timeout).
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}
