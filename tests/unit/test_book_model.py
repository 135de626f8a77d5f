"""Property tests: the matcher engine against a naive reference model of the order book.

The model below keeps every resting order in one plain list and finds the best counter-order by
a linear scan, so it is obviously right (GAME.md): price-time priority, trade at the resting
price, self-trade prevention cancels the resting order of the same team and goes on, a market
order fills what it can and the rest is cancelled, a market order that would meet nobody else's
order is rejected with NO_LIQUIDITY.

A hypothesis state machine feeds the same random commands (passive, crossing and market orders,
cancels of live, dead, unknown and other teams' orders) to the engine and the model, and after
every step compares the trades, cancels, answers, the books (level by level, FIFO), positions,
open exposure, cash and fees, and checks conservation of quantity, position and cash.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from common.config import Config, load_config, only_roles
from common.messages import (
    BookDelta,
    CancelAck,
    CancelOrder,
    CancelReject,
    Command,
    Event,
    ExecutionReport,
    NewOrder,
    OrderAck,
    OrderReject,
    OrderResult,
    RegisterTeam,
    Response,
    TeamInfo,
    TradePrint,
)
from services.matcher.engine import CANCEL_FAILED, Engine
from services.matcher.state import capture, restore, state_hash

# --- the small world ---

INSTRUMENTS = ("SPX_4500_CALL", "SPX_4400_PUT", "SPY")
MULTIPLIER = {"SPX_4500_CALL": 100, "SPX_4400_PUT": 100, "SPY": 1}
LO, HI = 95, 105  # price ticks: a narrow band, so orders cross often
MAX_QTY = 20
HUGE = 10**6  # no limit is reached (a config bounds them: 10**6 lots at max_price is the most)
GW = "gw-test"  # responses are only emitted when the command names a gateway

ROLES: dict[str, dict[str, int]] = {
    # Distinct fees per role, so a fee booked with the wrong role or liquidity shows up.
    "whale_a": {"maker_fee_cents": 2, "taker_fee_cents": -1},
    "whale_b": {"maker_fee_cents": -1, "taker_fee_cents": -3},
}
TEAMS = (("alpha", "whale_a"), ("beta", "whale_b"), ("gamma", "whale_a"), ("delta", "whale_b"))


def make_config() -> Config:
    roles = {
        name: {
            **fees,
            "position_limit": HUGE,
            "total_position_limit": HUGE,
            "underlying_position_limit": HUGE,
            "max_order_size": HUGE,
            "max_orders_per_s": HUGE,
        }
        for name, fees in ROLES.items()
    }
    return load_config(env={}, overrides={"game": {"roles": only_roles(roles)}})


CONFIG = make_config()

# --- the naive reference model ---

Trade = tuple[str, str, int, int]  # (maker order id, taker order id, price, quantity)
Cancel = tuple[str, int, str]  # (order id, quantity cancelled, reason)


@dataclass
class MOrder:
    order_id: str
    team: str
    iid: str
    side: str
    price: int | None  # None: market
    quantity: int
    arrival: int
    remaining: int
    filled: int = 0
    cancelled: int = 0
    notional: int = 0


@dataclass
class Outcome:
    ok: bool
    code: str | None = None
    order_id: str | None = None
    trades: list[Trade] = field(default_factory=list)
    cancels: list[Cancel] = field(default_factory=list)
    result: tuple[str, int, int, int] | None = None  # (status, filled, remaining, notional)


def _crosses(taker: MOrder, maker: MOrder) -> bool:
    assert maker.price is not None
    if taker.price is None:
        return True
    return maker.price <= taker.price if taker.side == "buy" else maker.price >= taker.price


def _priority(order: MOrder) -> tuple[int, int]:
    """Smaller is better: best price first, then earliest arrival."""
    assert order.price is not None
    return (-order.price if order.side == "buy" else order.price, order.arrival)


class Model:
    def __init__(self) -> None:
        self.role: dict[str, str] = {}  # team id -> role
        self.resting: list[MOrder] = []  # every resting order, in arrival order
        self.orders: dict[str, MOrder] = {}  # every accepted order
        self.positions: dict[tuple[str, str], int] = defaultdict(int)
        self.cash: dict[str, int] = defaultdict(int)
        self.fees: dict[str, int] = defaultdict(int)
        self.accepted = 0

    def register(self, team_id: str, role: str) -> None:
        self.role[team_id] = role

    def book(self, iid: str, side: str) -> list[MOrder]:
        """Resting orders of one side in priority order."""
        mine = [o for o in self.resting if o.iid == iid and o.side == side]
        return sorted(mine, key=_priority)

    def best(self, iid: str, side: str) -> int | None:
        prices = [o.price for o in self.resting if o.iid == iid and o.side == side]
        if not prices:
            return None
        return max(p for p in prices if p is not None) if side == "buy" else min(
            p for p in prices if p is not None)

    def levels(self, iid: str, side: str) -> list[tuple[int, int]]:
        totals: dict[int, int] = defaultdict(int)
        for o in self.book(iid, side):
            assert o.price is not None
            totals[o.price] += o.remaining
        return sorted(totals.items(), reverse=side == "buy")

    def _book_fill(self, order: MOrder, quantity: int, price: int, liquidity: str) -> None:
        fees = ROLES[self.role[order.team]]
        fee = quantity * fees[f"{liquidity}_fee_cents"]
        signed = quantity if order.side == "buy" else -quantity
        self.positions[(order.team, order.iid)] += signed
        self.cash[order.team] += fee - signed * price * MULTIPLIER[order.iid]
        self.fees[order.team] += fee
        order.remaining -= quantity
        order.filled += quantity
        order.notional += quantity * price

    def submit(
        self, team: str, iid: str, side: str, order_type: str, price: int | None, quantity: int
    ) -> Outcome:
        opposite = "sell" if side == "buy" else "buy"
        market = order_type == "market"
        if market and not any(
            o.iid == iid and o.side == opposite and o.team != team for o in self.resting
        ):
            return Outcome(ok=False, code="NO_LIQUIDITY")
        self.accepted += 1
        order = MOrder(
            order_id=f"ORD_{self.accepted:08d}", team=team, iid=iid, side=side,
            price=None if market else price, quantity=quantity, arrival=self.accepted,
            remaining=quantity)
        self.orders[order.order_id] = order
        out = Outcome(ok=True, order_id=order.order_id)
        while order.remaining:
            candidates = [
                o for o in self.resting
                if o.iid == iid and o.side == opposite and _crosses(order, o)
            ]
            if not candidates:
                break
            maker = min(candidates, key=_priority)
            if maker.team == team:  # self-trade prevention: the resting order goes
                out.cancels.append((maker.order_id, maker.remaining, "self_trade"))
                maker.cancelled += maker.remaining
                maker.remaining = 0
                self.resting.remove(maker)
                continue
            quantity_traded = min(order.remaining, maker.remaining)
            assert maker.price is not None
            self._book_fill(maker, quantity_traded, maker.price, "maker")
            self._book_fill(order, quantity_traded, maker.price, "taker")
            out.trades.append((maker.order_id, order.order_id, maker.price, quantity_traded))
            if not maker.remaining:
                self.resting.remove(maker)
        unfilled = order.remaining
        if unfilled and market:
            out.cancels.append((order.order_id, unfilled, "market_remainder"))
            order.cancelled += unfilled
            order.remaining = 0
            out.result = ("cancelled", order.filled, 0, order.notional)  # nothing left working
        else:
            if unfilled:
                self.resting.append(order)
            status = "filled" if not unfilled else "partially_filled" if order.filled else "new"
            out.result = (status, order.filled, unfilled, order.notional)
        return out

    def cancel(self, team: str, order_id: str) -> Outcome:
        order = self.orders.get(order_id)
        if order is None or order.team != team or order not in self.resting:
            return Outcome(ok=False, code="CANCEL_FAILED")
        out = Outcome(ok=True, order_id=order_id, cancels=[(order_id, order.remaining,
                                                            "user_requested")])
        out.result = ("cancelled", order.filled, 0, order.notional)
        order.cancelled += order.remaining
        order.remaining = 0
        self.resting.remove(order)
        return out


# --- reading the engine's events ---


@dataclass
class Observed:
    responses: list[Response] = field(default_factory=list)
    acks: list[OrderAck] = field(default_factory=list)
    rejects: list[OrderReject] = field(default_factory=list)
    reports: list[ExecutionReport] = field(default_factory=list)
    prints: list[TradePrint] = field(default_factory=list)
    cancel_acks: list[CancelAck] = field(default_factory=list)
    cancel_rejects: list[CancelReject] = field(default_factory=list)
    deltas: list[BookDelta] = field(default_factory=list)
    others: list[Event] = field(default_factory=list)

    def trades(self) -> list[Trade]:
        """(maker id, taker id, price, qty) per trade, in emission order, after checking that
        every trade has exactly one maker and one taker report and a matching print."""
        by_id: dict[str, list[ExecutionReport]] = defaultdict(list)
        for r in self.reports:
            by_id[r.trade_id].append(r)
        prints = {p.trade_id: p for p in self.prints}
        assert list(prints) == list(by_id), "one trade print per pair of execution reports"
        out: list[Trade] = []
        for trade_id, reports in by_id.items():
            assert sorted(r.liquidity for r in reports) == ["maker", "taker"], reports
            maker = next(r for r in reports if r.liquidity == "maker")
            taker = next(r for r in reports if r.liquidity == "taker")
            assert maker.team_id != taker.team_id, "a trade with yourself"
            assert maker.side != taker.side
            assert maker.instrument_id == taker.instrument_id
            assert (maker.executed_price, maker.executed_quantity) == (
                taker.executed_price, taker.executed_quantity)
            p = prints[trade_id]
            assert (p.instrument_id, p.price, p.quantity, p.aggressor) == (
                taker.instrument_id, taker.executed_price, taker.executed_quantity, taker.side)
            out.append((maker.order_id, taker.order_id, taker.executed_price,
                        taker.executed_quantity))
        return out


def observe(out: list[tuple[bytes, Event]]) -> Observed:
    seen = Observed()
    for _topic, event in out:
        match event:
            case Response():
                seen.responses.append(event)
            case OrderAck():
                seen.acks.append(event)
            case OrderReject():
                seen.rejects.append(event)
            case ExecutionReport():
                seen.reports.append(event)
            case TradePrint():
                seen.prints.append(event)
            case CancelAck():
                seen.cancel_acks.append(event)
            case CancelReject():
                seen.cancel_rejects.append(event)
            case BookDelta():
                seen.deltas.append(event)
            case _:
                seen.others.append(event)
    return seen


# --- the harness: one engine and one model, fed the same commands ---


class Harness:
    def __init__(self) -> None:
        self.engine = Engine(CONFIG.game)
        self.model = Model()
        self.seq = 0
        self.team_ids: list[str] = []
        self.topic_seq: dict[bytes, int] = {}
        # Per accepted order, from the engine's events only: quantity, filled, cancelled.
        self.quantity: dict[str, int] = {}
        self.filled: dict[str, int] = defaultdict(int)
        self.cancelled: dict[str, int] = defaultdict(int)
        for iid in INSTRUMENTS:
            assert self.engine.instruments[iid].multiplier == MULTIPLIER[iid]
        for name, role in TEAMS:
            resp = self.single_response(self.apply(
                RegisterTeam(team_name=name, role=role, key_hash=f"h-{name}", gw=GW)))
            assert resp.ok, resp
            assert isinstance(resp.result, TeamInfo)
            team_id = resp.result.team_id
            self.team_ids.append(team_id)
            self.model.register(team_id, role)

    def apply(self, cmd: Command) -> Observed:
        self.seq += 1
        out = self.engine.apply(cmd, self.seq, self.seq * 1_000_000)
        for topic, event in out:  # every topic's seq is gap-free, also across a restore
            assert event.seq == self.topic_seq.get(topic, 0) + 1, (topic, event)
            self.topic_seq[topic] = event.seq
        seen = observe(out)
        for ack in seen.acks:
            self.quantity[ack.order_id] = ack.quantity
        for r in seen.reports:
            self.filled[r.order_id] += r.executed_quantity
            quantity = self.quantity[r.order_id]
            left = quantity - self.filled[r.order_id] - self.cancelled[r.order_id]
            assert r.remaining_quantity == left, r
            assert r.order_status == ("filled" if not left else "partially_filled"), r
        for c in seen.cancel_acks:
            self.cancelled[c.order_id] += c.cancelled_quantity
        return seen

    @staticmethod
    def single_response(seen: Observed) -> Response:
        assert len(seen.responses) == 1, seen.responses
        return seen.responses[0]

    def order(
        self, team: str, iid: str, side: str, order_type: str, price: int | None, qty: int
    ) -> str | None:
        cmd = NewOrder(team_id=team, instrument_id=iid, side=side, quantity=qty,
                       order_type=order_type, price=price, gw=GW, req_id=f"r{self.seq + 1}")
        seen = self.apply(cmd)
        expected = self.model.submit(team, iid, side, order_type, price, qty)
        resp = self.single_response(seen)
        assert resp.ok == expected.ok, (resp, expected)
        if not expected.ok:
            assert resp.code == expected.code, resp
            assert [r.error_code for r in seen.rejects] == [expected.code]
            assert not (seen.acks or seen.reports or seen.prints or seen.cancel_acks)
            return None
        assert resp.order_id == expected.order_id
        assert [a.order_id for a in seen.acks] == [expected.order_id]
        assert not seen.rejects
        self.check_reports(seen, expected)
        assert isinstance(resp.result, OrderResult)
        r = resp.result
        assert (r.status, r.filled_quantity, r.remaining_quantity, r.notional) == expected.result
        return expected.order_id

    def cancel(self, team: str, order_id: str) -> bool:
        seen = self.apply(CancelOrder(team_id=team, order_id=order_id, gw=GW))
        expected = self.model.cancel(team, order_id)
        resp = self.single_response(seen)
        assert resp.ok == expected.ok, (resp, expected)
        if expected.ok:
            assert not seen.cancel_rejects
            assert isinstance(resp.result, OrderResult)
            r = resp.result
            assert (r.status, r.filled_quantity, r.remaining_quantity, r.notional) == (
                expected.result)
        else:
            assert resp.code == "CANCEL_FAILED" and resp.message == CANCEL_FAILED, resp
            assert [(c.order_id, c.error_code) for c in seen.cancel_rejects] == [
                (order_id, "CANCEL_FAILED")]
        self.check_reports(seen, expected)
        return expected.ok

    def check_reports(self, seen: Observed, expected: Outcome) -> None:
        assert seen.trades() == expected.trades
        assert [(c.order_id, c.cancelled_quantity, c.reason) for c in seen.cancel_acks] == (
            expected.cancels)
        for r in seen.reports:  # the fee follows the team's role and the liquidity
            role = self.model.role[r.team_id]
            assert r.fee == r.executed_quantity * ROLES[role][f"{r.liquidity}_fee_cents"], r
        for delta in seen.deltas:  # published level totals are the model's
            for side, price, total in delta.changes:
                assert dict(self.model.levels(delta.instrument_id, side)).get(price, 0) == total

    def snapshot_restore(self) -> None:
        before = state_hash(self.engine)
        fresh = Engine(CONFIG.game)
        restore(fresh, capture(self.engine))
        assert state_hash(fresh) == before
        self.engine = fresh

    # --- invariants ---

    def check_all(self) -> None:
        engine, model = self.engine, self.model
        for iid in INSTRUMENTS:
            book = engine.books[iid]
            bid, ask = book.best_bid(), book.best_ask()
            assert bid is None or ask is None or bid < ask, (iid, bid, ask)
            assert not book.crossed()
            assert (bid, ask) == (model.best(iid, "buy"), model.best(iid, "sell"))
            for side, engine_side in (("buy", book.bids), ("sell", book.asks)):
                got = [(o.order_id, o.team_id, o.price, o.remaining)
                       for o in engine_side.live_orders()]
                want = [(o.order_id, o.team, o.price, o.remaining) for o in model.book(iid, side)]
                assert got == want, (iid, side)  # same orders, same priority (FIFO per level)
                assert engine_side.depth(None) == model.levels(iid, side), (iid, side)
        assert list(engine.live) == [o.order_id for o in model.resting]
        for team in engine.team_live:  # each team's index: its orders, in the same order
            assert list(engine.team_live[team]) == [
                o.order_id for o in model.resting if o.team == team], team
        # Quantity conservation, from the engine's own events.
        for order_id, quantity in self.quantity.items():
            live = engine.live.get(order_id)
            remaining = live.remaining if live is not None else 0
            assert quantity == self.filled[order_id] + remaining + self.cancelled[order_id], (
                order_id)
            m = model.orders[order_id]
            assert (self.filled[order_id], self.cancelled[order_id], remaining) == (
                m.filled, m.cancelled, m.remaining), order_id
        # Positions, exposure, cash and fees.
        for iid in INSTRUMENTS:
            total = 0
            for team in self.team_ids:
                acct = engine.accounts[team]
                position = acct.positions.get(iid, 0)
                assert position == model.positions[(team, iid)], (team, iid)
                total += position
                for side, exposure in (("buy", acct.open_buy), ("sell", acct.open_sell)):
                    open_qty = sum(o.remaining for o in model.resting
                                   if o.team == team and o.iid == iid and o.side == side)
                    assert exposure.get(iid, 0) == open_qty, (team, iid, side)
            assert total == 0, iid
        for team in self.team_ids:
            acct = engine.accounts[team]
            assert (acct.cash, acct.fees) == (model.cash[team], model.fees[team]), team
        assert sum(a.cash - a.fees for a in engine.accounts.values()) == 0


# --- the state machine ---

teams_st = st.integers(0, len(TEAMS) - 1)
iid_st = st.sampled_from(INSTRUMENTS)
side_st = st.sampled_from(("buy", "sell"))
qty_st = st.integers(1, MAX_QTY)


class BookMachine(RuleBasedStateMachine):
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness()

    @initialize()
    def start(self) -> None:
        self.h.check_all()

    def team(self, i: int) -> str:
        return self.h.team_ids[i]

    def _new(
        self, team: int, iid: str, side: str, order_type: str, price: int | None, qty: int
    ) -> Any:
        order_id = self.h.order(self.team(team), iid, side, order_type, price, qty)
        return multiple() if order_id is None else order_id

    @rule(target=orders, team=teams_st, iid=iid_st, side=side_st, price=st.integers(LO, HI),
          qty=qty_st)
    def limit_any(self, team: int, iid: str, side: str, price: int, qty: int) -> Any:
        return self._new(team, iid, side, "limit", price, qty)

    @rule(target=orders, team=teams_st, iid=iid_st, side=side_st, price=st.integers(LO, HI),
          qty=qty_st)
    def limit_passive(self, team: int, iid: str, side: str, price: int, qty: int) -> Any:
        """A limit order that crosses no resting order, anyone's: it must just rest."""
        if side == "buy":
            ask = self.h.model.best(iid, "sell")
            price = price if ask is None else min(price, ask - 1)
        else:
            bid = self.h.model.best(iid, "buy")
            price = price if bid is None else max(price, bid + 1)
        before = len(self.h.model.resting)
        result = self._new(team, iid, side, "limit", price, qty)
        assert len(self.h.model.resting) == before + 1
        return result

    @rule(target=orders, team=teams_st, iid=iid_st, side=side_st, through=st.integers(0, 3),
          qty=qty_st)
    def limit_crossing(self, team: int, iid: str, side: str, through: int, qty: int) -> Any:
        """A limit order priced at or through the opposite best (when there is one)."""
        if side == "buy":
            ask = self.h.model.best(iid, "sell")
            price = HI if ask is None else ask + through
        else:
            bid = self.h.model.best(iid, "buy")
            price = LO if bid is None else max(1, bid - through)
        return self._new(team, iid, side, "limit", price, qty)

    @rule(target=orders, team=teams_st, iid=iid_st, side=side_st, qty=st.integers(1, 3 * MAX_QTY))
    def market(self, team: int, iid: str, side: str, qty: int) -> Any:
        return self._new(team, iid, side, "market", None, qty)

    @rule(data=st.data())
    def cancel_live(self, data: st.DataObject) -> None:
        resting = self.h.model.resting
        if not resting:
            return
        order = data.draw(st.sampled_from(resting), label="order")
        assert self.h.cancel(order.team, order.order_id)

    @rule(order_id=orders)
    def cancel_own(self, order_id: str) -> None:
        """Cancel by the owner: live or already filled/cancelled, the model knows which."""
        self.h.cancel(self.h.model.orders[order_id].team, order_id)

    @rule(order_id=orders, other=st.integers(1, len(TEAMS) - 1))
    def cancel_foreign(self, order_id: str, other: int) -> None:
        owner = self.h.model.orders[order_id].team
        team = self.team((self.h.team_ids.index(owner) + other) % len(TEAMS))
        assert not self.h.cancel(team, order_id)

    @rule(team=teams_st, order_id=st.one_of(
        st.sampled_from(("", "ORD_99999999", "ORD_00000000", "TRD_00000001", "nonsense")),
        st.integers(1, 5).map(lambda k: f"+{k}")))
    def cancel_unknown(self, team: int, order_id: str) -> None:
        if order_id.startswith("+"):  # an id the engine has not given out yet
            order_id = f"ORD_{self.h.model.accepted + int(order_id[1:]):08d}"
        assert not self.h.cancel(self.team(team), order_id)

    @rule()
    def snapshot_restore(self) -> None:
        """Swap in a fresh engine restored from a snapshot; the model must not notice."""
        self.h.snapshot_restore()

    @invariant()
    def consistent(self) -> None:
        self.h.check_all()


BookMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBookModel = BookMachine.TestCase


# --- snapshot / restore mid-run preserves behaviour ---


@st.composite
def command_lists(draw: st.DrawFn) -> list[Command]:
    n = draw(st.integers(5, 60))
    cmds: list[Command] = []
    for _ in range(n):
        team = f"TEAM_{draw(teams_st) + 1:03d}"
        kind = draw(st.sampled_from(("limit", "limit", "limit", "market", "cancel")))
        if kind == "cancel":
            order_id = f"ORD_{draw(st.integers(1, n)):08d}"
            cmds.append(CancelOrder(team_id=team, order_id=order_id, gw=GW))
            continue
        price = draw(st.integers(LO, HI)) if kind == "limit" else None
        cmds.append(NewOrder(team_id=team, instrument_id=draw(iid_st), side=draw(side_st),
                             quantity=draw(qty_st), order_type=kind, price=price, gw=GW))
    return cmds


def _fresh_engine() -> Engine:
    engine = Engine(CONFIG.game)
    for seq, (name, role) in enumerate(TEAMS, start=1):
        engine.apply(RegisterTeam(team_name=name, role=role, key_hash="h"), seq, seq)
    assert list(engine.accounts) == [f"TEAM_{i:03d}" for i in range(1, len(TEAMS) + 1)]
    return engine


