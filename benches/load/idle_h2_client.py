#!/usr/bin/env python3
"""Idle HTTP/2 client for benches/idle.sh --proto h2c|h2 (memory per idle HTTP/2 connection).

    idle_h2_client.py --port PORT [--host 127.0.0.1] [--conns 8000] [--path /] [--tls]
                      [--ready FILE] [--release FILE] [--hold 60] [--timeout 60]

Opens CONNS connections to HOST:PORT — cleartext HTTP/2 with prior knowledge, or with --tls
TLS with ALPN h2 (the certificate is not checked: loopback, a throwaway one) — and on each sends
the preface, an empty SETTINGS, and one GET PATH on stream 1, answers the server's SETTINGS with
an ACK, and reads until stream 1 ends (a non-2xx status or a GOAWAY fails the connection). Then
it keeps every connection open and idle, as a browser keeps its connection to a site.

The same protocol with the driver as idle_client.py: one JSON line to --ready when every
connection is idle (or has failed), a hold until --release exists (at most --hold s), then one
JSON line on stdout: {"conns", "ok", "failed", "errors", "setup_s", "held_s", "closed_by_peer"}.
A connection counts as closed by the peer when it reads EOF or a GOAWAY during the hold (a PING
or a WINDOW_UPDATE does not close it).

Connections are opened one after another (blocking sockets: the handshake dominates and the
proxy is never asked for more than one at a time). Stdlib only. Loopback use only.
"""

import argparse
import json
import select
import socket
import ssl
import struct
import time

from idle_common import add_common_args, raise_nofile, ready_and_hold

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, GOAWAY = 0, 1, 4, 7
END_STREAM, ACK = 0x1, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(index, value):
    """A header field as a literal without indexing, its name from the static table."""
    assert len(value) < 127
    return bytes([index]) + bytes([len(value)]) + value


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("closed by the server")
        out += chunk
    return out


def one_request(sock, block):
    """Sends the preface and the request; reads until stream 1 ends. Raises on failure."""
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, 0x4 | END_STREAM, 1, block))
    status_ok = None
    while True:
        head = read_exact(sock, 9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = read_exact(sock, length)
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(frame(SETTINGS, ACK, 0))
        elif kind == GOAWAY:
            raise ValueError("GOAWAY")
        elif kind == HEADERS and stream == 1 and status_ok is None:
            # :status 200 is static-table entry 8 (0x88); 204 is 9, 206 is 10. Anything else
            # is a literal: not 2xx for this benchmark's purposes.
            status_ok = payload[:1] in (b"\x88", b"\x89", b"\x8a")
            if not status_ok:
                raise ValueError("status not 200/204/206")
        if stream == 1 and kind in (DATA, HEADERS) and flags & END_STREAM:
            return


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--tls", action="store_true", help="TLS with ALPN h2 (else h2c)")
    a = ap.parse_args()
    raise_nofile(a.conns, "idle_h2_client")

    ctx = None
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
    scheme = b"\x87" if a.tls else b"\x86"  # :scheme https / http (static table)
    block = b"\x82" + scheme + literal(4, a.path.encode()) + literal(1, b"localhost")

    idle, errors = [], {}
    started = time.monotonic()
    deadline = started + a.timeout
    for _ in range(a.conns):
        if time.monotonic() > deadline:
            errors["set-up timeout"] = errors.get("set-up timeout", 0) + a.conns - len(idle) - sum(errors.values())
            break
        sock = None
        try:
            sock = socket.create_connection((a.host, a.port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_hostname="localhost")
                if sock.selected_alpn_protocol() != "h2":
                    raise ValueError("ALPN did not select h2")
            one_request(sock, block)
            idle.append(sock)
        except (OSError, ValueError, EOFError) as e:
            why = type(e).__name__ + ": " + str(e)
            errors[why] = errors.get(why, 0) + 1
            if sock is not None:
                sock.close()
    summary = ready_and_hold(a, len(idle), a.conns - len(idle), errors, started)

    # Which connections did the proxy close while they were held (EOF, an error or a GOAWAY)?
    closed = 0
    for sock in idle:
        sock.setblocking(False)
        try:
            poller = select.poll()  # select() stops at descriptor 1023
            poller.register(sock, select.POLLIN)
            if poller.poll(0):
                data = sock.recv(65536)
                # What came first: EOF, or a frame (a GOAWAY closes; a PING does not).
                if not data or (len(data) >= 9 and data[3] == GOAWAY):
                    closed += 1
        except (ssl.SSLWantReadError, BlockingIOError):
            pass
        except OSError:
            closed += 1
        sock.close()
    summary["closed_by_peer"] = closed
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
