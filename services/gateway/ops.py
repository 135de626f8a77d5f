"""Operations endpoints: GET / and /health (every service's liveness, heartbeat age and last
seq) and GET /metrics (Prometheus text format), and what feeds them.

Sources, all inside the gateway: the heartbeats on the public feeds (a tap on the bridge's
feeds), this gateway's commands to the matcher (timed per hop: sent -> sequenced by the matcher
-> answer back), what it answered over HTTP (the order fast path reports its answers, an ASGI
wrapper those of the app, so orders and rejects by code include the gateway's own checks), the
public trade tape, and what the DB writers committed (read from the database, see dbwatch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from fastapi import APIRouter, FastAPI
from fastapi.responses import Response as HttpResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import topics
from common.bus_client import BusTimeout
from common.messages import Command, DecodeError, Heartbeat, Response, TradePrint
from services.gateway import schemas, views
from services.gateway.bridge import Bridge, BusUnavailable
from services.gateway.core import Gateway
from services.gateway.dbwatch import DbWatch
from services.gateway.metrics import CONTENT_TYPE, LAG_BUCKETS, Labels, Registry

log = logging.getLogger(__name__)

DB_POLL_S = 1.0
_CODE = re.compile(rb'"code":"([A-Z_]{1,40})"')
_ROUTES = (("/exchange/orders/", "/exchange/orders/{order_id}"),
           ("/exchange/orderbook/", "/exchange/orderbook/{instrument_id}"),
           ("/game/teams/", "/game/teams/{team_id}"), ("/dashboard", "/dashboard"),
           ("/admin/", "/admin"))
_KNOWN = frozenset({"/", "/health", "/metrics", "/positions", "/exchange/orders", "/ws",
                    "/openapi.json", "/docs", "/game/teams/register"})
_BEAT = msgspec.msgpack.Decoder(Heartbeat)
_TRADE = msgspec.msgpack.Decoder(TradePrint)
T = TypeVar("T")


@dataclass
class Beat:
    seen: float  # time.monotonic() of the last heartbeat
    last_seq: int
    epoch: int
    restarts: int = 0  # epochs seen after the first: the service restarted
    down: bool = False  # its silence was logged; its next heartbeat logs the recovery


class Monitor:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.stale_s = max(3 * gw.config.bus.heartbeat_s, 1.0)
        self.beats: dict[str, Beat] = {}
        self.db = DbWatch(gw.config.db_url)
        r = self.registry = Registry()
        self.hops = r.histogram(
            "itg_hop_latency_seconds", "Per hop of a command from this gateway: "
            "gateway_to_matcher (sent -> sequenced; cross-host it includes clock offset), "
            "matcher_to_gateway (sequenced -> answer here: journal fsync, publish), "
            "round_trip (gateway -> matcher -> response)", ("hop", "command"))
        self.db_lag = r.histogram(
            "itg_db_commit_lag_seconds", "Producer -> DB commit: age of a stream's newest "
            f"record when seen committed, polled every {DB_POLL_S:g} s (an upper bound)",
            ("stream",), LAG_BUCKETS)
        self.commands = r.counter(
            "itg_commands_total", "Commands this gateway sent to the matcher, by answer (ok, "
            "a reject code, PROCESSING_TIMEOUT or SERVICE_UNAVAILABLE)", ("command", "outcome"))
        self.orders = r.counter("itg_orders_total", "Orders answered by this gateway",
                                ("outcome",))
        self.rejects = r.counter("itg_order_rejects_total", "Orders refused, by error code "
                                 "(the matcher's and the gateway's own checks)", ("code",))
        self.cancels = r.counter("itg_cancels_total", "Cancels answered", ("outcome",))
        self.trades = r.counter("itg_trades_total", "Trades on the public tape (exchange-wide)",
                                ("instrument",))
        self.contracts = r.counter("itg_traded_contracts_total", "Contracts traded on the tape")
        self.http = r.counter("itg_http_requests_total", "HTTP requests", ("route", "status"))
        self.http_s = r.histogram("itg_http_request_seconds", "HTTP request -> response",
                                  ("route",))
        self.bad: dict[str, int] = {}  # frames this monitor could not decode, by kind
        self._gauges(r)

    def _gauges(self, r: Registry) -> None:
        gw, bridge = self.gw, self.gw.bridge
        r.gauge("itg_service_up", "1 while the service's heartbeats are fresh", ("service",),
                lambda: [((s,), float(self._alive(b))) for s, b in self.beats.items()])
        r.gauge("itg_service_heartbeat_age_seconds", "Since the service's last heartbeat",
                ("service",), lambda: [((s,), self._age(b)) for s, b in self.beats.items()])
        r.gauge("itg_service_last_seq", "The producer's sequencer position in its last "
                "heartbeat", ("service",),
                lambda: [((s,), float(b.last_seq)) for s, b in self.beats.items()])
        r.gauge("itg_service_restarts", "New epochs seen since this gateway started",
                ("service",), lambda: [((s,), float(b.restarts)) for s, b in self.beats.items()])
        r.gauge("itg_db_stored_records_total", "Records the DB writers stored per stream "
                "since this gateway started (exact seqs are in /health)", ("stream",),
                lambda: [((s,), float(n)) for s, n in self.db.stored.items()], kind="counter")
        r.gauge("itg_db_up", "1 if the last read of the database succeeded", (),
                lambda: [((), float(self.db.error is None))])
        r.gauge("itg_queue_depth", "Queued work: commands and requests awaiting the matcher, "
                "messages waiting in WebSocket send queues", ("queue",), self._queues)
        r.gauge("itg_websocket_connections", "Open bot WebSocket connections", (),
                lambda: [((), float(len(gw.hub.live)))])
        r.gauge("itg_bad_frames_total", "Bus frames dropped as malformed, by where", ("source",),
                lambda: [(("bridge",), float(bridge.counters.get("bad_frames", 0))),
                         *((("monitor_" + k,), float(n)) for k, n in self.bad.items())],
                kind="counter")
        r.gauge("itg_late_responses_total", "Matcher answers that came after their timeout", (),
                lambda: [((), float(bridge.counters.get("late_responses", 0)))], kind="counter")
        r.gauge("itg_foreign_responses_total", "Matcher answers to requests this process never "
                "made (after a restart, or another gateway with the same id)", (),
                lambda: [((), float(bridge.counters.get("foreign_responses", 0)))],
                kind="counter")
        r.gauge("itg_websocket_events_total", "WebSocket session events (slow consumers "
                "dropped, resumes...)", ("event",),
                lambda: [((k,), float(v)) for k, v in gw.hub.counters.items()], kind="counter")

    def _queues(self) -> Iterable[tuple[Labels, float]]:
        bridge, live = self.gw.bridge, list(self.gw.hub.live.values())
        return [(("commands_in_flight",), float(len(bridge._pending))),
                (("requests_in_flight",), float(len(bridge._calls))),
                (("websocket_send",), float(sum(len(c.queue) for c in live))),
                (("websocket_send_max",), float(max((len(c.queue) for c in live), default=0)))]

    # --- feeds ---

    def on_public(self, topic: bytes, payload: bytes) -> None:
        if topic.startswith(topics.HEARTBEAT):
            beat = self._read(_BEAT, payload, "heartbeat")
            if beat is not None:
                self._beat(beat)
        elif topic.startswith(topics.TRADE):
            trade = self._read(_TRADE, payload, "trade")
            if trade is not None:
                self.trades.inc(trade.instrument_id)
                self.contracts.inc(amount=trade.quantity)

    def _read(self, decoder: msgspec.msgpack.Decoder[T], payload: bytes, kind: str) -> T | None:
        """The frame decoded, or None: a malformed one is counted under `kind`."""
        try:
            return decoder.decode(payload)
        except DecodeError:
            self.bad[kind] = self.bad.get(kind, 0) + 1
            return None

    def _beat(self, beat: Heartbeat) -> None:
        known = self.beats.get(beat.service)
        if known is None:
            self.beats[beat.service] = Beat(time.monotonic(), beat.last_seq, beat.epoch)
            return
        if beat.epoch != known.epoch:
            known.restarts += 1
            log.warning("gateway: %s restarted (new epoch %d)", beat.service, beat.epoch)
        if known.down or not self._alive(known):
            log.warning("gateway: %s heartbeats are back after %.1f s", beat.service,
                        self._age(known))
        known.seen, known.last_seq, known.epoch = time.monotonic(), beat.last_seq, beat.epoch
        known.down = False

    def check_silence(self) -> None:
        for service, beat in self.beats.items():
            if not beat.down and not self._alive(beat):
                beat.down = True
                log.error("gateway: no heartbeat from %s for %.1f s: down or unreachable",
                          service, self._age(beat))

    def _age(self, beat: Beat) -> float:
        return round(time.monotonic() - beat.seen, 3)

    def _alive(self, beat: Beat) -> bool:
        return self._age(beat) < self.stale_s

    def time_commands(self, bridge: Bridge) -> None:
        """Wrap this gateway's bridge.command so every command is timed and counted."""
        command = bridge.command

        async def timed(cmd: Command, timeout: float) -> Response:
            kind, sent_ns, start = type(cmd).__name__, time.time_ns(), time.perf_counter()
            try:
                answer = await command(cmd, timeout)
            except BusTimeout:
                self.commands.inc(kind, "PROCESSING_TIMEOUT")
                raise
            except BusUnavailable:
                self.commands.inc(kind, "SERVICE_UNAVAILABLE")
                raise
            done_ns = time.time_ns()
            self.hops.observe(time.perf_counter() - start, "round_trip", kind)
            if answer.ts_ns:
                self.hops.observe(max(0, answer.ts_ns - sent_ns) / 1e9, "gateway_to_matcher", kind)
                self.hops.observe(max(0, done_ns - answer.ts_ns) / 1e9, "matcher_to_gateway", kind)
            self.commands.inc(kind, "ok" if answer.ok else answer.code or "error")
            return answer

        bridge.command = timed  # type: ignore[method-assign]  # the bridge offers no hook

    # --- once a second ---

    async def watch(self) -> None:
        """Once a second: log services that went silent, read the DB writers' progress."""
        loop = asyncio.get_running_loop()
        while True:
            self.check_silence()
            for stream, lag in await loop.run_in_executor(None, self.db.poll):
                self.db_lag.observe(lag, stream)
            await asyncio.sleep(DB_POLL_S)

    # --- reports ---

    def health(self) -> dict[str, Any]:
        """The gateway's own report, each service with its heartbeat age and last seq."""
        report = self.gw.health()
        services: dict[str, dict[str, Any]] = report["services"]
        for name, beat in sorted(self.beats.items()):
            services.setdefault(name, {}).update(
                alive=self._alive(beat), heartbeat_age_s=self._age(beat),
                last_seq=beat.last_seq, epoch=beat.epoch, restarts=beat.restarts)
        services["gateway"]["pending_commands"] = len(self.gw.bridge._pending)
        services["dbwriter"] = self._db_report()
        return report

    def _db_report(self) -> dict[str, Any]:
        db = self.db
        report: dict[str, Any] = {"database": db.label, "readable": db.error is None,
                                  "committed_seq": dict(db.committed)}
        if db.error is not None:
            report["error"] = db.error
        now = time.time_ns()
        report["newest_record_age_s"] = {s: round((now - ts) / 1e9, 3)
                                         for s, ts in db.newest_ns.items()}
        return report

    # --- HTTP answers ---

    def answered(self, method: str, path: str, status: int, body: bytes, seconds: float) -> None:
        route = _route(path)
        self.http.inc(route, str(status))
        self.http_s.observe(seconds, route)
        if status != 200 or not path.startswith("/exchange/orders"):
            return
        ok = body.startswith(b'{"success":true')
        code = "" if ok else _reject_code(body)
        if method == "POST" and path == "/exchange/orders":
            self.orders.inc("accepted" if ok else "rejected")
            if not ok:
                self.rejects.inc(code)
        elif method == "DELETE":
            self.cancels.inc("ok" if ok else code)


