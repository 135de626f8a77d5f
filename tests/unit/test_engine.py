"""The matcher core through its only entry point, Engine.apply: rules of GAME.md and API.md."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from common.messages import (
    BookDelta,
    CancelAck,
    CancelOrder,
    CancelReject,
    ExecutionReport,
    ExpireOptions,
    KeyReissued,
    MarketStatus,
    NewOrder,
    OrderAck,
    OrderReject,
    OrderResult,
    PriceMark,
    RegisterTeam,
    ReissueKey,
    Response,
    SetHalt,
    SetPhase,
    SnapshotPositions,
    TradePrint,
)
from common.records import PositionSnapshotRecord
from services.matcher import engine, queries
from services.matcher.accounts import NS_PER_S, Account
from services.matcher.engine import Engine
from services.matcher.state import (
    STATE_VERSION,
    capture,
    decode_state,
    encode_state,
    restore,
    snapshot_bytes,
    state_hash,
)
from tests.conftest import Harness, events, make_config


def fills(out: list) -> list[tuple[int, int]]:  # type: ignore[type-arg]
    return [(t.quantity, t.price) for t in events(out, TradePrint)]


def response(out: list) -> Response:  # type: ignore[type-arg]
    (r,) = events(out, Response)
    return r  # type: ignore[no-any-return]


def test_original_example_asks_fill_cheapest_first(harness: Harness) -> None:
    a, b = harness.team("a"), harness.team("b")
    harness.order(a, "sell", 5, 25.50)
    harness.order(a, "sell", 10, 25.55)
    out = harness.order(b, "buy", 10, 25.55)
    assert fills(out) == [(5, 2550), (5, 2555)]
    assert harness.engine.books["SPX_4500_CALL"].depth(5) == ([], [(2555, 5)])


def test_original_example_time_priority_within_level(harness: Harness) -> None:
    a, b = harness.team("a"), harness.team("b")
    c, s = harness.team("c", "hedge_fund"), harness.team("s", "hedge_fund")  # sizes above 50
    oid = {}
    for team, qty, price in ((a, 50, 25.45), (b, 30, 25.45), (c, 100, 25.40)):
        oid[team] = response(harness.order(team, "buy", qty, price)).order_id
    out = harness.order(s, "sell", 60, 25.40)
    reports = {(r.team_id, r.executed_quantity, r.executed_price) for r in
               events(out, ExecutionReport) if r.team_id != s}
    assert reports == {(a, 50, 2545), (b, 10, 2545)}
    assert harness.engine.live[oid[b]].remaining == 20
    assert harness.engine.live[oid[c]].remaining == 100
    assert harness.engine.books["SPX_4500_CALL"].depth(5) == ([(2545, 20), (2540, 100)], [])


def test_canonical_session_positions_and_fees(harness: Harness) -> None:
    mm1, mm2 = harness.team("MM1"), harness.team("MM2")
    harness.order(mm1, "sell", 1, 128.50)
    out = harness.order(mm2, "buy", 1, 128.50)
    by_team = {r.team_id: r for r in events(out, ExecutionReport)}
    assert (by_team[mm1].fee, by_team[mm1].liquidity) == (2, "maker")
    assert (by_team[mm2].fee, by_team[mm2].liquidity) == (-1, "taker")
    accounts = harness.engine.accounts
    assert accounts[mm1].positions == {"SPX_4500_CALL": -1}
    assert accounts[mm2].positions == {"SPX_4500_CALL": 1}
    assert accounts[mm1].cash == 12850 * 100 + 2 and accounts[mm2].cash == -12850 * 100 - 1
    assert harness.engine.books["SPX_4500_CALL"].depth(5) == ([], [])


def test_market_maker_fee_per_lot_making_and_taking(harness: Harness) -> None:
    mm, other = harness.team("mm"), harness.team("other")
    harness.order(mm, "sell", 10, 10.00)
    make = [r for r in events(harness.order(other, "buy", 10, 10.00), ExecutionReport)
            if r.team_id == mm]
    harness.order(other, "sell", 10, 10.00)
    take = [r for r in events(harness.order(mm, "buy", 10, 10.00), ExecutionReport)
            if r.team_id == mm]
    assert [r.fee for r in make] == [20] and [r.fee for r in take] == [-10]


def test_resting_orders_count_towards_the_position_limit(harness: Harness) -> None:
    mm = harness.team("mm")
    assert response(harness.order(mm, "buy", 30, 1.00)).ok
    out = harness.order(mm, "buy", 30, 1.01)
    r = response(out)
    assert (r.ok, r.code) == (False, "MM_POS_LIMIT")
    assert r.message.startswith("Position exceeds")
    assert r.details == {"scope": "instrument", "limit": 50, "worst_case_after": 60,
                         "position": 0, "open_buy": 30, "open_sell": 0, "side": "buy",
                         "quantity": 30}
    assert events(out, OrderReject)[0].error_code == "MM_POS_LIMIT"
    assert response(harness.order(mm, "sell", 50, 2.00)).ok  # the other side has its own room


def test_total_position_limit_across_options(harness: Harness) -> None:
    mm = harness.team("mm")
    for strike in (4200, 4300, 4400, 4500):
        assert response(harness.order(mm, "buy", 50, 1.00, f"SPX_{strike}_CALL")).ok
    r = response(harness.order(mm, "buy", 1, 1.00, "SPX_4600_CALL"))
    assert (r.code, r.details["scope"], r.details["limit"]) == ("MM_POS_LIMIT", "total", 200)


def test_other_roles_get_the_generic_position_code(harness: Harness) -> None:
    hf = harness.team("hf", "hedge_fund")
    assert response(harness.order(hf, "buy", 151, 1.00)).code == "POSITION_LIMIT_EXCEEDED"


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"side": "hold", "quantity": 1, "price": 1.0}, "INVALID_SIDE"),
    ({"side": "buy", "quantity": 1, "price": 1.0, "order_type": "stop"}, "INVALID_ORDER_TYPE"),
    ({"side": "buy", "quantity": 1, "price": 1.0, "instrument": "NOPE"}, "INVALID_INSTRUMENT"),
    ({"side": "buy", "quantity": 1, "order_type": "limit"}, "MISSING_PRICE"),
    ({"side": "buy", "quantity": 1, "price": 0.0}, "INVALID_PRICE"),
    ({"side": "buy", "quantity": 1, "price": 2_000_000.0}, "INVALID_PRICE"),
    ({"side": "buy", "quantity": 0, "price": 1.0}, "INVALID_QUANTITY"),
    ({"side": "buy", "quantity": 1001, "price": 1.0}, "INVALID_QUANTITY"),
    ({"side": "buy", "quantity": 1}, "NO_LIQUIDITY"),
])
def test_a_rejected_order_changes_no_state(harness: Harness, kwargs: dict, code: str) -> None:  # type: ignore[type-arg]
    mm, other = harness.team("mm"), harness.team("other")
    harness.order(other, "buy", 5, 3.00)
    harness.order(mm, "sell", 5, 4.00)
    before = state_hash(harness.engine, sequencing=False)
    out = harness.order(mm, **kwargs)
    assert response(out).code == code
    assert [type(e) for _, e in out] == [OrderReject, Response]
    assert state_hash(harness.engine, sequencing=False) == before


def test_unknown_team_is_rejected_without_state_change(harness: Harness) -> None:
    before = state_hash(harness.engine, sequencing=False)
    assert response(harness.order("TEAM_999", "buy", 1, 1.0)).code == "TEAM_NOT_FOUND"
    assert state_hash(harness.engine, sequencing=False) == before


def test_rate_limit_counts_accepted_orders_in_a_sliding_second(harness: Harness) -> None:
    mm = harness.team("mm")
    for i in range(10):
        assert response(harness.order(mm, "buy", 1, 1.00 + i / 100)).ok
    r = response(harness.order(mm, "buy", 1, 2.00))
    # the first of the 10 was 10 steps (ms) before: its slot frees 1 s after it
    frees_ns = NS_PER_S - 10 * harness.step_ns
    assert (r.code, r.details) == ("RATE_LIMIT_EXCEEDED", {
        "limit": 10, "window_s": 1, "current": 10, "scope": "orders", "retry_after_s": 0.99})
    harness.ts += frees_ns - harness.step_ns - 1  # the order just before
    assert response(harness.order(mm, "buy", 1, 2.00)).code == "RATE_LIMIT_EXCEEDED"
    assert response(harness.order(mm, "buy", 1, 2.00)).ok  # and just after


@given(st.lists(st.integers(0, NS_PER_S // 3)
                | st.sampled_from([NS_PER_S - 1, NS_PER_S, NS_PER_S + 1]), max_size=300))
@example([NS_PER_S // 2, NS_PER_S // 2, 0, NS_PER_S // 2])  # an order exactly 1 s before
def test_rate_window_counts_exactly_the_orders_of_the_last_second(gaps: list[int]) -> None:
    """Expired times are dropped in chunks; the count never sees them."""
    acct, accepted, ts = Account(team_id="t", role="r"), [], 0
    for gap in gaps:
        ts += gap
        assert acct.orders_in_window(ts) == sum(1 for t in accepted if t > ts - NS_PER_S)
        acct.recent.append(ts)
        accepted.append(ts)


def test_retried_client_order_id_is_answered_not_placed_again(harness: Harness) -> None:
    mm = harness.team("mm")
    first = response(harness.order(mm, "buy", 5, 1.00, client_order_id="abc"))
    before = state_hash(harness.engine, sequencing=False)
    harness.ts += 1_000
    again = response(harness.order(mm, "buy", 5, 1.00, client_order_id="abc"))
    assert again.order_id == first.order_id and again.ok
    assert again.ts_ns == first.ts_ns > 0  # when its effects were published, not now
    assert state_hash(harness.engine, sequencing=False) == before
    assert len(harness.engine.live) == 1


def test_a_client_order_id_reused_for_another_order_is_refused(harness: Harness) -> None:
    mm = harness.team("mm")
    first = response(harness.order(mm, "buy", 5, 1.00, client_order_id="abc"))
    before = state_hash(harness.engine, sequencing=False)
    for side, quantity, price in (("sell", 5, 1.00), ("buy", 6, 1.00), ("buy", 5, 1.01)):
        out = harness.order(mm, side, quantity, price, client_order_id="abc")
        r = response(out)
        assert (r.ok, r.code) == (False, "DUPLICATE_CLIENT_ORDER_ID")
        assert r.details == {"client_order_id": "abc", "order_id": first.order_id}
        assert [type(e) for _, e in out] == [OrderReject, Response]
    assert state_hash(harness.engine, sequencing=False) == before
    assert response(harness.order(mm, "buy", 5, 1.00, client_order_id="abc")).ok  # a retry


def test_a_worthless_option_is_marked_at_zero(harness: Harness) -> None:
    """The matcher took positive marks only: a call that fell to nothing kept its last mark in
    the position snapshots (/history/pnl) while the leaderboard valued it at 0."""
    mm, other = harness.team("mm"), harness.team("other")
    harness.order(mm, "sell", 2, 1.00)
    harness.order(other, "buy", 2, 1.00)
    for price, value in ((100, 2 * 100 * 100), (0, 0)):
        r = response(harness.apply(PriceMark(gw="t", instrument_id="SPX_4500_CALL", price=price)))
        assert r.ok
        harness.engine.take_records()
        harness.apply(SnapshotPositions())
        book = next(r for r in harness.engine.take_records()
                    if isinstance(r, PositionSnapshotRecord) and r.team_id == other)
        assert book.positions == {"SPX_4500_CALL": 2}
        assert book.pnl == book.cash + value


@pytest.mark.parametrize("price", [-1, 10**12, 2**63 - 1])
def test_a_mark_outside_the_price_range_is_refused(harness: Harness, price: int) -> None:
    before = state_hash(harness.engine, sequencing=False)
    r = response(harness.apply(PriceMark(gw="t", instrument_id="SPX_4500_CALL", price=price)))
    assert (r.ok, r.code) == (False, "INVALID_INSTRUMENT")
    assert state_hash(harness.engine, sequencing=False) == before


def test_market_order_remainder_is_cancelled_and_reported(harness: Harness) -> None:
    mm, other = harness.team("mm"), harness.team("other")
    harness.order(mm, "sell", 3, 5.00)
    out = harness.order(other, "buy", 10)
    assert fills(out) == [(3, 500)]
    (ack,) = events(out, CancelAck)
    assert (ack.cancelled_quantity, ack.reason) == (7, "market_remainder")
    result = response(out).result
    # as for a user's cancel: remaining_quantity is what is still working, none
    assert (result.status, result.filled_quantity, result.remaining_quantity) == ("cancelled", 3, 0)


def test_self_trade_cancels_the_resting_order(harness: Harness) -> None:
    mm, other = harness.team("mm"), harness.team("other")
    own = response(harness.order(mm, "sell", 5, 5.00)).order_id
    harness.order(other, "sell", 5, 5.01)
    out = harness.order(mm, "buy", 5, 5.01)
    (ack,) = events(out, CancelAck)
    assert (ack.order_id, ack.reason, ack.cancelled_quantity) == (own, "self_trade", 5)
    assert fills(out) == [(5, 501)]
    assert harness.engine.accounts[mm].positions == {"SPX_4500_CALL": 5}


def test_cancel_rules_never_leak_existence(harness: Harness) -> None:
    mm, other = harness.team("mm"), harness.team("other")
    mine = response(harness.order(mm, "buy", 5, 1.00)).order_id
    filled = response(harness.order(mm, "sell", 1, 9.00)).order_id
    harness.order(other, "buy", 1, 9.00)
    for team, oid in ((other, mine), (mm, filled), (mm, "ORD_99999999")):
        out = harness.apply(CancelOrder(gw="t", team_id=team, order_id=oid))
        r = response(out)
        assert (r.ok, r.code) == (False, "CANCEL_FAILED")
        assert r.message == "Cancel failed: Order not found"
        assert events(out, CancelReject)[0].team_id == team
    out = harness.apply(CancelOrder(gw="t", team_id=mm, order_id=mine))
    assert response(out).ok and events(out, CancelAck)[0].reason == "user_requested"
    assert harness.engine.accounts[mm].open_buy == {}


def test_partial_fill_then_cancel_keeps_the_filled_position(harness: Harness) -> None:
    mm, other = harness.team("mm"), harness.team("other")
    oid = response(harness.order(mm, "buy", 10, 2.00)).order_id
    harness.order(other, "sell", 4, 2.00)
    out = harness.apply(CancelOrder(gw="t", team_id=mm, order_id=oid))
    assert events(out, CancelAck)[0].cancelled_quantity == 6
    result = response(out).result
    assert (result.status, result.filled_quantity, result.remaining_quantity) == ("cancelled", 4, 0)
    assert harness.engine.accounts[mm].positions == {"SPX_4500_CALL": 4}


def test_closing_cancels_everything_and_rejects_new_orders(harness: Harness) -> None:
    mm = harness.team("mm")
    harness.order(mm, "buy", 5, 1.00)
    out = harness.apply(SetPhase(gw="t", phase="closed"))
    assert [a.reason for a in events(out, CancelAck)] == ["market_closed"]
    assert response(harness.order(mm, "buy", 5, 1.00)).code == "MARKET_CLOSED"


def test_only_a_commands_last_book_delta_says_no_more_follow(harness: Harness) -> None:
    """A reader of the md feed knows a command's book changes are all in (services/gateway/
    books.py waits for that before a book read goes on)."""
    mm = harness.team("mm")
    harness.order(mm, "buy", 5, 1.00)
    harness.order(mm, "buy", 5, 1.00, "SPX_4500_PUT")
    one = events(harness.order(mm, "buy", 1, 1.10), BookDelta)
    assert [d.more for d in one] == [False]
    out = harness.apply(SetPhase(gw="t", phase="closed"))
    assert [(d.instrument_id, d.more) for d in events(out, BookDelta)] == [
        ("SPX_4500_CALL", True), ("SPX_4500_PUT", False)]


def test_halted_instrument_rejects_until_resumed(harness: Harness) -> None:
    mm = harness.team("mm")
    harness.apply(SetHalt(gw="t", instrument_id="SPX_4500_CALL", halted=True))
    r = response(harness.order(mm, "buy", 1, 1.00))
    assert (r.code, r.details["halted"]) == ("MARKET_CLOSED", True)
    assert response(harness.order(mm, "buy", 1, 1.00, "SPX_4500_PUT")).ok
    harness.apply(SetHalt(gw="t", instrument_id="SPX_4500_CALL", halted=False))
    assert response(harness.order(mm, "buy", 1, 1.00)).ok


def test_expired_options_settle_and_close_for_good(harness: Harness) -> None:
    """European, cash-settled (GAME.md): they traded on after expiry, marked at the live spot."""
    mm, other = harness.team("mm"), harness.team("other")
    harness.order(mm, "sell", 2, 3.00)
    harness.order(other, "buy", 2, 3.00)
    resting = response(harness.order(mm, "sell", 4, 5.00)).order_id
    harness.order(mm, "buy", 1, 1.00, "SPX_4500_PUT")
    out = harness.apply(ExpireOptions(gw="t", prices={"SPX_4500_CALL": 120}))
    assert response(out).ok and response(out).details == {"expired": 1}
    (ack,) = events(out, CancelAck)
    assert (ack.order_id, ack.reason, ack.cancelled_quantity) == (resting, "expired", 4)
    (status,) = events(out, MarketStatus)
    assert (status.halted, status.expired) == ([], ["SPX_4500_CALL"])
    assert harness.engine.marks["SPX_4500_CALL"] == 120
    assert harness.engine.accounts[other].positions["SPX_4500_CALL"] == 2  # worth 1.20 each
    refused = response(harness.order(other, "sell", 1, 1.20))
    assert (refused.code, refused.details) == (
        "MARKET_CLOSED", {"instrument_id": "SPX_4500_CALL", "expired": True})
    reopen = response(harness.apply(SetHalt(gw="t", instrument_id="SPX_4500_CALL",
                                            halted=False)))
    assert (reopen.ok, reopen.code) == (False, "MARKET_CLOSED")
    mark = response(harness.apply(PriceMark(gw="t", instrument_id="SPX_4500_CALL", price=777)))
    assert (mark.ok, mark.code, harness.engine.marks["SPX_4500_CALL"]) == (
        False, "MARKET_CLOSED", 120)  # a new game's mark moved the settlement
    before = state_hash(harness.engine, sequencing=False)
    again = harness.apply(ExpireOptions(gw="t", prices={"SPX_4500_CALL": 999}))  # a re-send
    assert response(again).details == {"expired": 0} and events(again, CancelAck) == []
    for bad in ({"SPX": 440_000}, {"SPX_4500_PUT": -1}, {"NOPE": 1}, {}):
        assert response(harness.apply(ExpireOptions(gw="t", prices=bad))).code == (
            "INVALID_INSTRUMENT")
    assert state_hash(harness.engine, sequencing=False) == before
    assert response(harness.order(other, "sell", 1, 1.00, "SPX_4500_PUT")).ok  # not expired


def test_published_book_deltas_are_not_walked_by_the_garbage_collector(harness: Harness) -> None:
    """The replay rings keep thousands of them per book: with a list of changes each, a full
    collection took ~10 ms instead of ~0.5 (and it runs on the order path)."""
    mm = harness.team("mm")
    deltas = [d for i in range(20) for d in events(harness.order(mm, "buy", 1, 1.00 + i / 100),
                                                   BookDelta)]
    gc.collect()  # tuples of numbers leave the collector's lists as it meets them: the
    gc.collect()  # inner ones first, the outer one at the next pass
    assert deltas and not any(gc.is_tracked(d) or gc.is_tracked(d.changes) for d in deltas)


def test_registration_rules(harness: Harness) -> None:
    harness.team("Alpha")
    for name, role, code in (("alpha", "market_maker", "DUPLICATE_TEAM_NAME"),
                             ("Beta", "pirate", "UNSUPPORTED_ROLE"),
                             ("Gamma", "house", "UNSUPPORTED_ROLE"),
                             ("x" * 51, "retail", "INVALID_TEAM_NAME"),
                             ("", "retail", "INVALID_TEAM_NAME")):
        out = harness.apply(RegisterTeam(gw="t", team_name=name, role=role, key_hash="k"))
        assert response(out).code == code, name


def test_registration_stops_at_max_teams_and_changes_nothing(tmp_path: Path) -> None:
    """Registration needs no key: a script made 10,000 teams in a minute, and every
    leaderboard refresh and dashboard viewer paid for each one."""
    harness = Harness(make_config(tmp_path, game={"max_teams": 2}))
    harness.team("one")
    harness.team("two")
    before = state_hash(harness.engine, sequencing=False)
    r = response(harness.apply(RegisterTeam(gw="t", team_name="three", role="market_maker",
                                            key_hash="k")))
    assert (r.ok, r.code, r.details) == (False, "TEAM_LIMIT_REACHED", {"max_teams": 2})
    assert state_hash(harness.engine, sequencing=False) == before


def test_every_topic_is_numbered_without_gaps(harness: Harness) -> None:
    a, b = harness.team("a"), harness.team("b")
    seen: dict[bytes, list[int]] = {}
    for i in range(30):
        out = harness.order(a if i % 2 else b, "buy" if i % 3 else "sell", 1 + i % 4, 1.0 + i % 5)
        for topic, event in out:
            seen.setdefault(topic, []).append(event.seq)
    for topic, seqs in seen.items():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), topic
    answered = [e for _, e in harness.order(a, "buy", 1, 1.0)
                if isinstance(e, OrderAck | OrderReject)]
    assert len(answered) == 1  # one ack or reject per order on the team's stream


def test_new_order_fields_are_echoed_in_the_ack(harness: Harness) -> None:
    mm = harness.team("mm")
    out = harness.apply(NewOrder(gw="t", team_id=mm, instrument_id="SPY", side="buy",
                                 quantity=7, price=44000, client_order_id="c-1"))
    (ack,) = events(out, OrderAck)
    assert (ack.instrument_id, ack.quantity, ack.price, ack.client_order_id) == (
        "SPY", 7, 44000, "c-1")


def test_retry_answers_are_kept_for_a_bounded_window_of_ids(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "COID_WINDOW", 3)
    mm = harness.team("mm")
    for i in range(5):
        harness.ts += 1_000_000_000  # stay under the rate limit
        assert response(harness.order(mm, "buy", 1, 1.00 + i / 100, client_order_id=f"c{i}")).ok
    assert list(harness.engine.coids[mm]) == ["c2", "c3", "c4"]
    again = response(harness.order(mm, "buy", 1, 1.04, client_order_id="c4"))
    assert again.order_id == harness.engine.coids[mm]["c4"].result[0]
    monkeypatch.setattr(engine, "COID_WINDOW", 1)  # smaller than the state holds: it shrinks
    harness.ts += 1_000_000_000
    assert response(harness.order(mm, "buy", 1, 1.05, client_order_id="c5")).ok
    assert list(harness.engine.coids[mm]) == ["c5"]


def test_a_version_2_snapshot_is_read_with_its_retry_answers(harness: Harness) -> None:
    """The file was written by the matcher of STATE_VERSION 2 (Responses kept whole for
    retries): alpha sold 5 @ 25.50 (a-1), beta bought 3 of them (b-1) and bids 4 @ 25.00 (b-2).
    An upgraded matcher restarts from its own snapshots."""
    data = (Path(__file__).parents[1] / "fixtures" / "matcher-state-v2.msgpack").read_bytes()
    restore(harness.engine, decode_state(data))
    harness.seq, harness.ts = harness.engine.last_seq, harness.engine.last_ts + 10**9
    assert harness.engine.books["SPX_4500_CALL"].depth(5) == ([(2500, 4)], [(2550, 2)])
    again = response(harness.order("TEAM_002", "buy", 3, 25.50, client_order_id="b-1"))
    assert (again.ok, again.order_id, again.ts_ns) == (True, "ORD_00000002", 1700000001004000000)
    assert again.result == OrderResult(
        order_id="ORD_00000002", client_order_id="b-1", status="filled", filled_quantity=3,
        remaining_quantity=0, notional=7650)
    reused = response(harness.order("TEAM_001", "buy", 1, 25.50, client_order_id="a-1"))
    assert reused.code == "DUPLICATE_CLIENT_ORDER_ID"
    assert reused.details == {"client_order_id": "a-1", "order_id": "ORD_00000001"}
    assert harness.engine.books["SPX_4500_CALL"].depth(5) == ([(2500, 4)], [(2550, 2)])
    assert decode_state(snapshot_bytes(harness.engine)).version == STATE_VERSION == 3


def test_a_reissued_key_replaces_the_team_key_and_tells_the_gateways(harness: Harness) -> None:
    team = harness.team("leaky")
    out = harness.apply(ReissueKey(gw="t", team_id=team, key_hash="hash-new"))
    assert response(out).ok and harness.engine.teams[team].key_hash == "hash-new"
    assert [(t, e.team_id) for t, e in out if isinstance(e, KeyReissued)] == [(b"sys.keys", team)]
    before = state_hash(harness.engine, sequencing=False)
    for refused, code in ((ReissueKey(gw="t", team_id="TEAM_999", key_hash="h"), "TEAM_NOT_FOUND"),
                          (ReissueKey(gw="t", team_id="HOUSE", key_hash="h"), "TEAM_NOT_FOUND"),
                          (ReissueKey(gw="t", team_id=team, key_hash=""), "INVALID_KEY")):
        out = harness.apply(refused)
        assert response(out).code == code and not events(out, KeyReissued)
    assert state_hash(harness.engine, sequencing=False) == before


def test_every_account_at_once_is_each_account_as_asked_alone(harness: Harness) -> None:
    """The leaderboard's one query walks the resting orders once for every team."""
    a, b, c = harness.team("a"), harness.team("b"), harness.team("c")
    for i, team in enumerate((a, b, a, c, b, a)):
        harness.order(team, "buy", 1, 1.00 + i / 100)
    assert len(fills(harness.order(c, "sell", 2, 1.04))) == 2  # a's 1.05 and b's 1.04
    every = queries.accounts(harness.engine, orders_of=list(harness.engine.accounts))
    assert every.accounts == [queries.account(harness.engine, t) for t in harness.engine.accounts]
    assert {r.team_id: len(r.open_orders) for r in every.accounts if r.open_orders} == {
        a: 2, b: 1, c: 1}


