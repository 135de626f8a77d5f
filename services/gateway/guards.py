"""What one misbehaving or hostile client may cost the gateway: uvicorn's protocols, bounded.

uvicorn bounds none of these, and each one, from a single client with no key, took a gateway
down (and, in `itg up`, the whole exchange with it):
- connections: fewer than `limit_concurrency` open at once, HTTP and WebSocket together
  (uvicorn refuses a request once connections reach it, its own included); the gateway keeps
  it below the process's file-descriptor limit. Idle sockets used up the descriptors, and the
  matcher, in the same process, died writing a snapshot. One over the cap gets 503, closed.
- idle or trickling: a request head (the first: from the connection's start) must be whole
  within HEAD_TIMEOUT_S, or the connection is closed (uvicorn times out only the wait between
  requests, and stops at the first byte).
- request head: at most MAX_HEAD_BYTES before the headers end, then 431. httptools joins the
  pieces of a header by concatenation: a 200 MB header cost 40 s of the event loop.
- pipelining: at most MAX_PIPELINED requests waiting on one connection.
- unread output: a peer that makes us write without reading (WebSocket pings, each answered
  by a pong at once; pipelined requests) is cut at MAX_UNREAD_BYTES of buffered output. Our
  own WebSocket messages wait for the buffer instead (and the slow-consumer rule).
- a WebSocket handshake that the websockets parser refuses (a header line over 8 KiB) gets its
  answer (431) instead of none.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

MAX_HEAD_BYTES = 16_384  # request line and headers, as Node's default
HEAD_TIMEOUT_S = 10.0
MAX_PIPELINED = 64
MAX_UNREAD_BYTES = 4 * 1024 * 1024


def _answer(status: str, text: str) -> bytes:
    body = text.encode() + b"\n"
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


TOO_MANY = _answer("503 Service Unavailable", "Too many connections")
HEAD_TOO_LARGE = _answer("431 Request Header Fields Too Large",
                         f"Request line and headers over {MAX_HEAD_BYTES} bytes")


class GuardedHttp(HttpToolsProtocol):
    _in_head = False
    _heads = 0  # request heads completed on this connection
    _chunk_bytes = 0  # of the current head: whole reads that did not end it
    _parsed_bytes = 0  # of the current head: its URL and the headers parsed so far
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.limit_concurrency is not None and len(self.connections) >= self.limit_concurrency:
            self.connections.discard(self)  # at once: uvicorn counts it for others' requests
            self._refuse(TOO_MANY)
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heads = self._heads
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._heads == heads and self._in_head:
            self._chunk_bytes += len(data)
            if self._chunk_bytes > MAX_HEAD_BYTES:
                self._refuse(HEAD_TOO_LARGE)
                return
        if (len(self.pipeline) > MAX_PIPELINED
                or self.transport.get_write_buffer_size() > MAX_UNREAD_BYTES):
            self.transport.abort()

    def on_message_begin(self) -> None:
        self._in_head, self._chunk_bytes, self._parsed_bytes = True, 0, 0
        self._arm_head_timer()  # the next request of a kept-alive connection too
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._parsed_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        self._disarm_head_timer()
        if self._parsed_bytes > MAX_HEAD_BYTES:  # before the request reaches the app
            self._refuse(HEAD_TOO_LARGE)
            return
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        """A request head must be whole within HEAD_TIMEOUT_S of its start (of the connection,
        for the first): uvicorn's keep-alive timer stops at the first byte, so a client that
        sent one byte held its connection for good."""
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self.transport.close)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, answer: bytes) -> None:
        self._disarm_head_timer()
        self.transport.write(answer)
        self.transport.close()


class GuardedWebSocket(WebSocketsSansIOProtocol):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated:  # refused by the parser: uvicorn would answer nothing
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
        elif self.transport.get_write_buffer_size() > MAX_UNREAD_BYTES:
            self.transport.abort()
