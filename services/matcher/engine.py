"""The matcher's deterministic core: command in, events out. No I/O, no clock, no randomness.

One thread runs `apply` per command: validate, match, book positions and fees, and emit the
events, each stamped with its topic's next seq. Time comes with the command (the sequencer
stamps it before journaling), so replaying the journal reproduces every event and the state.

This is the exchange's hot path (see bench/matcher_core.py). The order paths bind locals and
build each event with its stamp (seq, time, epoch) in the constructor: setting three fields on a
struct afterwards costs about as much as building it. Cold paths stamp through `_emit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from common import topics
from common.config import PHASES, GameConfig
from common.instruments import build_instruments
from common.messages import (
    MAX_TEAM_NAME,
    BookDelta,
    CancelAck,
    CancelAll,
    CancelOrder,
    CancelReject,
    Command,
    Event,
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
    TeamInfo,
    TradePrint,
)
from common.records import AnyRecord
from services.matcher.accounts import Account, Team
from services.matcher.auction import uncross
from services.matcher.book import Order, OrderBook
from services.matcher.records import (
    mark_to_market,
    order_record,
    position_record,
    team_record,
    trade_record,
)
from services.matcher.validator import Reject, Validator, expired_reject

Out = tuple[bytes, Event]
CANCEL_FAILED = "Cancel failed: Order not found"  # one text for every case: existence never leaks
# %-formatting is the cheapest way to the exact ids ("ORD_00000042"); one or more per order.
ORDER_ID, TRADE_ID = "ORD_%08d", "TRD_%08d"
# Retries are answered for the last COID_WINDOW client order ids of each team: 20 s of orders
# at a market maker's 10 a second, far beyond a retry after the 5 s timeout, and it keeps the
# matcher's memory and snapshots bounded (at 1,000 a team, a snapshot of game.max_teams teams
# took 2.3 s of the matching thread and 250 MB; 0.4 s and 50 MB at 200).
COID_WINDOW = 200


class Answered(msgspec.Struct, array_like=True, gc=False):
    """An accepted order's answer, kept for retries: what was asked (instrument, side,
    quantity, type, price), when it was answered, and the order as it stood then (id, status,
    filled, remaining, notional). A retry asks the same; anything else reusing the id is
    refused. Flat, not the Response itself: snapshots hold up to COID_WINDOW of these per team,
    and 200,000 Responses' named, nested fields were most of a snapshot's time and size."""

    order: tuple[str, str, int, str, int | None]
    ts_ns: int
    result: tuple[str, str, int, int, int]


def answered(asked: tuple[str, str, int, str, int | None], ts_ns: int,
             result: OrderResult) -> Answered:
    return Answered(asked, ts_ns, (result.order_id, result.status, result.filled_quantity,
                                   result.remaining_quantity, result.notional))


class _Topics(dict[str, bytes]):
    """Topic per team or gateway id, built on first use (a hit is a plain dict lookup)."""

    def __init__(self, build: Callable[[str], bytes]) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, key: str) -> bytes:
        topic = self[key] = self._build(key)
        return topic


class Engine:
    def __init__(self, game: GameConfig, epoch: int = 0) -> None:
        self.game = game
        self.epoch = epoch
        self.instruments = build_instruments(game)
        self.validator = Validator(game, self.instruments)
        self.books = {iid: OrderBook(iid) for iid in self.instruments}
        self._option = {iid: inst.is_option for iid, inst in self.instruments.items()}
        self._multiplier = {iid: inst.multiplier for iid, inst in self.instruments.items()}
        self._book_topic = {iid: topics.book(iid) for iid in self.instruments}
        self._trade_topic = {iid: topics.trade(iid) for iid in self.instruments}
        self._exec_topic = _Topics(topics.execs)
        self._resp_topic = _Topics(topics.response)
        self._fee_rates = {name: (r.maker_fee_cents, r.taker_fee_cents)
                           for name, r in game.roles.items()}
        self._handlers: dict[type[Command], Callable[[Any], None]] = {
            NewOrder: self._new_order, CancelOrder: self._cancel, CancelAll: self._cancel_all,
            RegisterTeam: self._register, SetPhase: self._set_phase, SetHalt: self._set_halt,
            PriceMark: self._mark, SnapshotPositions: self._snapshot_positions,
            ReissueKey: self._reissue_key, ExpireOptions: self._expire,
        }
        self.out: list[Out] = []
        self._records: list[AnyRecord] = []  # for the database; drained by take_records()
        self._dirty: dict[OrderBook, None] = {}  # insertion-ordered: output order is state
        self._ts = 0
        # --- state (what a snapshot holds; see services/matcher/state.py) ---
        self.last_seq = 0
        self.last_ts = 0
        self.phase = game.initial_phase
        self.halted: set[str] = set()  # no order reaches these books: operator halts, expiries
        self.expired: set[str] = set()
        self.counters = {"order": 0, "trade": 0, "team": 0, "record": 0}
        self.teams: dict[str, Team] = {}
        self.key_owners: dict[str, str] = {}  # key hash -> team id: derived from teams
        self.accounts: dict[str, Account] = {}
        self.live: dict[str, Order] = {}  # resting orders by id, in acceptance order
        # each team's entries of `live`, in the same order (derived): a team's own queries and
        # its cancel-all walk its orders, not every team's
        self.team_live: dict[str, dict[str, Order]] = {}
        self.coids: dict[str, dict[str, Answered]] = {}  # team -> client_order_id -> answer
        self.seqs: dict[bytes, int] = {}
        self.marks: dict[str, int] = {}
        self.last_trades: dict[str, TradePrint] = {}
        self.add_house_teams(0)

    # --- entry point ---

    def apply(self, cmd: Command, seq: int, ts_ns: int) -> list[Out]:
        out: list[Out] = []
        self.out, self._ts = out, ts_ns
        self._handlers[type(cmd)](cmd)
        if self._dirty:
            seqs, delta = self.seqs, None
            for book in self._dirty:
                changes = book.drain_changes()
                if changes:
                    if delta is not None:
                        delta.more = True
                    topic = self._book_topic[book.instrument_id]
                    seqs[topic] = book_seq = seqs.get(topic, 0) + 1
                    delta = BookDelta(seq=book_seq, ts_ns=ts_ns, epoch=self.epoch,
                                      instrument_id=book.instrument_id, changes=changes)
                    out.append((topic, delta))
            self._dirty.clear()
        self.last_seq, self.last_ts = seq, ts_ns
        return out

    def take_records(self) -> list[AnyRecord]:
        """Persistence records emitted since the last call, numbered gap-free on "matcher"."""
        records, self._records = self._records, []
        return records

    def _record_seq(self) -> int:
        self.counters["record"] = seq = self.counters.get("record", 0) + 1
        return seq

    def _emit(self, topic: bytes, event: Event) -> None:
        seqs = self.seqs
        event.seq = seqs[topic] = seqs.get(topic, 0) + 1
        event.ts_ns, event.epoch = self._ts, self.epoch
        self.out.append((topic, event))

    def _respond(self, cmd: Command, ok: bool, code: str | None = None, message: str = "",
                 details: dict[str, Any] | None = None, order_id: str | None = None,
                 result: OrderResult | TeamInfo | None = None) -> None:
        """Answer the command's gateway (none: a command the house sends, answered to no one)."""
        if not cmd.gw:
            return
        topic, seqs = self._resp_topic[cmd.gw], self.seqs
        seqs[topic] = seq = seqs.get(topic, 0) + 1
        self.out.append((topic, Response(
            seq=seq, ts_ns=self._ts, epoch=self.epoch, req_id=cmd.req_id, ok=ok, code=code,
            message=message, details=details, order_id=order_id, result=result)))

    def _repeat(self, cmd: NewOrder, original: Answered) -> None:
        """The original answer to a retried order, at its original time: its effects were
        published then (a gateway that waits for market data up to an answer's time must not
        wait for more)."""
        if cmd.gw:
            topic, seqs = self._resp_topic[cmd.gw], self.seqs
            seqs[topic] = seq = seqs.get(topic, 0) + 1
            order_id, status, filled, remaining, notional = original.result
            self.out.append((topic, Response(
                seq=seq, ts_ns=original.ts_ns, epoch=self.epoch, req_id=cmd.req_id, ok=True,
                order_id=order_id, result=OrderResult(
                    order_id=order_id, client_order_id=cmd.client_order_id, status=status,
                    filled_quantity=filled, remaining_quantity=remaining, notional=notional))))

    def _to_team(self, team_id: str, event: Event) -> None:
        self._emit(self._exec_topic[team_id], event)

    # --- orders ---

    def _new_order(self, cmd: NewOrder) -> None:
        acct = self.accounts.get(cmd.team_id)
        if acct is None:
            self._respond(cmd, ok=False, code="TEAM_NOT_FOUND", message="Team not found")
            return
        coid = cmd.client_order_id
        if coid is not None and (prior := self.coids.get(cmd.team_id, {}).get(coid)):
            if prior.order != _asked(cmd):
                self._reject(cmd, Reject(
                    "DUPLICATE_CLIENT_ORDER_ID", "client_order_id already used for another order",
                    {"client_order_id": coid, "order_id": prior.result[0]}))
                return
            self._repeat(cmd, prior)
            return
        reject = self.validator.check(cmd, acct, self._ts, self.phase, self.halted,
                                      self.expired)
        if reject is None and cmd.order_type == "market" and not self.books[
            cmd.instrument_id
        ].contra_liquidity(cmd.side, cmd.team_id):
            reject = Reject("NO_LIQUIDITY", "No liquidity for market order",
                            {"instrument_id": cmd.instrument_id, "side": cmd.side})
        if reject is not None:
            self._reject(cmd, reject)
            return
        self._accept(cmd, acct)

    def _refuse(self, cmd: Command, r: Reject) -> None:
        self._respond(cmd, ok=False, code=r.code, message=r.message, details=r.details)

    def _reject(self, cmd: NewOrder, r: Reject) -> None:
        self._to_team(cmd.team_id, OrderReject(
            order_id=None, client_order_id=cmd.client_order_id, team_id=cmd.team_id,
            instrument_id=cmd.instrument_id, error_code=r.code, reason=r.message,
            details=r.details))
        self._refuse(cmd, r)

    def _accept(self, cmd: NewOrder, acct: Account) -> None:
        ts, counters = self._ts, self.counters
        acct.recent.append(ts)
        counters["order"] = number = counters["order"] + 1
        team_id, iid, side, order_type = cmd.team_id, cmd.instrument_id, cmd.side, cmd.order_type
        market = order_type == "market"
        order = Order(
            order_id=ORDER_ID % number, team_id=team_id, instrument_id=iid, side=side,
            order_type=order_type, price=None if market else cmd.price, quantity=cmd.quantity,
            remaining=cmd.quantity, client_order_id=cmd.client_order_id, ts_ns=ts)
        topic, seqs = self._exec_topic[team_id], self.seqs
        seqs[topic] = seq = seqs.get(topic, 0) + 1
        self.out.append((topic, OrderAck(
            seq=seq, ts_ns=ts, epoch=self.epoch, order_id=order.order_id,
            client_order_id=order.client_order_id, team_id=team_id, instrument_id=iid, side=side,
            quantity=order.quantity, order_type=order_type, price=order.price)))
        book = self.books[iid]
        self._dirty[book] = None
        if self.phase == "continuous":
            fills, self_trades = book.match(order)
            for maker, quantity in self_trades:
                self._drop(maker, quantity, "self_trade")
            for maker, quantity, price in fills:
                self._trade(order, maker, quantity, price, "taker")
        remaining = order.remaining
        if remaining and not market:
            book.rest(order)
            self.live[order.order_id] = self.team_live[team_id][order.order_id] = order
            acct.add_open(iid, side, remaining, self._option[iid])
        elif remaining:  # the rest is cancelled: nothing of the order is left working
            order.remaining = 0
            self._cancel_ack(order, remaining, "market_remainder")
        result = _result(order, "cancelled" if market and remaining else None)
        self._records.append(order_record(order, result.status, self._record_seq(), ts))
        self._respond(cmd, ok=True, order_id=order.order_id, result=result)
        if order.client_order_id is not None:
            answers = self.coids.setdefault(team_id, {})
            answers[order.client_order_id] = answered(_asked(cmd), ts, result)
            while len(answers) > COID_WINDOW:  # insertion order: the oldest ids go
                del answers[next(iter(answers))]

    def _trade(
        self, taker: Order, maker: Order, quantity: int, price: int, taker_liquidity: str
    ) -> None:
        """One fill: both accounts, both execution reports, then the print. In the opening
        auction both orders were resting, and the "taker" is booked as a maker too."""
        counters = self.counters
        counters["trade"] += 1
        trade_id = TRADE_ID % counters["trade"]
        iid = taker.instrument_id
        multiplier, option = self._multiplier[iid], self._option[iid]
        seqs, ts, epoch, out = self.seqs, self._ts, self.epoch, self.out
        parties = ((maker, "maker", True), (taker, taker_liquidity, taker_liquidity == "maker"))
        reports: dict[str, int] = {}  # order id -> fee, for the trade record
        for order, liquidity, resting in parties:
            team_id = order.team_id
            acct = self.accounts[team_id]
            fee = quantity * self._fee_rates[acct.role][liquidity == "taker"]
            reports[order.order_id] = fee
            acct.apply_fill(iid, order.side, quantity, price, multiplier, fee, option, resting)
            order.filled = filled = order.filled + quantity
            order.notional += quantity * price
            if resting and not order.remaining:
                del self.live[order.order_id], self.team_live[team_id][order.order_id]
                self._records.append(order_record(order, "filled", self._record_seq(), ts))
            left = order.quantity - filled  # as of this fill
            topic = self._exec_topic[team_id]
            seqs[topic] = seq = seqs.get(topic, 0) + 1
            out.append((topic, ExecutionReport(
                seq=seq, ts_ns=ts, epoch=epoch, order_id=order.order_id,
                client_order_id=order.client_order_id, team_id=team_id, trade_id=trade_id,
                instrument_id=iid, side=order.side, executed_quantity=quantity,
                executed_price=price, remaining_quantity=left,
                order_status="partially_filled" if left else "filled", liquidity=liquidity,
                fee=fee)))
        aggressor = taker.side if taker_liquidity == "taker" else "auction"
        topic = self._trade_topic[iid]
        seqs[topic] = seq = seqs.get(topic, 0) + 1
        trade = TradePrint(seq=seq, ts_ns=ts, epoch=epoch, trade_id=trade_id, instrument_id=iid,
                           price=price, quantity=quantity, aggressor=aggressor)
        out.append((topic, trade))
        self.last_trades[iid] = trade
        buy, sell = (taker, maker) if taker.side == "buy" else (maker, taker)
        self._records.append(trade_record(
            trade_id, (buy, reports[buy.order_id]), (sell, reports[sell.order_id]), price,
            quantity, aggressor, multiplier, self._record_seq(), ts))

    def _drop(self, order: Order, quantity: int, reason: str) -> None:
        """Bookkeeping for a resting order that leaves the book without trading."""
        del self.live[order.order_id], self.team_live[order.team_id][order.order_id]
        iid = order.instrument_id
        self.accounts[order.team_id].remove_open(iid, order.side, quantity, self._option[iid])
        self._cancel_ack(order, quantity, reason)
        self._records.append(order_record(order, "cancelled", self._record_seq(), self._ts))

    def _cancel_ack(self, order: Order, quantity: int, reason: str) -> None:
        topic, seqs = self._exec_topic[order.team_id], self.seqs
        seqs[topic] = seq = seqs.get(topic, 0) + 1
        self.out.append((topic, CancelAck(
            seq=seq, ts_ns=self._ts, epoch=self.epoch, order_id=order.order_id,
            client_order_id=order.client_order_id, team_id=order.team_id,
            instrument_id=order.instrument_id, cancelled_quantity=quantity, reason=reason)))

    def _remove(self, order: Order, reason: str) -> None:
        book = self.books[order.instrument_id]
        self._dirty[book] = None
        self._drop(order, book.cancel(order), reason)

    def _cancel(self, cmd: CancelOrder) -> None:
        order = self.live.get(cmd.order_id)
        if order is None or order.team_id != cmd.team_id:
            if cmd.team_id in self.accounts:
                self._to_team(cmd.team_id, CancelReject(
                    order_id=cmd.order_id, team_id=cmd.team_id, error_code="CANCEL_FAILED",
                    reason=CANCEL_FAILED))
            self._respond(cmd, ok=False, code="CANCEL_FAILED", message=CANCEL_FAILED,
                          order_id=cmd.order_id, details={"order_id": cmd.order_id})
            return
        self._remove(order, "user_requested")
        self._respond(cmd, ok=True, order_id=order.order_id, result=_result(order, "cancelled"))

    def _cancel_all(self, cmd: CancelAll) -> None:
        orders = list(self.team_live.get(cmd.team_id, {}).values())
        for order in orders:
            self._remove(order, cmd.reason)
        self._respond(cmd, ok=True, details={"team_id": cmd.team_id, "cancelled": len(orders)})

    # --- game administration ---

    def _register(self, cmd: RegisterTeam) -> None:
        role = self.game.roles.get(cmd.role)
        if role is None or not role.registrable:
            self._respond(cmd, ok=False, code="UNSUPPORTED_ROLE",
                          message=f"Unsupported role: {cmd.role}", details={"role": cmd.role})
            return
        if self.counters["team"] >= self.game.max_teams:
            self._respond(cmd, ok=False, code="TEAM_LIMIT_REACHED",
                          message=f"The game is full: {self.game.max_teams} teams",
                          details={"max_teams": self.game.max_teams})
            return
        name = cmd.team_name
        if not 1 <= len(name) <= MAX_TEAM_NAME:
            self._respond(cmd, ok=False, code="INVALID_TEAM_NAME",
                          message=f"Team name not available: {name!r}",
                          details={"team_name": name})
            return
        if any(t.team_name.casefold() == name.casefold() for t in self.teams.values()):
            self._respond(cmd, ok=False, code="DUPLICATE_TEAM_NAME",
                          message=f"Team name not available: {name!r}",
                          details={"team_name": name})
            return
        team = self.add_team(name, cmd.role, cmd.key_hash)
        self._respond(cmd, ok=True, result=team_info(team))

    def _reissue_key(self, cmd: ReissueKey) -> None:
        team = self.teams.get(cmd.team_id)
        if team is None or not team.key_hash:  # house teams have no key to replace
            self._respond(cmd, ok=False, code="TEAM_NOT_FOUND", message="Team not found",
                          details={"team_id": cmd.team_id})
            return
        if not cmd.key_hash:  # would leave the team with no key that works
            self._respond(cmd, ok=False, code="INVALID_KEY", message="A key hash is needed",
                          details={"team_id": cmd.team_id})
            return
        self.key_owners.pop(team.key_hash, None)
        team.key_hash = cmd.key_hash
        self.key_owners[team.key_hash] = team.team_id
        self._emit(topics.KEYS, KeyReissued(team_id=team.team_id))
        self._respond(cmd, ok=True, result=team_info(team))

    def add_house_teams(self, ts_ns: int) -> None:
        """A team for each house role (retail flow; not registrable) that has none: from the
        start, and for a house role added to the game between runs (see state.restore)."""
        self._ts = ts_ns
        for role, rules in self.game.roles.items():
            if not rules.registrable and role.upper() not in self.teams:
                self.add_team(f"house {role}", role, key_hash="", team_id=role.upper())

    def add_team(self, name: str, role: str, key_hash: str, team_id: str = "") -> Team:
        if not team_id:
            self.counters["team"] += 1
            team_id = f"TEAM_{self.counters['team']:03d}"
        team = Team(team_id=team_id, team_name=name, role=role, key_hash=key_hash,
                    created_ns=self._ts)
        self.teams[team.team_id] = team
        if key_hash:
            self.key_owners[key_hash] = team.team_id
        self.accounts[team.team_id] = Account(team_id=team.team_id, role=role)
        self.team_live[team.team_id] = {}
        self._records.append(team_record(team, self._record_seq(), self._ts))
        return team

    def _set_phase(self, cmd: SetPhase) -> None:
        if cmd.phase not in PHASES:
            self._respond(cmd, ok=False, code="INVALID_PHASE", message=f"Unknown phase {cmd.phase}",
                          details={"phase": cmd.phase, "allowed": list(PHASES)})
            return
        before, self.phase = self.phase, cmd.phase
        if cmd.phase == "continuous" and before in ("pre_open", "opening_auction"):
            for book in self.books.values():
                if book.instrument_id not in self.halted:  # it crosses when it resumes
                    self._run_auction(book)
        elif cmd.phase == "closed":
            for order in list(self.live.values()):
                self._remove(order, "market_closed")
        self._publish_status()
        self._respond(cmd, ok=True, details={"phase": self.phase, "previous": before})

    def _run_auction(self, book: OrderBook) -> None:
        while (cross := uncross(book)) is not None:
            price, matches, self_trades = cross
            for order in self_trades:  # never a trade with yourself: the newer order goes
                self._remove(order, "self_trade")
            if self_trades:
                continue
            self._dirty[book] = None
            for buy, sell, quantity in matches:
                book.take(buy, quantity)
                book.take(sell, quantity)
                self._trade(sell, buy, quantity, price, "maker")
            return

    def _set_halt(self, cmd: SetHalt) -> None:
        if cmd.instrument_id not in self.instruments:
            self._respond(cmd, ok=False, code="INVALID_INSTRUMENT",
                          message=f"Unknown instrument: {cmd.instrument_id}",
                          details={"instrument_id": cmd.instrument_id})
            return
        if cmd.instrument_id in self.expired:
            self._refuse(cmd, expired_reject(cmd.instrument_id))
            return
        (self.halted.add if cmd.halted else self.halted.discard)(cmd.instrument_id)
        book = self.books[cmd.instrument_id]
        if not cmd.halted and self.phase == "continuous" and book.crossed():
            self._run_auction(book)  # halted through the open: its own opening cross now
        self._publish_status()
        self._respond(cmd, ok=True, details={"instrument_id": cmd.instrument_id,
                                             "halted": cmd.halted})

    def _publish_status(self) -> None:
        self._emit(topics.STATUS, self.status())

    def status(self) -> MarketStatus:
        return MarketStatus(phase=self.phase, halted=sorted(self.halted - self.expired),
                            expired=sorted(self.expired))

    def _expire(self, cmd: ExpireOptions) -> None:
        """Cash settlement as the scores see it: each option's mark is its settlement price
        for good, its resting orders are cancelled, and no order reaches its book again.
        Positions stay, worth that price, so P&L stands where the expiry left it. Sent again
        (a resumed simulator does), it changes nothing."""
        refused = {iid: price for iid, price in cmd.prices.items()
                   if not self._option.get(iid) or not 0 <= price <= self.game.max_price_ticks}
        if refused or not cmd.prices:
            self._respond(cmd, ok=False, code="INVALID_INSTRUMENT",
                          message="Only options settle, at a price in range",
                          details={"refused": refused})
            return
        new = sorted(set(cmd.prices) - self.expired)
        for iid in new:
            self.marks[iid] = cmd.prices[iid]
            self.expired.add(iid)
            self.halted.add(iid)
        for order in [o for o in self.live.values() if o.instrument_id in new]:
            self._remove(order, "expired")
        if new:
            self._publish_status()
        self._respond(cmd, ok=True, details={"expired": len(new)})

    def _mark(self, cmd: PriceMark) -> None:
        # in the price range: a mark goes into every P&L, and a mark of 2**63 made the
        # snapshot's encoding overflow (journaled, it killed every restart too). 0 is a price
        # here: an option far out of the money is worth nothing, and P&L must say so.
        if cmd.instrument_id in self.expired:  # settled: its price is fixed for good
            self._refuse(cmd, expired_reject(cmd.instrument_id))
        elif cmd.instrument_id in self.instruments and 0 <= cmd.price <= self.game.max_price_ticks:
            self.marks[cmd.instrument_id] = cmd.price
            self._respond(cmd, ok=True)
        else:
            self._respond(cmd, ok=False, code="INVALID_INSTRUMENT", message="Bad mark",
                          details={"instrument_id": cmd.instrument_id, "price": cmd.price})

    def _snapshot_positions(self, cmd: SnapshotPositions) -> None:
        """Every team's book into the database, marked to the latest marks (last trade
        price where no mark came yet); each record covers every record before it."""
        marks = {iid: t.price for iid, t in self.last_trades.items()} | self.marks
        as_of = self.counters.get("record", 0)
        for acct in self.accounts.values():
            pnl = mark_to_market(acct, marks, self.instruments)
            self._records.append(position_record(acct, pnl, as_of, self._record_seq(), self._ts))
        self._respond(cmd, ok=True, details={"teams": len(self.accounts)})


def team_info(team: Team) -> TeamInfo:
    return TeamInfo(team_id=team.team_id, team_name=team.team_name, role=team.role,
                    created_ns=team.created_ns)


def _result(order: Order, status: str | None = None) -> OrderResult:
    if status is None:
        status = "filled" if not order.remaining else (
            "partially_filled" if order.filled else "new")
    return OrderResult(order_id=order.order_id, client_order_id=order.client_order_id,
                       status=status, filled_quantity=order.filled,
                       remaining_quantity=order.remaining, notional=order.notional)


def _asked(cmd: NewOrder) -> tuple[str, str, int, str, int | None]:
    return cmd.instrument_id, cmd.side, cmd.quantity, cmd.order_type, cmd.price