def test_the_leaderboard_query_lists_the_orders_of_the_teams_asked_and_counts_all(
        harness: Harness) -> None:
    """It listed every resting order of every team, every second, for a figure per team."""
    a, b = harness.team("a"), harness.team("b")
    for iid in ("SPX_4500_CALL", "SPY", "SPX_4400_PUT"):  # both sides, but SPY is no option
        for side, price in (("buy", 1.00), ("sell", 2.00)):
            harness.order(a, side, 1, price, instrument=iid)
    harness.order(a, "buy", 1, 1.01, instrument="SPY_440_PUT")
    assert fills(harness.order(b, "sell", 2, 1.01, instrument="SPY_440_PUT")) == [(1, 101)]
    harness.order(a, "sell", 1, 2.00, instrument="SPY_440_PUT")  # a quotes one side now
    every = {r.team_id: r for r in queries.accounts(harness.engine, orders_of=[b]).accounts}
    assert (every[a].open_count, every[a].two_sided, every[a].open_orders) == (7, 2, [])
    assert every[b].open_count == 1 and [o.side for o in every[b].open_orders] == ["sell"]
    alone = queries.account(harness.engine, a)
    assert (alone.open_count, alone.two_sided, len(alone.open_orders)) == (7, 2, 7)


def test_teams_are_found_by_id_and_by_their_current_key_also_after_a_restore(
        harness: Harness) -> None:
    """How every gateway learns a key it has not seen (queries.team); a house team has none."""
    a, b = harness.team("a"), harness.team("b")
    harness.apply(ReissueKey(gw="t", team_id=b, key_hash="hash-b2"))
    resumed = Engine(harness.engine.game)
    restore(resumed, decode_state(encode_state(capture(harness.engine))))
    for engine_ in (harness.engine, resumed):
        def found(team_id: str | None = None, key_hash: str | None = None,
                  e: Engine = engine_) -> str | None:
            team = queries.team(e, team_id, key_hash).team
            return team.team_id if team is not None else None

        assert (found(key_hash="hash-a"), found(key_hash="hash-b2"), found(b)) == (a, b, b)
        assert found(key_hash="hash-b") is None and found(key_hash="") is None
        assert found("TEAM_999") is None and found("HOUSE") == "HOUSE"
