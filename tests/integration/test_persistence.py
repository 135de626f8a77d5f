"""The database as a projection of the matcher: every trade lands exactly once, whatever
happens to the writers or the database, and positions rebuild from the database alone."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from common.bus_client import MatcherClient
from common.config import Config, load_config
from common.messages import (
    AccountQuery,
    AccountReply,
    Command,
    NewOrder,
    Ping,
    Pong,
    RegisterTeam,
    decode,
)
from common.records import TradeRecord
from services.dbwriter.recover import differences
from services.dbwriter.store import Store
from services.launcher import Cluster
from services.matcher.engine import Engine
from services.matcher.journal import read_journal
from tests.conftest import FAST, FAST_TOML, make_config, snapshot_from, wait_for
from tests.game_master import GameMaster

INSTRUMENTS = ("SPX_4500_CALL", "SPX_4400_PUT", "SPY")



def random_order(rng: random.Random, teams: list[str]) -> NewOrder:
    return NewOrder(team_id=rng.choice(teams), instrument_id=rng.choice(INSTRUMENTS),
                    side=rng.choice(("buy", "sell")), quantity=rng.randint(1, 20),
                    price=rng.randint(995, 1005))


def register(client: MatcherClient, n: int, prefix: str = "t") -> list[str]:
    teams = []
    for i in range(n):
        r = client.request(RegisterTeam(team_name=f"{prefix}{i}", role="fast",
                                        key_hash=f"{prefix}k{i}"))
        teams.append(r.result.team_id)  # type: ignore[union-attr]
    return teams


def send_orders(client: MatcherClient, orders: list[NewOrder], timeout: float = 60) -> int:
    """Send and wait for every answer; returns how many were accepted."""
    req_ids = {client.send(o) for o in orders}
    accepted = 0
    deadline = time.monotonic() + timeout
    while req_ids:
        response = client.responses(max(0.1, deadline - time.monotonic()))
        if response.req_id in req_ids:
            req_ids.discard(response.req_id)
            accepted += response.ok
    return accepted


def trade(cluster: Cluster, teams: int, orders: int, seed: int, prefix: str = "t") -> int:
    """Register `teams` and send `orders` random orders; returns how many were accepted."""
    client = MatcherClient(cluster.config, cluster.ctx)
    try:
        client.wait_ready()
        ids = register(client, teams, prefix)
        rng = random.Random(seed)
        return send_orders(client, [random_order(rng, ids) for _ in range(orders)])
    finally:
        client.close()


FULL = {"keep_full_journal": True}  # for tests that read the whole game from the journal


def journal_trades(config: Config) -> set[tuple[Any, ...]]:
    """The matcher's trades, from its journal: what the trades table must equal."""
    assert config.matcher.keep_full_journal, "the whole game is read from the journal"
    engine = Engine(config.game)
    trades = set()
    for seq, ts, payload in read_journal(Path(config.data_dir) / "matcher"):
        cmd = decode(payload)
        assert isinstance(cmd, Command)
        engine.apply(cmd, seq, ts)
        trades |= {trade_row(r) for r in engine.take_records() if isinstance(r, TradeRecord)}
    return trades


def trade_row(r: TradeRecord) -> tuple[Any, ...]:
    return (r.trade_id, r.instrument_id, r.price, r.quantity, r.buyer, r.seller, r.buyer_fee,
            r.seller_fee)


def db_trades(url: str) -> list[tuple[Any, ...]]:
    with Store(url) as store, store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "select trade_id, instrument_id, price, quantity, buyer, seller, buyer_fee, "
            "seller_fee from trades").all()
    return [tuple(r) for r in rows]


def db_trade_count(url: str) -> int:
    with Store(url) as store, store.engine.connect() as conn:
        return int(conn.exec_driver_sql("select count(*) from trades").scalar_one())


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/itg.db"
    return str(request.getfixturevalue("pg_url"))


