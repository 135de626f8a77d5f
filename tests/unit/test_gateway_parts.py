"""The gateway's pure parts: resume bookkeeping, book mirror, rate limiter, keys, API shapes."""

from __future__ import annotations

import asyncio
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from common.config import Config
from common.messages import (
    BookDelta,
    BookLevels,
    ExecutionReport,
    Heartbeat,
    IndicatorSignal,
    MarketSnapshot,
    MarketStatus,
    OrderAck,
    OrderResult,
    ReplayReply,
    TeamInfo,
    TradePrint,
    encode,
)
from common.records import RecordBatch, TeamRecord
from services.dbwriter.store import Store
from services.gateway import views
from services.gateway.auth import KeyRing, key_hash, new_key
from services.gateway.books import BookMirror
from services.gateway.dbwatch import DbWatch
from services.gateway.hub import Hub
from services.gateway.limits import RateLimiter
from services.gateway.ws import Session

TEAM = TeamInfo(team_id="TEAM_001", team_name="a", role="market_maker", created_ns=0)
CALL_ID = "SPX_4500_CALL"


def test_session_maps_a_seen_seq_to_the_private_stream_position() -> None:
    s = Session(TEAM, window=4)
    s.mark(1, 0)  # position_snapshot including nothing
    s.next_seq = 2
    for seq, private in ((2, 1), (4, 2), (5, 3)):  # seq 3 was public
        s.mark(seq, private)
        s.next_seq = seq + 1
    assert [s.resolve(n) for n in (1, 2, 3, 4, 5)] == [0, 1, 1, 2, 3]
    assert s.resolve(6) is None  # never sent
    s.rewind(3, 1)
    assert (s.next_seq, s.cursor, list(s.marks)) == (4, 1, [(1, 0), (2, 1)])
    for seq in range(4, 12):
        s.mark(seq, seq)
    s.next_seq = 12
    assert s.resolve(1) is None  # older than the window: not exact any more
    assert s.resolve(11) == 11


def test_session_window_is_a_ring_exact_across_the_wrap() -> None:
    s = Session(TEAM, window=5)
    for seq in range(1, 24):  # private seq = 100 + seq; every third seq was a public message
        if seq % 3:
            s.mark(seq, 100 + seq)
    s.next_seq = 24
    assert len(s.marks) == 5  # never more than the window
    assert list(s.marks) == [(k, 100 + k) for k in (14, 16, 17, 19, 20, 22, 23)][-5:]
    assert s.resolve(16) is None  # before the oldest kept
    assert [s.resolve(n) for n in range(17, 24)] == [117, 117, 119, 120, 120, 122, 123]
    s.rewind(20, 120)  # a resume at seq 20: what followed is sent again under new seqs
    assert (list(s.marks), s.next_seq, s.cursor) == ([(17, 117), (19, 119), (20, 120)], 21, 120)
    for seq in range(21, 26):
        s.mark(seq, 100 + seq)
    assert list(s.marks) == [(k, 100 + k) for k in range(21, 26)]
    s.restart(7)
    assert (len(s.marks), s.resolve(5)) == (0, None)


def test_session_memory_stops_growing_once_its_window_is_full() -> None:
    """The resume window is the one thing a session keeps per message: once full, marking
    more messages allocates nothing (the soak's gateway grew ~150 bytes per message before)."""
    window = 2_000
    s = Session(TEAM, window=window)
    seq = 0

    def send(count: int) -> None:
        nonlocal seq
        for _ in range(count):
            seq += 1
            s.mark(seq, 10_000 + seq)

    send(window)  # warm-up: the window fills
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        send(20 * window)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(s.marks) == window
    assert grown < 1_000, f"{grown} bytes for {20 * window} messages"
    s.next_seq = seq + 1
    assert s.resolve(seq - window) is None
    assert s.resolve(seq - window + 1) == 10_000 + seq - window + 1


