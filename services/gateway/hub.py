"""Who gets which WebSocket message, and how a connection's private stream is kept exact.

Every gateway follows all `exec.*` frames from start-up (one subscription, proven joined by a
Probe), so no frame is lost to a late per-team subscription; frames of teams with no
connection here are dropped without decoding.

Private stream: each team's events carry the matcher's gap-free `exec.<team>` seq. A
connection delivers them strictly in that order from a cursor; an early frame (a gap) makes it
fetch the missing ones with a ReplayRequest before going on. How the cursor starts:
- fresh connection: one consistent read of [Ping, AccountQuery, Ping] (equal journal seqs in
  both Pongs prove no command ran in between) gives the positions and the private seq they
  include; `position_snapshot` is sent first, then every later private event.
- `?since=N` where this gateway still holds the team's session (same process, within
  `session_ttl_s` and `session_window`): the session says which private seq the client had
  reached at `seq` N; everything after it is replayed from the matcher, numbered from N+1.
  Public messages missed while away are not replayed (market_data is state; the next one
  supersedes it).
- `?since=N` that cannot be resolved here (another gateway, a restart, too old, or older than
  the matcher's replay ring): numbering still continues at N+1, and message N+1 is a fresh
  `position_snapshot`.

A connection replaced by a newer one of the same team is inert from then on: work it had in
flight (a replay, a consistent read) stops at its next step and never touches the session the
new connection took over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.websockets import WebSocket

from common import topics
from common.bus_client import BusTimeout
from common.config import GatewayConfig
from common.messages import (
    AccountQuery,
    AccountReply,
    CancelAck,
    Event,
    ExecutionReport,
    OrderAck,
    Ping,
    Pong,
    ReplayReply,
    ReplayRequest,
    TeamInfo,
    decode_if,
)
from common.money import from_ticks
from services.gateway import views
from services.gateway.books import BookMirror
from services.gateway.bridge import Bridge, BusUnavailable
from services.gateway.ws import INTERNAL, POLICY, TRY_AGAIN, Connection, Session, item

BOOK_CHANGES = (OrderAck, ExecutionReport, CancelAck)  # private events whose command moved a book

log = logging.getLogger(__name__)

CONSISTENT_READ_TRIES = 20


class Hub:
    def __init__(self, config: GatewayConfig, bridge: Bridge, mirror: BookMirror) -> None:
        self.config = config
        self.bridge = bridge
        self.mirror = mirror
        self.sessions: dict[str, Session] = {}
        self.live: dict[str, Connection] = {}
        self.dirty: dict[str, None] = {}
        self._tasks: set[asyncio.Task[bool]] = set()  # running catch-ups (strong references)
        self.counters = {"slow_consumers": 0, "unrecoverable_gaps": 0, "resumes": 0,
                         "resume_fallbacks": 0}

    # --- feeds ---

    def on_private(self, topic: bytes, payload: bytes) -> None:
        conn = self.live.get(topic[len(topics.EXEC):].decode())
        if conn is None or topic != topics.execs(conn.team_id):  # prefix match: exact only
            return
        if conn.catching_up:
            conn.held.append(payload)
            if len(conn.held) > conn.limit:
                self._slow(conn)
            return
        event = decode_if(payload, Event)
        if event is None:
            return
        cursor = conn.session.cursor
        if event.seq == cursor + 1:
            self._deliver(conn, event)
        elif event.seq > cursor + 1:
            conn.catching_up = True
            conn.held.append(payload)
            task = asyncio.get_running_loop().create_task(self._catch_up(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _deliver(self, conn: Connection, event: Event) -> None:
        conn.session.cursor = event.seq
        if isinstance(event, BOOK_CHANGES):
            self.mirror.tell(event.ts_ns)  # a book read after this shows it
        shaped = views.private(event)
        if shaped is not None and not conn.put(
            item(shaped[0], shaped[1], event.seq, views.iso(event.ts_ns))
        ):
            self._slow(conn)

    def local_reject(self, team_id: str, data: dict[str, Any]) -> None:
        """An order this gateway refused before the matcher saw it: to the team's stream here,
        if it has one. Like public messages it has no private seq, so `?since=N` cannot
        replay it (the HTTP answer carried the same reject)."""
        conn = self.live.get(team_id)
        if conn is not None and not conn.put(item("new_order_reject", data)):
            self._slow(conn)

    def _slow(self, conn: Connection) -> None:
        """Drop a client that cannot keep up; nobody else waits for it."""
        self.counters["slow_consumers"] += 1
        conn.close(POLICY, f"slow consumer: more than {conn.limit} messages pending")
        self._forget(conn)

    def news(self, payload: bytes) -> None:
        data = views.feed_data(payload)
        if data is not None:
            data.setdefault("event_type", "news")
            data.setdefault("impact", {"direction": data.get("direction", "none"),
                                       "magnitude": data.get("magnitude", 0.0)})
            self._broadcast(item("event", data), None)

    def signal(self, topic: bytes, payload: bytes) -> None:
        data = views.feed_data(payload)
        if data is None:
            return
        role = topic[len(topics.SIGNAL):].decode(errors="replace")
        data.setdefault("signal_type", role)
        public = topic.startswith(topics.PUBLIC_SIGNAL)
        self._broadcast(item("signal", data), None if public else role)

    def market_changed(self, instrument_id: str) -> None:
        self.dirty[instrument_id] = None

    def _broadcast(self, it: Any, role: str | None) -> None:
        for conn in list(self.live.values()):
            if (role is None or conn.session.team.role == role) and not conn.put(it):
                self._slow(conn)

    async def market_data_loop(self) -> None:
        """Conflated market data: the latest state of each changed instrument per interval."""
        while True:
            await asyncio.sleep(self.config.md_interval_s)
            if not self.dirty:
                continue
            dirty, self.dirty = list(self.dirty), {}
            if self.live:
                stamp = views.now_iso()
                for iid in dirty:
                    self._broadcast(item("market_data", self.quote(iid), timestamp=stamp), None)

    def quote(self, iid: str) -> dict[str, Any]:
        book = self.mirror.books.get(iid)
        bid = book.bids.peekitem(0) if book is not None and book.bids else (None, 0)
        ask = book.asks.peekitem(0) if book is not None and book.asks else (None, 0)
        return {"instrument_id": iid, "bid": views.price(bid[0]), "ask": views.price(ask[0]),
                "last": views.price(self.mirror.last_trade.get(iid)), "bid_size": bid[1],
                "ask_size": ask[1]}

    # --- connections ---

    async def attach(self, ws: WebSocket, team: TeamInfo, since: int | None) -> Connection:
        """Open a team's stream: one connection per team, the old one is closed with 1000."""
        old = self.live.pop(team.team_id, None)
        if old is not None:
            old.close(1000, "replaced by a new connection")
        session = self.sessions.get(team.team_id)
        private_seq = None if session is None or since is None else session.resolve(since)
        if session is None or since is None:
            session = self.sessions[team.team_id] = Session(team, self.config.session_window)
        session.left_at = None
        conn = Connection(ws, session, self.config.ws_queue_size, self.config.ws_close_timeout_s)
        self.live[team.team_id] = conn
        if private_seq is not None and since is not None:
            session.rewind(since, private_seq)
            if await self._catch_up(conn, resuming=True):
                self.counters["resumes"] += 1
                return conn
        if conn.closing is None:
            if since is not None:
                self.counters["resume_fallbacks"] += 1
            session.restart(1 if since is None else since + 1)
            await self._fresh(conn)
        return conn

    def detach(self, conn: Connection) -> None:
        self._forget(conn)
        self._expire_sessions()

    def _forget(self, conn: Connection) -> None:
        """Stop routing to `conn`; its session starts its time to live (unless taken over)."""
        if self.live.get(conn.team_id) is conn:
            del self.live[conn.team_id]
            conn.session.left_at = time.monotonic()

    def _expire_sessions(self) -> None:
        horizon = time.monotonic() - self.config.session_ttl_s
        for team_id, s in list(self.sessions.items()):
            if s.left_at is not None and s.left_at < horizon:
                del self.sessions[team_id]

    def close_team(self, team_id: str, code: int, reason: str) -> None:
        conn = self.live.get(team_id)
        if conn is not None:
            conn.close(code, reason)

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.live.values()):
            conn.close(code, reason)

    async def _fresh(self, conn: Connection) -> None:
        try:
            account = await self._consistent_read(conn.team_id)
        except (BusTimeout, BusUnavailable) as exc:
            log.warning("no consistent account read for %s: %r", conn.team_id, exc)
            conn.close(TRY_AGAIN, "exchange busy or unavailable; reconnect")
            return
        if conn.closing is not None:  # replaced meanwhile: the session is the new one's
            return
        conn.session.cursor = account.exec_seq
        # cash and fees too (beyond the original's {positions}): a bot that resumes values
        # what it holds against what it paid, not against nothing
        snapshot = {"positions": account.positions, "cash": from_ticks(account.cash),
                    "fees": from_ticks(account.fees)}
        conn.queue.appendleft(item("position_snapshot", snapshot, account.exec_seq))
        await self._catch_up(conn)

    async def _consistent_read(self, team_id: str) -> AccountReply:
        """The account read at one point of the matcher's state (the reply names the last
        exec.<team> event its state includes)."""
        call, timeout = self.bridge.call, self.config.request_timeout_s
        for _ in range(CONSISTENT_READ_TRIES):
            before, account, after = await asyncio.gather(
                call(Ping(), Pong, timeout),
                call(AccountQuery(team_id=team_id), AccountReply, timeout),
                call(Ping(), Pong, timeout))
            if (before.last_seq, before.epoch) == (after.last_seq, after.epoch):
                return account
        raise BusUnavailable("the exchange kept changing during the account read")

    async def _catch_up(self, conn: Connection, resuming: bool = False) -> bool:
        """Deliver the private stream in order from the cursor, replaying what is missing.

        False if the connection ended, or if `resuming` and the replay does not reach back to
        the cursor: nothing was delivered then, and the caller falls back to a snapshot."""
        conn.catching_up = True
        session, topic = conn.session, topics.execs(conn.team_id).decode()
        while conn.closing is None:
            try:
                reply = await self.bridge.call(
                    ReplayRequest(topic=topic, from_seq=session.cursor + 1), ReplayReply,
                    self.config.request_timeout_s)
            except (BusTimeout, BusUnavailable) as exc:
                log.warning("replay for %s failed: %r", conn.team_id, exc)
                conn.close(TRY_AGAIN, "exchange unavailable during resync; reconnect")
                return False
            if conn.closing is not None:  # replaced meanwhile: the session is the new one's
                return False
            if not reply.complete and resuming:  # still catching up: live frames are held
                return False
            resuming = False
            if not reply.complete or not self._apply(conn, reply.payloads, replayed=True):
                self.counters["unrecoverable_gaps"] += 1
                conn.close(INTERNAL, "private messages are older than the replay window; "
                                     "reconnect without since")
                return False
            held, conn.held = conn.held, []
            if self._apply(conn, held, replayed=False):
                conn.catching_up = False
                return True
        return False

    def _apply(self, conn: Connection, payloads: list[bytes], replayed: bool) -> bool:
        """Deliver payloads in seq order; False on a gap (the rest goes back to `held`)."""
        for i, payload in enumerate(payloads):
            event = decode_if(payload, Event)
            if event is None or event.seq <= conn.session.cursor:
                continue
            if event.seq != conn.session.cursor + 1:
                if not replayed:
                    conn.held[:0] = payloads[i:]
                return False
            self._deliver(conn, event)
        return True


