#!/usr/bin/env python3
"""Soak driver for benches/soak.sh (issue 14.4): a real tether binary under mixed traffic for a
long while, with reloads, a backend taken out and brought back, and slow clients; reports the
proxy's RSS and open file descriptors at the start and the end, and every failed request.

Everything runs on 127.0.0.1 and stops by itself after --duration seconds (every loop is bounded
by that deadline); tether is started and stopped by this script, by its own pid.

Traffic (each worker loops over its own keep-alive connection, reconnecting when tether closes
it, as clients do):
  get      GET /soak/get                       (round robin pool)
  post     POST /soak/post, Content-Length body (4 KiB)
  chunked  POST /soak/chunked, chunked body (three chunks)
  sticky   GET /shop/cart with the affinity cookie it was given (cookie pool)
  ws       an Upgrade: websocket request, then 20 echo round trips through the tunnel
  slow     a GET whose head is written a few bytes at a time over ~1 s
Chaos: SIGHUP reload every --reload-every seconds (a weight flips each time); every
--kill-every seconds one backend is put in maint through the admin API, killed once tether has
no request in flight on it, restarted 5 s later and made ready again (the operator's way; a
backend killed under in-flight requests fails those by definition).
"""

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

BACKENDS = 3


# ---------------------------------------------------------------------------------------------
# Backends: a small HTTP/1.1 server (Content-Length and chunked request bodies, keep-alive) that
# also accepts `Upgrade: websocket` and then echoes every byte.


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return method, target, headers


async def read_body(reader, headers):
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return body
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return b""


class Backend:
    def __init__(self, name, port):
        self.name, self.port, self.server = name, port, None
        self.conns = set()

    async def start(self):
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", self.port)

    async def stop(self):
        """Stops like a killed process: the listener and every open connection close."""
        self.server.close()
        for w in list(self.conns):
            w.close()
        await self.server.wait_closed()
        self.server = None

    async def serve(self, reader, writer):
        self.conns.add(writer)
        try:
            while True:
                method, target, headers = await read_head(reader)
                if headers.get("upgrade", "").lower() == "websocket":
                    writer.write(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: Upgrade\r\n\r\n"
                    )
                    await writer.drain()
                    while True:
                        data = await reader.read(4096)
                        if not data:
                            break
                        writer.write(data)
                        await writer.drain()
                    break
                body = await read_body(reader, headers)
                out = f"{self.name} {method} {target} {len(body)}".encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                    % (len(out), self.name.encode(), out)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.CancelledError):
            pass
        finally:
            self.conns.discard(writer)
            writer.close()


# ---------------------------------------------------------------------------------------------
# Clients.


class Stats:
    def __init__(self):
        self.ok = {}
        self.failed = {}
        self.errors = []

    def good(self, kind):
        self.ok[kind] = self.ok.get(kind, 0) + 1

    def bad(self, kind, why):
        self.failed[kind] = self.failed.get(kind, 0) + 1
        if len(self.errors) < 50:
            self.errors.append(f"{time.strftime('%H:%M:%S')} {kind}: {why}")


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    n = int(headers.get("content-length", ["0"])[0])
    body = await reader.readexactly(n)
    close = any(v.lower() == "close" for v in headers.get("connection", []))
    return status, headers, body, close


class Conn:
    """One client keep-alive connection, reopened when tether closes it."""

    def __init__(self, port):
        self.port, self.r, self.w = port, None, None

    async def ensure(self):
        if self.w is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)

    def drop(self):
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    async def exchange(self, data, slow=False):
        await self.ensure()
        if slow:
            for i in range(0, len(data), 8):
                self.w.write(data[i : i + 8])
                await self.w.drain()
                await asyncio.sleep(0.03)
        else:
            self.w.write(data)
            await self.w.drain()
        status, headers, body, close = await asyncio.wait_for(read_response(self.r), 10)
        if close:
            self.drop()
        return status, headers, body


