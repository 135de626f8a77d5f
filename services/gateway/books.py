"""The public order books as the md feed tells them: a snapshot, then gap-free deltas.

Every md topic carries its own gap-free seq. Events that arrive while a snapshot is being
fetched are buffered and those newer than the snapshot applied on top of it; afterwards a seq
that jumps, an event of another epoch (the matcher restarted), or a matcher heartbeat counting
more public events than the seqs applied add up to (a lost frame no later one followed) asks
for a new snapshot. A gap is never skipped.

Read-what-you-were-told: once this gateway has told anyone of a command's effect (its answer,
or a fill, ack or cancel on a team's stream), a book read through it shows that effect. A
command's md events carry the command's time stamp, as do its Response and private events, so
`caught_up()` waits until the mirror has applied everything up to the newest such time. Per
team was not enough: the maker of a fill, told by the taker's answer or its own execution
report, read its order still resting.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Callable, Sequence

from sortedcontainers import SortedDict

from common.messages import (
    BookDelta,
    Event,
    Heartbeat,
    MarketSnapshot,
    MarketStatus,
    TradePrint,
    decode_if,
)

log = logging.getLogger(__name__)

Levels = list[tuple[int, int]]


class Book:
    __slots__ = ("asks", "bids")

    def __init__(self, bids: Levels = (), asks: Levels = ()) -> None:  # type: ignore[assignment]
        self.bids: SortedDict = SortedDict(operator.neg, bids)
        self.asks: SortedDict = SortedDict(asks)

    def apply(self, changes: Sequence[tuple[str, int, int]]) -> None:
        for side, price, quantity in changes:
            levels = self.bids if side == "buy" else self.asks
            if quantity:
                levels[price] = quantity
            else:
                levels.pop(price, None)

    def top(self, n: int) -> tuple[Levels, Levels]:
        return ([(p, self.bids[p]) for p in self.bids.islice(0, n)],
                [(p, self.asks[p]) for p in self.asks.islice(0, n)])


class BookMirror:
    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.on_change = on_change
        self.books: dict[str, Book] = {}
        self.last_trade: dict[str, int] = {}
        # a trade print's price, shown with its book's change (it comes first, from the same
        # command): a quote never says "last 128.50" beside the ask that trade took
        self._printed: dict[str, int] = {}
        self.phase = ""
        self.halted: list[str] = []
        self.expired: list[str] = []
        self.synced = False
        self.epoch = 0
        # ts_ns of the newest command whose book changes are all applied: a command's trade
        # prints come before its book deltas, and a command may change several books
        self.watermark = 0
        self.told = 0  # ts_ns of the newest book-changing command this gateway told anyone of
        self.resyncs = 0
        self._seqs: dict[bytes, int] = {}
        self._buffer: list[tuple[bytes, Event]] | None = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.need_snapshot = asyncio.Event()
        self.need_snapshot.set()

    def feed(self, topic: bytes, payload: bytes) -> None:
        event = decode_if(payload, Event)
        if event is None:
            return
        if self._buffer is not None:
            self._buffer.append((topic, event))
        else:
            self._apply(topic, event)

    def load(self, snap: MarketSnapshot) -> None:
        """Install a snapshot, then the buffered events that are newer than it."""
        self.books = {b.instrument_id: Book(b.bids, b.asks) for b in snap.books}
        self.last_trade = {t.instrument_id: t.price for t in snap.last_trades}
        self._printed = {}
        self._status(snap.status)
        self._seqs = {t.encode(): n for t, n in snap.seqs.items()}
        self.epoch = snap.epoch
        buffered, self._buffer = self._buffer or [], None
        self.synced = True
        self.need_snapshot.clear()
        for topic, event in buffered:
            if self._buffer is not None:  # a gap inside the buffer: keep for the next snapshot
                self._buffer.append((topic, event))
            elif event.seq > self._seqs.get(topic, 0):
                self._apply(topic, event)
        self._advance(snap.ts_ns)  # its commands' deltas are in it, not applied one by one
        if self.resyncs:  # clients may have missed changes: tell them the state again
            for iid in self.books:
                self.on_change(iid)

    def _apply(self, topic: bytes, event: Event) -> None:
        last = self._seqs.get(topic, 0)
        if event.epoch != self.epoch or event.seq > last + 1:
            self._resync(f"{topic.decode()} seq {event.seq} after {last}, epoch {event.epoch}")
            self._buffer = [(topic, event)]
            return
        if event.seq <= last:
            return
        self._seqs[topic] = event.seq
        if isinstance(event, BookDelta):
            book = self.books.get(event.instrument_id)
            if book is None:
                book = self.books[event.instrument_id] = Book()
            book.apply(event.changes)
            if (price := self._printed.pop(event.instrument_id, None)) is not None:
                self.last_trade[event.instrument_id] = price
            self.on_change(event.instrument_id)
            if not event.more:  # its command's last book change: the books show all of it
                self._advance(event.ts_ns)
        elif isinstance(event, TradePrint):
            self._printed[event.instrument_id] = event.price
        elif isinstance(event, MarketStatus):
            self._status(event)

    def _status(self, status: MarketStatus) -> None:
        self.phase, self.halted, self.expired = (status.phase, list(status.halted),
                                                 list(status.expired))

    def beat(self, beat: Heartbeat) -> None:
        """A matcher heartbeat: every md event it counts must be applied by now (one socket,
        in order), each having raised its topic's seq by one."""
        if (beat.published is not None and self.synced and beat.epoch == self.epoch
                and sum(self._seqs.values()) < beat.published):
            self._resync(f"{beat.published} md events published, "
                         f"{sum(self._seqs.values())} applied")

    def _resync(self, why: str) -> None:
        log.warning("gateway book mirror: %s; fetching a new snapshot", why)
        self.resyncs += 1
        self.synced = False
        self.need_snapshot.set()

    def _advance(self, ts_ns: int) -> None:
        if ts_ns > self.watermark:
            self.watermark = ts_ns
            if self._waiters:
                keep = []
                for ts, fut in self._waiters:
                    if ts <= ts_ns:
                        if not fut.done():
                            fut.set_result(None)
                    else:
                        keep.append((ts, fut))
                self._waiters = keep

    def tell(self, ts_ns: int) -> None:
        """A book-changing command's effect was just told to a client."""
        if ts_ns > self.told:
            self.told = ts_ns

    async def caught_up(self, timeout: float) -> None:
        """Until the book shows every effect this gateway has told of (bounded)."""
        await self.wait_for(self.told, timeout)

    async def wait_for(self, ts_ns: int, timeout: float) -> None:
        """Until every md event up to `ts_ns` is applied (bounded: then serve what we have)."""
        if ts_ns <= self.watermark and self.synced:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((ts_ns, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            log.debug("book mirror behind ts %d after %.3f s", ts_ns, timeout)
