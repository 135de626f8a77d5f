"""Example quant subscriber to the ITG ZeroMQ market feed. Needs only `pyzmq` and `msgpack`.

The feed, in short (README has the full topic table):
- Three producers: the matcher (books, trades, market status: md.*), the simulator (underlying
  prices, option fair values: md.*) and, if asked for, the events service (news, public
  signals). Each has a PUB socket (the feed) and a public ROUTER (snapshots, pings and the
  matcher's md.* replays; use a DEALER). They are the ones open to the outside world.
- Every frame is [topic, msgpack array of maps]: one or more events of that topic, in seq order
  (a busy matcher sends all of a topic's events of one batch in one frame). Each map's "type"
  names the message. Events carry "seq" (per topic, gap-free from 1), "epoch" (changes when the
  producer restarts) and "ts_ns".
- Heartbeats on sys.heartbeat.<service> carry "last_seq", the producer's position: the same
  value in two beats in a row means the producer is idle. They also carry "published", the
  number of public events sent before the beat: the sum of every public topic's last seq. With
  every public topic subscribed, a lower sum of your own seqs means a frame was lost, even the
  last one of a topic that then went quiet.
- {"type": "snapshot_request"} on the ROUTER returns the exact state with the seq of every topic.
  A frame sent before the request comes back before the answer: numbering requests that way
  tells a late answer to an earlier request from the answer to the latest.

Joining: subscribe, wait for a heartbeat (proof the subscription is live), ask for a snapshot,
then apply the buffered events with a seq above the snapshot's. A seq jump, a new epoch or a
heartbeat's "published" above the sum of your seqs means frames were lost: resync the same way.
When a producer goes idle after sending events, the state is also checked once against a
snapshot. Run: python bots/quant_feed.py --host 127.0.0.1 --base-port 5550
(the exchange must run with bus.transport = "tcp").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import zmq

Msg = dict[str, Any]
ENVELOPE = ("seq", "ts_ns", "epoch")
RETRY_BEATS = 5  # heartbeats to wait for a snapshot answer before asking again
# Every public topic of each producer: a heartbeat's "published" counts them all.
PUBLIC_TOPICS = {"matcher": (b"md.",), "simulator": (b"md.",),
                 "events": (b"news", b"signal.public.")}


def content(msg: Msg) -> Msg:
    """A message without its envelope: what the state of a topic is made of."""
    return {k: v for k, v in msg.items() if k not in ENVELOPE}


def book_levels(bids: list[list[int]], asks: list[list[int]]) -> Msg:
    return {"bids": {p: q for p, q in bids}, "asks": {p: q for p, q in asks}}


def snapshot_state(msg: Msg) -> dict[str, Any]:
    """Topic -> state, from a matcher `market_snapshot` or a simulator `feed_snapshot`."""
    if msg["type"] == "feed_snapshot":
        return {topic: content(event) for topic, event in msg["events"].items()}
    state: dict[str, Any] = {"md.status": content(msg["status"])}
    for book in msg["books"]:
        state["md.book." + book["instrument_id"]] = book_levels(book["bids"], book["asks"])
    for trade in msg["last_trades"]:
        state["md.trade." + trade["instrument_id"]] = content(trade)
    return state


def apply_event(current: Any, msg: Msg) -> Any:
    """Book deltas change a book; every other event is the new state of its topic."""
    if msg["type"] != "book_delta":
        return content(msg)
    book = current or book_levels([], [])
    for side, price, quantity in msg["changes"]:
        levels = book["bids" if side == "buy" else "asks"]
        if quantity:
            levels[price] = quantity
        else:
            levels.pop(price, None)
    return book


class Source:
    """One producer's feed: its share of the state, kept exact by seqs and snapshots."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], name: str, pub: str, rpc: str,
                 drop: Callable[[str, int, bytes], bool] | None = None) -> None:
        self.name = name
        self.sub = ctx.socket(zmq.SUB)
        self.rpc = ctx.socket(zmq.DEALER)
        for sock, address in ((self.sub, pub), (self.rpc, rpc)):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(address)
        for prefix in (*PUBLIC_TOPICS[name], b"sys.heartbeat." + name.encode()):
            self.sub.subscribe(prefix)
        self.drop = drop  # tests: lose chosen frames on purpose
        self.state: dict[str, Any] = {}
        self.seqs: dict[str, int] = {}
        self.epoch: int | None = None
        self.synced = False
        self.verifying = False  # the pending snapshot checks the state rather than rebuilds it
        self.waited: int | None = None  # heartbeats since the snapshot request; None: none asked
        self.buffer: list[tuple[str, Msg]] = []
        self.beat: int | None = None  # the producer's position in its last heartbeat
        self.idle = False
        self.checked: int | None = None  # the position our state was last checked at
        self._asked_at: int | None = None
        self._asked = 0  # number of the latest request: the ROUTER echoes it with the answer
        self.stats = {"frames": 0, "dropped": 0, "gaps": 0, "snapshots": 0, "checks": 0,
                      "repairs": 0}

    def close(self) -> None:
        self.sub.close(linger=0)
        self.rpc.close(linger=0)

    @property
    def settled(self) -> bool:
        """Synced, and checked against a snapshot since the producer last moved."""
        return self.synced and self.idle and self.checked == self.beat and self.waited is None

    def on_feed(self) -> None:
        topic, payload = self.sub.recv_multipart()
        self.stats["frames"] += 1
        if self.drop is not None and self.drop(self.name, self.stats["frames"], topic):
            self.stats["dropped"] += 1
            return
        for msg in msgpack.unpackb(payload):
            if msg["type"] == "heartbeat":
                self.on_heartbeat(msg)
            else:
                self.on_event(topic.decode(), msg)

    def on_heartbeat(self, msg: Msg) -> None:
        self.idle = msg["last_seq"] == self.beat and msg["epoch"] == self.epoch
        self.beat = msg["last_seq"]
        if self.waited is not None:
            self.waited += 1
            if self.waited >= RETRY_BEATS:
                self.request(verify=self.verifying)
        elif not self.synced or msg["epoch"] != self.epoch:
            self.request(verify=False)
        elif sum(self.seqs.values()) < (msg.get("published") or 0):
            self.stats["gaps"] += 1  # a lost frame no later one revealed (a topic's last one)
            self.request(verify=False)
        elif self.idle and self.checked != self.beat:
            self.request(verify=True)

    def request(self, verify: bool) -> None:
        """Ask for a snapshot; events received from now on are kept, to replay on top of it."""
        self.synced = self.synced and verify
        self.buffer.clear()  # everything received so far is covered by the snapshot
        self.verifying = verify
        self.waited = 0
        self._asked_at = self.beat
        self._asked += 1
        self.rpc.send_multipart([b"%d" % self._asked, msgpack.packb({"type": "snapshot_request"})])

    def on_event(self, topic: str, msg: Msg) -> None:
        if self.waited is not None:
            self.buffer.append((topic, msg))
        if not self.synced:
            return
        last = self.seqs.get(topic, 0)
        if msg["epoch"] != self.epoch or msg["seq"] > last + 1:
            self.stats["gaps"] += 1
            self.request(verify=False)
            self.buffer.append((topic, msg))  # it may be past the snapshot: keep it
        elif msg["seq"] == last + 1:
            self.seqs[topic] = msg["seq"]
            self.state[topic] = apply_event(self.state.get(topic), msg)

    def on_reply(self) -> None:
        *tag, payload = self.rpc.recv_multipart()
        msg = msgpack.unpackb(payload)
        if tag != [b"%d" % self._asked] or self.waited is None:
            return  # the answer to a request asked again since: older than what is buffered
        if msg["type"] not in ("market_snapshot", "feed_snapshot"):
            return
        self.waited = None
        state, seqs = snapshot_state(msg), dict(msg["seqs"])
        buffered, self.buffer = self.buffer, []
        self.checked = self._asked_at
        if self.verifying:
            self.stats["checks"] += 1
            if state == self.state and seqs == self.seqs and msg["epoch"] == self.epoch:
                return
            self.stats["repairs"] += 1  # or events arrived meanwhile: either way, rebuild
        self.stats["snapshots"] += 1
        self.state, self.seqs, self.epoch = state, seqs, msg["epoch"]
        self.synced = True
        for topic, event in buffered:
            self.on_event(topic, event)
            if not self.synced:  # a gap even on top of the snapshot: a new one is on its way
                return


