"""The events service on the bus: runs the pure `EventsStep` on every simulator tick.

In: the simulator's tick states (sim_private), game-master news injections (events_rpc).
Out: news and the public signals (sentiment, indicators) on events_pub for everyone; role
signals on events_private under signal.<role>, for the gateway to hand only to the teams of
that role; news shocks for the simulator on events_private.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
import zmq

from common import topics
from common.feed import FeedService
from common.messages import ENVELOPE_FIELDS, ControlReply, InjectNews, Message, News, SimState
from common.outbox import RecordLink
from common.records import NewsRecord, SignalRecord
from common.service import Context
from services.events.step import EventsOutput, EventsStep, build_step

log = logging.getLogger(__name__)

MAX_DRAIN = 1000


class EventsService(FeedService):
    name = "events"

    def on_start(self, ctx: Context) -> None:
        self.step: EventsStep = build_step(self.config, self.epoch)
        self._sim_epoch: int | None = None
        self.open_feed(ctx, "events")
        self.records = RecordLink(self, ctx, "events")  # the event log for the database
        self.sim = self.socket(ctx, "sim_private", bind=False)
        self.sim.subscribe(topics.SIM_STATE)
        self.on_readable(self.sim, self._drain)

    def on_tick(self, now: float) -> None:
        # every poll round, not only on simulator states: a paused or silent simulator must
        # not hold back the open batch, re-sends or a backlog after a DB outage
        self.records.send_due(now)

    def _drain(self) -> None:
        for _ in range(MAX_DRAIN):
            try:
                frames = self.sim.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for state in self.events_of(frames[-1], SimState):
                self._on_state(state)

    def _on_state(self, state: SimState) -> None:
        if state.epoch != self._sim_epoch:
            if self._sim_epoch is not None:
                log.warning("events: the simulator restarted (epoch %d); the news schedule and "
                            "signals restart with it", state.epoch)
                # under a news epoch of their own: a simulator that resumed its game holds the
                # ids it applied before, and would take new news #1, #2... for those
                self.step = build_step(self.config, time.time_ns())
            self._sim_epoch = state.epoch
        self._publish(self.step.on_state(state))

    def _publish(self, out: EventsOutput) -> None:
        pub = self.pub
        assert pub is not None
        for topic, event in out.public:
            self.feed.publish(pub, topic, event)
            if isinstance(event, News):
                log.info("news #%d at tick %d: %s%s", event.news_id, event.tick, event.headline,
                         f" (jump {event.direction} {event.magnitude:.2%})" if event.jump else "")
        for topic, private in out.private:
            self.feed.send(self.private, topic, private)
        self._record(out)

    def _record(self, out: EventsOutput) -> None:
        """News and role signals into the event log (public per-tick figures are derivable)."""
        ts, now, records = time.time_ns(), time.monotonic(), self.records
        for _, public in out.public:
            if isinstance(public, News):
                records.add(NewsRecord(stream="events", seq=records.next_seq(), ts_ns=ts,
                                       headline=public.headline, details=_fields(public)), now)
        for topic, signal in out.private:
            if topic.startswith(topics.SIGNAL):
                records.add(SignalRecord(
                    stream="events", seq=records.next_seq(), ts_ns=ts,
                    signal_type=str(getattr(signal, "signal_type", type(signal).__name__)),
                    role=topic[len(topics.SIGNAL):].decode(), payload=_fields(signal)), now)

    def control(self, request: Message) -> Message:
        if not isinstance(request, InjectNews):
            return super().control(request)
        try:
            event = self.step.inject(request)
        except ValueError as exc:
            return ControlReply(ok=False, message=str(exc), details={"headline": request.headline})
        self._publish(EventsOutput([], self.step.due_shocks()))
        log.warning("game master: news #%d %r injected at tick %d", event.index, event.headline,
                    self.step.tick)
        return ControlReply(ok=True, details={
            "news_id": event.index, "headline": event.headline, "direction": event.direction,
            "magnitude": event.magnitude, "regime_shift": event.regime_shift, "jump": event.jump,
            "tick": self.step.tick})


def _fields(event: msgspec.Struct) -> dict[str, Any]:
    return {k: v for k, v in msgspec.structs.asdict(event).items() if k not in ENVELOPE_FIELDS}
