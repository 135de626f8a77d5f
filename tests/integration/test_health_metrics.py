"""GET /, /health and /metrics on a real cluster (DB writer, matcher, simulator and gateway
threads over ipc, a real SQLite file, real HTTP): every service's heartbeat age and last seq,
an outage seen and its end, and the metrics in the Prometheus text format with per-hop latency
histograms, queue depths, bad-frame counters, orders, trades and rejects by code.

The simulator is the real service, kept quiet (slow clock, no retail flow), stopped and started
again as a thread: a real restart, under a new epoch. Over ipc: a peer does not reconnect to a
restarted inproc binder. Malformed frames reach the gateway on sim_pub from a PUB of the test's
own, bound there while the simulator is stopped (the gateway's SUB connects: nothing else can
reach it on that channel).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from common import topics
from common.transport import make_socket, send_frame
from services.launcher import Cluster
from services.simulator.service import SimulatorService
from tests.conftest import make_config, wait_for
from tests.integration.gw import Exchange

_SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? (\S+)$')


def metrics(ex: Exchange) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The scrape, parsed: (name, labels) -> value; HELP and TYPE precede every family."""
    r = ex.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out, typed = {}, set()
    for line in r.text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not in the text format: {line!r}"
        name, labels, value = m.groups()
        assert re.sub(r"_(bucket|sum|count)$", "", name) in typed, name
        pairs = re.findall(r'(\w+)="([^"]*)"', labels or "")
        out[(name, frozenset(pairs))] = float(value)
    return out


