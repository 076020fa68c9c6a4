"""A minimal HTTP forward proxy for tests: absolute-form requests and CONNECT tunnels, with a request log."""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit


def _relay(a: socket.socket, b: socket.socket) -> None:
    sockets = [a, b]
    while True:
        readable, _, _ = select.select(sockets, [], [], 30)
        if not readable:
            return
        for s in readable:
            data = s.recv(1 << 16)
            if not data:
                return
            (b if s is a else a).sendall(data)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        client = self.request
        while True:  # one request per upstream connection; the client may send several on this one
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(1 << 16)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            headers = [h for h in header_lines if not h.lower().startswith(("proxy-", "connection:"))]
            auth = next(
                (h.split(":", 1)[1].strip() for h in header_lines if h.lower().startswith("proxy-authorization:")), None
            )
            self.server.log.append((method, target, auth))
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                with socket.create_connection((host, int(port))) as upstream:
                    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    _relay(client, upstream)
                return
            url = urlsplit(target)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            with socket.create_connection((url.hostname or "", url.port or 80)) as upstream:
                upstream.sendall(
                    f"{method} {path} HTTP/1.1\r\n".encode()
                    + "\r\n".join([*headers, "Connection: close"]).encode("latin-1")
                    + b"\r\n\r\n"
                    + rest
                )
                while data := upstream.recv(1 << 16):  # Connection: close -> the body ends with the socket
                    client.sendall(data)
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    log: list[tuple[str, str, str | None]]


@contextmanager
def forward_proxy() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.log = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