async def worker(kind, port, deadline, stats):
    conn = Conn(port)
    cookie = None
    payload = b"x" * 4096
    while time.monotonic() < deadline:
        try:
            if kind == "get":
                req = b"GET /soak/get HTTP/1.1\r\nHost: soak\r\n\r\n"
                status, _, body = await conn.exchange(req)
            elif kind == "post":
                req = (
                    b"POST /soak/post HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n"
                    % len(payload)
                ) + payload
                status, _, body = await conn.exchange(req)
                if status == 200 and not body.endswith(b" 4096"):
                    raise ValueError(f"body length not echoed: {body!r}")
            elif kind == "chunked":
                req = (
                    b"POST /soak/chunked HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n6\r\n world\r\n1\r\n!\r\n0\r\n\r\n"
                )
                status, _, body = await conn.exchange(req)
                if status == 200 and not body.endswith(b" 12"):
                    raise ValueError(f"chunked body not relayed whole: {body!r}")
            elif kind == "sticky":
                c = b"Cookie: %s\r\n" % cookie.encode() if cookie else b""
                req = b"GET /shop/cart HTTP/1.1\r\nHost: soak\r\n" + c + b"\r\n"
                status, headers, body = await conn.exchange(req)
                for v in headers.get("set-cookie", []):
                    cookie = v.split(";", 1)[0]
            elif kind == "slow":
                req = b"GET /soak/slow HTTP/1.1\r\nHost: soak\r\nX-Slow: yes\r\n\r\n"
                status, _, body = await conn.exchange(req, slow=True)
            elif kind == "ws":
                await ws_session(port)
                stats.good(kind)
                continue
            if status != 200:
                stats.bad(kind, f"status {status}: {body[:80]!r}")
                conn.drop()
            else:
                stats.good(kind)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError, ValueError) as e:
            stats.bad(kind, repr(e))
            conn.drop()
            await asyncio.sleep(0.05)
    conn.drop()


async def ws_session(port):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(
            b"GET /soak/ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ValueError(f"no 101: {head[:60]!r}")
        for i in range(20):
            msg = b"frame-%d" % i
            w.write(msg)
            await w.drain()
            got = await asyncio.wait_for(r.readexactly(len(msg)), 10)
            if got != msg:
                raise ValueError(f"echo {got!r} != {msg!r}")
            await asyncio.sleep(0.05)
    finally:
        w.close()


# ---------------------------------------------------------------------------------------------
# tether and the chaos.


def config(port, admin, backends, weight):
    pools = ""
    for pool in ("soak", "shop"):
        for i, b in enumerate(backends):
            w = weight if i == 0 else 1
            pools += (
                f'[[pool.{pool}.backend]]\nid = "{b.name}"\naddr = "127.0.0.1:{b.port}"\nweight = {w}\n'
            )
    return f"""
[server]
listen = ["127.0.0.1:{port}"]
admin = "127.0.0.1:{admin}"
grace_period = "2s"
header_timeout = "5s"
[affinity]
secret = "soak-secret-0123456789abcdef0123456789"
[[route]]
path_prefix = "/shop/"
pool = "shop"
[[route]]
pool = "soak"
[pool.soak]
policy = "round_robin"
retries = 2
[pool.soak.health]
path = "/health"
interval = "1s"
[pool.shop]
policy = "cookie"
retries = 2
{pools}"""


def proc_stats(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds


def admin_post(admin, path):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", data=b"", method="POST")
    urllib.request.urlopen(req, timeout=5).read()


def in_flight(admin, pool, backend):
    status = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5))
    for p in status.get("pools", []):
        if p.get("name") == pool:
            for b in p.get("backends", []):
                if b.get("id") == backend:
                    return b.get("in_flight", 0)
    return 0


