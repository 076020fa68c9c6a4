"""The coordinator's one client (``cluster.client``) against the real coordinator, and against a coordinator
address that redirects: the cluster token goes to the coordinator only."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from support.clients import free_port
from swarmhub.cluster.client import CoordinatorClient, blocking
from swarmhub.cluster.coordinator import CoordinatorServer
from swarmhub.errors import ClusterError

TOKEN = "s3cret-cluster-token"


async def _status(url: str, token: str | None) -> dict[str, object]:
    async with CoordinatorClient(url, token=token) as client:
        return await client.status()


async def _preheat(url: str, token: str | None) -> dict[str, object]:
    async with CoordinatorClient(url, token=token) as client:
        return await client.preheat({"torrent": "not base64!"})


def test_the_client_asks_with_the_token_and_says_what_to_do_when_refused() -> None:
    with CoordinatorServer(token=TOKEN) as coordinator:
        assert blocking(_status(coordinator.url, TOKEN))["nodes"] == []
        with pytest.raises(ClusterError, match="the coordinator refused") as refused:
            blocking(_preheat(coordinator.url, None))
        assert refused.value.hint == "set SWARMHUB_CLUSTER_TOKEN to the coordinator's token"
        with pytest.raises(ClusterError, match="the coordinator refused: preheat needs") as bad:
            blocking(_preheat(coordinator.url, TOKEN))
        assert bad.value.hint == "see swarmhub preheat --help"
    with pytest.raises(ClusterError, match="cannot reach the coordinator at") as gone:
        blocking(_status(f"http://127.0.0.1:{free_port()}", TOKEN))
    assert gone.value.hint == "start it: swarmhub coordinator serve"


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []
    location = ""

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        if self.location:
            self.send_response(307)
            self.send_header("Location", self.location)
            self.send_header("Content-Length", "0")
        else:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
        self.end_headers()
        if not self.location:
            self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[tuple[str, type[_Recorder], type[_Recorder]]]:
    elsewhere = type("Elsewhere", (_Recorder,), {"seen": [], "location": ""})
    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), elsewhere)
    to = f"http://127.0.0.1:{target.server_address[1]}/cluster/status"
    redirecting = type("Redirecting", (_Recorder,), {"seen": [], "location": to})
    front = http.server.ThreadingHTTPServer(("127.0.0.1", 0), redirecting)
    for server in (target, front):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{front.server_address[1]}", redirecting, elsewhere
    finally:
        for server in (target, front):
            server.shutdown()
            server.server_close()


def test_a_redirect_is_not_followed_and_the_token_stays_with_the_coordinator(
    servers: tuple[str, type[_Recorder], type[_Recorder]],
) -> None:
    url, front, elsewhere = servers
    with pytest.raises(ClusterError, match="the coordinator refused"):
        blocking(_status(url, TOKEN))
    assert front.seen == [f"Bearer {TOKEN}"] and elsewhere.seen == []


def test_blocking_runs_a_call_from_inside_an_event_loop_too() -> None:
    import asyncio

    async def inside() -> int:
        async def three() -> int:
            return 3

        return blocking(three())

    assert asyncio.run(inside()) == 3
