"""The origin transport's kept-alive connections: a connection the server closed while idle is not reused."""

from __future__ import annotations

import socket
import threading
import time

from swarmhub.origin.transport import Connections, request_once


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed() -> None:
    """Servers drop idle keep-alive connections (uvicorn after 5 s, the Hub's CDN too); the next request must
    open a new one instead of failing on the dead one and waiting out a retry backoff."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                accepted.append(1)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # keep-alive... then hang up

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/x"
    connections = Connections(timeout=5)
    try:
        assert request_once(connections, "GET", url, {}).body == b"ok"
        time.sleep(0.2)  # the server has closed it by now
        assert request_once(connections, "GET", url, {}).body == b"ok"  # no RetryableError
        assert len(accepted) == 2
    finally:
        server.close()
