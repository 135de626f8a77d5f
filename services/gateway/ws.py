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
from bisect import bisect_right
from collections import deque
from typing import Any, NamedTuple

import msgspec
from starlette.websockets import WebSocket

from common.messages import TeamInfo
from services.gateway import views

log = logging.getLogger(__name__)

GOING_AWAY, POLICY, TRY_AGAIN, INTERNAL = 1001, 1008, 1013, 1011


class Item(NamedTuple):
    type: str
    data: str  # JSON text
    timestamp: str
    private_seq: int = -1  # the matcher's exec.<team> seq it carries (or includes); -1: none


def item(kind: str, data: Any, private_seq: int = -1, timestamp: str = "") -> Item:
    return Item(kind, views.dumps(data).decode(), timestamp or views.now_iso(), private_seq)


class Session:
    """A team's numbering on this gateway; outlives its connection for `?since=N` resumes."""

    def __init__(self, team: TeamInfo, window: int) -> None:
        self.team = team
        self.window = window
        self.next_seq = 1
        self.cursor = 0  # last private seq queued to the client
        self.marks: list[tuple[int, int]] = []  # (seq, private seq) of private messages sent
        self.left_at: float | None = None

    def mark(self, seq: int, private_seq: int) -> None:
        marks = self.marks
        marks.append((seq, private_seq))
        if len(marks) > 2 * self.window:
            del marks[: len(marks) - self.window]

    def resolve(self, since: int) -> int | None:
        """The private seq the client had reached when it had seen `seq` N; None if unknown."""
        if since >= self.next_seq or not self.marks or since < self.marks[0][0]:
            return None
        return self.marks[bisect_right(self.marks, (since, 1 << 62)) - 1][1]

    def rewind(self, since: int, private_seq: int) -> None:
        del self.marks[bisect_right(self.marks, (since, 1 << 62)):]
        self.next_seq, self.cursor = since + 1, private_seq

    def restart(self, first_seq: int) -> None:
        self.next_seq, self.marks = first_seq, []


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
        try:
            while True:
                while not queue:
                    if self.closing is not None:
                        code, reason = self.closing
                        await send({"type": "websocket.close", "code": code, "reason": reason})
                        return
                    self.wake.clear()
                    await self.wake.wait()
                it = queue.popleft()
                seq = session.next_seq
                session.next_seq = seq + 1
                if it.private_seq >= 0:
                    session.mark(seq, it.private_seq)
                await send({"type": "websocket.send", "text": (
                    f'{{"seq":{seq},"type":"{it.type}","timestamp":"{it.timestamp}",'
                    f'"data":{it.data}}}')})
                await asyncio.sleep(0)  # a send that need not wait never yields: let others in
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
        except (msgspec.DecodeError, msgspec.ValidationError):
            kind = None
        if kind == "ping":
            return item("pong", {})
        return item("error", {"code": "INVALID_MESSAGE", "message":
                              'Only {"type": "ping"} is accepted from clients; '
                              "orders go through REST"})