class QuantFeed:
    """The whole market feed: one Source per producer, polled together."""

    def __init__(self, endpoints: Mapping[str, tuple[str, str]],
                 ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
                 drop: Callable[[str, int, bytes], bool] | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.sources = [Source(self.ctx, name, pub, rpc, drop)
                        for name, (pub, rpc) in endpoints.items()]
        self.poller = zmq.Poller()
        self._handlers: dict[zmq.Socket[bytes], Callable[[], None]] = {}
        for source in self.sources:
            self._handlers[source.sub] = source.on_feed
            self._handlers[source.rpc] = source.on_reply
            self.poller.register(source.sub, zmq.POLLIN)
            self.poller.register(source.rpc, zmq.POLLIN)

    def poll(self, timeout_ms: int) -> None:
        for sock, _ in self.poller.poll(timeout_ms):
            self._handlers[sock]()

    def settled(self) -> bool:
        return all(source.settled for source in self.sources)

    def state(self) -> dict[str, Any]:
        return {topic: s for source in self.sources for topic, s in source.state.items()}

    def seqs(self) -> dict[str, int]:
        return {topic: n for source in self.sources for topic, n in source.seqs.items()}

    def close(self) -> None:
        for source in self.sources:
            source.close()


def tcp_endpoints(host: str, base_port: int,
                  events: bool = False) -> dict[str, tuple[str, str]]:
    """The public feeds and their public ROUTERs at the exchange's default port offsets."""
    def at(offset: int) -> str:
        return f"tcp://{host}:{base_port + offset}"
    endpoints = {"matcher": (at(1), at(16)), "simulator": (at(4), at(17))}
    if events:
        endpoints["events"] = (at(7), at(18))
    return endpoints


def _show(feed: QuantFeed) -> None:
    state = feed.state()
    prices = {t[len("md.underlying."):]: s["price"] / 100 for t, s in state.items()
              if t.startswith("md.underlying.")}
    trades = sorted((s["trade_id"], t[len("md.trade."):], s["quantity"], s["price"] / 100)
                    for t, s in state.items() if t.startswith("md.trade."))
    stats = {s.name: s.stats for s in feed.sources}
    print(f"underlyings {prices}  last trade {trades[-1] if trades else None}  {stats}")


def main() -> None:
    parser = argparse.ArgumentParser(description="ITG market feed example subscriber")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=5550)
    args = parser.parse_args()
    feed = QuantFeed(tcp_endpoints(args.host, args.base_port))
    next_show = time.monotonic() + 1.0
    try:
        while True:
            feed.poll(100)
            if time.monotonic() >= next_show:
                _show(feed)
                next_show += 1.0
    except KeyboardInterrupt:
        pass
    finally:
        feed.close()


if __name__ == "__main__":
    main()
