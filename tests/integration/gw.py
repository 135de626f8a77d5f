"""Helpers for gateway tests: a real cluster (matcher + gateway threads over inproc ZeroMQ)
serving on a free port, real HTTP (httpx) and real WebSocket (websockets) clients."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from services.gateway.service import GatewayService
from services.launcher import Cluster
from tests.conftest import make_config

CALL = "SPX_4500_CALL"


@contextmanager
def running(data_dir: Path, services: tuple[str, ...] = ("matcher", "gateway"),
            **overrides: Any) -> Iterator[Exchange]:
    gateway = {"port": 0, **overrides.pop("gateway", {})}
    bus = {"heartbeat_s": 0.05, **overrides.pop("bus", {})}
    config = make_config(data_dir, gateway=gateway, bus=bus, **overrides)
    with Cluster(config, list(services)) as cluster:
        exchange = Exchange(cluster)
        try:
            yield exchange
        finally:
            exchange.http.close()


class Exchange:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        gateway = cluster.services["gateway"]
        assert isinstance(gateway, GatewayService)
        self.gateway = gateway
        self.base = f"http://127.0.0.1:{gateway.port}"
        self.ws_base = f"ws://127.0.0.1:{gateway.port}"
        self.http = httpx.Client(base_url=self.base, timeout=10)

    def register(self, name: str, role: str = "market_maker") -> Team:
        r = self.http.post("/game/teams/register", json={"team_name": name, "role": role})
        assert r.status_code == 200 and r.json()["success"], r.text
        data = r.json()["data"]
        return Team(self, data["team_id"], data["api_key"])


class Team:
    def __init__(self, exchange: Exchange, team_id: str, key: str) -> None:
        self.exchange = exchange
        self.team_id = team_id
        self.key = key
        self.headers = {"X-API-Key": key}

    def get(self, path: str) -> dict[str, Any]:
        r = self.exchange.http.get(path, headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def order(self, side: str, quantity: Any, price: Any = None, instrument: str = CALL,
              **extra: Any) -> dict[str, Any]:
        body = {"instrument_id": instrument, "side": side, "quantity": quantity, **extra}
        if price is not None:
            body["price"] = price
        r = self.exchange.http.post("/exchange/orders", json=body, headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def cancel(self, order_id: str) -> dict[str, Any]:
        r = self.exchange.http.delete(f"/exchange/orders/{order_id}", headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def positions(self) -> dict[str, int]:
        return self.get("/positions")["data"]["positions"]  # type: ignore[no-any-return]

    def open_orders(self) -> list[dict[str, Any]]:
        return self.get("/exchange/orders")["data"]["orders"]  # type: ignore[no-any-return]

    def ws(self, since: int | None = None, **kw: Any) -> Stream:
        query = f"?api_key={self.key}" + ("" if since is None else f"&since={since}")
        kw = {"max_queue": None, "close_timeout": 2, **kw}  # reads on, whatever the test reads
        return Stream(connect(self.exchange.ws_base + "/ws" + query, **kw))


class Stream:
    """A WebSocket client that checks seq contiguity on every message it reads."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn.__enter__()  # closed by close(); tests hold several at once
        self.seen: list[dict[str, Any]] = []

    def next(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = json.loads(self.conn.recv(timeout=timeout))
        if self.seen:
            assert msg["seq"] == self.seen[-1]["seq"] + 1, (self.seen[-1], msg)
        self.seen.append(msg)
        return msg  # type: ignore[no-any-return]

    def until(self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0
              ) -> dict[str, Any]:
        """The first message, already read or still to come, that matches."""
        for msg in self.seen:
            if match(msg):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if match(msg):
                return msg

    def private(self, kind: str, order_id: str | None = None, timeout: float = 5.0
                ) -> dict[str, Any]:
        return self.until(lambda m: m["type"] == kind and (
            order_id is None or m["data"].get("order_id") == order_id), timeout)

    def close(self) -> None:
        self.conn.close()