@settings(max_examples=150, deadline=None)
@given(cmds=command_lists(), split=st.floats(0, 1))
def test_snapshot_restore_mid_run_preserves_behaviour(cmds: list[Command], split: float) -> None:
    """Run the same commands on one engine straight through and on another that is snapshotted
    part-way and restored into a fresh engine: every later event and the final state agree."""
    k = int(split * len(cmds))
    base = len(TEAMS)
    straight, interrupted = _fresh_engine(), _fresh_engine()
    for i, cmd in enumerate(cmds[:k], start=base + 1):
        assert straight.apply(cmd, i, i * 1000) == interrupted.apply(cmd, i, i * 1000)
    snapshot = capture(interrupted)
    restored = Engine(CONFIG.game)
    restore(restored, snapshot)
    assert state_hash(restored) == state_hash(straight) == state_hash(interrupted)
    for iid in INSTRUMENTS:
        for side in ("bids", "asks"):
            got = [(o.order_id, o.remaining) for o in getattr(restored.books[iid], side)
                   .live_orders()]
            want = [(o.order_id, o.remaining) for o in getattr(straight.books[iid], side)
                    .live_orders()]
            assert got == want
    for i, cmd in enumerate(cmds[k:], start=base + k + 1):
        assert restored.apply(cmd, i, i * 1000) == straight.apply(cmd, i, i * 1000)
        assert state_hash(restored) == state_hash(straight)


# --- found by the model once (an engine bug, now fixed) ---


def test_taker_execution_report_remaining_after_each_fill() -> None:
    engine = _fresh_engine()
    seq = len(TEAMS)
    for _ in range(2):  # TEAM_001 rests two bids of 1 @ 95
        seq += 1
        engine.apply(NewOrder(team_id="TEAM_001", instrument_id="SPX_4500_CALL", side="buy",
                              quantity=1, price=95), seq, seq)
    out = engine.apply(NewOrder(team_id="TEAM_002", instrument_id="SPX_4500_CALL", side="sell",
                                quantity=2, price=95), seq + 1, seq + 1)
    taker = [(e.executed_quantity, e.remaining_quantity, e.order_status) for _, e in out
             if isinstance(e, ExecutionReport) and e.liquidity == "taker"]
    assert taker == [(1, 1, "partially_filled"), (1, 0, "filled")]
