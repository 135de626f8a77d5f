"""Replaying the same command log gives the same events and state, from scratch or from a
snapshot taken at any point."""

from __future__ import annotations

import random

import pytest

from common.config import Config
from common.messages import (
    CancelAll,
    CancelOrder,
    Command,
    ExpireOptions,
    NewOrder,
    PriceMark,
    RegisterTeam,
    SetHalt,
    SetPhase,
    TradePrint,
    encode,
)
from services.matcher.engine import Engine
from services.matcher.state import capture, decode_state, encode_state, restore, state_hash

INSTRUMENTS = ("SPX_4500_CALL", "SPX_4400_PUT", "SPY_440_CALL", "SPY")
Log = list[tuple[Command, int, int]]


def command_log(seed: int, n: int = 3000) -> Log:
    rng = random.Random(seed)
    teams = [f"TEAM_{i:03d}" for i in range(1, 7)]
    cmds: list[Command] = [
        RegisterTeam(gw="g", team_name=f"t{i}", role=rng.choice(["hedge_fund", "arbitrage"]),
                     key_hash=f"k{i}") for i in range(6)
    ]
    expiry = rng.randint(n // 3, 2 * n // 3)  # one option expires part way (snapshot cuts too)
    for i in range(n):
        roll = rng.random()
        team = rng.choice(teams)
        if i == expiry:
            cmds.append(ExpireOptions(prices={"SPX_4500_CALL": rng.randint(0, 50)}))
        elif roll < 0.70:
            market = rng.random() < 0.1
            cmds.append(NewOrder(
                gw="g", team_id=team, instrument_id=rng.choice(INSTRUMENTS),
                side=rng.choice(["buy", "sell"]), quantity=rng.randint(1, 20),
                order_type="market" if market else "limit",
                price=None if market else rng.randint(990, 1010),
                client_order_id=f"c{i}" if rng.random() < 0.3 else None))
        elif roll < 0.90:
            oid = f"ORD_{rng.randint(1, i + 1):08d}"
            cmds.append(CancelOrder(gw="g", team_id=team, order_id=oid))
        elif roll < 0.93:
            iid = rng.choice(INSTRUMENTS)
            cmds.append(PriceMark(instrument_id=iid, price=rng.randint(900, 1100)))
        elif roll < 0.95:
            iid = rng.choice(INSTRUMENTS)
            cmds.append(SetHalt(gw="g", instrument_id=iid, halted=rng.random() < 0.5))
        elif roll < 0.97:
            phase = rng.choice(["pre_open", "continuous", "continuous"])
            cmds.append(SetPhase(gw="g", phase=phase))
        else:
            cmds.append(CancelAll(gw="g", team_id=team))
    ts = 1_700_000_000_000_000_000
    return [(cmd, seq, ts + seq * 211_000_000) for seq, cmd in enumerate(cmds, start=1)]


def run(engine: Engine, log: Log) -> list[bytes]:
    return [topic + b"|" + encode(event) for cmd, seq, ts in log
            for topic, event in engine.apply(cmd, seq, ts)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_log_same_events_and_state(config: Config, seed: int) -> None:
    log = command_log(seed)
    first, second = Engine(config.game), Engine(config.game)
    out1, out2 = run(first, log), run(second, log)
    trades = [e for e in out1 if e.startswith(b"md.trade.")]
    assert len(trades) > 300, "the log should trade a lot"
    assert out1 == out2
    assert state_hash(first) == state_hash(second)


@pytest.mark.parametrize("seed", [4, 5, 6, 7])
def test_snapshot_at_a_random_cut_then_replay(config: Config, seed: int) -> None:
    log = command_log(seed)
    cut = random.Random(seed).randrange(1, len(log))
    whole = Engine(config.game)
    expected = run(whole, log)

    before = Engine(config.game)
    head = run(before, log[:cut])
    snapshot = encode_state(capture(before))
    resumed = Engine(config.game)
    restore(resumed, decode_state(snapshot))
    assert state_hash(resumed) == state_hash(before)
    tail = run(resumed, log[cut:])
    assert head + tail == expected
    assert state_hash(resumed) == state_hash(whole)
    # the same persistence records, each once (a fresh engine's own house-team records are
    # in the snapshot already)
    assert before.take_records() + resumed.take_records() == whole.take_records()


def test_the_state_does_not_depend_on_the_process_epoch(config: Config) -> None:
    """Each process publishes under its own epoch; a restart (snapshot + replay in a new
    process) still rebuilds the same state."""
    log = command_log(8)
    cut = len(log) // 2
    whole, before, resumed = (Engine(config.game, epoch=e) for e in (11, 22, 33))
    run(whole, log)
    run(before, log[:cut])
    restore(resumed, decode_state(encode_state(capture(before))))
    run(resumed, log[cut:])
    assert state_hash(resumed) == state_hash(whole)


def test_trade_prints_never_name_teams(config: Config) -> None:
    engine = Engine(config.game)
    for cmd, seq, ts in command_log(8, 500):
        for _, event in engine.apply(cmd, seq, ts):
            if isinstance(event, TradePrint):
                assert b"TEAM_" not in encode(event)
