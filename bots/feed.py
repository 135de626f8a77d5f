"""Market-feed client for quants: the exchange's public ZeroMQ feed, kept exact, in dollars.

    feed = MarketFeed.tcp("127.0.0.1", 5550)        # the exchange with bus.transport = "tcp"
    feed.wait_synced(10)
    while True:
        for topic in feed.poll(100):                 # topics that changed
            ...
        feed.best("SPX_4500_CALL")                   # (bid, ask) in dollars
        feed.underlying("SPX"), feed.fair("SPX_4500_CALL")   # price; (fair value, delta)

It follows three producers: the matcher (books, trades, market status), the simulator
(underlying prices, option fair values) and the events service (news, public sentiment and
indicators). Joining, gap detection and resync are those of `bots/quant_feed.py` (subscribe,
wait for a heartbeat, snapshot, apply newer buffered events; a seq gap or a new epoch means a
new snapshot). Needs only pyzmq and msgpack; it reads what any quant may read, never the
exchange's private channels.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import zmq

from bots.quant_feed import QuantFeed, tcp_endpoints
from common.money import TICKS_PER_UNIT

# Fields of a public signal that travel in ticks, by its `type` (as the gateway's feed_data).
TICK_FIELDS: dict[str, tuple[str, ...]] = {"indicators": ("price",)}


def dollars(ticks: int) -> float:
    return ticks / TICKS_PER_UNIT


class MarketFeed:
    def __init__(self, endpoints: Mapping[str, tuple[str, str]],
                 ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        """`endpoints`: producer name -> (its PUB address, its ROUTER address)."""
        self.raw = QuantFeed(endpoints, ctx)
        self._seen: dict[str, int] = {}

    @classmethod
    def tcp(cls, host: str = "127.0.0.1", base_port: int = 5550, events: bool = True,
            ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> MarketFeed:
        """The feed at the exchange's default tcp port offsets (see common/transport.py)."""
        return cls(tcp_endpoints(host, base_port, events), ctx)

    def close(self) -> None:
        self.raw.close()

    def poll(self, timeout_ms: int = 100) -> list[str]:
        """Read what has arrived (waiting up to `timeout_ms`); the topics whose state changed."""
        self.raw.poll(timeout_ms)
        while self.raw.poller.poll(0):
            self.raw.poll(0)
        changed = []
        for topic, seq in self.raw.seqs().items():
            if self._seen.get(topic) != seq:
                self._seen[topic] = seq
                changed.append(topic)
        return changed

    @property
    def synced(self) -> bool:
        return all(source.synced for source in self.raw.sources)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.synced and time.monotonic() < deadline:
            self.poll(20)
        return self.synced

    def stats(self) -> dict[str, dict[str, int]]:
        """Per producer: frames, gaps seen, snapshots taken, checks and repairs."""
        return {source.name: dict(source.stats) for source in self.raw.sources}

    # --- state, in dollars ---

    def _state(self, topic: str) -> Any:
        for source in self.raw.sources:
            if topic in source.state:
                return source.state[topic]
        return None

    def book(self, instrument_id: str) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
        """All price levels (price, quantity), best first."""
        state = self._state(f"md.book.{instrument_id}") or {"bids": {}, "asks": {}}
        bids = sorted(state["bids"].items(), reverse=True)
        asks = sorted(state["asks"].items())
        return [(dollars(p), q) for p, q in bids], [(dollars(p), q) for p, q in asks]

    def best(self, instrument_id: str) -> tuple[float | None, float | None]:
        bids, asks = self.book(instrument_id)
        return (bids[0][0] if bids else None, asks[0][0] if asks else None)

    def last_trade(self, instrument_id: str) -> tuple[float, int] | None:
        trade = self._state(f"md.trade.{instrument_id}")
        return None if trade is None else (dollars(trade["price"]), trade["quantity"])

    def underlying(self, symbol: str) -> float | None:
        tick = self._state(f"md.underlying.{symbol}")
        return None if tick is None else dollars(tick["price"])

    def fair(self, instrument_id: str) -> tuple[float, float] | None:
        """The exchange's own fair value (Black-Scholes at the regime volatility) and delta."""
        symbol = instrument_id.split("_", 1)[0]
        values = self._state(f"md.fair.{symbol}")
        for iid, ticks, delta in (values or {}).get("values", []):
            if iid == instrument_id:
                return dollars(ticks), float(delta)
        return None

    def status(self) -> dict[str, Any] | None:
        return self._state("md.status")  # type: ignore[no-any-return]

    def news(self) -> dict[str, Any] | None:
        """The latest headline."""
        return self._state("news")  # type: ignore[no-any-return]

    def signal(self, name: str) -> dict[str, Any] | None:
        """A public signal: `sentiment`, or `indicators.SPX` / `indicators.SPY`."""
        state = self._state(f"signal.public.{name}")
        if state is None:
            return None
        signal = dict(state)  # a copy: the feed's own state stays in ticks, as its snapshots
        for field in TICK_FIELDS.get(signal.get("type", ""), ()):
            if isinstance(signal.get(field), int):
                signal[field] = dollars(signal[field])
        return signal
