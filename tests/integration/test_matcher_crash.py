"""SIGKILL the matcher process in the middle of a stream of orders, restart it, and check that
every acknowledged order and trade is still there, none twice.

The matcher runs as a real process (`itg service matcher`) over ipc. After the run, the journal
is replayed offline into a fresh engine: every answer a client saw must be in it, identical,
and the restarted process's state must equal the replay's.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import msgspec
import zmq

from common.bus_client import BusTimeout, MatcherClient
from common.config import Config, load_config
from common.messages import (
    AccountQuery,
    AccountReply,
    Command,
    ExecutionReport,
    NewOrder,
    Ping,
    Pong,
    RegisterTeam,
    Response,
    decode,
)
from services.matcher.engine import Engine
from services.matcher.journal import read_journal
from tests.conftest import FAST_TOML

CONFIG = """
data_dir = "{dir}/data"
[bus]
transport = "ipc"
ipc_dir = "{dir}/run"
heartbeat_s = 0.2
[matcher]
snapshot_interval_s = 0.3
keep_full_journal = true  # the test replays the whole game from its journal
"""
INSTRUMENTS = ("SPX_4500_CALL", "SPX_4400_PUT", "SPY")


def start(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "service", "matcher", "--config",
             str(config_path)], stdout=out, stderr=subprocess.STDOUT)


def random_order(rng: random.Random, teams: list[str]) -> NewOrder:
    return NewOrder(team_id=rng.choice(teams), instrument_id=rng.choice(INSTRUMENTS),
                    side=rng.choice(("buy", "sell")), quantity=rng.randint(1, 20),
                    price=rng.randint(995, 1005))


def collect(client: MatcherClient, into: dict[str, Response], quiet: float) -> None:
    try:
        while True:
            response = client.responses(quiet)
            into[response.req_id] = response
    except BusTimeout:
        return


def replay_journal(config: Config) -> tuple[Engine, dict[str, Response], list[ExecutionReport]]:
    engine = Engine(config.game)
    responses: dict[str, Response] = {}
    reports: list[ExecutionReport] = []
    for seq, ts, payload in read_journal(Path(config.data_dir) / "matcher"):
        cmd = decode(payload)
        assert isinstance(cmd, Command)
        for _, event in engine.apply(cmd, seq, ts):
            if isinstance(event, Response):
                responses[event.req_id] = event
            elif isinstance(event, ExecutionReport):
                reports.append(event)
    return engine, responses, reports


def same_answer(seen: Response, journaled: Response) -> bool:
    strip = {"epoch": 0}
    return msgspec.structs.replace(seen, **strip) == msgspec.structs.replace(journaled, **strip)


def test_sigkill_mid_stream_loses_nothing_acknowledged(short_dir: Path) -> None:
    config_path = short_dir / "itg.toml"
    config_path.write_text(CONFIG.format(dir=short_dir) + FAST_TOML)
    config = load_config(config_path, env={})
    log = short_dir / "matcher.log"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    proc = start(config_path, log)
    client = MatcherClient(config, ctx)
    try:
        client.wait_ready(30)
        teams = []
        for i in range(4):
            r = client.request(RegisterTeam(team_name=f"t{i}", role="fast", key_hash=f"k{i}"))
            teams.append(r.result.team_id)  # type: ignore[union-attr]
        rng = random.Random(7)
        seen: dict[str, Response] = {}
        for _ in range(4000):
            client.send(random_order(rng, teams))
        while len(seen) < 1500:  # the matcher is in the middle of the stream
            response = client.responses(30)
            seen[response.req_id] = response
        proc.kill()
        proc.wait(10)
        collect(client, seen, 0.3)
        before_restart = len(seen)

        proc = start(config_path, log)
        client.wait_ready(30)
        for _ in range(500):
            client.send(random_order(rng, teams))
        collect(client, seen, 2.0)
        last_seq = client.call(Ping(), Pong).last_seq
        live = {t: client.call(AccountQuery(team_id=t), AccountReply) for t in teams}
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        ctx.term()

    assert 1500 <= before_restart < 4004, "the kill landed mid-stream"
    assert len(seen) > before_restart, "the restarted matcher went on serving"
    engine, journaled, reports = replay_journal(config)
    assert engine.last_seq == last_seq
    for req_id, response in seen.items():  # every answer a client saw is durable, identical
        assert same_answer(response, journaled[req_id]), req_id
    order_ids = [r.order_id for r in seen.values() if r.ok and r.order_id]
    assert len(order_ids) == len(set(order_ids)), "an order id was given twice"
    trade_sides = [(r.trade_id, r.team_id, r.order_id) for r in reports]
    assert len(trade_sides) == len(set(trade_sides)) and len(reports) > 100
    for team in teams:  # the restarted process's state is exactly the journal's
        acct = engine.accounts[team]
        assert (live[team].positions, live[team].cash, live[team].fees) == (
            acct.positions, acct.cash, acct.fees)
        assert {o.order_id for o in live[team].open_orders} == {
            o.order_id for o in engine.live.values() if o.team_id == team}
    assert "recovered: snapshot at seq" in log.read_text()


# A journal write that fails half done: a real short write, the file size limit (RLIMIT_FSIZE)
# standing in for a full disk, in a process of its own (the limit is per process). The disk has
# room again by the time the matcher stops.
DISK_FULL = """
import resource, signal, sys
from pathlib import Path
from common.bus_client import MatcherClient
from common.messages import RegisterTeam
from services.launcher import Cluster
from services.matcher import disk
from services.matcher.journal import segments
from tests.conftest import make_config, wait_for

data = Path(sys.argv[1])
config = make_config(data)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
close = disk.DiskThread.close
def room_again(self):
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    close(self)
disk.DiskThread.close = room_again
cluster = Cluster(config, ["matcher"])
cluster.start()
client = MatcherClient(config, cluster.ctx)
client.wait_ready()
assert client.request(RegisterTeam(team_name="a", role="market_maker", key_hash="x")).ok
segment = segments(data / "matcher")[-1][1]
good = segment.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (good + 5000, hard))
client.send(RegisterTeam(team_name="b", role="market_maker", key_hash="k" * 20000))
wait_for(lambda: "matcher" in cluster._errors, what="the matcher stopping on the disk error")
client.close()
cluster.stop()
with Cluster(config, ["matcher"]) as again:  # same process: the data dir's lock was released
    print(good, segment.stat().st_size, again.services["matcher"].last_seq())
"""


def test_a_journal_write_that_fails_half_done_is_cut_off_and_the_matcher_starts_again(
        short_dir: Path) -> None:
    """The failed batch was written again at stop (torn half + whole): every later start
    refused the journal; and the stop never released the data dir's lock."""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", DISK_FULL, str(short_dir / "data")], cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    good, after, last_seq = map(int, run.stdout.split())
    assert after == good and last_seq == 1  # only the acknowledged registration
