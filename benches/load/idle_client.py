#!/usr/bin/env python3
"""Idle keep-alive client for benches/idle.sh (DESIGN.md §10: memory per idle connection).

    idle_client.py --port PORT [--host 127.0.0.1] [--conns 8000] [--path /]
                   [--ready FILE] [--release FILE] [--hold 60] [--timeout 60]

Opens CONNS TCP connections to HOST:PORT, sends one keep-alive "GET PATH HTTP/1.1" on each and
reads the whole response (Content-Length or chunked), then keeps every connection open and idle.
At most --window connections are connecting or waiting for their response at any time, so the
proxy never needs more than a few upstream connections and the backlog never overflows.

When every connection is idle (or has failed), it writes one JSON line to --ready (written to a
temporary name and renamed, so its appearance means it is complete) and waits, at most --hold
seconds, until the file --release exists; then it checks which connections the proxy closed in
the meantime, closes all of them and prints one JSON line on stdout:

    {"conns": N, "ok": ..., "failed": ..., "errors": {...}, "setup_s": ..., "closed_by_peer": ...}

Stdlib only (selectors). Raises RLIMIT_NOFILE to its hard limit. Loopback use only.
"""

import argparse
import errno
import json
import os
import resource
import selectors
import socket
import sys
import time

CONNECTING, READING, IDLE, FAILED = range(4)


class Conn:
    __slots__ = ("sock", "state", "buf", "need", "chunked")

    def __init__(self, sock):
        self.sock = sock
        self.state = CONNECTING
        self.buf = b""
        self.need = None  # bytes of the whole response once the head is parsed
        self.chunked = False


def response_complete(c):
    """Whether c.buf holds one whole response; raises ValueError on a bad or non-2xx one."""
    if c.need is None:
        end = c.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(c.buf) > 65536:
                raise ValueError("response head too large")
            return False
        head = c.buf[:end].decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError("bad status line")
        if not parts[1].startswith("2"):
            raise ValueError("status " + parts[1])
        length = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                c.chunked = True
            elif name == "connection" and "close" in value:
                raise ValueError("connection: close")
        if c.chunked:
            c.need = -(end + 4)  # body starts here; complete at the last chunk
        elif length is not None:
            c.need = end + 4 + length
        else:
            raise ValueError("no content-length")
    if c.chunked:
        return c.buf.endswith(b"0\r\n\r\n")
    return len(c.buf) >= c.need


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=8000)
    ap.add_argument("--path", default="/")
    ap.add_argument("--window", type=int, default=64, help="connections in progress at once")
    ap.add_argument("--ready", help="file to write when every connection is idle")
    ap.add_argument("--release", help="file whose existence ends the hold")
    ap.add_argument("--hold", type=float, default=60.0, help="longest hold, seconds")
    ap.add_argument("--timeout", type=float, default=60.0, help="longest set-up, seconds")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if a.conns + 32 > limit:
        sys.exit(f"idle_client: {a.conns} connections need more descriptors than {limit}")

    request = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    conns = []
    errors = {}
    started = time.monotonic()
    deadline = started + a.timeout
    pending = 0  # connections opened and not yet idle or failed

    def fail(c, why):
        nonlocal pending
        errors[why] = errors.get(why, 0) + 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        c.state = FAILED
        pending -= 1

    while True:
        while pending < a.window and len(conns) < a.conns:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(s)
            conns.append(c)
            pending += 1
            rc = s.connect_ex((a.host, a.port))
            if rc not in (0, errno.EINPROGRESS):
                fail(c, "connect: " + os.strerror(rc))
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        if pending == 0 and len(conns) >= a.conns:
            break
        if time.monotonic() > deadline:
            for c in conns:
                if c.state in (CONNECTING, READING):
                    fail(c, "set-up timeout")
            break
        for key, _ in sel.select(timeout=0.5):
            c = key.data
            if c.state == CONNECTING:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, "connect: " + os.strerror(err))
                    continue
                try:
                    c.sock.send(request)  # tiny: fits the empty send buffer at once
                except OSError as e:
                    fail(c, "send: " + (e.strerror or str(e)))
                    continue
                c.state = READING
                sel.modify(c.sock, selectors.EVENT_READ, c)
            elif c.state == READING:
                try:
                    data = c.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(c, "recv: " + (e.strerror or str(e)))
                    continue
                if not data:
                    fail(c, "closed before the response ended")
                    continue
                c.buf += data
                try:
                    done = response_complete(c)
                except ValueError as e:
                    fail(c, "response: " + str(e))
                    continue
                if done:
                    sel.unregister(c.sock)
                    c.buf = b""
                    c.state = IDLE
                    pending -= 1
    setup_s = time.monotonic() - started
    idle = [c for c in conns if c.state == IDLE]
    summary = {
        "conns": a.conns,
        "ok": len(idle),
        "failed": len(conns) - len(idle),
        "errors": errors,
        "setup_s": round(setup_s, 3),
    }

    if a.ready:
        tmp = a.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(summary) + "\n")
        os.rename(tmp, a.ready)
    hold_end = time.monotonic() + a.hold
    while a.release and not os.path.exists(a.release) and time.monotonic() < hold_end:
        time.sleep(0.05)
    summary["held_s"] = round(time.monotonic() - started - setup_s, 3)

    # Which idle connections did the proxy close (readable = EOF or unexpected data)?
    closed = 0
    for c in idle:
        sel.register(c.sock, selectors.EVENT_READ, c)
    for key, _ in sel.select(timeout=0):
        closed += 1
    summary["closed_by_peer"] = closed
    for c in idle:
        sel.unregister(c.sock)
        c.sock.close()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
