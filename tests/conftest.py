"""Shared fixtures: configs in temp dirs, and an engine harness that stamps seq and time."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import CreateSchema, DropSchema

from common.config import Config, load_config
from common.messages import Command, Event, NewOrder, RegisterTeam
from services.matcher.engine import Engine, Out
from services.matcher.snapshots import load_latest_snapshot
from services.matcher.state import EngineState, decode_state

# A role for load tests: limits out of the way, fees as a market maker's.
FAST: dict[str, Any] = {
    "maker_fee_cents": 1, "taker_fee_cents": -2, "position_limit": 10**6,
    "total_position_limit": 10**7, "underlying_position_limit": 10**6, "max_order_size": 100,
    "max_orders_per_s": 10**6,
}
FAST_TOML = "[game.roles.fast]\n" + "".join(f"{k} = {v}\n" for k, v in FAST.items())
PG_URL = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema on the real PostgreSQL per test, dropped afterwards. A test that needs
    PostgreSQL fails (never skips) when the server cannot be reached."""
    name = f"itg_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, pool_pre_ping=True, connect_args={"connect_timeout": 5})
    try:
        with admin.begin() as conn:
            conn.execute(CreateSchema(name))
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL is unreachable at {PG_URL}: {exc}")
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={name}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(DropSchema(name, cascade=True))
    admin.dispose()


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll `condition` until it holds; fail the test (naming `what`) at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.01)


def snapshot_from(data_dir: Path, last_seq: int, timeout: float = 10.0) -> EngineState:
    """Wait for the matcher under `data_dir` to write a snapshot covering `last_seq`."""
    found: list[EngineState] = []

    def covered() -> bool:
        data = load_latest_snapshot(data_dir / "matcher")
        state = decode_state(data) if data is not None else None
        found[:] = [state] if state is not None and state.last_seq >= last_seq else []
        return bool(found)

    wait_for(covered, timeout, what=f"a matcher snapshot at seq {last_seq} or later")
    return found[0]


def nested(type_tag: str, depth: int = 5_000) -> bytes:
    """A small frame of the given type with an extra field `depth` arrays deep: decoding it
    recurses past the interpreter's limit (msgspec raises RecursionError, even for a field it
    only skips)."""
    head = b"\x82\xa4type" + bytes([0xA0 + len(type_tag)]) + type_tag.encode() + b"\xa5extra"
    return head + b"\x91" * depth + b"\xc0"


def make_config(data_dir: Path, **overrides: Any) -> Config:
    return load_config(env={}, overrides={"data_dir": str(data_dir), **overrides})


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path / "data")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short path: ipc socket paths must stay under ~100 characters."""
    path = Path(tempfile.mkdtemp(prefix="itg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Harness:
    """Drives an Engine the way the sequencer does: one seq and one later time per command."""

    def __init__(self, config: Config, ms_per_command: int = 1) -> None:
        self.engine = Engine(config.game)
        self.seq = 0
        self.ts = 1_700_000_000_000_000_000
        self.step_ns = ms_per_command * 1_000_000

    def apply(self, cmd: Command) -> list[Out]:
        self.seq += 1
        self.ts += self.step_ns
        return self.engine.apply(cmd, self.seq, self.ts)

    def team(self, name: str, role: str = "market_maker") -> str:
        out = self.apply(RegisterTeam(gw="t", req_id=name, team_name=name, role=role,
                                      key_hash=f"hash-{name}"))
        response = out[-1][1]
        assert response.ok, response  # type: ignore[attr-defined]
        return response.result.team_id  # type: ignore[attr-defined, no-any-return]

    def order(self, team: str, side: str, quantity: int, price: float | None = None,
              instrument: str = "SPX_4500_CALL", **kw: Any) -> list[Out]:
        ticks = None if price is None else round(price * 100)
        order_type = kw.pop("order_type", "limit" if price is not None else "market")
        return self.apply(NewOrder(gw="t", team_id=team, instrument_id=instrument, side=side,
                                   quantity=quantity, price=ticks, order_type=order_type, **kw))


def events(out: list[Out], kind: type[Event]) -> list[Any]:
    return [e for _, e in out if isinstance(e, kind)]


@pytest.fixture
def harness(config: Config) -> Harness:
    return Harness(config)
