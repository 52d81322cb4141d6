//! A real DNS server for the discovery tests: Debian's `dnsmasq` on a free 127.0.0.1 port
//! (UDP and TCP), answering only from a hosts file the test writes ([`Dns::set_hosts`]: written,
//! then `SIGHUP`, which makes dnsmasq read it again) and from records given as options at start
//! (`--srv-host`, `--txt-record`). It never forwards anywhere (`--no-resolv`), and `.test` is
//! its own zone (`--local=/test/`): an unknown name is NXDOMAIN, a known name without the asked
//! type an empty answer (NODATA). Stopped by its own pid when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{eventually, send_signal};

/// The dnsmasq binary (`apt-get install dnsmasq-base`; `.ci/run` installs it).
const DNSMASQ: &str = "/usr/sbin/dnsmasq";

pub struct Dns {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    args: Vec<String>,
}

impl Dns {
    /// Starts dnsmasq answering from `hosts` (lines of `IP NAME`) and the records of `args`
    /// (dnsmasq options such as `--srv-host=_http._tcp.app.test,b1.app.test,8080,0,10`).
    pub fn start(hosts: &str, args: &[&str]) -> Dns {
        let dir = tempfile::tempdir().expect("temp dir for dnsmasq");
        std::fs::write(dir.path().join("hosts"), hosts).expect("write dnsmasq hosts");
        let mut dns = Dns {
            child: None,
            dir,
            port: 0,
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..10 {
            dns.port = free_udp_and_tcp_port();
            if dns.spawn() {
                return dns;
            }
        }
        panic!("dnsmasq did not start on a free port in 10 tries");
    }

    /// The server's address, for `resolvers = [...]`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Replaces the hosts file and tells dnsmasq to read it again.
    pub fn set_hosts(&self, hosts: &str) {
        let path = self.hosts_path();
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, hosts).expect("write dnsmasq hosts");
        std::fs::rename(&tmp, &path).expect("replace dnsmasq hosts");
        let pid = self.child.as_ref().expect("dnsmasq is running").id();
        assert!(send_signal(pid, "HUP"), "kill -HUP {pid} (dnsmasq) failed");
    }

    /// Kills the server (the port stays ours to [`restart`](Dns::restart) on, if free).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the current hosts file.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "dnsmasq is still running");
        let ok = eventually(Duration::from_secs(10), || self.spawn());
        assert!(ok, "dnsmasq could not start again on port {}", self.port);
    }

    fn hosts_path(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// Spawns dnsmasq on `self.port`; true once it accepts TCP there, false if it exited.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(DNSMASQ);
        cmd.args([
            "--keep-in-foreground",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--pid-file=",
            "--log-facility=-",
            "--local=/test/",
        ])
        .arg(format!("--port={}", self.port))
        .arg(format!("--addn-hosts={}", self.hosts_path().display()));
        cmd.args(&self.args);
        // As root, dnsmasq would drop to `nobody`, who cannot read the test's private temp dir.
        if is_root() {
            cmd.args(["--user=root", "--group=root"]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {DNSMASQ} (apt-get install dnsmasq-base): {e}"));
        let addr = self.addr();
        let mut exited = false;
        let up = eventually(Duration::from_secs(10), || {
            if let Ok(Some(_)) = child.try_wait() {
                exited = true;
                return true;
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if exited || !up {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        self.child = Some(child);
        true
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A port free on 127.0.0.1 for both UDP and TCP, below the kernel's ephemeral range: a stopped
/// server must get its port back, and tether's resolver dialling a dead server over TCP could
/// otherwise be given that very port as its own and connect to itself.
fn free_udp_and_tcp_port() -> u16 {
    for _ in 0..100 {
        let port = super::free_port_outside_ephemeral_range();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP in 100 tries");
}
