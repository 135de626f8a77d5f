"""The small base every service is built on: poll loop, readiness, heartbeat, bad-frame
counters and bounded shutdown. Subclasses implement hooks; `run` itself is not overridden.

A service creates its sockets inside `run`, in the thread that uses them, so the same
object runs as a thread (sharing the launcher's Context, needed for inproc) or as the main
thread of its own process (see `run_process`).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any, ClassVar, TypeVar

import zmq

from common import topics
from common.config import Config
from common.messages import DecodeError, Heartbeat, Message, decode, decode_events, encode_events
from common.transport import make_socket, send_frame

log = logging.getLogger(__name__)

Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]
M = TypeVar("M", bound=Message)


class Service:
    name: ClassVar[str]
    poll_ms: ClassVar[int] = 50

    def __init__(self, config: Config, ctx: Context | None = None) -> None:
        self.config = config
        self._ctx = ctx
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.counters: Counter[str] = Counter()
        self.epoch = time.time_ns()
        self.pub: Socket | None = None  # heartbeats go here when a service publishes
        self._handlers: dict[Socket | int, Callable[[], None]] = {}
        self._sockets: list[Socket] = []
        self._poller = zmq.Poller()
        self._beat_seq = 0
        self.owns_process = False  # set by run_process: start-up then ends with freeze_heap()

    # --- hooks ---

    def on_start(self, ctx: Context) -> None:
        """Create sockets (self.socket) and register handlers (self.on_readable)."""

    def on_tick(self, now: float) -> None:
        """Periodic work, called after every poll round."""

    def on_stop(self) -> None:
        """Flush and release; sockets are closed afterwards by the base."""

    def last_seq(self) -> int:
        return 0

    def published(self) -> int | None:
        """Public events sent so far, for heartbeats; None where the service publishes none."""
        return None

    def keys_reissued(self) -> int | None:
        """Key reissues so far, for heartbeats: the matcher's only."""
        return None

    # --- the machinery ---

    def run(self) -> None:
        ctx = self._ctx or zmq.Context()
        try:
            self.on_start(ctx)
            if self.owns_process:
                freeze_heap()
            self.ready.set()
            log.info("%s ready", self.name)
            self._loop()
        except BaseException:
            self._release(ctx, failed=True)
            raise
        self._release(ctx, failed=False)

    def _release(self, ctx: Context, failed: bool) -> None:
        """on_stop, then the sockets. After a failure (a start that could not bind, say) an
        error in on_stop is logged, not raised: the first error is the one to report."""
        try:
            self.on_stop()
        except Exception:
            if not failed:
                raise
            log.exception("%s: releasing after a failure failed too", self.name)
        finally:
            for sock in self._sockets:
                sock.close(linger=0)
            if self._ctx is None:
                ctx.term()
            log.info("%s stopped", self.name)

    def stop(self) -> None:
        self.stopping.set()

    def socket(self, ctx: Context, channel: str, bind: bool) -> Socket:
        sock = make_socket(ctx, self.config, channel, bind)
        self._sockets.append(sock)
        return sock

    def on_readable(self, sock: Socket | int, handler: Callable[[], None]) -> None:
        """Call `handler` when `sock` (a socket, or a plain file descriptor) is readable; from
        on_start, or later (from on_tick, say)."""
        self._handlers[sock] = handler
        self._poller.register(sock, zmq.POLLIN)

    def pause_reading(self, sock: Socket | int) -> None:
        """Stop reading `sock` (messages wait in its queue) until resume_reading."""
        self._poller.modify(sock, 0)

    def resume_reading(self, sock: Socket | int) -> None:
        self._poller.modify(sock, zmq.POLLIN)

    def _loop(self) -> None:
        poller = self._poller
        beat_every = self.config.bus.heartbeat_s
        next_beat = 0.0
        while not self.stopping.is_set():
            for sock, _ in poller.poll(self.poll_ms):
                self._handlers[sock]()
            now = time.monotonic()
            if now >= next_beat:
                self.heartbeat()
                next_beat = now + beat_every
            self.on_tick(now)

    def heartbeat(self) -> None:
        if self.pub is None:
            return
        self._beat_seq += 1
        beat = Heartbeat(service=self.name, last_seq=self.last_seq(), published=self.published(),
                         keys=self.keys_reissued(), seq=self._beat_seq, ts_ns=time.time_ns(),
                         epoch=self.epoch)
        send_frame(self.pub, topics.heartbeat(self.name), encode_events(beat))

    def decode_as(self, payload: bytes, kind: type[M] | tuple[type[M], ...]) -> M | None:
        """Decode a frame of an expected kind; anything else is counted, logged once, dropped."""
        try:
            msg = decode(payload)
        except DecodeError as exc:
            self.count_bad("malformed", str(exc))
            return None
        if not isinstance(msg, kind):
            self.count_bad("unexpected", type(msg).__name__)
            return None
        return msg

    def events_of(self, payload: bytes, kind: type[M]) -> list[M]:
        """The events of a published frame (an array of them) that are of the expected kind;
        a malformed frame or an event of another kind is counted, logged once, dropped."""
        try:
            events = decode_events(payload)
        except DecodeError as exc:
            self.count_bad("malformed", str(exc))
            return []
        wanted: list[M] = [e for e in events if isinstance(e, kind)]
        if len(wanted) != len(events):
            self.count_bad("unexpected", ", ".join(sorted({type(e).__name__ for e in events
                                                           if not isinstance(e, kind)})))
        return wanted

    def count_bad(self, kind: str, detail: str) -> None:
        """Count a dropped frame (and log the first of each kind)."""
        self.counters[f"bad_frames.{kind}"] += 1
        if self.counters[f"bad_frames.{kind}"] == 1:
            log.warning("%s: dropped a %s frame (%s); counting further ones", self.name, kind,
                        detail)


FULL_COLLECTION_EVERY = 100  # middle-generation collections per full one (CPython default 10)


def freeze_heap() -> None:
    """For a process whose start-up is done: what lives now (modules, config, recovered state)
    lives as long as the process, so the garbage collector stops walking it. Without this a
    full collection walked every module object again; in the matcher that cost ~10% of its
    throughput.

    Full collections also become 10x rarer: they walk the whole live state (a matcher's books,
    a gateway's connections) only to find the little cyclic garbage these services make, which
    the younger generations mostly collect anyway. In a long matcher run the default schedule
    cost 45 pauses of ~12 ms (4% of its time); this one, 5."""
    gc.collect()
    gc.freeze()
    young, middle, full = gc.get_threshold()
    if full:  # 0 where the collector is incremental (3.14) and has no such threshold
        gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def run_process(service: Service) -> None:
    """Run a service as the main thread of this process until SIGTERM or SIGINT.

    The first signal asks for an orderly stop; a second one forces the exit.
    """
    service.owns_process = True

    def handle(signum: int, frame: FrameType | None) -> None:
        if service.stopping.is_set():
            raise SystemExit(128 + signum)
        log.info("%s: signal %d, stopping", service.name, signum)
        service.stop()

    signals = (signal.SIGTERM, signal.SIGINT)
    previous: dict[int, Any] = {s: signal.signal(s, handle) for s in signals}
    try:
        service.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
