"""The supervisord cluster for real: `itg cluster up` starts supervisord from the project's
.venv with every service as its own process over ipc and PostgreSQL; bots trade through the
gateway over HTTP; each process (both DB writers, matcher, events, simulator, gateway) is
killed once with SIGKILL; supervisord must bring each back, and in the end nothing that was
acknowledged is lost: every acknowledged order is in the matcher's journal with the answer the
bot saw, the live accounts equal the journal's, and the database holds every trade and every
acknowledged order exactly once. `itg cluster down` then stops producers first, writers last.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq
from sqlalchemy import create_engine, text

from common.bus_client import MatcherClient
from common.config import Config, load_config
from common.messages import (
    AccountQuery,
    AccountReply,
    Command,
    ExecutionReport,
    Ping,
    Pong,
    Response,
    decode,
)
from services.matcher.engine import Engine
from services.matcher.journal import read_journal
from services.supervisor import Proc, Supervisor
from tests.conftest import FAST_TOML, wait_for

ITG = str(Path(sys.executable).parent / "itg")
CONFIG = """
[bus]
transport = "ipc"
heartbeat_s = 0.2
[gateway]
host = "127.0.0.1"
port = {port}
request_timeout_s = 2.0
[matcher]
snapshot_interval_s = 1.0
keep_full_journal = true  # the test replays the whole game from its journal
[db]
url = "{db_url}"
batch_max_ms = 20
resend_after_s = 1.0
position_snapshot_interval_s = 1.0
"""
RETRY = ("PROCESSING_TIMEOUT", "SERVICE_UNAVAILABLE")
KILL_ORDER = ("dbwriter:dbwriter_0", "dbwriter:dbwriter_1", "matcher", "events", "simulator",
              "gateway")



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bots:
    """Two teams trading with each other over HTTP; every acknowledged order is remembered.

    A request that meets a restarting gateway or matcher is sent again with the same
    client_order_id, so it is placed once whatever happened to the first attempt."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=5)
        self.keys: dict[str, dict[str, str]] = {}
        self.acked: dict[str, tuple[str, dict[str, Any]]] = {}  # order id -> (team, data)
        self.sent = 0

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, f"{method} {path}: no answer in 30 s"
            try:
                r = self.http.request(method, path, **kw)
            except httpx.TransportError:  # the gateway is restarting
                time.sleep(0.05)
                continue
            if r.status_code == 503:  # a key cannot be checked while the matcher restarts
                time.sleep(0.05)
                continue
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            if body["success"] or body["error"]["code"] not in RETRY:
                return body
            time.sleep(0.05)

    def register(self, name: str) -> str:
        body = self._call("POST", "/game/teams/register", json={"team_name": name,
                                                                "role": "fast"})
        assert body["success"], body
        self.keys[body["data"]["team_id"]] = {"X-API-Key": body["data"]["api_key"]}
        return str(body["data"]["team_id"])

    def order(self, team: str, side: str, price: float) -> None:
        self.sent += 1
        body = self._call("POST", "/exchange/orders", headers=self.keys[team], json={
            "instrument_id": "SPX_4200_PUT", "side": side, "quantity": 2, "price": price,
            "client_order_id": f"o-{self.sent}"})
        assert body["success"], body
        self.acked[body["order_id"]] = (team, body["data"])

    def trade(self, seller: str, buyer: str, pairs: int) -> None:
        for i in range(pairs):
            price = 5 + (self.sent % 7) / 10
            self.order(seller, "sell", price)
            self.order(buyer, "buy", price + i % 2)


@contextmanager
def cluster(data: Path, config: Path) -> Iterator[Supervisor]:
    up = subprocess.run([ITG, "cluster", "up", "--data-dir", str(data), "--config", str(config),
                         "--dbwriters", "2", "--timeout", "60"],
                        capture_output=True, text=True, timeout=90, check=False)
    sup = Supervisor(data / "supervisor.sock")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "ITG cluster up: 6 processes" in up.stdout, up.stdout
        yield sup
    finally:
        if sup.running():
            pids = [sup.pid(), *(p.pid for p in sup.processes() if p.pid)]
            down = subprocess.run([ITG, "cluster", "down", "--data-dir", str(data)],
                                  capture_output=True, text=True, timeout=120, check=False)
            print(down.stdout, down.stderr)
            if down.returncode != 0:  # leave nothing running behind a failed test
                for pid in reversed(pids):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def proc(sup: Supervisor, name: str) -> Proc:
    return next(p for p in sup.processes() if p.name == name)