def snapshot(asks: list[tuple[int, int]], book_seq: int, epoch: int = 7) -> MarketSnapshot:
    return MarketSnapshot(epoch=epoch, seqs={"md.book.X": book_seq},
                          books=[BookLevels(instrument_id="X", bids=[(90, 1)], asks=asks)],
                          last_trades=[], status=MarketStatus(phase="continuous", halted=[]))


def delta(seq: int, changes: list[tuple[str, int, int]], epoch: int = 7) -> bytes:
    return encode(BookDelta(instrument_id="X", changes=changes, seq=seq, ts_ns=seq * 10,
                            epoch=epoch))


def test_book_mirror_snapshot_buffer_and_gap() -> None:
    changed: list[str] = []
    mirror = BookMirror(changed.append)
    mirror.feed(b"md.book.X", delta(5, [("sell", 100, 0)]))  # older than the snapshot
    mirror.feed(b"md.book.X", delta(6, [("sell", 101, 4)]))
    mirror.load(snapshot([(100, 2)], book_seq=5))
    assert mirror.synced and mirror.books["X"].top(5) == ([(90, 1)], [(100, 2), (101, 4)])
    mirror.feed(b"md.book.X", delta(7, [("buy", 95, 3), ("sell", 100, 0)]))
    assert mirror.books["X"].top(1) == ([(95, 3)], [(101, 4)]) and mirror.watermark == 70
    mirror.feed(b"md.book.X", delta(9, [("buy", 96, 1)]))  # 8 is missing: never skipped
    assert not mirror.synced and mirror.need_snapshot.is_set() and mirror.resyncs == 1
    mirror.load(snapshot([(101, 4)], book_seq=8))
    assert mirror.books["X"].top(5) == ([(96, 1), (90, 1)], [(101, 4)])
    mirror.feed(b"md.trade.X", encode(TradePrint(trade_id="T", instrument_id="X", price=101,
                                                 quantity=1, aggressor="buy", seq=1, epoch=7)))
    # the print's book change comes next (same command): until then the last price waits, so
    # a quote never shows the trade beside the ask it took
    assert "X" not in mirror.last_trade and mirror.books["X"].top(1)[1] == [(101, 4)]
    changed.clear()
    mirror.feed(b"md.book.X", delta(10, [("sell", 101, 3)]))
    assert mirror.last_trade["X"] == 101 and mirror.books["X"].top(1)[1] == [(101, 3)]
    assert changed == ["X"]
    mirror.feed(b"md.book.X", delta(11, [], epoch=8))  # the matcher restarted
    assert not mirror.synced


def test_read_your_writes_wait() -> None:
    async def run() -> None:
        mirror = BookMirror(lambda iid: None)
        mirror.load(snapshot([], book_seq=0))
        waiter = asyncio.create_task(mirror.wait_for(20, timeout=5))
        await asyncio.sleep(0)
        assert not waiter.done()
        mirror.feed(b"md.book.X", delta(1, [("sell", 5, 1)]))
        mirror.feed(b"md.book.X", delta(2, [("sell", 5, 0)]))
        await asyncio.wait_for(waiter, 1)
        await mirror.wait_for(10, timeout=5)  # already there: no wait

    asyncio.run(run())


def test_a_commands_book_changes_are_all_applied_before_a_read_goes_on() -> None:
    """A trade print comes before its book delta, and a command may change several books:
    only its last delta (more=False) lets a waiting read go on; a snapshot covers its time."""
    async def run() -> None:
        mirror = BookMirror(lambda iid: None)
        mirror.load(snapshot([(100, 1)], book_seq=0))
        waiter = asyncio.create_task(mirror.wait_for(50, timeout=5))
        mirror.feed(b"md.trade.X", encode(TradePrint(
            trade_id="T", instrument_id="X", price=100, quantity=1, aggressor="buy", seq=1,
            ts_ns=50, epoch=7)))
        mirror.feed(b"md.book.X", encode(BookDelta(
            instrument_id="X", changes=[("sell", 100, 0)], more=True, seq=1, ts_ns=50,
            epoch=7)))
        await asyncio.sleep(0.01)
        assert not waiter.done() and mirror.watermark == 0
        mirror.feed(b"md.book.Y", encode(BookDelta(
            instrument_id="Y", changes=[("buy", 7, 0)], seq=1, ts_ns=50, epoch=7)))
        await asyncio.wait_for(waiter, 1)
        late = asyncio.create_task(mirror.wait_for(90, timeout=5))
        await asyncio.sleep(0.01)
        mirror.need_snapshot.set()
        mirror.load(MarketSnapshot(epoch=7, seqs={}, books=[], last_trades=[],
                                   status=MarketStatus(phase="continuous", halted=[]), ts_ns=90))
        await asyncio.wait_for(late, 1)

    asyncio.run(run())


