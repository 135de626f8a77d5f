"""The same cluster across hosts: every service in its own network namespace with its own
address on a bridge, talking tcp (bus.hosts, bind_host). The link between the gateway and the
matcher is cut (a blackhole route each way: packets vanish, as with a pulled cable) and then
restored: the gateway's /health reports the outage, the gateway recovers, and nothing that was
acknowledged is lost; an order sent into the outage and retried afterwards is placed once.

Network namespaces need root (CAP_NET_ADMIN) and the `ip` tool; the test creates and removes
them itself and fails, with the reason, where that is not permitted.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for

SERVICES = ("dbwriter", "matcher", "events", "simulator", "gateway")  # start order
PORT = 8000
CONFIG = """
[bus]
transport = "tcp"
tcp_base_port = 5550
heartbeat_s = 0.2
[bus.hosts]
matcher = "{matcher}"
simulator = "{simulator}"
events = "{events}"
[gateway]
host = "{gateway}"
port = {port}
request_timeout_s = 1.5
[db]
url = "sqlite:///{db}"
batch_max_ms = 20
[simulator]
retail_orders_per_tick = 0.0  # the house stays out of the bots' book: positions are exact
[game.roles.fast]
maker_fee_cents = 1
taker_fee_cents = -2
position_limit = 1000
total_position_limit = 10000
max_order_size = 100
max_orders_per_s = 1000
"""


def ip(*args: str) -> str:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10,
                              check=True)
    except FileNotFoundError:
        pytest.fail("the `ip` tool (iproute2) is needed to create network namespaces")
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"ip {' '.join(args)}: {exc.stderr.strip()}") from exc
    return done.stdout


class Network:
    """A bridge, and one namespace ("host") per service with a veth into the bridge."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.prefix = f"itg{tag}"
        self.bridge = f"{self.prefix}br"
        self.subnet = self._free_subnet()
        self.hosts: dict[str, tuple[str, str]] = {}  # service -> (namespace, address)
        self.cuts: list[tuple[str, str]] = []

    @staticmethod
    def _free_subnet() -> str:
        used = ip("-o", "-4", "addr") + ip("-4", "route")
        rng = random.Random()
        while True:
            subnet = f"10.{rng.randint(200, 250)}.{rng.randint(0, 255)}"
            if f"{subnet}." not in used:
                return subnet

    def start(self) -> None:
        try:
            ip("netns", "add", f"{self.prefix}probe")
        except RuntimeError as exc:
            pytest.fail(f"network namespaces are not permitted here ({exc}); this test needs "
                        "root with CAP_NET_ADMIN")
        ip("netns", "del", f"{self.prefix}probe")
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i, service in enumerate(SERVICES):
            ns, veth = f"{self.prefix}{service[:3]}", f"{self.prefix}v{i}"
            addr = f"{self.subnet}.{i + 2}"
            ip("netns", "add", ns)
            self.hosts[service] = (ns, addr)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip("link", "set", veth, "master", self.bridge, "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def address(self, service: str) -> str:
        return self.hosts[service][1]

    def cut(self, a: str, b: str) -> None:
        """Packets between a and b vanish, both ways; everything else still flows."""
        for src, dst in ((a, b), (b, a)):
            ip("-n", self.hosts[src][0], "route", "add", "blackhole", f"{self.address(dst)}/32")
            self.cuts.append((src, dst))

    def restore(self) -> None:
        while self.cuts:
            src, dst = self.cuts.pop()
            ip("-n", self.hosts[src][0], "route", "del", "blackhole", f"{self.address(dst)}/32")

    def close(self) -> None:
        for ns, _ in self.hosts.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)


@pytest.fixture
def network() -> Iterator[Network]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("this test needs root and iproute2 (`ip`) to create network namespaces")
    net = Network()
    try:
        net.start()
        yield net
    finally:
        net.close()



def start_services(net: Network, root: Path) -> dict[str, subprocess.Popen[bytes]]:
    config = root / "cluster.toml"
    config.write_text(CONFIG.format(port=PORT, db=root / "db" / "itg.db",
                                    **{s: net.address(s) for s in SERVICES}))
    procs = {}
    for service in SERVICES:
        ns, addr = net.hosts[service]
        env = {**os.environ, "ITG_DATA_DIR": str(root / service), "ITG_BUS__BIND_HOST": addr}
        if service == "dbwriter":
            env["ITG_DATA_DIR"] = str(root / "db")
        with open(root / f"{service}.log", "wb") as log:
            procs[service] = subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, "-m", "services.cli", "service",
                 service, "--config", str(config), "--log-format", "json"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path.cwd())
    return procs