def healthy(base: str) -> bool:
    try:
        health = httpx.get(f"{base}/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return False
    alive = all(health["services"].get(s, {}).get("alive") for s in ("matcher", "events",
                                                                       "simulator"))
    return bool(alive and health["status"] == "ok" and health["services"]["gateway"]["synced"])


Answers = dict[str, tuple[str, Response]]


def replay(config: Config) -> tuple[Engine, Answers, dict[str, tuple[Any, ...]]]:
    """The journal replayed offline: (team, answer) by order id; trades by id."""
    engine = Engine(config.game)
    answers: Answers = {}
    sides: dict[str, dict[str, Any]] = {}
    for seq, ts, payload in read_journal(config.data_path / "matcher"):
        cmd = decode(payload)
        assert isinstance(cmd, Command)
        for _, event in engine.apply(cmd, seq, ts):
            if isinstance(event, Response) and event.order_id:
                answers.setdefault(event.order_id, (getattr(cmd, "team_id", ""), event))
            elif isinstance(event, ExecutionReport):
                trade = sides.setdefault(event.trade_id, {})
                trade["buyer" if event.side == "buy" else "seller"] = event.team_id
                trade["fill"] = (event.instrument_id, event.executed_price,
                                 event.executed_quantity)
    trades = {tid: (t["buyer"], t["seller"], *t["fill"]) for tid, t in sides.items()}
    return engine, answers, trades


def db_rows(url: str) -> tuple[dict[str, tuple[Any, ...]], set[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            trades = {r[0]: tuple(r[1:]) for r in conn.execute(text(
                "SELECT trade_id, buyer, seller, instrument_id, price, quantity FROM trades "
                "WHERE stream = 'matcher'"))}
            orders = set(conn.execute(text("SELECT order_id FROM orders")).scalars())
    finally:
        engine.dispose()
    return trades, orders


def quiet(client: MatcherClient) -> int:
    """The matcher's last seq once it stops moving (nothing sends commands any more)."""
    last = -1
    while True:
        seq = client.call(Ping(), Pong).last_seq
        if seq == last:
            return seq
        last = seq
        time.sleep(0.3)


@pytest.mark.timeout(240)
def test_every_service_killed_once_comes_back_and_nothing_acknowledged_is_lost(
    short_dir: Path, pg_url: str
) -> None:
    port = free_port()
    config_path = short_dir / "cluster.toml"
    config_path.write_text(CONFIG.format(port=port, db_url=pg_url) + FAST_TOML)
    config = load_config(config_path, env={"ITG_DATA_DIR": str(short_dir)})
    base = f"http://127.0.0.1:{port}"
    bots = Bots(base)
    with cluster(short_dir, config_path) as sup:
        seller, buyer = bots.register("alice"), bots.register("bob")
        bots.trade(seller, buyer, 10)
        for name in KILL_ORDER:
            old = proc(sup, name).pid
            assert old is not None, name
            os.kill(old, signal.SIGKILL)
            wait_for(lambda n=name, o=old: (p := proc(sup, n)).state == "RUNNING" and p.pid != o,
                     30, f"supervisord to restart {name}")
            wait_for(lambda: healthy(base), 30, f"a healthy cluster after killing {name}")
            bots.trade(seller, buyer, 4)
        sup.stop("simulator")  # no more retail flow: the journal stops growing
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        client = MatcherClient(config, ctx)
        try:
            client.wait_ready(10)
            quiet(client)
            live = {t: client.call(AccountQuery(team_id=t), AccountReply) for t in bots.keys}
        finally:
            client.close()
            ctx.term()
        engine, answers, trades = replay(config)
        mine = [t for t in trades.values() if {t[0], t[1]} & set(bots.keys)]
        assert len(mine) >= 20, "the bots traded through the cluster"
        wait_for(lambda: db_rows(pg_url)[0] == trades, 30, "every trade in the database")
        stored_orders = db_rows(pg_url)[1]
        check = subprocess.run([ITG, "recover", "--check", "--config", str(config_path),
                                "--data-dir", str(short_dir)], capture_output=True, text=True,
                               timeout=60, check=False)

    for order_id, (team, data) in bots.acked.items():  # acknowledged = journaled, same answer
        owner, answer = answers[order_id]
        assert owner == team and answer.ok and answer.result is not None, order_id
        assert (answer.result.status, answer.result.filled_quantity) == (
            data["status"], data["filled_quantity"]), order_id
        assert order_id in stored_orders, f"acknowledged order {order_id} not in the database"
    assert len(bots.acked) == 2 * (10 + 4 * len(KILL_ORDER))
    for team, reply in live.items():  # the restarted matcher's state is the journal's
        acct = engine.accounts[team]
        assert (reply.positions, reply.cash, reply.fees) == (acct.positions, acct.cash,
                                                            acct.fees)
    assert check.returncode == 0, check.stdout + check.stderr
    log = (short_dir / "supervisord.log").read_text()
    for name in KILL_ORDER:
        assert f"exited: {name.split(':')[-1]} (terminated by SIGKILL; not expected)" in log
    stops = [log.index(f"stopped: {n}") for n in ("gateway", "events", "matcher", "dbwriter_0")]
    assert stops == sorted(stops), "supervisord stops producers first, DB writers last"
