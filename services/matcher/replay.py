"""Recent events per topic, so a consumer that saw a gap can ask for them again.

Kept as objects and encoded only for a replay: publishing encodes each topic's events of a
batch in one call, which costs a fraction of encoding them one by one (measured in
bench/matcher_service.py), and replays are rare.
"""

from __future__ import annotations

from collections import deque

from common import topics
from common.messages import Event, ReplayReply, encode


class ReplayRings:
    def __init__(self, private_size: int, public_size: int) -> None:
        self._private_size = private_size
        self._public_size = public_size
        self._rings: dict[bytes, deque[Event]] = {}
        self._last: dict[bytes, int] = {}

    def add(self, topic: bytes, last_seq: int, events: list[Event]) -> None:
        """A topic's next events, in seq order, the last of them numbered `last_seq` (one call
        per topic per batch: per event it cost the matcher ~1 us an order)."""
        ring = self._rings.get(topic)
        if ring is None:
            size = self._public_size if topic.startswith(topics.MD) else self._private_size
            ring = self._rings[topic] = deque(maxlen=size)
        ring.extend(events)
        self._last[topic] = last_seq

    def start_at(self, seqs: dict[bytes, int]) -> None:
        """After a restart: each topic's last seq, for topics whose recent events are gone
        with the previous process; a replay from before them then says it is incomplete."""
        for topic, seq in seqs.items():
            self._last.setdefault(topic, seq)

    def replay(self, topic: bytes, from_seq: int) -> ReplayReply:
        ring = self._rings.get(topic, deque())
        last = self._last.get(topic, 0)
        first = last - len(ring) + 1
        start = max(from_seq, first)
        payloads = [encode(ring[i - first]) for i in range(start, last + 1)]
        # seqs start at 1: asking from 0 (or below) asks from the first, not for more
        return ReplayReply(topic=topic.decode(), payloads=payloads,
                           complete=max(from_seq, 1) >= first or from_seq > last)
