"""The matcher as a bus service: the exchange's single-writer sequencer.

Per batch of commands: stamp each with the next seq and a strictly increasing time, apply it
to the engine, frame it for the journal; hand the batch to the disk thread; publish its
events, and queue its persistence records, only once the disk thread says it is durable.
Requests on the ROUTERs (snapshots, replay, read-only queries; the public one takes only
snapshots, pings and market-data replays) are answered between batches by the same thread, so
every answer is consistent with the published stream.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import time
from collections import deque
from pathlib import Path
from typing import NamedTuple

import zmq

from common import topics
from common.clock import SteadyClock
from common.feed import not_public
from common.files import write_durably
from common.messages import (
    AccountQuery,
    AccountsQuery,
    Command,
    ErrorReply,
    Event,
    Message,
    Ping,
    Pong,
    Probe,
    ReplayRequest,
    SnapshotPositions,
    SnapshotRequest,
    TeamQuery,
    decode,
    encode,
    encode_events,
)
from common.outbox import RecordLink
from common.records import AnyRecord
from common.service import Context, Service, Socket
from common.transport import recv_frames, send_frame
from services.matcher import queries
from services.matcher.disk import DiskThread, open_disk
from services.matcher.engine import Engine, Out
from services.matcher.journal import (
    JournalWriter,
    read_journal,
    record_bytes,
    repair_tail,
)
from services.matcher.replay import ReplayRings
from services.matcher.snapshots import load_latest_snapshot, remove_partial_snapshots
from services.matcher.state import capture, decode_state, restore, snapshot_bytes

log = logging.getLogger(__name__)

_NOBLOCK = int(zmq.NOBLOCK)
# Replays too: a replay answered at once would show less than an account answered after the
# batch in flight is published (a fresh WebSocket then counted one fill twice).
_STATE_QUERIES = (AccountQuery, AccountsQuery, TeamQuery, SnapshotRequest, ReplayRequest)


def _is_public(request: Message) -> bool:
    """What a quant may ask: nothing about any team, and no command."""
    if isinstance(request, ReplayRequest):
        return request.topic.encode().startswith(topics.MD)
    return isinstance(request, (Ping, SnapshotRequest))


class _Batch(NamedTuple):
    number: int
    events: list[Out]
    records: list[AnyRecord]


def _lock(directory: Path) -> int:
    """Hold the data directory for this matcher alone. A second matcher on the same directory
    would repair the live journal's tail under the first and append the same seqs (over ipc
    its bind even succeeds), so it stops here instead."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "matcher.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another matcher is running on {directory}") from None
    return fd


def _origin(directory: Path) -> str:
    """This data dir's name for its record stream, made at its first start. A matcher on a
    new data dir numbers its records from 1 again; the database, holding the stream of one
    origin only, then refuses them loudly instead of skipping them as already stored."""
    path = directory / "origin"
    if path.exists():
        return path.read_text().strip()
    origin = secrets.token_hex(8)
    write_durably(path, origin.encode())
    return origin