def value(scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


class Simulator:
    """The real simulator service, run as a thread on the cluster's context; restartable."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.service: SimulatorService | None = None
        self.thread: threading.Thread | None = None
        self.starts = 0  # the gateway should count all but the first as restarts

    def start(self) -> SimulatorService:
        service = SimulatorService(self.cluster.config, self.cluster.ctx)
        thread = threading.Thread(target=service.run, daemon=True, name="test-simulator")
        thread.start()
        assert service.ready.wait(10), "the simulator did not start"
        self.service, self.thread = service, thread
        self.starts += 1
        return service

    def stop(self) -> None:
        if self.service is None or self.thread is None:
            return
        self.service.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the simulator did not stop"
        self.service = self.thread = None

    @property
    def running(self) -> SimulatorService:
        assert self.service is not None, "the simulator is stopped"
        return self.service


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exchange, Simulator]]:
    data = tmp_path_factory.mktemp("ops") / "data"
    run = Path(tempfile.mkdtemp(prefix="itg-"))  # ipc socket paths must stay short
    config = make_config(data, gateway={"port": 0}, db={"batch_max_ms": 10},
                         bus={"heartbeat_s": 0.05, "transport": "ipc", "ipc_dir": str(run)},
                         simulator={"speed": 0.001, "retail_orders_per_tick": 0.0})
    try:
        cluster = Cluster(config, ["dbwriter", "matcher", "gateway"])
        # a peer connecting over ipc before the bind (the DB writer before the matcher) or
        # after a restart tries again every 100 ms by default: every 10 ms here, as inproc
        cluster.ctx.setsockopt(zmq.RECONNECT_IVL, 10)
        with cluster:
            sim = Simulator(cluster)
            exchange = Exchange(cluster)
            try:
                sim.start()
                yield exchange, sim
            finally:
                exchange.http.close()
                sim.stop()  # a producer: stopped before the others
    finally:
        shutil.rmtree(run, ignore_errors=True)


def health(ex: Exchange, path: str = "/health") -> dict[str, Any]:
    r = ex.http.get(path)
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def test_health_reports_heartbeat_age_and_last_seq(setup: tuple[Exchange, Simulator]
                                                   ) -> None:
    ex, sim = setup
    first = sim.running

    def simulator() -> dict[str, Any]:
        return health(ex)["services"].get("simulator", {})  # type: ignore[no-any-return]

    assert first.last_seq() > 0  # its start prices; no tick follows them at this speed
    wait_for(lambda: simulator().get("last_seq") == first.last_seq())
    sim.stop()  # now, for its heartbeats to go stale while the others are checked
    wait_for(lambda: health(ex)["services"]["matcher"]["alive"])
    report, root = health(ex), health(ex, "/")  # / says the same
    assert set(report) == set(root) and set(report["services"]) == set(root["services"])
    matcher = report["services"]["matcher"]
    assert 0 <= matcher["heartbeat_age_s"] < 1 and isinstance(matcher["last_seq"], int)
    assert isinstance(root["services"]["matcher"]["last_seq"], int)
    before = matcher["last_seq"]
    team = ex.register("seq-watcher")
    assert team.order("buy", 1, 1.00)["success"]
    wait_for(lambda: health(ex)["services"]["matcher"]["last_seq"] >= before + 2)
    assert report["services"]["gateway"]["synced"]
    wait_for(lambda: health(ex)["status"] == "ok")
    wait_for(lambda: "matcher" in health(ex)["services"]["dbwriter"]["committed_seq"])
    assert health(ex)["services"]["dbwriter"]["readable"] is True

    # the stopped simulator: reported dead once its heartbeats are stale, then back
    wait_for(lambda: health(ex)["services"]["simulator"]["alive"] is False, timeout=5)
    assert health(ex)["services"]["simulator"]["heartbeat_age_s"] >= 0.15
    restarted = sim.start()  # ...restarted: a new epoch
    assert restarted.epoch != first.epoch
    wait_for(lambda: simulator().get("alive") is True)
    assert health(ex)["services"]["simulator"]["restarts"] == sim.starts - 1 > 0
    scrape = metrics(ex)
    assert value(scrape, "itg_service_restarts", service="simulator") == sim.starts - 1
    assert value(scrape, "itg_service_last_seq", service="simulator") == (
        restarted.last_seq()) > 0
    assert ("itg_service_up", frozenset({("service", "matcher")})) in scrape


def test_metrics_count_orders_rejects_trades_and_time_every_hop(
    setup: tuple[Exchange, Simulator],
) -> None:
    ex, _ = setup
    before = metrics(ex)
    seller, buyer = ex.register("metrics-1"), ex.register("metrics-2")
    assert seller.order("sell", 2, 3.00)["success"]
    assert buyer.order("buy", 2, 3.00)["data"]["filled_quantity"] == 2
    assert buyer.order("buy", 1, 3.001)["error"]["code"] == "INVALID_PRICE"  # the gateway's
    assert buyer.order("buy", 1, 3.00, instrument="NOPE")["error"]["code"] == (
        "INVALID_INSTRUMENT")  # the matcher's
    resting = seller.order("sell", 1, 9.00)["order_id"]
    assert seller.cancel(resting)["success"]
    assert not seller.cancel(resting)["success"]

    def grew(name: str, **labels: str) -> float:
        return value(metrics(ex), name, **labels) - value(before, name, **labels)

    assert grew("itg_orders_total", outcome="accepted") == 3
    assert grew("itg_orders_total", outcome="rejected") == 2
    assert grew("itg_order_rejects_total", code="INVALID_PRICE") == 1
    assert grew("itg_order_rejects_total", code="INVALID_INSTRUMENT") == 1
    assert grew("itg_cancels_total", outcome="ok") == 1
    assert grew("itg_cancels_total", outcome="CANCEL_FAILED") == 1
    assert grew("itg_commands_total", command="NewOrder", outcome="ok") == 3
    assert grew("itg_commands_total", command="NewOrder", outcome="INVALID_INSTRUMENT") == 1
    for hop in ("round_trip", "gateway_to_matcher", "matcher_to_gateway"):
        assert grew("itg_hop_latency_seconds_count", hop=hop, command="NewOrder") == 4, hop
        assert grew("itg_hop_latency_seconds_bucket", hop=hop, command="NewOrder",
                    le="+Inf") == 4
    wait_for(lambda: grew("itg_trades_total", instrument="SPX_4500_CALL") == 1)
    assert grew("itg_traded_contracts_total") == 2
    assert grew("itg_http_requests_total", route="/exchange/orders", status="200") == 5
    wait_for(lambda: value(metrics(ex), "itg_db_commit_lag_seconds_count", stream="matcher")
             > 0, timeout=15)
    scrape = metrics(ex)
    assert value(scrape, "itg_db_up") == 1
    assert value(scrape, "itg_db_stored_records_total", stream="matcher") > 0
    for queue in ("commands_in_flight", "requests_in_flight", "websocket_send"):
        assert (("itg_queue_depth", frozenset({("queue", queue)})) in scrape), queue


def test_bad_frames_are_counted(setup: tuple[Exchange, Simulator]) -> None:
    ex, sim = setup
    base = metrics(ex)
    # the simulator's PUB is the one socket on sim_pub the gateway reads (its SUB connects),
    # and it is the simulator thread's own: a PUB of the test's takes its address meanwhile
    sim.stop()
    pub = make_socket(ex.cluster.ctx, ex.cluster.config, "sim_pub", bind=True)

    def sent_and_counted() -> bool:
        send_frame(pub, topics.heartbeat("simulator"), b"\xc1 not msgpack")  # bridge
        pub.send_multipart([topics.heartbeat("simulator"), b"x", b"three parts"])  # bridge
        send_frame(pub, topics.heartbeat("simulator"),  # a frame, but not a heartbeat in it
                   msgspec.msgpack.encode([{"type": "heartbeat", "service": 5}]))
        scrape = metrics(ex)
        return all(value(scrape, "itg_bad_frames_total", source=s)
                   > value(base, "itg_bad_frames_total", source=s)
                   for s in ("bridge", "monitor_heartbeat"))

    try:
        wait_for(sent_and_counted)
    finally:
        pub.close(linger=0)
        sim.start()
    assert ex.http.get("/").status_code == 200  # nothing broke: the simulator is read again
    wait_for(lambda: health(ex)["services"]["simulator"]["restarts"] == sim.starts - 1)
    assert health(ex)["services"]["simulator"]["alive"] is True

