"""Recent events per topic, so a consumer that saw a gap can ask for them again.

Kept as objects and encoded only for a replay: publishing encodes each topic's events of a
batch in one call, which costs a fraction of encoding them one by one (measured in
bench/matcher_service.py), and replays are rare.

The private rings (a team's executions, a gateway's responses) share a budget of events:
about 400 bytes each, 10,000 for each of 1,000 teams came to 4 GB. Each ring keeps
`private_size` events, or once there are so many rings that this would exceed the budget, a
share halved as often as needed to fit. Halved, not divided: every ring is cut to the new
share at once, a copy of each, and halving keeps that to a few times a game.
"""

from __future__ import annotations

from collections import deque

from common import topics
from common.messages import Event, ReplayReply, encode

MIN_SHARE = 100  # events a private ring keeps however many there are


class ReplayRings:
    def __init__(self, private_size: int, public_size: int, private_total: int) -> None:
        self._public_size = public_size
        self._private_total = private_total
        self.share = min(private_size, private_total)  # events each private ring keeps now
        self._private = 0  # private rings
        self._rings: dict[bytes, deque[Event]] = {}
        self._last: dict[bytes, int] = {}

    def add(self, topic: bytes, last_seq: int, events: list[Event]) -> None:
        """A topic's next events, in seq order, the last of them numbered `last_seq` (one call
        per topic per batch: per event it cost the matcher ~1 us an order)."""
        ring = self._rings.get(topic)
        if ring is None:
            ring = self._rings[topic] = self._new_ring(topic)
        ring.extend(events)
        self._last[topic] = last_seq

    def _new_ring(self, topic: bytes) -> deque[Event]:
        if topic.startswith(topics.MD):
            return deque(maxlen=self._public_size)
        self._private += 1
        share = self.share
        while share * self._private > self._private_total and share > MIN_SHARE:
            share = max(share // 2, MIN_SHARE)
        if share < self.share:  # every private ring cut to it now: a few times a game
            self.share = share
            for other, ring in self._rings.items():
                if not other.startswith(topics.MD):
                    self._rings[other] = deque(ring, maxlen=share)
        return deque(maxlen=share)

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