def test_trades_land_once_and_positions_rebuild_from_the_db(tmp_path: Path, db_url: str) -> None:
    config = make_config(tmp_path / "data", game={"roles": {"fast": FAST}}, matcher=FULL, db={
        "url": db_url, "batch_max_ms": 20, "position_snapshot_interval_s": 0.3,
        "resend_after_s": 1})
    with Cluster(config, ["dbwriter", "matcher"]) as cluster:
        client = MatcherClient(config, cluster.ctx)
        client.wait_ready()
        teams = register(client, 4)
        rng = random.Random(3)
        assert send_orders(client, [random_order(rng, teams) for _ in range(1500)]) > 1000
        matcher: Any = cluster.services["matcher"]
        records, teams_total = matcher.engine.counters["record"], len(matcher.engine.accounts)
        wait_for(lambda: matcher.engine.counters["record"] >= records + teams_total,
                 what="a position snapshot after the last trade")
        wait_for(lambda: matcher.outbox.pending_records == 0 and not matcher._waiting,
                 what="every record acknowledged")
        live = {t: client.call(AccountQuery(team_id=t), AccountReply) for t in teams}
        client.close()
    expected = journal_trades(config)
    stored = db_trades(db_url)
    assert len(stored) == len(set(stored)) == len(expected) > 300
    assert set(stored) == expected
    with Store(db_url) as store:
        rebuilt = store.positions_from_db()
        with store.engine.connect() as conn:
            snapshots = conn.exec_driver_sql("select count(*) from position_snapshots").scalar()
    assert snapshots and snapshots > 0
    assert differences({t: rebuilt[t] for t in teams}, live) == []


def test_records_waiting_for_a_writer_at_a_snapshot_reach_the_db_after_a_restart(
        tmp_path: Path) -> None:
    """No writer while trading: the records wait, a snapshot keeps them (closed batches as the
    outbox's frames); restarted with a writer, all of them land, once."""
    url = f"sqlite:///{tmp_path}/itg.db"
    config = make_config(tmp_path / "data", game={"roles": {"fast": FAST}},
                         matcher={**FULL, "snapshot_interval_s": 0.2},
                         db={"url": url, "batch_max_rows": 5, "batch_max_ms": 20,
                             "resend_after_s": 1})  # batches close by count too: never all open
    with Cluster(config, ["matcher"]) as cluster:
        assert trade(cluster, teams=3, orders=400, seed=5) > 300
        state = snapshot_from(Path(config.data_dir), cluster.services["matcher"].last_seq())
    assert state.unacked_batches  # the path under test
    with Cluster(config, ["dbwriter", "matcher"]) as cluster:
        matcher: Any = cluster.services["matcher"]
        wait_for(lambda: matcher.outbox.pending_records == 0 and not matcher._waiting,
                 what="every record acknowledged")
    stored = db_trades(url)
    assert len(stored) == len(set(stored)) == len(journal_trades(config)) > 50
    assert set(stored) == journal_trades(config)


def test_house_teams_reach_the_db_when_a_snapshot_comes_before_any_command(
        tmp_path: Path) -> None:
    """Their records waited for the first command's batch; a snapshot before it kept them
    nowhere, and the restart rebuilt them as already sent: never stored, a hole at seq 1."""
    url = f"sqlite:///{tmp_path}/itg.db"
    config = make_config(tmp_path / "data", matcher={"snapshot_interval_s": 0.1},
                         db={"url": url, "batch_max_ms": 20})
    with Cluster(config, ["matcher"]):
        snapshot_from(Path(config.data_dir), 0)
    with Cluster(config, ["dbwriter", "matcher"]) as cluster:
        matcher: Any = cluster.services["matcher"]
        house = set(matcher.engine.teams)
        wait_for(lambda: matcher.outbox.pending_records == 0, what="every record acknowledged")
    with Store(url) as store, store.engine.connect() as conn:
        stored = {r[0] for r in conn.exec_driver_sql("select team_id from teams")}
    assert stored == house and house


def test_a_house_role_added_between_runs_gets_its_team_and_it_reaches_the_db(
        tmp_path: Path) -> None:
    """The restart restored the old game's teams over the new engine's: the new house role's
    team was dropped, and every order of its retail flow refused (TEAM_NOT_FOUND)."""
    url = f"sqlite:///{tmp_path}/itg.db"
    house = {"maker_fee_cents": -1, "taker_fee_cents": -3, "position_limit": 1000,
             "total_position_limit": 1000, "max_order_size": 50, "max_orders_per_s": 1000,
             "registrable": False}

    def config(*roles: str) -> Config:
        return make_config(tmp_path / "data", db={"url": url, "batch_max_ms": 20},
                           game={"roles": {role: house for role in roles}})
    with Cluster(config(), ["matcher"]) as cluster:
        assert "HOUSE_3" not in cluster.services["matcher"].engine.teams  # type: ignore[attr-defined]
    with Cluster(config("house_3"), ["dbwriter", "matcher"]) as cluster:
        matcher: Any = cluster.services["matcher"]
        client = MatcherClient(cluster.config, cluster.ctx)
        answer = client.request(NewOrder(team_id="HOUSE_3", instrument_id="SPY", side="buy",
                                         quantity=5, price=44000))
        client.close()
        assert answer.ok, answer
        wait_for(lambda: matcher.outbox.pending_records == 0, what="every record acknowledged")
    with Store(url) as store, store.engine.connect() as conn:
        stored = {r[0] for r in conn.exec_driver_sql("select team_id from teams")}
    assert "HOUSE_3" in stored


