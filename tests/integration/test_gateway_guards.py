"""One misbehaving client, no key needed, against a real gateway over real sockets: what it may
cost is bounded (services/gateway/guards.py), and everyone else is served meanwhile."""

from __future__ import annotations

import base64
import os
import select
import socket
import time
from collections.abc import Iterator

import pytest

from services.gateway import guards
from services.gateway.guards import MAX_HEAD_BYTES, MAX_UNREAD_BYTES
from tests.integration.gw import Exchange, running


@pytest.fixture(scope="module")
def ex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    with running(tmp_path_factory.mktemp("guards") / "data",
                 gateway={"max_connections": 20}) as exchange:
        yield exchange


def raw(ex: Exchange, rcvbuf: int = 0) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:  # set before connecting: it bounds the window the peer may fill
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", ex.gateway.port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server ends the connection (a reset counts as an end)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def served(ex: Exchange) -> bool:
    return ex.http.get("/").status_code == 200


def test_connections_over_the_cap_get_503_and_idle_ones_are_closed(
        ex: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle sockets used up the process's file descriptors; in `itg up` the matcher then died
    writing a snapshot (EMFILE). Then a socket that sent one byte held its place for good, and
    at the cap the clients already connected got 503 too."""
    monkeypatch.setattr(guards, "HEAD_TIMEOUT_S", 1.0)
    assert served(ex)  # the test's own client holds one connection
    idle = [raw(ex) for _ in range(10)]
    trickling = [raw(ex) for _ in range(9)]
    for sock in trickling:
        sock.sendall(b"G")  # a request begun, never finished
    assert served(ex)  # at the cap (20 in all): the connected are still served
    extra = raw(ex)
    assert read_all(extra).startswith(b"HTTP/1.1 503 Service Unavailable")
    started = time.monotonic()
    for sock in idle + trickling:  # closed once no whole request head came in time
        assert read_all(sock) == b""
        sock.close()
    assert time.monotonic() - started < 5
    assert served(ex)


def test_a_request_head_over_the_limit_gets_431(ex: Exchange) -> None:
    """httptools joins a header's pieces by concatenation: a 200 MB header cost 40 s of the
    event loop, and nothing refused it."""
    sock = raw(ex)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Junk: ")
    for _ in range(4 * MAX_HEAD_BYTES // 1024):  # in pieces, as a slow client sends them
        sock.sendall(b"j" * 1024)
        if select.select([sock], [], [], 0.005)[0]:  # answered: stop, or it would be reset
            break
    assert read_all(sock).startswith(b"HTTP/1.1 431 Request Header Fields Too Large")
    sock.close()
    at_once = ex.http.get("/", headers={"X-Junk": "j" * (MAX_HEAD_BYTES + 1000)})
    assert at_once.status_code == 431  # in one piece too
    big_but_fine = ex.http.get("/", headers={"X-Junk": "j" * (MAX_HEAD_BYTES // 2)})
    assert big_but_fine.status_code == 200


def test_pipelined_requests_never_read_end_the_connection(ex: Exchange) -> None:
    sock = raw(ex, rcvbuf=4096)
    count = 2_000
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * count)
    answered = read_all(sock).count(b"HTTP/1.1 200")  # and then the end, not the keep-alive
    assert answered < count
    sock.close()
    assert served(ex)


def _ws_handshake(path: str, extra: bytes = b"") -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: 13\r\n").encode() + b"Sec-WebSocket-Key: " + key + (
            b"\r\n" + extra + b"\r\n")


MASK = b"mask"
PONG = bytes([0x8A, 125]) + bytes(b ^ MASK[i % 4] for i, b in enumerate(b"p" * 125))


def test_pings_flooded_by_a_client_that_never_reads_end_the_connection(ex: Exchange) -> None:
    """Each ping was answered at once with a pong into an unbounded buffer: 6M pings from one
    client took the gateway from 391 to 869 MB."""
    sock = raw(ex, rcvbuf=4096)
    sock.sendall(_ws_handshake("/ws/public"))
    ping = bytes([0x89, 0x80 | 125]) + MASK + b"p" * 125  # masked, as a client's must be
    sent = 0
    try:
        while sent < 4 * MAX_UNREAD_BYTES:  # pongs for all of these outgrow the bound
            sock.sendall(ping * 64)
            sent += 64 * len(ping)
    except (BrokenPipeError, ConnectionResetError):
        pass  # cut while still sending
    # the pongs buffered are read, then the end: far fewer pongs than pings, as the gateway
    # cut the connection once the unread ones went over the bound
    pongs = read_all(sock).count(PONG)
    assert pongs < 0.9 * sent // len(ping)
    sock.close()
    assert served(ex)


def test_a_websocket_handshake_refused_by_the_parser_is_answered(ex: Exchange) -> None:
    """A header line over 8 KiB: the websockets parser refused it and uvicorn answered
    nothing, so the client waited for ever."""
    sock = raw(ex)
    sock.sendall(_ws_handshake("/ws/public", b"Cookie: " + b"c" * 8_300 + b"\r\n"))
    assert read_all(sock).startswith(b"HTTP/1.1 431")
    sock.close()
    assert served(ex)


