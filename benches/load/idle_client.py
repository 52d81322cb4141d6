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
import selectors
import socket
import time

from idle_common import add_common_args, raise_nofile, ready_and_hold

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
    add_common_args(ap)
    ap.add_argument("--window", type=int, default=64, help="connections in progress at once")
    a = ap.parse_args()
    raise_nofile(a.conns, "idle_client")

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
    idle = [c for c in conns if c.state == IDLE]
    summary = ready_and_hold(a, len(idle), len(conns) - len(idle), errors, started)

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