def test_a_matcher_on_a_new_data_dir_is_refused_by_the_old_games_database(
        tmp_path: Path) -> None:
    """Its records, teams and orders are numbered from 1 again: skipped as already stored,
    the new game would vanish from the database without a word. They are refused and kept."""
    url = f"sqlite:///{tmp_path}/itg.db"
    db = {"url": url, "batch_max_ms": 20, "resend_after_s": 0.2}
    old = make_config(tmp_path / "old", game={"roles": {"fast": FAST}}, matcher=FULL, db=db)
    with Cluster(old, ["dbwriter", "matcher"]) as cluster:
        trade(cluster, teams=2, orders=100, seed=3)
        matcher: Any = cluster.services["matcher"]
        wait_for(lambda: matcher.outbox.pending_records == 0, what="the old game stored")
    before = db_trades(url)
    assert before
    new = make_config(tmp_path / "new", game={"roles": {"fast": FAST}}, db=db)
    with Cluster(new, ["dbwriter", "matcher"]) as cluster:
        trade(cluster, teams=2, orders=100, seed=4)
        writer, matcher = cluster.services["dbwriter"], cluster.services["matcher"]
        wait_for(lambda: writer.counters["foreign_batches"] >= 2, what="re-sent and refused")
        assert matcher.outbox.pending_records > 0 and writer.counters["batches"] == 0
    assert db_trades(url) == before  # nothing of the new game mixed in, nothing lost
    with Cluster(old, ["dbwriter", "matcher"]) as cluster:  # its own data dir: welcome back
        trade(cluster, teams=2, orders=50, seed=5, prefix="later")
        matcher = cluster.services["matcher"]
        wait_for(lambda: matcher.outbox.pending_records == 0, what="the old game goes on")
    assert set(db_trades(url)) == journal_trades(old) > set(before)


# --- processes: the matcher and two writers, killed and restarted ---

PROCESS_CONFIG = """
data_dir = "{dir}/data"
log_level = "WARNING"
[bus]
transport = "ipc"
ipc_dir = "{dir}/run"
[matcher]
keep_full_journal = true  # the test reads the whole game from the journal
[db]
url = "{url}"
batch_max_ms = 20
resend_after_s = 1.0
"""


class Processes:
    def __init__(self, directory: Path, db_url: str) -> None:
        self.path = directory / "itg.toml"
        self.path.write_text(PROCESS_CONFIG.format(dir=directory, url=db_url) + FAST_TOML)
        self.config = load_config(self.path, env={})
        self.log = open(directory / "services.log", "ab")  # noqa: SIM115 - closed in stop()
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "service", name,
                                 "--config", str(self.path)], stdout=self.log,
                                stderr=subprocess.STDOUT)
        self.running.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.running:
            proc.wait(15)
        self.log.close()


@pytest.fixture
def processes(short_dir: Path, pg_url: str) -> Iterator[Processes]:
    procs = Processes(short_dir, pg_url)
    yield procs
    procs.stop()


def test_writers_killed_mid_batch_lose_and_duplicate_nothing(processes: Processes,
                                                            pg_url: str) -> None:
    processes.start("matcher")
    writers = [processes.start("dbwriter"), processes.start("dbwriter")]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = MatcherClient(processes.config, ctx)
    try:
        client.wait_ready(30)
        teams = register(client, 6)
        rng = random.Random(11)
        for chunk in range(20):  # 10,000 orders; a writer dies three times along the way
            if chunk in (4, 9, 14):
                victim = writers[chunk % 2]
                os.kill(victim.pid, signal.SIGKILL)
                victim.wait(10)
                writers[chunk % 2] = processes.start("dbwriter")
            send_orders(client, [random_order(rng, teams) for _ in range(500)])
        expected = journal_trades(processes.config)
        wait_for(lambda: db_trade_count(pg_url) >= len(expected), timeout=90,
                 what="the database to catch up")
        recover = subprocess.run(
            [sys.executable, "-m", "services.cli", "recover", "--check", "--config",
             str(processes.path)], capture_output=True, text=True, timeout=60)
    finally:
        client.close()
        ctx.term()
    stored = db_trades(pg_url)
    assert len(expected) > 2000
    assert len(stored) == len(set(stored)) == len(expected), "no trade lost, none twice"
    assert set(stored) == expected
    assert recover.returncode == 0, recover.stdout + recover.stderr
    assert "teams match the matcher" in recover.stdout


