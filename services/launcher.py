"""Runs services as threads of one process over inproc: the embedded cluster.

Whether a service runs as a thread here or as its own process (`itg service NAME`) is only
a launcher choice; the service code is the same. Start order is consumers before producers;
stop order is the reverse, so producers stop first and persistence flushes last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType

import zmq

from common.config import SERVICES, Config
from common.service import Context, Service
from services.dbwriter.service import DbWriterService
from services.events.service import EventsService
from services.gateway.service import GatewayService
from services.matcher.service import MatcherService
from services.simulator.service import SimulatorService

log = logging.getLogger(__name__)

SERVICE_CLASSES: dict[str, type[Service]] = {
    "dbwriter": DbWriterService, "matcher": MatcherService, "simulator": SimulatorService,
    "events": EventsService, "gateway": GatewayService,
}


class ClusterError(RuntimeError):
    """A service failed to start; the message says which and why."""


def check_names(names: Sequence[str]) -> list[str]:
    for name in names:
        if name not in SERVICES:
            raise ClusterError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
    return [n for n in SERVICES if n in names]  # canonical start order


class Cluster:
    def __init__(self, config: Config, names: Sequence[str] | None = None) -> None:
        self.config = config
        self.names = check_names(list(names) if names else list(SERVICE_CLASSES))
        self.ctx: Context = zmq.Context()
        self.services: dict[str, Service] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._errors: dict[str, BaseException] = {}

    def start(self, timeout: float = 30.0) -> None:
        for name in self.names:
            service = SERVICE_CLASSES[name](self.config, self.ctx)
            thread = threading.Thread(target=self._run, args=(name, service), name=f"itg-{name}",
                                      daemon=True)
            self.services[name], self._threads[name] = service, thread
            thread.start()
            self._wait_ready(name, service, thread, time.monotonic() + timeout)

    def _run(self, name: str, service: Service) -> None:
        try:
            service.run()
        except BaseException as exc:
            self._errors[name] = exc
            log.exception("%s crashed", name)

    def _wait_ready(
        self, name: str, svc: Service, thread: threading.Thread, deadline: float
    ) -> None:
        while not svc.ready.wait(0.05):
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                why = self._errors.get(name, "did not become ready in time")
                raise ClusterError(f"{name} failed to start: {why}")

    def stop(self, timeout: float = 10.0) -> None:
        stuck = []
        for name in reversed(list(self.services)):
            self.services[name].stop()
            self._threads[name].join(timeout)
            if self._threads[name].is_alive():
                log.error("%s did not stop within %.1f s", name, timeout)
                stuck.append(name)
        self.services.clear()
        if stuck:  # closing sockets under a live thread crashes the process: leave them
            log.error("leaving the bus context open for %s", ", ".join(stuck))
            return
        self.ctx.destroy(linger=0)  # also closes sockets a caller forgot, instead of hanging

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
