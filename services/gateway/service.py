"""The gateway as a cluster service: uvicorn (uvloop + httptools) serving the API.

uvicorn runs its own event loop in a thread this service starts; the service's own thread
only supervises it, so the gateway is started, made ready and stopped like any other service.
The listening socket is bound in `on_start`, so a busy port fails the start with a clear error
and port 0 (tests) gives a known free port before anyone connects. uvicorn installs signal
handlers only in the main thread, and this is never it: `stop()` is the way to end it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import resource
import socket
import threading
import time

import uvicorn

from common.service import Context, Service
from services.gateway.app import create_asgi
from services.gateway.core import Gateway
from services.gateway.guards import GuardedHttp, GuardedWebSocket

log = logging.getLogger(__name__)
DENIED = "ASGI callable returned without completing handshake."
FD_RESERVE = 256  # descriptors kept for everything but client connections


class _DeniedHandshakes(logging.Filter):
    """uvicorn's websockets-sansio protocol (0.54) logs DENIED as an ERROR after every
    handshake the app refuses with an HTTP answer (a wrong key gets 401): an answer, not a
    failure, and a bot retrying with a stale key would fill the log with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != DENIED


def connection_cap(wanted: int) -> int:
    """`gateway.max_connections`, or less where the process may not open that many files:
    every connection is a descriptor, and the bus, journal and database need theirs too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = wanted if soft == resource.RLIM_INFINITY else min(wanted, soft - FD_RESERVE)
    if cap < wanted:
        log.warning("gateway: at most %d connections (gateway.max_connections %d): the "
                    "process may open %d files (ulimit -n)", cap, wanted, soft)
    return max(cap, 1)


def _quiet_denials() -> None:
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DeniedHandshakes) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_DeniedHandshakes())


class GatewayService(Service):
    name = "gateway"
    poll_ms = 100

    def on_start(self, ctx: Context) -> None:
        settings = self.config.gateway
        self.gateway = Gateway(self.config, ctx)
        self.listener = socket.create_server((settings.host, settings.port), backlog=2048,
                                             reuse_port=False)
        self.port = self.listener.getsockname()[1]
        # log_config=None: uvicorn's records go to the process's handlers (--log-format json)
        # instead of handlers of its own, which printed plain text into JSON logs
        self.server = uvicorn.Server(uvicorn.Config(
            create_asgi(self.gateway), loop="uvloop", http=GuardedHttp, ws=GuardedWebSocket,
            ws_max_size=settings.max_ws_frame_bytes, ws_per_message_deflate=False,
            # uvicorn refuses a request once connections reach this, its own included; the
            # guard refuses a connection there: up to the cap, all are served
            limit_concurrency=connection_cap(settings.max_connections) + 1,
            lifespan="on", access_log=False, log_level="warning", log_config=None,
            proxy_headers=False, timeout_graceful_shutdown=2))
        _quiet_denials()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="itg-gateway-http", daemon=True)
        self._thread.start()
        self._wait_started(time.monotonic() + settings.start_timeout_s)
        log.info("gateway %s serving http://%s:%d", self.gateway.gw_id, settings.host, self.port)

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self.listener])
        except BaseException as exc:  # SystemExit from a failed lifespan start-up included
            self._failed = exc
            log.exception("gateway HTTP server failed")

    def _wait_started(self, deadline: float) -> None:
        while not self.server.started:
            if not self._thread.is_alive():
                if self.gateway.start_error is not None:  # an address that cannot be used
                    raise self.gateway.start_error
                raise RuntimeError(f"gateway HTTP server did not start: {self._failed!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("gateway HTTP server did not start in time")
            time.sleep(0.01)
        synced = asyncio.run_coroutine_threadsafe(
            self.gateway.wait_synced(max(0.0, deadline - time.monotonic())), self.gateway.loop)
        while not self.stopping.is_set():  # a stop asked for meanwhile waits for no matcher
            try:
                if not synced.result(timeout=0.05):
                    log.warning("gateway %s: matcher not reachable yet; serving anyway",
                                self.gateway.gw_id)
                return
            except concurrent.futures.TimeoutError:
                continue
        synced.cancel()

    def on_tick(self, now: float) -> None:
        """Supervise the HTTP thread. This thread polls no socket, so it waits here."""
        if not self._thread.is_alive() and not self.stopping.is_set():
            log.error("gateway HTTP server ended on its own; stopping the service")
            self.stopping.set()
        self.stopping.wait(self.poll_ms / 1000)

    def on_stop(self) -> None:
        if not hasattr(self, "server"):
            return
        self.server.should_exit = True
        self._thread.join(10.0)
        if self._thread.is_alive():
            log.error("gateway HTTP server did not stop within 10 s")
        self.listener.close()
