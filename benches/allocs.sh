#!/usr/bin/env bash
# Heap allocations per proxied request (DESIGN.md §19: at most 2 on the common path — a GET, a
# small response, warm connections on both sides). Runs a measurement build of tether (feature
# `alloc-count`: its global allocator counts, GET /debug/allocations on the admin listener)
# against one in-script backend, warms a client connection and the upstream one, then reads the
# counter around N requests on that connection. The admin read's own allocations are measured
# (two reads back to back) and taken off. Round robin and cookie pools, one worker thread.
#
#   benches/allocs.sh [N]            (N requests, default 2000)
#
# Build first (its own target dir, so the release binary is not replaced):
#   CARGO_TARGET_DIR=target/alloc-count cargo build --release --locked --features alloc-count
# ALLOC_BIN overrides the binary (default target/alloc-count/release/tether). Ports (127.0.0.1):
# tether 18483, admin 18493, backend 19401. Loopback only; stops what it starts, by pid.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${ALLOC_BIN:-$ROOT/target/alloc-count/release/tether}
N=${1:-2000}
[[ -x $BIN ]] || { echo "$BIN not found: CARGO_TARGET_DIR=target/alloc-count cargo build --release --locked --features alloc-count" >&2; exit 2; }
exec python3 - "$BIN" "$N" <<'PY'
import os, socket, subprocess, sys, tempfile, threading, time, urllib.request

bin_, n = sys.argv[1], int(sys.argv[2])
PORT, ADMIN, BACKEND = 18483, 18493, 19401

def backend():
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", BACKEND)); srv.listen(64)
    def serve(c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                _, buf = buf.split(b"\r\n\r\n", 1)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            c.close()
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()

threading.Thread(target=backend, daemon=True).start()
tmp = tempfile.mkdtemp(prefix="tether-allocs-")
cfg = os.path.join(tmp, "tether.toml")
open(cfg, "w").write(f"""
[server]
listen = ["127.0.0.1:{PORT}"]
admin = "127.0.0.1:{ADMIN}"
threads = 1
[affinity]
secret = "allocs-secret-0123456789abcdef0123456789"
[[route]]
path_prefix = "/cookie"
pool = "c"
[[route]]
pool = "rr"
[pool.rr]
policy = "round_robin"
[[pool.rr.backend]]
id = "b1"
addr = "127.0.0.1:{BACKEND}"
[pool.c]
policy = "cookie"
[[pool.c.backend]]
id = "b1"
addr = "127.0.0.1:{BACKEND}"
""")
log = open(os.path.join(tmp, "tether.log"), "w")
p = subprocess.Popen([bin_, "run", "-c", cfg], stdout=log, stderr=log)
try:
    def count():
        return int(urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/debug/allocations", timeout=5).read())
    for _ in range(100):
        try:
            count(); break
        except Exception:
            time.sleep(0.1)
    else:
        sys.exit("tether did not come up (is it an alloc-count build?)")
    s = socket.create_connection(("127.0.0.1", PORT))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    def req(path, cookie=None):
        extra = f"Cookie: {cookie}\r\n" if cookie else ""
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode())
        status, setc, length = None, None, 0
        while True:
            line = f.readline()
            if status is None:
                status = int(line.split()[1])
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.lower() == "content-length":
                length = int(v)
            if k.lower() == "set-cookie":
                setc = v.strip().split(";")[0]
        f.read(length)
        assert status == 200, status
        return setc
    cookie = None
    for _ in range(200):
        req("/rr"); cookie = req("/cookie", cookie) or cookie
    results = []
    for name, path, ck in (("round_robin", "/rr", None), ("cookie (hit)", "/cookie", cookie)):
        a = count(); b = count()
        overhead = b - a
        for _ in range(n):
            req(path, ck)
        c = count()
        results.append((name, (c - b - overhead) / n))
    print(f"heap allocations per proxied request ({n} requests on a warm connection, one worker):")
    for name, per in results:
        print(f"  {name:14s} {per:6.2f}")
finally:
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
PY