async def chaos(args, tether, cfg_path, backends, deadline, log):
    weight, next_reload, next_kill, victim = 1, time.monotonic(), time.monotonic() + args.kill_every, 0
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_reload:
            weight = 3 if weight == 1 else 1
            with open(cfg_path, "w") as f:
                f.write(config(args.port, args.admin, backends, weight))
            tether.send_signal(signal.SIGHUP)
            log["reloads"] += 1
            next_reload = now + args.reload_every
        if now >= next_kill and deadline - now > 15:
            b = backends[victim % len(backends)]
            victim += 1
            for pool in ("soak", "shop"):
                await loop.run_in_executor(None, admin_post, args.admin, f"/pools/{pool}/backends/{b.name}/maint")
            for _ in range(100):  # bounded: 10 s for its requests to finish
                busy = 0
                for pool in ("soak", "shop"):
                    busy += await loop.run_in_executor(None, in_flight, args.admin, pool, b.name)
                if busy == 0:
                    break
                await asyncio.sleep(0.1)
            await b.stop()
            log["kills"] += 1
            await asyncio.sleep(5)
            await b.start()
            for pool in ("soak", "shop"):
                await loop.run_in_executor(None, admin_post, args.admin, f"/pools/{pool}/backends/{b.name}/ready")
            next_kill = time.monotonic() + args.kill_every
        await asyncio.sleep(0.2)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tether", required=True)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--port", type=int, default=18383)
    ap.add_argument("--admin", type=int, default=18393)
    ap.add_argument("--backend-port", type=int, default=19301)
    ap.add_argument("--reload-every", type=float, default=3)
    ap.add_argument("--kill-every", type=float, default=60)
    ap.add_argument("--workers", type=int, default=4, help="workers per traffic kind")
    args = ap.parse_args()

    backends = [Backend(f"s{i + 1}", args.backend_port + i) for i in range(BACKENDS)]
    for b in backends:
        await b.start()
    tmp = tempfile.mkdtemp(prefix="tether-soak-")
    cfg_path = os.path.join(tmp, "tether.toml")
    with open(cfg_path, "w") as f:
        f.write(config(args.port, args.admin, backends, 1))
    log_file = open(os.path.join(tmp, "tether.log"), "w")
    tether = subprocess.Popen([args.tether, "run", "-c", cfg_path], stdout=log_file, stderr=log_file)
    try:
        for _ in range(100):  # bounded wait for the listener
            try:
                _, w = await asyncio.open_connection("127.0.0.1", args.port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        # Warm up, then the starting figures.
        warm = Stats()
        await asyncio.gather(*(worker(k, args.port, time.monotonic() + 5, warm) for k in ("get", "post", "sticky", "ws")))
        start = proc_stats(tether.pid)
        stats, log = Stats(), {"reloads": 0, "kills": 0}
        deadline = time.monotonic() + args.duration
        kinds = ["get", "post", "chunked", "sticky", "ws", "slow"]
        tasks = [worker(k, args.port, deadline, stats) for k in kinds for _ in range(args.workers)]
        tasks.append(chaos(args, tether, cfg_path, backends, deadline, log))
        samples = []

        async def sample():
            while time.monotonic() < deadline:
                samples.append(proc_stats(tether.pid))
                await asyncio.sleep(max(1.0, args.duration / 20))

        tasks.append(sample())
        await asyncio.gather(*tasks)
        await asyncio.sleep(2)  # idle connections settle
        end = proc_stats(tether.pid)
        total_ok = sum(stats.ok.values())
        total_failed = sum(stats.failed.values())
        report = {
            "duration_s": args.duration,
            "requests_ok": stats.ok,
            "requests_failed": stats.failed,
            "reloads": log["reloads"],
            "backend_restarts": log["kills"],
            "rss_kib_start": start[0],
            "rss_kib_end": end[0],
            "fds_start": start[1],
            "fds_end": end[1],
            "rss_kib_samples": [s[0] for s in samples],
            "fds_samples": [s[1] for s in samples],
            "errors": stats.errors,
            "tether_log": os.path.join(tmp, "tether.log"),
        }
        print(json.dumps(report, indent=1))
        print(
            f"soak: {total_ok} ok, {total_failed} failed; {log['reloads']} reloads, "
            f"{log['kills']} backend restarts; RSS {start[0]} -> {end[0]} KiB; fds {start[1]} -> {end[1]}",
            file=sys.stderr,
        )
        return 0 if total_failed == 0 else 1
    finally:
        tether.terminate()
        try:
            tether.wait(10)
        except subprocess.TimeoutExpired:
            tether.kill()
        for b in backends:
            if b.server is not None:
                await b.stop()


if __name__ == "__main__":
    random.seed(1)
    sys.exit(asyncio.run(main()))