def stop_services(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for service in reversed(SERVICES):  # producers first, the DB writer last
        proc = procs[service]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Bot:
    def __init__(self, http: httpx.Client, name: str) -> None:
        self.http = http
        r = http.post("/game/teams/register", json={"team_name": name, "role": "fast"})
        assert r.json()["success"], r.text
        self.team_id = r.json()["data"]["team_id"]
        self.headers = {"X-API-Key": r.json()["data"]["api_key"]}

    def order(self, coid: str, side: str, price: float) -> dict[str, Any]:
        r = self.http.post("/exchange/orders", headers=self.headers, json={
            "instrument_id": "SPY_440_PUT", "side": side, "quantity": 1, "price": price,
            "client_order_id": coid})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def get(self, path: str) -> Any:
        r = self.http.get(path, headers=self.headers)
        assert r.status_code == 200 and r.json()["success"], r.text
        return r.json()["data"]


def health(http: httpx.Client) -> dict[str, Any]:
    return http.get("/health").json()  # type: ignore[no-any-return]


def matcher_up(http: httpx.Client) -> bool:
    report = health(http)
    return bool(report["status"] == "ok" and report["services"]["matcher"]["alive"]
                and report["services"]["gateway"]["synced"])


@pytest.mark.timeout(180)
def test_gateway_matcher_link_cut_and_restored_loses_nothing(network: Network,
                                                              short_dir: Path) -> None:
    procs = start_services(network, short_dir)
    http = httpx.Client(base_url=f"http://{network.address('gateway')}:{PORT}", timeout=10)
    try:
        wait_for(lambda: _answers(http) and matcher_up(http) and all(
            health(http)["services"].get(s, {}).get("alive") for s in ("events", "simulator")),
                 60, "the cluster across namespaces")
        for service, proc in procs.items():
            assert proc.poll() is None, f"{service} exited: see {short_dir}/{service}.log"
        maker, taker = Bot(http, "maker"), Bot(http, "taker")
        acked = {}
        for i in range(10):  # resting orders: each acknowledged one must survive
            reply = maker.order(f"rest-{i}", "buy", 1.00 + i / 100)
            assert reply["success"], reply
            acked[reply["order_id"]] = reply
        sell = taker.order("cross-1", "sell", 1.09)
        assert sell["data"]["filled_quantity"] == 1  # traded with rest-9
        del acked[next(k for k, v in acked.items() if v["data"]["client_order_id"] == "rest-9")]
        seq_before = health(http)["services"]["matcher"]["last_seq"]

        network.cut("gateway", "matcher")
        wait_for(lambda: not health(http)["services"]["matcher"]["alive"], 10,
                 "the gateway to report the matcher unreachable")
        outage = health(http)
        assert outage["status"] == "degraded"
        assert outage["services"]["matcher"]["heartbeat_age_s"] >= 0.6
        wait_for(lambda: health(http)["services"]["simulator"]["alive"], 10,
                 "the simulator's heartbeats: only the gateway-matcher link is cut")
        lost = maker.order("during-outage", "buy", 0.50)
        assert lost["success"] is False and lost["error"]["code"] == "PROCESSING_TIMEOUT"
        network.restore()

        wait_for(lambda: matcher_up(http), 60, "the gateway to recover after the link is back")
        # the matcher went on sequencing the simulator's marks (every 5 s) through the outage
        wait_for(lambda: health(http)["services"]["matcher"]["last_seq"] > seq_before, 15,
                 "a heartbeat with the matcher's newer position")
        retry = maker.order("during-outage", "buy", 0.50)  # same client_order_id: placed once
        assert retry["success"], retry
        acked[retry["order_id"]] = retry
        after = maker.order("after-outage", "buy", 0.60)
        assert after["success"]
        acked[after["order_id"]] = after

        open_orders = {o["order_id"]: o for o in maker.get("/exchange/orders")["orders"]}
        assert set(open_orders) == set(acked), "every acknowledged order, each once"
        assert [o["client_order_id"] for o in open_orders.values()].count("during-outage") == 1
        assert maker.get("/positions")["positions"] == {"SPY_440_PUT": 1}
        assert taker.get("/positions")["positions"] == {"SPY_440_PUT": -1}
        db = short_dir / "db" / "itg.db"  # the DB writer's host has them all, once
        wait_for(lambda: set(acked) <= stored_orders(db), 30, "every order in the database")
        assert health(http)["services"]["dbwriter"]["readable"]
    finally:
        network.restore()
        http.close()
        stop_services(procs)
    gateway_log = (short_dir / "gateway.log").read_text()
    assert "no heartbeat from matcher" in gateway_log  # the outage, logged, then its end
    assert "matcher heartbeats are back" in gateway_log
    for service, proc in procs.items():
        assert proc.returncode == 0, f"{service} did not stop cleanly: {proc.returncode}"


def stored_orders(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT order_id FROM orders")}


def _answers(http: httpx.Client) -> bool:
    try:
        http.get("/health")
    except httpx.TransportError:
        return False
    return True
