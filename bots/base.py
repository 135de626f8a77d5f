"""What every example bot shares: its book of orders and positions, the limits, the event loop.

A bot subclasses `Bot` and writes `step()` (called every `interval_s`) and, if it wants,
`on_signal` / `on_news` / `on_fill`. `buy` and `sell` never send an order that could breach
the team's limits: they count resting orders as worst-case fills, as the exchange does, keep a
safety margin, and shrink (or skip) an order that would not fit.

Positions come only from the WebSocket (the first `position_snapshot`, then execution
reports), resting orders from REST answers corrected by the stream. After a reconnection that
could not be resumed, a fresh `position_snapshot` arrives: positions are replaced and the open
orders re-read over REST.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from typing import Any

import msgspec

from bots.api import POSITION_CODES, ROLE_LIMITS, UNKNOWN_OUTCOME, Limits, OrderReply, WsMessage
from bots.client import Client, Stream
from bots.pricing import MULTIPLIER, black_scholes, parse, to_tick, years_left

log = logging.getLogger(__name__)

SAFETY = 0.9  # use at most this share of each limit


class Resting:
    __slots__ = ("iid", "placed_at", "price", "remaining", "side")

    def __init__(self, iid: str, side: str, remaining: int, price: float | None) -> None:
        self.iid, self.side, self.remaining, self.price = iid, side, remaining, price
        self.placed_at = time.monotonic()


class Inventory:
    """Positions and resting orders; the worst-case exposure the exchange checks limits on."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.positions: dict[str, int] = {}
        self.orders: dict[str, Resting] = {}
        self._early: dict[str, int] = {}  # order id -> remaining, from the stream before REST

    def worst(self, iid: str, side: str = "buy", extra: int = 0) -> int:
        pos = self.positions.get(iid, 0)
        buys = sum(o.remaining for o in self.orders.values() if o.iid == iid and o.side == "buy")
        sells = sum(o.remaining for o in self.orders.values() if o.iid == iid and o.side == "sell")
        buys, sells = (buys + extra, sells) if side == "buy" else (buys, sells + extra)
        return max(abs(pos + buys), abs(pos - sells))

    def room(self, iid: str, side: str) -> int:
        """The largest order on `side` that keeps every limit, with the safety margin."""
        lim = self.limits
        if parse(iid) is None:
            return self._fit(iid, side, int(lim.underlying * SAFETY))
        others = sum(self.worst(i) for i in self._option_ids() if i != iid)
        return self._fit(iid, side, min(int(lim.position * SAFETY),
                                        int(lim.total * SAFETY) - others))

    def _fit(self, iid: str, side: str, cap: int) -> int:
        low, high = 0, self.limits.max_order_size
        while low < high:  # worst() is monotone in the order size
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.worst(iid, side, mid) <= cap else (low, mid - 1)
        return low

    def learn(self, iid: str, details: dict[str, Any]) -> None:
        """A position-limit reject names the limit: use it if it is tighter than ours."""
        limit = details.get("limit")
        if not isinstance(limit, int):
            return
        field = ("total" if details.get("scope") == "total" else "position") if parse(iid) else (
            "underlying")
        if limit < getattr(self.limits, field):
            self.limits = msgspec.structs.replace(self.limits, **{field: limit})

    def _option_ids(self) -> set[str]:
        ids = {i for i, p in self.positions.items() if p} | {o.iid for o in self.orders.values()}
        return {i for i in ids if parse(i) is not None}

    def placed(self, iid: str, side: str, reply: OrderReply, quantity: int,
               price: float | None) -> None:
        if not reply.ok or reply.order_id is None or price is None:
            return  # market orders never rest
        remaining = quantity - reply.filled_quantity if reply.remaining_quantity is None else (
            reply.remaining_quantity)
        remaining = min(remaining, self._early.pop(reply.order_id, remaining))
        if remaining > 0 and reply.status not in ("filled", "cancelled"):
            self.orders[reply.order_id] = Resting(iid, side, remaining, price)

    def filled(self, data: dict[str, Any]) -> None:
        qty = int(data["executed_quantity"])
        iid = data["instrument_id"]
        self.positions[iid] = self.positions.get(iid, 0) + (qty if data["side"] == "buy" else -qty)
        self._left(data["order_id"], int(data.get("remaining_quantity", 0)))

    def gone(self, order_id: str) -> None:
        self._left(order_id, 0)

    def _left(self, order_id: str, remaining: int) -> None:
        order = self.orders.get(order_id)
        if order is None:
            self._early[order_id] = min(remaining, self._early.get(order_id, remaining))
            if len(self._early) > 10_000:
                self._early.clear()
        elif remaining <= 0:
            del self.orders[order_id]
        else:
            order.remaining = min(order.remaining, remaining)


