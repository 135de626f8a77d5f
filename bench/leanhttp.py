"""A lean HTTP/1.1 keep-alive client for the load generator, pluggable into `AsyncClient`.

httpx costs ~0.7-0.8 ms of CPU per request here; 500 requests/s through it would make the
load generator, not the exchange, the bottleneck on a 2-core machine. This does only what the
gateway's answers need (JSON bodies with Content-Length, or chunked), over a small pool of
connections, and raises httpx's exception types so the client's retry rules are unchanged:
a request whose connection could not be opened is ConnectError (never sent), one that failed
afterwards is ReadError (maybe sent).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

_JSON = msgspec.json.Encoder()


class Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        try:
            return msgspec.json.decode(self.content)
        except msgspec.DecodeError as exc:
            raise ValueError(str(exc)) from exc


class LeanHttp:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, url: str, json: Any = None,
                      headers: dict[str, str] | None = None) -> Answer:
        path = url[url.index("/", url.index("//") + 2):] if "//" in url else url
        body = b"" if json is None else _JSON.encode(json)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        for name, value in (headers or {}).items():
            head += f"{name}: {value}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        conn = self.idle.pop() if self.idle else await self._open()
        reader, writer = conn
        try:
            writer.write(head.encode() + b"\r\n" + body)
            answer, keep = await asyncio.wait_for(_read(reader), self.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ValueError) as exc:
            writer.close()
            raise httpx.ReadError(repr(exc)) from exc
        if keep:
            self.idle.append(conn)
        else:
            writer.close()
        return answer

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                          self.timeout)
        except (OSError, TimeoutError) as exc:
            raise httpx.ConnectError(repr(exc)) from exc

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _read(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    headers = {}
    for line in lines:
        if b":" in line:
            name, value = line.split(b":", 1)
            headers[name.strip().lower()] = value.strip()
    keep = headers.get(b"connection", b"").lower() != b"close"
    if b"content-length" in headers:
        return Answer(status, await reader.readexactly(int(headers[b"content-length"]))), keep
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")
        return Answer(status, b"".join(chunks)), keep
    return Answer(status, await reader.read()), False