class MatcherService(Service):
    name = "matcher"

    def on_start(self, ctx: Context) -> None:
        cfg = self.config.matcher
        self.dir = Path(self.config.data_dir) / "matcher"
        self._lock = _lock(self.dir)
        self.rings = ReplayRings(cfg.replay_ring, cfg.md_replay_ring, cfg.replay_total)
        self.records = RecordLink(self, ctx, "matcher", _origin(self.dir))
        self.outbox = self.records.outbox
        self.engine, snapshotted = self._recover()
        self.clock = SteadyClock()  # command time: never frozen by a wall clock stepped back
        journal = JournalWriter(self.dir, self.engine.last_seq + 1, fsync=cfg.fsync)
        self.disk = open_disk(journal, self.dir, cfg)
        self._batch = 0
        self._waiting: deque[_Batch] = deque()  # handed to the disk thread, not yet durable
        # md events sent: every one raised its topic's seq by one, so it starts at their sum
        self._md_published = sum(n for t, n in self.engine.seqs.items() if t.startswith(topics.MD))
        if not snapshotted:  # before any command: the rules every later one applies under
            self.snapshot()
        self._deferred: list[tuple[Socket, list[bytes], Message]] = []  # state queries held back
        now = time.monotonic()
        self._next_snapshot = now + cfg.snapshot_interval_s
        self._next_positions = now + self.config.db.position_snapshot_interval_s
        self.commands = self.socket(ctx, "commands", bind=True)
        self.pub = self.md = self.socket(ctx, "matcher_pub", bind=True)
        self.private = self.socket(ctx, "matcher_private", bind=True)
        rpc = self.socket(ctx, "matcher_rpc", bind=True)
        pub_rpc = self.socket(ctx, "matcher_pub_rpc", bind=True)
        self.on_readable(self.commands, self._drain)
        self.on_readable(rpc, lambda: self._serve(rpc, public=False))
        self.on_readable(pub_rpc, lambda: self._serve(pub_rpc, public=True))
        if isinstance(self.disk, DiskThread):
            self.on_readable(self.disk.wake_fd, self._publish_durable)

    def last_seq(self) -> int:
        return self.engine.last_seq

    def published(self) -> int:
        return self._md_published

    def keys_reissued(self) -> int:
        return self.engine.seqs.get(topics.KEYS, 0)

    def records_stored(self) -> int:
        """Every persistence record up to this one is acknowledged by a DB writer."""
        waiting = next((b.records[0].seq for b in self._waiting if b.records), None)
        pending = [s for s in (self.outbox.first_pending(), waiting) if s is not None]
        return min(pending) - 1 if pending else self.engine.counters.get("record", 0)

    def _pong(self) -> Pong:
        return Pong(service=self.name, epoch=self.epoch, last_seq=self.engine.last_seq,
                    records_stored=self.records_stored())

    def _recover(self) -> tuple[Engine, bool]:
        """The engine as the last run left it, under the rules now configured; False if no
        snapshot holds those rules yet."""
        remove_partial_snapshots(self.dir)
        snapshot = load_latest_snapshot(self.dir)
        state = decode_state(snapshot) if snapshot is not None else None
        rules = state.game if state is not None and state.game is not None else self.config.game
        engine = Engine(rules, epoch=self.epoch)
        now = time.monotonic()
        if state is not None:
            restore(engine, state)
            self.outbox.restore(state.unacked_batches, state.unacked_records, now)
        else:  # the house teams' records, made before any command: into the outbox now, or a
            # snapshot taken before the first command would hold them nowhere
            for record in engine.take_records():
                self.outbox.add(record, now)
        start = engine.last_seq
        if self.dir.exists():
            repair_tail(self.dir)
            for seq, ts, payload in read_journal(self.dir, after_seq=start):
                cmd = decode(payload)
                assert isinstance(cmd, Command)
                for topic, event in engine.apply(cmd, seq, ts):
                    self.rings.add(topic, event.seq, [event])
                for record in engine.take_records():
                    self.outbox.add(record, now)
        self.rings.start_at(engine.seqs)
        log.info("matcher recovered: snapshot at seq %d, replayed to seq %d", start,
                 engine.last_seq)
        if rules == self.config.game:
            return engine, state is not None and state.game is not None
        log.warning("matcher: the game rules changed since the last run; the journal was "
                    "replayed under the old ones, the new ones apply from seq %d",
                    engine.last_seq + 1)
        renewed = Engine(self.config.game, epoch=self.epoch)
        restore(renewed, capture(engine))
        for record in renewed.take_records():  # the teams of house roles new to the game
            self.outbox.add(record, now)
        return renewed, False

    # --- the sequencer ---

    def _drain(self) -> None:
        """One batch: everything waiting, up to max_batch."""
        commands: list[tuple[Command, bytes]] = []
        for _ in range(self.config.matcher.max_batch):
            try:
                frames = recv_frames(self.commands, _NOBLOCK)
            except zmq.Again:
                break
            cmd = self.decode_as(frames[-1], Command)
            if cmd is not None:
                commands.append((cmd, frames[-1]))
        self._run_batch(commands)

    def _run_batch(self, commands: list[tuple[Command, bytes]]) -> None:
        """Apply and frame the commands, then hand them to the disk as one batch; their events
        and records wait in `_waiting` until it is durable."""
        events: list[Out] = []
        journal = bytearray()
        for cmd, payload in commands:
            events += self._sequence(cmd, payload, journal)
        if journal:
            self._batch += 1
            self.disk.submit(self._batch, bytes(journal))
            self._waiting.append(_Batch(self._batch, events, self.engine.take_records()))
            if not isinstance(self.disk, DiskThread):  # written already: publish now
                self._publish_durable()

    def _sequence(self, cmd: Command, payload: bytes, journal: bytearray) -> list[Out]:
        engine = self.engine
        seq, ts = engine.last_seq + 1, self.clock.now_ns(after=engine.last_ts)
        try:
            out = engine.apply(cmd, seq, ts)
        except Exception:
            # Fail-stop: the engine may have changed part of its state, and a command that is
            # not journaled cannot be replayed; going on would publish what a restart cannot
            # rebuild. Stopping keeps every durable batch; the restart starts from them.
            log.critical("matcher: command %r failed at seq %d; stopping", cmd, seq)
            raise
        journal += record_bytes(seq, ts, payload)
        self.counters["commands"] += 1
        return out

    def _publish_durable(self) -> None:
        durable = self.disk.durable_batch()
        now = time.monotonic()
        groups: dict[bytes, list[Event]] = {}  # one frame per topic for everything now durable
        while self._waiting and self._waiting[0].number <= durable:
            batch = self._waiting.popleft()
            for topic, event in batch.events:
                # popped and put back: topics go out in the order of their LAST event, so a
                # response never overtakes the events of its own command (they come before it)
                group = groups.pop(topic, None) or []
                group.append(event)
                groups[topic] = group
            for record in batch.records:
                self.outbox.add(record, now)
        for topic, group in groups.items():
            self.rings.add(topic, group[-1].seq, group)
            public = topic.startswith(topics.MD)
            if public:
                self._md_published += len(group)
            send_frame(self.md if public else self.private, topic, encode_events(*group))
        self.records.send_due(now)
        if not self._waiting and self._deferred:
            self._answer_deferred()

    # --- periodic work ---

    def on_tick(self, now: float) -> None:
        self.records.send_due(now)
        if now >= self._next_positions:
            cmd = SnapshotPositions()
            self._run_batch([(cmd, encode(cmd))])
            self._next_positions = now + self.config.db.position_snapshot_interval_s
        if now >= self._next_snapshot:
            self.snapshot()
            self._next_snapshot = now + self.config.matcher.snapshot_interval_s

    def snapshot(self) -> None:
        """Encoded here, consistent with the batches handed over so far (their records, not yet
        acknowledged, go in too); written by the disk thread after those batches."""
        frames, unacked = self.outbox.pending()
        unacked += [r for b in self._waiting for r in b.records]
        self.disk.snapshot(self.engine.last_seq, snapshot_bytes(self.engine, frames, unacked))

    def on_stop(self) -> None:
        try:
            if hasattr(self, "disk"):
                self.disk.close()  # raises after a disk error: what is durable is published
                self._publish_durable()
                self.records.flush()  # kept in snapshots too, but the DB is complete at once
        finally:
            if hasattr(self, "_lock"):
                os.close(self._lock)  # releases the lock, whatever failed: a restart may go on

    # --- request/reply ---

    def _serve(self, sock: Socket, public: bool) -> None:
        while True:
            try:
                frames = recv_frames(sock, _NOBLOCK)
            except zmq.Again:
                return
            request = self.decode_as(frames[-1], Message)
            if request is None:
                reply: Message = ErrorReply(message="malformed request")
            elif public and not _is_public(request):
                reply = not_public(request)
            elif isinstance(request, _STATE_QUERIES) and self._waiting:
                self._defer(sock, frames, request)
                continue
            else:
                reply = self._answer(request)
            sock.send_multipart([*frames[:-1], encode(reply)])

    def _defer(self, sock: Socket, frames: list[bytes], request: Message) -> None:
        """A state query waits until everything applied is durable and published, so an answer
        never shows what the stream has not (and a crash could not undo it). Intake pauses
        meanwhile: at most one fsync."""
        if not self._deferred:
            self.pause_reading(self.commands)
        self._deferred.append((sock, frames, request))

    def _answer_deferred(self) -> None:
        for sock, frames, request in self._deferred:
            sock.send_multipart([*frames[:-1], encode(self._answer(request))])
        self._deferred.clear()
        self.resume_reading(self.commands)

    def _answer(self, request: Message) -> Message:
        engine = self.engine
        match request:
            case Ping():
                return self._pong()
            case Probe(gw=gw):
                pong = self._pong()
                send_frame(self.private, topics.response(gw), encode_events(pong))
                return pong
            case SnapshotRequest():
                return queries.market_snapshot(engine, self.epoch)
            case ReplayRequest(topic=topic, from_seq=from_seq):
                return self.rings.replay(topic.encode(), from_seq)
            case AccountQuery(team_id=team_id):
                return queries.account(engine, team_id, self.clock.now_ns())
            case AccountsQuery(orders_of=orders_of):
                return queries.accounts(engine, orders_of)
            case TeamQuery(team_id=team_id, key_hash=key_hash):
                return queries.team(engine, team_id, key_hash)
        return ErrorReply(message=f"unsupported request {type(request).__name__}")
