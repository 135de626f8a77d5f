"""The matcher as a bus service: the exchange's single-writer sequencer.

Per batch of commands: stamp each with the next seq and a strictly increasing time, apply it
to the engine, append it to the journal; then one fsync for the batch; only then publish the
events. Requests on the ROUTER (snapshots, replay, read-only queries) are answered between
batches by the same thread, so every answer is consistent with the published stream.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from pathlib import Path

import zmq

from common import topics
from common.messages import (
    AccountQuery,
    AccountReply,
    BookLevels,
    Command,
    ErrorReply,
    MarketSnapshot,
    Message,
    OpenOrder,
    Ping,
    Pong,
    Probe,
    ReplayRequest,
    SnapshotRequest,
    TeamQuery,
    TeamReply,
    decode,
    encode,
)
from common.service import Context, Service
from common.transport import recv_frames, send_frame
from services.matcher.disk import DiskThread
from services.matcher.engine import Engine, Out, team_info
from services.matcher.journal import JournalWriter, read_journal, record_bytes, repair_tail
from services.matcher.replay import ReplayRings
from services.matcher.snapshots import load_latest_snapshot
from services.matcher.state import decode_state, restore, snapshot_bytes

log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)


class MatcherService(Service):
    name = "matcher"

    def on_start(self, ctx: Context) -> None:
        cfg = self.config.matcher
        self.dir = Path(self.config.data_dir) / "matcher"
        self.rings = ReplayRings(cfg.replay_ring, cfg.md_replay_ring)
        self.engine = self._recover()
        journal = JournalWriter(self.dir, self.engine.last_seq + 1, fsync=cfg.fsync)
        self.disk = DiskThread(journal, self.dir, cfg.snapshots_kept)
        self._batch = 0
        self._waiting: deque[tuple[int, list[Out]]] = deque()  # batches not yet durable
        self._next_snapshot = time.monotonic() + cfg.snapshot_interval_s
        self.commands = self.socket(ctx, "commands", bind=True)
        self.pub = self.md = self.socket(ctx, "matcher_pub", bind=True)
        self.private = self.socket(ctx, "matcher_private", bind=True)
        self.rpc = self.socket(ctx, "matcher_rpc", bind=True)
        self.on_readable(self.commands, self._drain)
        self.on_readable(self.rpc, self._serve)
        self.on_readable(self.disk.wake_fd, self._publish_durable)

    def last_seq(self) -> int:
        return self.engine.last_seq

    def _recover(self) -> Engine:
        engine = Engine(self.config.game, epoch=self.epoch)
        snapshot = load_latest_snapshot(self.dir)
        if snapshot is not None:
            restore(engine, decode_state(snapshot))
        start = engine.last_seq
        if self.dir.exists():
            repair_tail(self.dir)
            for seq, ts, payload in read_journal(self.dir, after_seq=start):
                cmd = decode(payload)
                assert isinstance(cmd, Command)
                self._remember(engine.apply(cmd, seq, ts))
        log.info("matcher recovered: snapshot at seq %d, replayed to seq %d", start,
                 engine.last_seq)
        return engine

    def _drain(self) -> None:
        """One batch: everything waiting, up to max_batch, handed to the disk thread as one.

        Its events wait in `_waiting` until the batch is durable: nothing is answered or
        published before the commands that caused it are on disk.
        """
        out: list[Out] = []
        journal = bytearray()
        for _ in range(self.config.matcher.max_batch):
            try:
                frames = recv_frames(self.commands, _NOBLOCK)
            except zmq.Again:
                break
            cmd = self.decode_as(frames[-1], Command)
            if cmd is not None:
                out += self._sequence(cmd, frames[-1], journal)
        if journal:
            self._batch += 1
            self.disk.submit(self._batch, bytes(journal))
            self._waiting.append((self._batch, out))

    def _sequence(self, cmd: Command, payload: bytes, journal: bytearray) -> list[Out]:
        engine = self.engine
        seq, ts = engine.last_seq + 1, max(time.time_ns(), engine.last_ts + 1)
        try:
            out = engine.apply(cmd, seq, ts)
        except Exception:
            self.counters["internal_errors"] += 1
            log.exception("matcher: command %r failed; it is not journaled", cmd)
            return []
        journal += record_bytes(seq, ts, payload)
        self.counters["commands"] += 1
        return out

    def _publish_durable(self) -> None:
        durable = self.disk.durable_batch()
        md, private, rings = self.md, self.private, self.rings
        while self._waiting and self._waiting[0][0] <= durable:
            for topic, event in self._waiting.popleft()[1]:
                payload = encode(event)
                send_frame(md if topic.startswith(topics.MD) else private, topic, payload)
                rings.add(topic, event.seq, payload)

    def _remember(self, out: list[Out]) -> None:
        for topic, event in out:
            self.rings.add(topic, event.seq, encode(event))

    def on_tick(self, now: float) -> None:
        if now >= self._next_snapshot:
            self.snapshot()
            self._next_snapshot = now + self.config.matcher.snapshot_interval_s

    def snapshot(self) -> None:
        """Encoded here, consistent with the batches handed over so far; written by the disk
        thread after them."""
        self.disk.snapshot(self.engine.last_seq, snapshot_bytes(self.engine))

    def on_stop(self) -> None:
        if hasattr(self, "disk"):
            self.disk.close()
            self._publish_durable()

    # --- request/reply ---

    def _serve(self) -> None:
        while True:
            try:
                frames = self.rpc.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            request = self.decode_as(frames[-1], Message)
            reply = self._answer(request) if request is not None else ErrorReply(
                message="malformed request")
            self.rpc.send_multipart([*frames[:-1], encode(reply)])

    def _answer(self, request: Message) -> Message:
        engine = self.engine
        match request:
            case Ping():
                return Pong(service=self.name, epoch=self.epoch, last_seq=engine.last_seq)
            case Probe(gw=gw):
                pong = Pong(service=self.name, epoch=self.epoch, last_seq=engine.last_seq)
                send_frame(self.private, topics.response(gw), encode(pong))
                return pong
            case SnapshotRequest():
                return self._market_snapshot()
            case ReplayRequest(topic=topic, from_seq=from_seq):
                return self.rings.replay(topic.encode(), from_seq)
            case AccountQuery(team_id=team_id):
                return self._account(team_id)
            case TeamQuery(team_id=team_id, key_hash=key_hash):
                team = next((t for t in engine.teams.values()
                             if t.team_id == team_id or (key_hash and t.key_hash == key_hash)),
                            None)
                if team is None:
                    return TeamReply(team=None)
                return TeamReply(team=team_info(team), key_hash=team.key_hash)
        return ErrorReply(message=f"unsupported request {type(request).__name__}")

    def _market_snapshot(self) -> MarketSnapshot:
        engine = self.engine
        books = []
        for iid, book in engine.books.items():
            bids, asks = book.depth(None)
            books.append(BookLevels(instrument_id=iid, bids=bids, asks=asks))
        seqs = {t.decode(): n for t, n in engine.seqs.items() if t.startswith(topics.MD)}
        return MarketSnapshot(epoch=self.epoch, seqs=seqs, books=books,
                              last_trades=list(engine.last_trades.values()),
                              status=engine.status())

    def _account(self, team_id: str) -> AccountReply:
        acct = self.engine.accounts.get(team_id)
        if acct is None:
            return AccountReply(team_id=team_id, found=False)
        orders = [OpenOrder(order_id=o.order_id, client_order_id=o.client_order_id,
                            instrument_id=o.instrument_id, side=o.side, order_type=o.order_type,
                            price=o.price, quantity=o.quantity, remaining_quantity=o.remaining,
                            ts_ns=o.ts_ns)
                  for o in self.engine.live.values() if o.team_id == team_id]
        return AccountReply(team_id=team_id, found=True, positions=dict(acct.positions),
                            cash=acct.cash, fees=acct.fees, open_orders=orders)
