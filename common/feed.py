"""Publishing side of a tick-driven feed (simulator, events): per-topic gap-free seqs, the
producer's epoch, the last state per topic, and the ROUTERs: the private one serves snapshots
and game-master controls, the public one (for quants) snapshots and pings only.

These producers publish full state per topic rather than deltas, so the last event of every
public topic is exactly what a late or lagging subscriber needs: the snapshot is that set.
"""

from __future__ import annotations

import time

import zmq

from common import topics
from common.messages import (
    ErrorReply,
    Event,
    FeedEvent,
    FeedSnapshot,
    Message,
    Ping,
    Pong,
    Probe,
    SnapshotRequest,
    encode,
    encode_events,
)
from common.outbox import RecordLink
from common.service import Context, Service, Socket
from common.transport import send_frame


def not_public(request: Message) -> ErrorReply:
    """The answer on a public ROUTER to a request only the exchange's own services may make."""
    tag = type(request).__struct_config__.tag
    return ErrorReply(message=f"{tag} is not served on the public endpoint")


class Feed:
    def __init__(self, service: str, epoch: int) -> None:
        self.service = service
        self.epoch = epoch
        self.seqs: dict[bytes, int] = {}
        self.last: dict[bytes, FeedEvent] = {}
        self.published = 0  # public events this epoch: what heartbeats carry as last_seq

    def send(self, sock: Socket, topic: bytes, event: Event) -> None:
        """Stamp `event` with its topic's next seq, the epoch and the time, then publish it."""
        seq = self.seqs[topic] = self.seqs.get(topic, 0) + 1
        event.seq, event.ts_ns, event.epoch = seq, time.time_ns(), self.epoch
        send_frame(sock, topic, encode_events(event))

    def publish(self, sock: Socket, topic: bytes, event: FeedEvent) -> None:
        """A public event: also kept as its topic's state for snapshots."""
        self.send(sock, topic, event)
        self.last[topic] = event
        self.published += 1

    def snapshot(self) -> FeedSnapshot:
        return FeedSnapshot(
            service=self.service, epoch=self.epoch, last_seq=self.published,
            seqs={topic.decode(): self.seqs[topic] for topic in self.last},
            events={topic.decode(): event for topic, event in self.last.items()},
        )


class FeedService(Service):
    """A Service with a public feed, a private channel and two ROUTERs for requests."""

    feed: Feed
    private: Socket
    records: RecordLink  # its records for the database

    def on_stop(self) -> None:
        if hasattr(self, "records"):  # not if the start failed before it
            self.records.flush()

    def open_feed(self, ctx: Context, prefix: str) -> None:
        """Bind `<prefix>_pub`, `_private`, `_rpc` and `_pub_rpc` (common/transport.py)."""
        self.feed = Feed(self.name, self.epoch)
        self.pub = self.socket(ctx, f"{prefix}_pub", bind=True)
        self.private = self.socket(ctx, f"{prefix}_private", bind=True)
        rpc = self.socket(ctx, f"{prefix}_rpc", bind=True)
        pub_rpc = self.socket(ctx, f"{prefix}_pub_rpc", bind=True)
        self.on_readable(rpc, lambda: self._serve(rpc, public=False))
        self.on_readable(pub_rpc, lambda: self._serve(pub_rpc, public=True))

    def last_seq(self) -> int:
        return self.feed.published

    def published(self) -> int:
        return self.feed.published

    def control(self, request: Message) -> Message:
        """Requests beyond ping, probe and snapshot (the game-master controls)."""
        return ErrorReply(message=f"unsupported request {type(request).__name__}")

    def _serve(self, sock: Socket, public: bool) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            request = self.decode_as(frames[-1], Message)
            if request is None:
                reply: Message = ErrorReply(message="malformed request")
            elif public and not isinstance(request, (Ping, SnapshotRequest)):
                reply = not_public(request)
            else:
                reply = self._answer(request)
            sock.send_multipart([*frames[:-1], encode(reply)])

    def _answer(self, request: Message) -> Message:
        match request:
            case Ping():
                return self._pong()
            case Probe(gw=gw):
                pong = self._pong()
                for sock in (self.pub, self.private):
                    if sock is not None:
                        sock.send_multipart([topics.response(gw), encode_events(pong)])
                return pong
            case SnapshotRequest():
                return self.feed.snapshot()
        return self.control(request)

    def _pong(self) -> Pong:
        return Pong(service=self.name, epoch=self.epoch, last_seq=self.feed.published)