def _reject_code(body: bytes) -> str:
    found = _CODE.search(body)
    return found.group(1).decode() if found else "UNKNOWN"


def _route(path: str) -> str:
    if path in _KNOWN:
        return path
    for prefix, route in _ROUTES:
        if path.startswith(prefix):
            return route
    return "other"


class Observed:
    """ASGI wrapper around the FastAPI app: times and counts every HTTP answer, and keeps the
    body of order answers to count rejects by code. (The order fast path, in front of it,
    reports its own answers to `Monitor.answered`: a wrapper costs it a closure and two more
    awaits per order.)"""

    def __init__(self, app: ASGIApp, monitor: Monitor) -> None:
        self.app = app
        self.monitor = monitor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, path = time.perf_counter(), scope["path"]
        keep = path.startswith("/exchange/orders")
        status, body = 0, b""

        async def watch(message: Message) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif keep and message["type"] == "http.response.body" and not body:
                body = message.get("body", b"")[:512]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.monitor.answered(scope["method"], path, status or 500, body,
                                  time.perf_counter() - start)


def install(app: FastAPI, gw: Gateway) -> Monitor:
    """Add GET /, /health and /metrics to `app`; the monitor runs while the app does."""
    monitor = Monitor(gw)
    gw.taps.append(monitor.on_public)
    monitor.time_commands(gw.bridge)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(monitor.watch())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            monitor.db.close()

    router = APIRouter(lifespan=lifespan)

    @router.get("/", response_model=schemas.Health, summary="Health and per-service liveness")
    async def root() -> HttpResponse:
        return views.json_response(monitor.health())

    @router.get("/health", include_in_schema=False)
    async def health() -> HttpResponse:
        return views.json_response(monitor.health())

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> HttpResponse:
        return HttpResponse(monitor.registry.render(), media_type=CONTENT_TYPE)

    app.include_router(router)
    app.state.monitor = monitor
    return monitor


def observed(app: FastAPI) -> ASGIApp:
    """The app wrapped so every HTTP answer it gives is counted."""
    return Observed(app, app.state.monitor)