class Bot:
    role = "market_maker"
    interval_s = 0.25

    def __init__(self, client: Client, *, limits: Limits | None = None, seed: int = 0,
                 verbose: bool = True) -> None:
        self.client = client
        self.name = client.team.team_name if client.team else "bot"
        self.inv = Inventory(limits or ROLE_LIMITS[self.role])
        self.rng = random.Random(seed)
        self.verbose = verbose
        self.spot: dict[str, float] = {}
        self.vol = 0.2  # volatility estimate (SPX realised); the exchange marks at the regime's
        self.game_s = 0.0
        self.cash_cents = 0  # summed in whole cents, as the exchange does: floats drift
        self.stats: Counter[str] = Counter()
        self.max_abs: dict[str, int] = {}  # the largest position held, per instrument
        self.max_total = 0  # the largest sum of absolute option positions held
        self.needs_resync = True
        self.stream: Stream | None = None
        self.setup()

    # --- overridable ---

    def setup(self) -> None:
        """Set up the bot's own state (called once, at the end of __init__)."""

    def step(self) -> None:
        """Decide and act; called every `interval_s` while the bot runs."""

    def on_signal(self, data: dict[str, Any]) -> None:
        """A role signal (volatility forecast, tracking error); indicators are handled here."""

    def on_news(self, data: dict[str, Any]) -> None:
        """A news headline (everyone gets it)."""

    def on_fill(self, data: dict[str, Any]) -> None:
        """One of our orders traded (after the book and the cash are updated)."""

    # --- the loop ---

    def run(self, stop: threading.Event | None = None, seconds: float | None = None) -> None:
        stop = stop or threading.Event()
        end = None if seconds is None else time.monotonic() + seconds
        self.stream = self.client.stream()
        next_step = next_report = time.monotonic()
        try:
            while not stop.is_set() and (end is None or time.monotonic() < end):
                for msg in self.stream.messages(timeout=min(0.05, self.interval_s)):
                    self.handle(msg)
                if self.stream.replaced:  # trading on would be blind to our own fills
                    log.warning("%s: another connection of this team took over; stopping "
                                "and leaving the team's orders to it", self.name)
                    break
                now = time.monotonic()
                if now >= next_step:
                    next_step = now + self.interval_s
                    if self.needs_resync:
                        self.resync()
                    if self.spot and not self.needs_resync:
                        self.step()
                if self.verbose and now >= next_report:
                    next_report = now + 10.0
                    print(self.report(), flush=True)
        finally:
            if self.stream.replaced:  # the orders are the new connection's to manage
                self.stream.close()
            else:
                self.shutdown()

    def handle(self, msg: WsMessage) -> None:
        data = msg.data
        if msg.type == "position_snapshot":
            self.inv.positions = {k: int(v) for k, v in data.get("positions", {}).items()}
            if "cash" in data:  # a resumed team paid for what it holds: value it so
                self.cash_cents = round(data["cash"] * 100)
            self.needs_resync = True  # open orders may have changed unseen: re-read them
        elif msg.type == "execution_report":
            self._fill(data)
        elif msg.type == "cancel_ack":
            self.inv.gone(data["order_id"])
        elif msg.type == "signal":
            if data.get("signal_type") == "technical_indicators":
                self._indicators(data)
            else:
                self.on_signal(data)
        elif msg.type == "event":
            self.on_news(data)

    def _fill(self, data: dict[str, Any]) -> None:
        self.inv.filled(data)
        iid, qty, price = data["instrument_id"], data["executed_quantity"], data["executed_price"]
        sign = -1 if data["side"] == "buy" else 1
        self.cash_cents += (sign * qty * round(price * 100) * (MULTIPLIER if parse(iid) else 1)
                            + round(data.get("fees", 0) * 100))
        self.stats["fills"] += 1
        self.max_abs[iid] = max(self.max_abs.get(iid, 0), abs(self.inv.positions[iid]))
        total = sum(abs(p) for i, p in self.inv.positions.items() if parse(i))
        self.max_total = max(self.max_total, total)
        self.on_fill(data)

    def _indicators(self, data: dict[str, Any]) -> None:
        price = data.get("price")
        if price is None:
            return
        self.spot[data["symbol"]] = float(price)
        self.game_s = float(data.get("game_s", self.game_s))
        windows = data.get("realised_vol") or {}
        realised = windows.get("300") or windows.get("60")
        if realised and data["symbol"] == "SPX":  # SPY's own is blurred by its tracking noise
            self.vol = 0.98 * self.vol + 0.02 * float(realised)  # a slow average

    def resync(self) -> None:
        try:
            orders = self.client.open_orders()
        except Exception as exc:  # the exchange is away: try again next step
            log.debug("%s: resync failed: %r", self.name, exc)
            return
        self.inv.orders = {o.order_id: Resting(o.instrument_id, o.side, o.remaining_quantity,
                                               o.price) for o in orders}
        self.needs_resync = False
        self.stats["resyncs"] += 1

    def shutdown(self) -> None:
        """Cancel every resting order, then read the stream until each of them has its final
        event (filled or cancelled) and the stream is quiet: nothing of ours can trade any
        more, and the positions here are final. A quiet period alone is not enough under load:
        a fill can arrive later than any fixed pause."""
        try:
            self.client.cancel_all()
        except Exception as exc:
            log.warning("%s: could not cancel its orders on the way out: %r", self.name, exc)
        if self.stream is None:
            return
        quiet_until, give_up = time.monotonic() + 0.3, time.monotonic() + 10.0
        while time.monotonic() < give_up and (self.inv.orders or time.monotonic() < quiet_until):
            for msg in self.stream.messages(timeout=0.05):
                self.handle(msg)
                if msg.type in ("execution_report", "cancel_ack"):
                    quiet_until = time.monotonic() + 0.3
        self.stream.close()

    # --- trading helpers ---

    def fair(self, iid: str, vol: float | None = None) -> tuple[float, float] | None:
        """(fair value, delta) of an option or an underlying, or None before the first price."""
        option = parse(iid)
        spot = self.spot.get(option.underlying if option else iid)
        if spot is None:
            return None
        if option is None:
            return spot, 1.0
        vol = vol or self.vol
        return black_scholes(spot, option, years_left(self.game_s), vol)

    def order(self, iid: str, side: str, quantity: int, price: float | None) -> str | None:
        """Send an order shrunk to fit the limits; its id if it rests, else None."""
        quantity = min(quantity, self.inv.room(iid, side))
        if quantity <= 0:
            self.stats["skipped (limits)"] += 1
            return None
        reply = self.client.place(iid, side, quantity, price)
        self.stats["orders"] += 1
        if reply.ok:
            self.inv.placed(iid, side, reply, quantity, price)
            return reply.order_id if reply.order_id in self.inv.orders else None
        self.stats[f"reject {reply.code}"] += 1
        if reply.code in POSITION_CODES and reply.error is not None:
            log.warning("%s: position limit reject %s", self.name, reply.error.details)
            self.inv.learn(iid, reply.error.details)
        if reply.code in (UNKNOWN_OUTCOME, "PROCESSING_TIMEOUT"):  # it may rest after all
            self.needs_resync = True
        return None

    def cancel(self, order_id: str) -> None:
        reply = self.client.cancel(order_id)
        self.stats["cancels"] += 1
        if reply.ok or reply.code == "CANCEL_FAILED":  # cancelled, or already filled/gone
            self.inv.gone(order_id)

    def cancel_older(self, seconds: float, iids: set[str] | None = None) -> None:
        now = time.monotonic()
        for oid, o in list(self.inv.orders.items()):
            if now - o.placed_at > seconds and (iids is None or o.iid in iids):
                self.cancel(oid)

    def position(self, iid: str) -> int:
        return self.inv.positions.get(iid, 0)

    def pending(self, iid: str) -> int:
        """Net quantity of our resting orders: buys minus sells."""
        return sum(o.remaining if o.side == "buy" else -o.remaining
                   for o in self.inv.orders.values() if o.iid == iid)

    def trade_towards(self, iid: str, target: int, edge: float, vol: float | None = None) -> None:
        """Order what takes the position to `target`, priced `edge` through fair value so it
        trades at once with the quotes there (resting orders count as already done; those on
        the wrong side are cancelled first)."""
        gap = target - self.position(iid) - self.pending(iid)
        fair = self.fair(iid, vol)
        if gap == 0 or fair is None:
            return
        side = "buy" if gap > 0 else "sell"
        wrong = [oid for oid, o in self.inv.orders.items() if o.iid == iid and o.side != side]
        if wrong:
            for oid in wrong:
                self.cancel(oid)
            gap = target - self.position(iid) - self.pending(iid)
            if gap == 0 or (gap > 0) != (side == "buy"):
                return
        price = to_tick(fair[0] * (1 + edge), up=True) if gap > 0 else to_tick(fair[0] * (1 - edge))
        self.order(iid, side, abs(gap), price)

    @property
    def cash(self) -> float:
        """Cash in dollars, fees included (exact to the cent)."""
        return self.cash_cents / 100

    def pnl(self) -> float:
        """Cash plus positions at fair value: the leaderboard's mark-to-market P&L."""
        value = 0.0
        for iid, pos in self.inv.positions.items():
            fair = self.fair(iid)
            if fair is not None:
                value += pos * fair[0] * (MULTIPLIER if parse(iid) else 1)
        return self.cash + value

    def report(self) -> str:
        held = {i: p for i, p in sorted(self.inv.positions.items()) if p}
        return (f"[{self.role} {self.name}] P&L {self.pnl():+,.2f}  fills {self.stats['fills']}"
                f"  resting {len(self.inv.orders)}  positions {held}")
