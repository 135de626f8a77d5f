"""The gateway's composition root inside its event loop: bus bridge, keys, books, WebSockets.

Start-up: open the sockets; prove the private subscription (Probe -> Pong on resp.<gw>);
prove the public one (a matcher heartbeat arrives on it); only then take a market snapshot, so
no book delta can fall between the snapshot and the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from common import topics
from common.bus_client import BusTimeout
from common.config import Config
from common.instruments import build_instruments
from common.messages import (
    Heartbeat,
    KeyReissued,
    MarketSnapshot,
    SnapshotRequest,
    TeamInfo,
    TeamQuery,
    TeamReply,
    decode_if,
)
from common.service import Context
from services.gateway.auth import KeyRing
from services.gateway.books import BookMirror
from services.gateway.bridge import Bridge, BusUnavailable, Sink
from services.gateway.hub import Hub
from services.gateway.limits import RateLimiter
from services.gateway.ws import GOING_AWAY, POLICY, REISSUED

log = logging.getLogger(__name__)

VERSION = "0.1.0"


class Gateway:
    def __init__(self, config: Config, ctx: Context) -> None:
        self.config = config
        self.settings = config.gateway
        self.gw_id = self.settings.id or f"gw-{secrets.token_hex(4)}"
        self.instruments = build_instruments(config.game)
        self.max_price_ticks = config.game.max_price_ticks  # once: it parses a decimal
        self.bridge = Bridge(config, ctx, self.gw_id)
        self.mirror = BookMirror(self._market_changed)
        self.hub = Hub(self.settings, self.bridge, self.mirror)
        self.keys = KeyRing(self._lookup_key, self.settings.auth_cache_size,
                            self.settings.negative_auth_ttl_s)
        self.limiter = RateLimiter("orders", self.settings.rate_limit)
        self.requests = RateLimiter("requests", self.settings.rate_limit)
        self.beats: dict[str, float] = {}
        self.taps: list[Sink] = []  # more readers of every feed frame (the dashboard), first
        self.private_taps: list[Sink] = []  # and of every exec.<team> frame
        self.reissue_taps: list[Callable[[str], None]] = []  # and of every team's key reissue
        self.matcher_ready = asyncio.Event()
        self.start_error: Exception | None = None
        self.md_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- life cycle ---

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.bridge.on_private = self._on_private
        self.bridge.on_public = self._on_public
        self.bridge.on_key_reissued = self._key_reissued
        try:
            self.bridge.open()
        except Exception as exc:  # uvicorn reports a failed start-up only as an exit status
            self.start_error = exc
            raise
        self._tasks = [self.loop.create_task(self.bridge.keep_joined()),
                       self.loop.create_task(self._sync()),
                       self.loop.create_task(self.hub.market_data_loop())]

    async def wait_synced(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.md_ready.wait(), timeout)
        return self.md_ready.is_set()

    async def stop(self) -> None:
        self.hub.close_all(GOING_AWAY, "gateway shutting down")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.bridge.close()

    async def _sync(self) -> None:
        await self.bridge.joined.wait()
        self.matcher_ready.set()
        log.info("gateway %s: matcher answers, private feed joined", self.gw_id)
        while "matcher" not in self.beats:  # a heartbeat proves the public feed is joined
            await asyncio.sleep(0.005)
        while True:
            await self.mirror.need_snapshot.wait()
            try:
                snap = await self.bridge.call(SnapshotRequest(), MarketSnapshot,
                                              self.settings.request_timeout_s)
            except (BusTimeout, BusUnavailable) as exc:
                log.warning("gateway %s: market snapshot failed (%r); retrying", self.gw_id, exc)
                continue
            self.mirror.load(snap)
            self.md_ready.set()

    # --- feeds ---

    def _on_private(self, topic: bytes, payload: bytes) -> None:
        self.hub.on_private(topic, payload)
        for tap in self.private_taps:
            tap(topic, payload)

    def _on_public(self, topic: bytes, payload: bytes) -> None:
        for tap in self.taps:
            tap(topic, payload)
        if topic.startswith((topics.UNDERLYING, topics.FAIR)):
            return  # the simulator's md: not the matcher's books
        if topic.startswith(topics.MD):
            self.mirror.feed(topic, payload)
        elif topic.startswith(topics.HEARTBEAT):
            service = topic[len(topics.HEARTBEAT):].decode(errors="replace")
            self.beats[service] = time.monotonic()
            if service == "matcher" and (beat := decode_if(payload, Heartbeat)) is not None:
                self.mirror.beat(beat)
                if beat.keys is not None:
                    self.keys.reissues_seen(beat.keys)
        elif topic.startswith(topics.SIGNAL):
            self.hub.signal(topic, payload)
        elif topic == topics.NEWS:
            self.hub.news(payload)

    def _market_changed(self, instrument_id: str) -> None:
        self.hub.market_changed(instrument_id)

    # --- keys ---

    async def _lookup_key(self, hashed: str) -> TeamInfo | None:
        reply = await self.bridge.call(TeamQuery(key_hash=hashed), TeamReply,
                                       self.settings.request_timeout_s)
        return reply.team

    def _key_reissued(self, event: KeyReissued) -> None:
        """The old key stops here too: out of the cache, and its streams closed."""
        self.keys.reissued(event.team_id, event.seq)
        self.hub.close_team(event.team_id, POLICY, REISSUED)
        for tap in self.reissue_taps:
            tap(event.team_id)

    # --- health ---

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        stale = max(3 * self.config.bus.heartbeat_s, 1.0)
        services: dict[str, dict[str, Any]] = {
            name: {"alive": now - seen < stale, "last_heartbeat_s": round(now - seen, 3)}
            for name, seen in sorted(self.beats.items())}
        services["gateway"] = {"alive": True, "synced": self.md_ready.is_set() and
                               self.mirror.synced, "websockets": len(self.hub.live)}
        matcher_alive = services.get("matcher", {}).get("alive", False)
        return {"status": "ok" if matcher_alive else "degraded", "service": "itg-gateway",
                "version": VERSION, "gateway_id": self.gw_id, "services": services}