def test_rate_limiter_window_and_give_back(monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    now = [100.0]
    monkeypatch.setattr("services.gateway.limits.time.monotonic", lambda: now[0])
    limiter = RateLimiter("orders")
    assert all(limiter.admit("T", 2) is None for _ in range(2))
    refused = limiter.admit("T", 2)
    assert refused is not None and (refused["limit"], refused["current"]) == (2, 2)
    assert refused["scope"] == "orders" and refused["retry_after_s"] == 1.0
    assert limiter.admit("U", 2) is None  # per key
    limiter.give_back("T")  # the matcher refused it: the slot is free again
    assert limiter.admit("T", 2) is None
    now[0] += 1.0
    assert limiter.admit("T", 2) is None
    assert RateLimiter("orders", enabled=False).admit("T", 0) is None


def test_keys_are_hashed_looked_up_once_and_unknown_ones_cached() -> None:
    key = new_key()
    assert key.startswith("itg_") and len(key) >= 40 and new_key() != key
    asked: list[str] = []

    async def lookup(hashed: str) -> TeamInfo | None:
        asked.append(hashed)
        return TEAM if hashed == key_hash(key) else None

    async def run() -> None:
        ring = KeyRing(lookup, size=10, negative_ttl_s=60)
        assert await ring.team_for(key) == TEAM and await ring.team_for(key) == TEAM
        assert await ring.team_for("itg_wrong") is None
        assert await ring.team_for("itg_wrong") is None
        assert await ring.team_for("") is None and await ring.team_for("é" * 10) is None
        assert await ring.team_for("x" * 1000) is None

    asyncio.run(run())
    assert asked == [key_hash(key), key_hash("itg_wrong")]


def test_a_lost_key_reissue_empties_the_key_cache() -> None:
    """Reissues come numbered on sys.keys, and the matcher's heartbeat counts them: a key
    whose reissue was lost (a gap, or a count above the last one seen) is not served from
    the cache; a reissue in order forgets only its own team's keys."""
    other = TeamInfo(team_id="TEAM_002", team_name="b", role="hedge_fund", created_ns=0)
    keys = {key_hash("itg_a"): TEAM, key_hash("itg_b"): other}
    asked: list[str] = []

    async def lookup(hashed: str) -> TeamInfo | None:
        asked.append(hashed)
        return keys[hashed]

    async def cached(ring: KeyRing) -> set[str]:
        """The keys served without asking the matcher."""
        before = len(asked)
        for key in ("itg_a", "itg_b"):
            await ring.team_for(key)
        return {k for k in ("itg_a", "itg_b") if key_hash(k) not in asked[before:]}

    async def run() -> None:
        ring = KeyRing(lookup, size=10, negative_ttl_s=60)
        await cached(ring)
        ring.reissues_seen(3)  # the first count: anything cached before it may be stale
        assert await cached(ring) == set()
        assert await cached(ring) == {"itg_a", "itg_b"}
        ring.reissues_seen(3)  # nothing new
        assert await cached(ring) == {"itg_a", "itg_b"}
        ring.reissued(TEAM.team_id, 4)  # in order: that team only
        assert await cached(ring) == {"itg_b"}
        ring.reissues_seen(3)  # a beat sent before reissue 4 arrived late: says nothing
        assert await cached(ring) == {"itg_a", "itg_b"}
        ring.reissued(TEAM.team_id, 6)  # 5 was lost, and could be anyone's
        assert await cached(ring) == set()
        ring.reissues_seen(7)  # 7 was lost: no later reissue may ever tell
        assert await cached(ring) == set()
        assert await cached(ring) == {"itg_a", "itg_b"}

    asyncio.run(run())


def test_a_reissue_heard_while_a_key_is_looked_up_is_not_undone_by_the_answer() -> None:
    """The matcher answered before it applied the reissue, and the gateway heard the reissue
    first: the old key was cached and kept working on that gateway for good."""
    valid = {key_hash("itg_old"): TEAM}
    answers: list[TeamInfo | None] = []

    async def lookup(hashed: str) -> TeamInfo | None:
        answer = valid.get(hashed)  # as the matcher saw it when it answered
        if not answers:  # the reissue, heard before this answer arrives
            del valid[hashed]
            ring.reissued(TEAM.team_id, 1)
        answers.append(answer)
        return answer

    ring = KeyRing(lookup, size=10, negative_ttl_s=60)
    assert asyncio.run(ring.team_for("itg_old")) is None
    assert answers == [TEAM, None]  # the stale answer was asked again


def test_api_shapes_fees_and_prices() -> None:
    report = ExecutionReport(order_id="O", client_order_id=None, team_id="T", trade_id="TR",
                             instrument_id="X", side="sell", executed_quantity=10,
                             executed_price=12850, remaining_quantity=0, order_status="filled",
                             liquidity="maker", fee=20)
    kind, data = views.private(report) or ("", {})
    assert kind == "execution_report"
    assert (data["fees"], data["executed_price"], data["liquidity_type"]) == (
        Decimal("0.2"), Decimal("128.5"), "maker")
    assert views.dumps({"p": views.price(12850), "f": views.price(-10)}) == b'{"p":128.5,"f":-0.1}'
    result = OrderResult(order_id="O", client_order_id=None, status="filled", filled_quantity=3,
                         remaining_quantity=0, notional=100 + 101 + 101)
    assert views.order_result(result)["average_price"] == Decimal("1.0067")


def test_signals_reach_bots_with_decimal_prices_and_no_bus_fields() -> None:
    signal = IndicatorSignal(seq=7, epoch=3, symbol="SPX", tick=40, game_s=1.5, price=450012,
                             sma={"20": 4499.5, "60": None}, realised_vol={"20": 0.2}, rsi=None)
    data = views.feed_data(encode(signal))
    assert data is not None
    assert data["price"] == Decimal("4500.12")
    assert views.dumps(data["price"]) == b"4500.12"
    assert data["sma"] == {"20": 4499.5, "60": None}  # already in price units
    assert not {"seq", "epoch", "ts_ns", "type"} & data.keys()
    assert data["signal_type"] == "technical_indicators"


class _HeldBridge:
    """Holds every request until the test answers it: the only way to put two connections'
    replays in flight at once deterministically (a real matcher answers too fast)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Any, asyncio.Future[Any]]] = []

    async def call(self, request: Any, kind: type, timeout: float) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((request, future))
        return await future


def test_a_replaced_connections_replay_never_moves_the_new_ones_cursor() -> None:
    def ack(seq: int) -> bytes:
        return encode(OrderAck(seq=seq, ts_ns=seq, order_id=f"ORD_{seq}", client_order_id=None,
                               team_id=TEAM.team_id, instrument_id=CALL_ID, side="buy",
                               quantity=1, order_type="limit", price=100))

    async def scenario() -> tuple[list[int], int]:
        bridge = _HeldBridge()
        hub = Hub(Config().gateway, bridge, BookMirror(lambda _: None))
        session = hub.sessions[TEAM.team_id] = Session(TEAM, 100)
        session.mark(1, 0)
        session.mark(10, 5)  # the client saw seq 10 = private 5, and missed private 6..8
        session.next_seq, session.cursor, session.left_at = 11, 5, 0.0
        first = asyncio.create_task(hub.attach(None, TEAM, since=10))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        second = asyncio.create_task(hub.attach(None, TEAM, since=10))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        for request, future in bridge.waiting:  # both replays answered, the old one first
            future.set_result(ReplayReply(topic=f"exec.{TEAM.team_id}", complete=True,
                                          payloads=[ack(s) for s in range(request.from_seq, 9)]))
        old, new = await first, await second
        assert old.closing is not None and not old.queue
        return [it.private_seq for it in new.queue], new.session.cursor

    assert asyncio.run(scenario()) == ([6, 7, 8], 8)


def test_a_record_made_before_any_command_gives_no_commit_age(tmp_path: Path) -> None:
    """The house teams' records carry time 0: /health said the newest record was 57 years
    old until another one was stored."""
    url = f"sqlite:///{tmp_path / 'itg.db'}"
    watch = DbWatch(url)

    def team(seq: int, ts_ns: int) -> TeamRecord:
        return TeamRecord(stream="matcher", seq=seq, ts_ns=ts_ns, team_id=f"T{seq}",
                          team_name=f"t{seq}", role="house")
    try:
        with Store(url) as store:
            store.write(RecordBatch(stream="matcher", records=[team(1, 0)]))
            watch.poll()
            assert watch.committed == {"matcher": 1} and watch.newest_ns == {}
            store.write(RecordBatch(stream="matcher", records=[team(2, 1_795_515_443 * 10**9)]))
            watch.poll()
            assert watch.newest_ns == {"matcher": 1_795_515_443 * 10**9}
    finally:
        watch.close()


def test_stored_records_count_exactly_and_skip_a_producer_numbering_afresh(
        tmp_path: Path) -> None:
    """The metric was the committed seq as a float: the simulator's and events' seqs start at
    a ns clock (~1.8e18), so it moved in steps of 256 and looked stalled for minutes."""
    url = f"sqlite:///{tmp_path / 'itg.db'}"
    base = 1_795_515_443_962_986_953
    with Store(url) as store, store.engine.begin() as conn:
        conn.exec_driver_sql(f"insert into stream_progress values ('events', {base})")
    watch = DbWatch(url)

    def commit(seq: int) -> dict[str, int]:
        with Store(url) as store, store.engine.begin() as conn:
            conn.exec_driver_sql(f"update stream_progress set last_seq = {seq}")
        watch.poll()
        return dict(watch.stored)

    try:
        watch.poll()
        assert watch.stored == {"events": 0}  # first sight: nothing counted yet
        assert commit(base + 3) == {"events": 3}
        assert commit(base + 4) == {"events": 4}
        assert commit(base + 60 * 10**9) == {"events": 4}  # a restart: numbered afresh
        assert commit(base + 60 * 10**9 + 7) == {"events": 11}
    finally:
        watch.close()


def test_book_mirror_finds_a_lost_last_delta_by_the_matchers_heartbeat() -> None:
    """No later delta reveals the loss of a quiet book's last one; the heartbeat's count of
    public events (the sum of every md topic's seq) does."""
    def beat(published: int, epoch: int = 7) -> Heartbeat:
        return Heartbeat(service="matcher", last_seq=99, published=published, epoch=epoch)
    mirror = BookMirror(lambda iid: None)
    mirror.load(snapshot([(100, 2)], book_seq=5))
    mirror.feed(b"md.book.X", delta(6, [("sell", 101, 4)]))
    mirror.beat(beat(6))  # all applied
    mirror.beat(beat(9, epoch=6))  # another epoch's count says nothing about this one
    mirror.beat(Heartbeat(service="matcher", last_seq=99, epoch=7))  # no count
    assert mirror.synced and mirror.resyncs == 0
    mirror.beat(beat(7))  # delta 7 never came
    assert not mirror.synced and mirror.need_snapshot.is_set() and mirror.resyncs == 1