def test_recover_check_compares_at_one_point_and_sees_what_the_database_lacks(
        processes: Processes) -> None:
    """It read the database, then asked the matcher about the teams found there: trades in
    between were reported as differences (1 in 6 runs of a quiet cluster, its house trading),
    and teams and trades the database never got were not reported at all."""
    processes.start("matcher")
    writer = processes.start("dbwriter")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = MatcherClient(processes.config, ctx)
    stop, rng = threading.Event(), random.Random(5)

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "services.cli", "recover", "--check",
                               "--config", str(processes.path)],
                              capture_output=True, text=True, timeout=60)

    def trade() -> None:  # on its own client: the check runs while trades go on, paced so
        other = MatcherClient(processes.config, ctx)  # that the writer keeps up on a busy box
        try:
            while not stop.wait(0.05):
                send_orders(other, [random_order(rng, teams) for _ in range(20)])
        finally:
            other.close()
    try:
        client.wait_ready(30)
        teams = register(client, 4)
        trader = threading.Thread(target=trade)
        trader.start()
        try:
            checks = [check() for _ in range(3)]
        finally:
            stop.set()
            trader.join(60)
        for run in checks:
            assert run.returncode == 0, run.stdout + run.stderr
        writer.kill()
        writer.wait(10)
        late = register(client, 1, prefix="late")
        send_orders(client, [random_order(rng, [*teams, *late]) for _ in range(50)])
        behind = check()
        assert behind.returncode == 1
        assert "is a DB writer down or behind?" in behind.stdout
        assert f"{late[0]}: only in the matcher" in behind.stdout
        processes.start("dbwriter")
        caught_up = check()
        assert caught_up.returncode == 0, caught_up.stdout + caught_up.stderr
    finally:
        client.close()
        ctx.term()


def test_recover_check_waits_for_a_writer_that_stores_an_earlier_batch_last(
        processes: Processes) -> None:
    """With one writer paused holding a batch, the other stored later ones: the check took the
    database's high-water mark for "all stored", and reported every team as different."""
    processes.start("matcher")
    paused, _ = processes.start("dbwriter"), processes.start("dbwriter")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = MatcherClient(processes.config, ctx)
    rng = random.Random(6)
    try:
        client.wait_ready(30)
        teams = register(client, 4)
        send_orders(client, [random_order(rng, teams) for _ in range(100)])
        time.sleep(1)  # both writers connected and idle
        paused.send_signal(signal.SIGSTOP)
        for _ in range(10):  # batches go to the writers in turn: the paused one holds some
            send_orders(client, [random_order(rng, teams) for _ in range(20)])
            time.sleep(0.05)

        def out_of_order() -> bool:  # the case itself: a later batch in, an earlier one not
            with Store(processes.config.db_url) as store:
                return store.last_seq("matcher") > client.call(Ping(), Pong).records_stored
        wait_for(out_of_order, 20, what="a later batch stored while the paused writer holds one")
        check = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "recover", "--check", "--config",
             str(processes.path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert check.stdout is not None
        said = ""  # the check has read the matcher's state and waits: only now resume
        while "waiting up to" not in said and (line := check.stdout.readline()):
            said += line
        assert "waiting up to" in said, said
        paused.send_signal(signal.SIGCONT)
        out = said + check.communicate(timeout=60)[0]
        assert check.returncode == 0, out
        assert "teams match the matcher" in out
    finally:
        paused.send_signal(signal.SIGCONT)
        client.close()
        ctx.term()


# --- the database goes away for 30 s ---


def pg_cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action,
                    *(["-m", "fast"] if action == "stop" else [])], check=True, timeout=60)


