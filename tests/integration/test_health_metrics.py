"""GET /, /health and /metrics on a real cluster (DB writer, matcher and gateway threads over
inproc, a real SQLite file, real HTTP): every service's heartbeat age and last seq, an outage
seen and its end, and the metrics in the Prometheus text format with per-hop latency
histograms, queue depths, bad-frame counters, orders, trades and rejects by code.

The test plays the simulator's public feed itself (it binds sim_pub), so it can send the
gateway heartbeats, stop them, restart them under a new epoch and send malformed frames.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from common import topics
from common.messages import Heartbeat, encode_events
from common.transport import make_socket, send_frame
from services.launcher import Cluster
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


class FakeSimulator:
    def __init__(self, cluster: Cluster) -> None:
        self.pub = make_socket(cluster.ctx, cluster.config, "sim_pub", bind=True)
        self.epoch, self.seq = 1, 0

    def beat(self, last_seq: int) -> None:
        self.seq += 1
        send_frame(self.pub, topics.heartbeat("simulator"), encode_events(Heartbeat(
            service="simulator", last_seq=last_seq, seq=self.seq, epoch=self.epoch,
            ts_ns=time.time_ns())))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Exchange, FakeSimulator]]:
    data = tmp_path_factory.mktemp("ops") / "data"
    config = make_config(data, gateway={"port": 0}, bus={"heartbeat_s": 0.05},
                         db={"batch_max_ms": 10})
    with Cluster(config, ["dbwriter", "matcher", "gateway"]) as cluster:
        sim = FakeSimulator(cluster)
        exchange = Exchange(cluster)
        try:
            yield exchange, sim
        finally:
            exchange.http.close()
            sim.pub.close(linger=0)


def health(ex: Exchange, path: str = "/health") -> dict[str, Any]:
    r = ex.http.get(path)
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def test_health_reports_heartbeat_age_and_last_seq(setup: tuple[Exchange, FakeSimulator]
                                                   ) -> None:
    ex, sim = setup

    def simulator() -> dict[str, Any]:
        sim.beat(41)
        return health(ex)["services"].get("simulator", {})  # type: ignore[no-any-return]

    wait_for(lambda: simulator().get("last_seq") == 41)
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

    # the simulator goes silent: reported dead once its heartbeats are stale, then back
    wait_for(lambda: health(ex)["services"]["simulator"]["alive"] is False, timeout=5)
    assert health(ex)["services"]["simulator"]["heartbeat_age_s"] >= 0.15
    sim.epoch = 2  # ...restarted: a new epoch
    wait_for(lambda: simulator().get("alive") is True)
    assert health(ex)["services"]["simulator"]["restarts"] == 1
    scrape = metrics(ex)
    assert value(scrape, "itg_service_restarts", service="simulator") == 1
    assert value(scrape, "itg_service_last_seq", service="simulator") == 41
    assert ("itg_service_up", frozenset({("service", "matcher")})) in scrape


def test_metrics_count_orders_rejects_trades_and_time_every_hop(
    setup: tuple[Exchange, FakeSimulator],
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


def test_bad_frames_are_counted(setup: tuple[Exchange, FakeSimulator]) -> None:
    ex, sim = setup
    base = metrics(ex)

    def sent_and_counted() -> bool:
        send_frame(sim.pub, topics.heartbeat("simulator"), b"\xc1 not msgpack")  # bridge
        sim.pub.send_multipart([topics.heartbeat("simulator"), b"x", b"three parts"])  # bridge
        send_frame(sim.pub, topics.heartbeat("simulator"),  # a frame, but not a heartbeat in it
                   msgspec.msgpack.encode([{"type": "heartbeat", "service": 5}]))
        scrape = metrics(ex)
        return all(value(scrape, "itg_bad_frames_total", source=s)
                   > value(base, "itg_bad_frames_total", source=s)
                   for s in ("bridge", "monitor_heartbeat"))

    wait_for(sent_and_counted)
    assert ex.http.get("/").status_code == 200  # nothing broke

