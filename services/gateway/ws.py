"""One team's WebSocket: a bounded outgoing queue, its sender, and the numbering it resumes.

`seq` numbers the messages of a team's session on this gateway: 1, 2, 3... on a fresh
connection, and N+1, N+2... on a reconnection with `?since=N`. The session remembers which
private message (by the matcher's per-team `exec.<team>` seq) went out under which `seq`, so
a resume knows exactly where the client's private stream stopped (see hub.py).

A client that cannot keep up (its queue reaches `ws_queue_size`) is dropped: its queue is
cleared at once, it is sent a close frame with the reason as soon as its socket takes it, and
after `ws_close_timeout_s` it is cut whatever happens. Nobody else ever waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from collections import deque
from collections.abc import Iterator
from typing import Any, NamedTuple

import msgspec
from starlette.websockets import WebSocket

from common.messages import DecodeError, TeamInfo
from services.gateway import views

log = logging.getLogger(__name__)

GOING_AWAY, POLICY, TRY_AGAIN, INTERNAL = 1001, 1008, 1013, 1011
REISSUED = "API key reissued; connect with the new key"  # with POLICY, to every stream of it
# A sender with a backlog lets the rest of the loop in after this many messages: often enough
# to keep everyone's latency low, seldom enough that the yields cost little (one per message
# was ~1% of the gateway's CPU at full rate).
YIELD_EVERY = 16


class Item(NamedTuple):
    type: str
    data: str  # JSON text
    timestamp: str
    private_seq: int = -1  # the matcher's exec.<team> seq it carries (or includes); -1: none


def item(kind: str, data: Any, private_seq: int = -1, timestamp: str = "") -> Item:
    return Item(kind, views.dumps(data).decode(), timestamp or views.now_iso(), private_seq)


class Marks:
    """(seq, private seq) of the last `size` private messages sent, oldest first.

    A ring of two int64 arrays: 16 bytes per entry and no Python object per entry, allocated
    as it fills and never more than `size` entries, so a session's memory stops growing once
    its window is full (a list of tuples cost ~150 bytes per entry, and the memory of
    trimmed entries stayed with the process)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seqs = array("q")
        self._privates = array("q")
        self._start = 0  # physical index of the oldest entry; 0 until the ring is full

    def __len__(self) -> int:
        return len(self._seqs)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n = len(self._seqs)
        for i in range(n):
            j = (self._start + i) % n
            yield self._seqs[j], self._privates[j]

    def append(self, seq: int, private_seq: int) -> None:
        if len(self._seqs) < self.size:
            self._seqs.append(seq)
            self._privates.append(private_seq)
        else:  # full: overwrite the oldest
            start = self._start
            self._seqs[start], self._privates[start] = seq, private_seq
            self._start = (start + 1) % self.size

    def oldest_seq(self) -> int | None:
        return self._seqs[self._start] if self._seqs else None

    def upto(self, seq: int) -> int:
        """How many entries have a seq <= `seq` (seqs only increase)."""
        seqs, start, n = self._seqs, self._start, len(self._seqs)
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if seqs[(start + mid) % n] <= seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def private_at(self, i: int) -> int:
        """The private seq of the i-th oldest entry."""
        return self._privates[(self._start + i) % len(self._seqs)]

    def truncate(self, keep: int) -> None:
        """Keep only the `keep` oldest entries."""
        if keep >= len(self._seqs):
            return
        start = self._start
        self._seqs = (self._seqs[start:] + self._seqs[:start])[:keep]
        self._privates = (self._privates[start:] + self._privates[:start])[:keep]
        self._start = 0


class Session:
    """A team's numbering on this gateway; outlives its connection for `?since=N` resumes."""

    def __init__(self, team: TeamInfo, window: int) -> None:
        self.team = team
        self.window = window
        self.next_seq = 1
        self.cursor = 0  # last private seq queued to the client
        self.marks = Marks(window)  # (seq, private seq) of the last `window` private messages
        self.left_at: float | None = None

    def mark(self, seq: int, private_seq: int) -> None:
        self.marks.append(seq, private_seq)

    def resolve(self, since: int) -> int | None:
        """The private seq the client had reached when it had seen `seq` N; None if unknown."""
        oldest = self.marks.oldest_seq()
        if since >= self.next_seq or oldest is None or since < oldest:
            return None
        return self.marks.private_at(self.marks.upto(since) - 1)

    def rewind(self, since: int, private_seq: int) -> None:
        self.marks.truncate(self.marks.upto(since))
        self.next_seq, self.cursor = since + 1, private_seq

    def restart(self, first_seq: int) -> None:
        self.next_seq, self.marks = first_seq, Marks(self.window)


class Connection:
    def __init__(self, ws: WebSocket, session: Session, limit: int, close_timeout: float) -> None:
        self.ws = ws
        self.session = session
        self.limit = limit
        self.close_timeout = close_timeout
        self.queue: deque[Item] = deque()
        self.wake = asyncio.Event()
        self.catching_up = True  # private frames are held until the stream is in order
        self.held: list[bytes] = []
        self.closing: tuple[int, str] | None = None
        self.sender: asyncio.Task[None] | None = None

    @property
    def team_id(self) -> str:
        return self.session.team.team_id

    def put(self, it: Item) -> bool:
        """Queue a message; False if the queue is full: the client is too slow, drop it."""
        if self.closing is not None:
            return True
        if len(self.queue) >= self.limit:
            return False
        self.queue.append(it)
        self.wake.set()
        return True

    def close(self, code: int, reason: str) -> None:
        if self.closing is not None:
            return
        log.info("closing WebSocket of %s: %d %s", self.team_id, code, reason)
        self.closing = (code, reason)
        self.queue.clear()
        self.held.clear()
        self.wake.set()
        asyncio.get_running_loop().call_later(self.close_timeout, self._cut)

    def _cut(self) -> None:
        if self.sender is not None and not self.sender.done():
            self.sender.cancel()

    async def send_loop(self) -> None:
        send, session, queue = self.ws.send, self.session, self.queue
        burst = 0
        try:
            while True:
                while not queue:
                    if self.closing is not None:
                        code, reason = self.closing
                        await send({"type": "websocket.close", "code": code, "reason": reason})
                        return
                    self.wake.clear()
                    burst = 0
                    await self.wake.wait()
                it = queue.popleft()
                seq = session.next_seq
                session.next_seq = seq + 1
                if it.private_seq >= 0:
                    session.mark(seq, it.private_seq)
                await send({"type": "websocket.send", "text": (
                    f'{{"seq":{seq},"type":"{it.type}","timestamp":"{it.timestamp}",'
                    f'"data":{it.data}}}')})
                burst += 1
                if queue and burst >= YIELD_EVERY:  # a send that need not wait never yields
                    burst = 0
                    await asyncio.sleep(0)
        except Exception as exc:  # the client went away mid-send (WebSocketDisconnect et al.)
            log.debug("WebSocket send to %s ended: %r", self.team_id, exc)

    async def receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if not self.put(self._answer(message.get("text"))):
                self.close(POLICY, f"slow consumer: more than {self.limit} messages pending")

    @staticmethod
    def _answer(text: str | None) -> Item:
        try:
            kind = msgspec.json.decode(text or "", type=dict[str, Any]).get("type")
        except DecodeError:
            kind = None
        if kind == "ping":
            return item("pong", {})
        return item("error", {"code": "INVALID_MESSAGE", "message":
                              'Only {"type": "ping"} is accepted from clients; '
                              "orders go through REST"})