def test_trading_goes_on_while_postgres_is_down_and_the_db_catches_up(
    tmp_path: Path, pg_url: str
) -> None:
    config = make_config(tmp_path / "data", game={"roles": {"fast": FAST}}, matcher=FULL, db={
        "url": pg_url, "batch_max_ms": 20, "resend_after_s": 1})
    with Cluster(config, ["dbwriter", "matcher"]) as cluster:
        client = MatcherClient(config, cluster.ctx)
        client.wait_ready()
        teams = register(client, 4)
        rng = random.Random(5)
        send_orders(client, [random_order(rng, teams) for _ in range(300)])
        wait_for(lambda: db_trade_count(pg_url) > 0, what="trades stored before the outage")
        before_outage = db_trade_count(pg_url)
        pg_cluster("stop")
        try:
            outage_end = time.monotonic() + 30
            answered = 0
            while time.monotonic() < outage_end:  # the exchange keeps trading meanwhile
                answered += send_orders(client, [random_order(rng, teams) for _ in range(50)])
                time.sleep(0.2)
            assert answered > 1000
        finally:
            pg_cluster("start")
        matcher: Any = cluster.services["matcher"]
        wait_for(lambda: matcher.outbox.pending_records == 0, timeout=120,
                 what="the outbox to drain once PostgreSQL is back")
        client.close()
    expected = journal_trades(config)
    stored = db_trades(pg_url)
    assert before_outage > 0 and len(expected) > before_outage
    assert len(stored) == len(set(stored)) == len(expected)
    assert set(stored) == expected


def test_prices_news_and_signals_reach_the_database(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", simulator={"speed": 300.0}, db={"batch_max_ms": 20})
    with Cluster(config, ["dbwriter", "matcher", "simulator", "events"]) as cluster:
        master = GameMaster(config, cluster.ctx)
        try:
            assert master.inject_news("Fed announces emergency meeting", "down").ok
        finally:
            master.close()

        def counts() -> dict[str, int]:
            with Store(config.db_url) as store, store.engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "select 'price_' || kind, count(*) from prices group by kind union all "
                    "select kind, count(*) from events group by kind").all()
            return {k: int(n) for k, n in rows}

        wait_for(lambda: {"price_underlying", "price_fair_value", "news", "signal"} <= {
            k for k, n in counts().items() if n}, what="prices, news and signals stored")
    with Store(config.db_url) as store, store.engine.connect() as conn:
        headlines = [r[0] for r in conn.exec_driver_sql("select name from events "
                                                         "where kind = 'news'").all()]
        symbols = {r[0] for r in conn.exec_driver_sql(
            "select distinct instrument_id from prices where kind = 'underlying'").all()}
    assert "Fed announces emergency meeting" in headlines
    assert symbols == {"SPX", "SPY"}


def test_a_clean_stop_stores_every_record_before_the_producers_go(tmp_path: Path) -> None:
    """Producers stopped with records still waiting (an open batch, or one not acknowledged):
    the simulator's and events' were lost for good (they number afresh when they start again),
    the matcher's reached the database only when it was started again."""
    config = make_config(tmp_path / "data", game={"roles": {"fast": FAST}}, matcher=FULL,
                         simulator={"speed": 200.0}, db={"batch_max_ms": 600_000})
    with Cluster(config, ["dbwriter", "matcher", "simulator", "events"]) as cluster:
        assert trade(cluster, teams=4, orders=300, seed=5) > 200
        services: Any = cluster.services
        sim, events, matcher = services["simulator"], services["events"], services["matcher"]
        wait_for(lambda: events.records.outbox.pending_records > 0,
                 what="events records")
        assert sim.records.outbox.pending_records > 0  # waiting: no batch is due for 10 min
    with Store(config.db_url) as store, store.engine.connect() as conn:
        stored = dict(conn.exec_driver_sql("select stream, last_seq from stream_progress").all())
    last = sim._last  # the simulator numbers its prices by game and tick
    per_tick = len(last.underlyings) + sum(len(v.values) for v in last.fair_values)
    assert stored == {"simulator": sim.step.game + (last.tick + 1) * per_tick - 1,
                      "events": events.records.last_seq,
                      "matcher": matcher.engine.counters["record"]}
    assert len(db_trades(config.db_url)) == len(journal_trades(config)) > 50


def test_a_stop_with_no_writer_running_does_not_wait_for_one(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data", simulator={"speed": 200.0})
    cluster = Cluster(config, ["matcher", "simulator", "events"])
    with cluster:
        sim: Any = cluster.services["simulator"]
        wait_for(lambda: sim.records.outbox.pending_records > 0, what="price records")
        started = time.monotonic()
    assert time.monotonic() - started < 1.5  # not FLUSH_S per producer
    assert sim.records.outbox.pending_records > 0  # nowhere to go: said in the log
