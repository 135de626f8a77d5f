"""The dashboard's pure parts: the market picture (board.py) and the leaderboard (scores.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import topics
from common.config import Config, ConfigError, describe
from common.messages import (
    AccountReply,
    ExecutionReport,
    News,
    SimState,
    TeamInfo,
    TradePrint,
    UnderlyingTick,
    encode,
)
from services.gateway.board import TAPE, TAPE_PER_INSTRUMENT, Board
from services.gateway.scores import Standings, pnl
from tests.conftest import make_config


def board(tmp_path: Path, delay_s: float = 10.0) -> Board:
    return Board(make_config(tmp_path, gateway={"regime_delay_s": delay_s}))


def state(tick: int, regime: int, epoch: int = 7, future: int = 2,
          game: int = 1) -> tuple[bytes, bytes]:
    return topics.SIM_STATE, encode(SimState(
        tick=tick, game_s=float(tick), prices={}, window=[regime] + [future] * 4, premium=0.0,
        next_premium=0.0, news_epoch=0, news_applied=[], news_pending=[], epoch=epoch,
        game=game))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=1, max_size=80), st.integers(0, 30))
def test_a_regime_is_shown_only_once_it_is_older_than_the_delay(regimes: list[int],
                                                                 delay: int) -> None:
    b = Board(make_config(Path("unused"), gateway={"regime_delay_s": float(delay)}))
    for tick, regime in enumerate(regimes):
        b.feed(*state(tick, regime))
        shown = b.regimes()
        horizon = tick - delay  # the newest tick that may be told
        assert shown["until_s"] == max(horizon + 1, 0)
        for first, end, name in shown["spans"]:
            assert end <= horizon + 1  # nothing at or after the horizon's next tick
            for t in range(int(first), int(end)):  # every shown tick is told truthfully
                assert name == b.regime_names[regimes[t]]
        told = {t for first, end, _ in shown["spans"] for t in range(int(first), int(end))}
        assert told == set(range(max(horizon + 1, 0)))
        assert "high" not in str(shown) or 2 in regimes[: max(horizon + 1, 0)]  # no future


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=80),
       st.integers(0, 10))
def test_updates_carry_only_new_regimes_and_merge_into_the_whole_list(
        ticks: list[tuple[int, bool]], delay: int) -> None:
    """The page's merge (charts.js setRegimes): from `from_s` on, the update's spans replace
    its own from the first one's start; the result is always the server's whole list."""
    b = Board(make_config(Path("unused"), gateway={"regime_delay_s": float(delay)}))
    page: list[Any] = b.snapshot()["regimes"]["spans"]

    def merge(page: list[Any]) -> list[Any]:
        regimes = b.take_changes()[0].get("regimes")
        if regimes is None:  # nothing new to tell
            return page
        spans = regimes["spans"]
        assert all(end > regimes["from_s"] for _, end, _ in spans)  # nothing sent before
        if not regimes["from_s"]:
            return spans  # type: ignore[no-any-return]
        return [s for s in page if s[0] < spans[0][0]] + spans if spans else page

    for tick, (regime, update) in enumerate(ticks):
        b.feed(*state(tick, regime))
        if update:
            page = merge(page)
            assert page == b.regimes()["spans"]
    # and whatever was last sent, the page ends with the whole list (an update that never
    # carried regimes would leave it empty)
    assert merge(page) == b.regimes()["spans"]


def test_regimes_older_than_the_charts_oldest_point_are_forgotten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.gateway.board.HISTORY", 10)  # the chart keeps 10 points
    b = board(tmp_path, delay_s=0)
    for tick in range(100):  # a new regime every 5 ticks: 20 spans in all
        b.feed(topics.underlying("SPX"), encode(UnderlyingTick(
            symbol="SPX", price=440_000, tick=tick, game_s=float(tick), epoch=7)))
        b.feed(*state(tick, tick // 5 % 3))
    assert [p[0] for p in b.points["SPX"]] == list(range(90, 100))
    spans = b.regimes()["spans"]  # trimmed as new regimes come: at most one span before
    assert [s[0] for s in spans] == [85, 90, 95] and spans[-1][1] == 100  # the chart's start


def test_a_new_simulator_epoch_starts_the_picture_afresh(tmp_path: Path) -> None:
    b = board(tmp_path, delay_s=0)
    for tick in range(3):
        b.feed(topics.underlying("SPX"), encode(UnderlyingTick(
            symbol="SPX", price=440_000 + tick, tick=tick, game_s=float(tick), epoch=1)))
        b.feed(*state(tick, 1, epoch=1))
    b.feed(topics.trade("SPY"), encode(TradePrint(
        trade_id="T1", instrument_id="SPY", price=44_012, quantity=3, aggressor="buy")))
    b.feed(topics.NEWS, encode(News(news_id=4, tick=1, game_s=1.0, headline="Jobs",
                                    direction="up", magnitude=0.003, jump=False)))
    b.take_changes()
    assert [p[0] for p in b.points["SPX"]] == [0, 1, 2] and b.regimes()["spans"]
    # a new game whose tick 0 was missed (published before this subscriber was back)
    b.feed(*state(1, 0, epoch=2, game=2))
    b.feed(topics.underlying("SPX"), encode(UnderlyingTick(
        symbol="SPX", price=430_000, tick=1, game_s=1.0, epoch=2)))
    changes, _ = b.take_changes()
    assert changes.get("reset") and list(b.points["SPX"]) == [(1, 4300.0)]
    assert [span[2] for span in b.regimes()["spans"]] == ["low"]  # the new game's own
    # the matcher's trades and the events service's news are not the simulator's to reset
    snapshot = b.snapshot()
    assert [t["trade_id"] for t in snapshot["tape"]] == ["T1"]
    assert [n["headline"] for n in snapshot["news"]] == ["Jobs"]
    assert [t["trade_id"] for t in b.trades_of("SPY")] == ["T1"]


def test_a_simulator_that_resumed_its_game_keeps_the_picture(tmp_path: Path) -> None:
    """A restarted simulator goes on from its last checkpoint (a new epoch, a tick or so back):
    the chart and the regimes go on too, and nobody is sent a new snapshot."""
    b = board(tmp_path, delay_s=0)
    for tick in range(6):
        b.feed(topics.underlying("SPX"), encode(UnderlyingTick(
            symbol="SPX", price=440_000 + tick, tick=tick, game_s=float(tick), epoch=1)))
        b.feed(*state(tick, tick // 3, epoch=1))
    b.take_changes()
    spans = b.regimes()["spans"]
    for tick in range(4, 8):  # resumed at tick 4: ticks 4 and 5 come again, the same
        b.feed(*state(tick, tick // 3, epoch=2))
        b.feed(topics.underlying("SPX"), encode(UnderlyingTick(
            symbol="SPX", price=440_000 + tick, tick=tick, game_s=float(tick), epoch=2)))
    changes, _ = b.take_changes()
    assert "reset" not in changes
    assert list(b.points["SPX"]) == [(t, 4400 + t / 100) for t in range(8)]
    assert b.regimes()["spans"][:len(spans) - 1] == spans[:-1]
    assert b.regimes()["until_s"] == 8


def test_frames_become_tape_news_and_dirty_books(tmp_path: Path) -> None:
    b = board(tmp_path)
    b.take_changes()
    b.feed(topics.book("SPX_4500_CALL"), b"not even decoded")
    b.feed(topics.trade("SPY"), encode(TradePrint(
        trade_id="T1", instrument_id="SPY", price=44_012, quantity=3, aggressor="buy",
        ts_ns=1_700_000_000_000_000_000)))
    b.feed(topics.NEWS, encode(News(news_id=4, tick=9, game_s=9.0, headline="Strong jobs report",
                                    direction="up", magnitude=0.003, jump=False)))
    b.feed(topics.NEWS, b"\xc1 garbage")  # dropped, nothing breaks
    changes, books = b.take_changes()
    assert books == {"SPX_4500_CALL"}
    assert changes["trades"][0]["price"] == Decimal("440.12")
    assert changes["news"][0]["headline"] == "Strong jobs report"
    assert b.take_changes() == ({}, set())


def test_a_burst_of_trades_reaches_spectators_as_the_tape_holds_it(tmp_path: Path) -> None:
    b = board(tmp_path)
    b.take_changes()
    for n in range(TAPE + 40):
        b.feed(topics.trade("SPY"), encode(TradePrint(
            trade_id=f"T{n}", instrument_id="SPY", price=44_000 + n, quantity=1,
            aggressor="sell", ts_ns=1_700_000_000_000_000_000 + n)))
    changes, _ = b.take_changes()
    ids = [t["trade_id"] for t in changes["trades"]]
    assert ids == [f"T{n}" for n in range(40, TAPE + 40)]  # the newest TAPE, oldest first
    assert [t["trade_id"] for t in b.snapshot()["tape"]] == ids
    newest = b.trades_of("SPY")
    assert len(newest) == TAPE_PER_INSTRUMENT and newest[0]["trade_id"] == f"T{TAPE + 39}"
    assert newest[0]["price"] == Decimal("443.39") and b.trades_of("SPX") == []


def test_underlying_points_are_whole_game_seconds_never_going_back(tmp_path: Path) -> None:
    b = board(tmp_path)
    for tick, game_s in enumerate((0.0, 0.4, 0.6, 1.0, 1.6)):
        b.feed(topics.underlying("SPY"), encode(UnderlyingTick(
            symbol="SPY", price=44_000 + tick, tick=tick, game_s=game_s, epoch=1)))
    times = [t for t, _ in b.points["SPY"]]
    assert times == sorted(set(times)) == [0, 1, 2]


def team(team_id: str, role: str = "market_maker") -> TeamInfo:
    return TeamInfo(team_id=team_id, team_name=team_id.lower(), role=role, created_ns=0)


def test_pnl_is_cash_plus_positions_at_their_marks(config: Config) -> None:
    instruments = Standings(config).instruments
    account = AccountReply(team_id="T", found=True, cash=-4_500_020, fees=-20,
                           positions={"SPX_4500_CALL": 10, "SPY": -5, "SPX_4200_PUT": 2,
                                      "SPY_440_CALL": 0})
    marks = {"SPX_4500_CALL": 4_612, "SPY": 44_100}
    total, unmarked = pnl(account, marks.get, instruments)
    assert total == -4_500_020 + 10 * 4_612 * 100 - 5 * 44_100
    assert unmarked == ["SPX_4200_PUT"]


def test_leaderboard_ranks_teams_by_pnl_with_the_house_last(config: Config) -> None:
    s = Standings(config)
    for tid, role in (("TEAM_001", "market_maker"), ("TEAM_002", "hedge_fund"),
                      ("HOUSE", "house")):
        s.add(team(tid, role))
    marks = {"SPX_4500_CALL": 5_000}.get
    s.update(AccountReply(team_id="TEAM_001", found=True, cash=100), marks, 1)
    s.update(AccountReply(team_id="TEAM_002", found=True, cash=-500_000,
                          positions={"SPX_4500_CALL": 1}), marks, 1)
    s.update(AccountReply(team_id="HOUSE", found=True, cash=10**9), marks, 1)
    rows = s.rows(marks, lambda iid: 0.5)
    assert [(r["team_id"], r["rank"], r["pnl"]) for r in rows] == [
        ("TEAM_001", 1, Decimal("1")), ("TEAM_002", 2, Decimal("0")),
        ("HOUSE", None, Decimal("10000000"))]
    assert rows[1]["figures"]["delta"] == {"SPX": 50.0}
    assert "cash" not in rows[0] and s.rows(marks, lambda iid: None, full=True)[0]["cash"] == 1


def test_market_maker_figures_quoted_share_and_edge(config: Config) -> None:
    s = Standings(config)
    s.add(team("TEAM_001"))
    account = AccountReply(team_id="TEAM_001", found=True, open_count=4, two_sided=1)
    options = sum(1 for i in s.instruments.values() if i.is_option)
    s.on_fill(ExecutionReport(
        order_id="b", client_order_id=None, team_id="TEAM_001", trade_id="T1",
        instrument_id="SPX_4500_CALL", side="sell", executed_quantity=2, executed_price=120,
        remaining_quantity=0, order_status="filled", liquidity="maker", fee=4), fair=110)
    s.update(account, {"SPX_4500_CALL": 110}.get, 5)
    figures = s.rows({}.get, lambda iid: None)[0]["figures"]
    assert figures["edge"] == Decimal("20")  # sold 2 lots 0.10 over fair, x100
    assert figures["quoted_share"] == round(1 / options, 4)
    view = s.team_view("TEAM_001", {}.get, lambda iid: None)
    assert view is not None and view["fills"][0]["fee"] == Decimal("0.04")
    assert view["team"]["rank"] == 1 and view["history"] == [(5, Decimal("0"))]


def test_the_admin_key_is_checked_at_load_and_never_logged(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="admin_key"):
        make_config(tmp_path, gateway={"admin_key": "too-short"})
    config = make_config(tmp_path, gateway={"admin_key": "k" * 24})
    logged = describe(config)
    assert "k" * 24 not in logged and "<redacted-admin-key>" in logged
    for url in ("postgresql+psycopg://itg:pa:ss%40w/rd@db:5432/itg",
                "postgresql+psycopg://itg@db/itg?password=pa/ss%40w:rd"):
        logged = describe(make_config(tmp_path, db={"url": url}))
        assert not any(piece in logged for piece in ("pa:ss", "pa/ss", "w/rd", "w:rd", "%40"))
        assert "psycopg://itg:***@db:5432/itg" in logged or "itg?password=redacted" in logged
