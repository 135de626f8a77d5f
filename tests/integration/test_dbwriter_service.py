"""DB writers as running services: batches in over real sockets, rows in a real SQLite file,
acknowledgements back; several writers share the work without duplicating a row."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import msgspec
import pytest
import zmq
from sqlalchemy.engine import make_url

from common.config import Config
from common.records import BatchAck, RecordBatch, TradeRecord, decode_frame, encode_frame
from common.service import Context, Socket
from common.transport import make_socket, recv_frames, send_frame
from services.dbwriter.service import DbWriterService
from services.dbwriter.store import Store
from services.launcher import Cluster
from tests.conftest import make_config, nested, wait_for


def trade(seq: int) -> TradeRecord:
    return TradeRecord(stream="matcher", seq=seq, ts_ns=seq, trade_id=f"TRD_{seq:08d}",
                       instrument_id="SPX_4500_CALL", price=12850, quantity=1, buyer="TEAM_002",
                       seller="TEAM_001", buyer_fee=-1, seller_fee=2, aggressor="buy",
                       multiplier=100)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Config, Cluster, Socket, Socket]]:
    config = make_config(tmp_path / "data")
    with Cluster(config, ["dbwriter"]) as cluster:
        ctx: Context = cluster.ctx
        records = make_socket(ctx, config, "matcher_persist", bind=True)
        acks = make_socket(ctx, config, "matcher_acks", bind=True)
        yield config, cluster, records, acks


def acks_until(acks: Socket, wanted: set[int], timeout: float = 10) -> set[int]:
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while not wanted <= seen:
        assert acks.poll(max(1, int((deadline - time.monotonic()) * 1000))), (wanted, seen)
        ack = decode_frame(recv_frames(acks)[-1])
        assert isinstance(ack, BatchAck)
        seen.add(ack.last_seq)
    return seen


def test_batches_are_stored_once_and_acknowledged(
    setup: tuple[Config, Cluster, Socket, Socket]
) -> None:
    config, _, records, acks = setup
    batches = [RecordBatch(stream="matcher", records=[trade(s) for s in range(i, i + 10)])
               for i in range(1, 101, 10)]
    for batch in batches + batches[:3]:  # three re-sent as a producer does after a timeout
        send_frame(records, b"rec", encode_frame(batch))
    acks_until(acks, {b.records[-1].seq for b in batches})
    with Store(config.db_url) as store:
        assert store.last_seq("matcher") == 100
        with store.engine.connect() as conn:
            count = conn.exec_driver_sql("select count(*), sum(price) from trades").one()
    assert tuple(count) == (100, 100 * 12850)


def test_bad_frames_are_counted_and_the_writer_goes_on(
    setup: tuple[Config, Cluster, Socket, Socket]
) -> None:
    _, cluster, records, acks = setup
    for junk in (b"\x00garbage", msgpack.packb({"type": "rec_batch", "stream": 5}),
                 encode_frame(BatchAck(stream="matcher", first_seq=1, last_seq=1)),
                 encode_frame(RecordBatch(stream="nobody", records=[])), nested("rec_batch")):
        send_frame(records, b"rec", junk)
    send_frame(records, b"rec", encode_frame(RecordBatch(stream="matcher", records=[trade(1)])))
    acks_until(acks, {1})
    counters = cluster.services["dbwriter"].counters
    assert counters["bad_frames.malformed"] == 3 and counters["bad_frames.unexpected"] == 2


def test_a_record_the_database_refuses_is_buried_and_its_batch_acknowledged(
    setup: tuple[Config, Cluster, Socket, Socket]
) -> None:
    """A poison record (an integer beyond BIGINT) used to hold its batch back for ever."""
    config, cluster, records, acks = setup
    poison = msgspec.structs.replace(trade(3), price=2**64 - 1)
    batch = RecordBatch(stream="matcher", records=[trade(1), trade(2), poison, trade(4)])
    send_frame(records, b"rec", encode_frame(batch))
    acks_until(acks, {4})
    send_frame(records, b"rec", encode_frame(RecordBatch(stream="matcher", records=[trade(5)])))
    acks_until(acks, {5})
    assert cluster.services["dbwriter"].counters["dead_letters"] == 1
    with Store(config.db_url) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("select seq from trades order by seq").scalars().all() == [
            1, 2, 4, 5]
        assert conn.exec_driver_sql("select seq from dead_letters").scalars().all() == [3]


def test_two_writers_share_batches_without_duplicates(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    ctx: Context = zmq.Context()
    writers = [DbWriterService(config, ctx) for _ in range(2)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in writers]
    records = make_socket(ctx, config, "matcher_persist", bind=True)
    acks = make_socket(ctx, config, "matcher_acks", bind=True)
    for t in threads:
        t.start()
    for w in writers:
        assert w.ready.wait(10)
    batches = [RecordBatch(stream="matcher", records=[trade(s) for s in range(i, i + 5)])
               for i in range(1, 501, 5)]
    for batch in batches * 2:  # every batch twice: whichever writer gets it
        send_frame(records, b"rec", encode_frame(batch))
    acks_until(acks, {b.records[-1].seq for b in batches})
    for w in writers:
        w.stop()
    for t in threads:
        t.join(10)
    assert all(w.counters["batches"] > 0 for w in writers), "both writers took work"
    with Store(config.db_url) as store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("select count(distinct trade_id), count(*) from trades"
                                    ).one() == (500, 500)
    records.close()
    acks.close()
    ctx.term()


class DatabaseDoor:
    """A local port that leads to PostgreSQL only once opened: until then connections to it
    are refused, as with a database not up yet."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))  # bound, not listening: connections refused
        self.port = self.listener.getsockname()[1]
        self.pipes: list[socket.socket] = []

    def open(self) -> None:
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.target)
            self.pipes += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def close(self) -> None:
        for sock in [self.listener, *self.pipes]:
            # close() alone wakes no thread in recv(); the listener is not connected
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        sink.close()


def test_a_writer_started_while_the_database_is_down_waits_for_it(
        tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """It exited (rc 2) instead, and supervisord's restart backoff could give it up for good;
    while it waits it takes no batch, so they wait in the producers' outboxes."""
    caplog.set_level(logging.INFO)
    url = make_url(pg_url)
    door = DatabaseDoor((url.host or "127.0.0.1", url.port or 5432))
    config = make_config(tmp_path / "data", db={"url": url.set(port=door.port).render_as_string(
        hide_password=False)})
    batch = RecordBatch(stream="matcher", records=[trade(s) for s in range(1, 11)])
    try:
        with Cluster(config, ["dbwriter"]) as cluster:
            writer = cluster.services["dbwriter"]
            records = make_socket(cluster.ctx, config, "matcher_persist", bind=True)
            acks = make_socket(cluster.ctx, config, "matcher_acks", bind=True)
            wait_for(lambda: writer.counters["db_unreachable"] >= 2, what="a second attempt")
            assert writer.ready.is_set() and writer.store is None
            with pytest.raises(zmq.Again):  # no writer connected: nothing to hand a batch to
                send_frame(records, b"rec", encode_frame(batch), zmq.NOBLOCK)
            door.open()
            wait_for(lambda: _sent(records, batch), what="the writer connected")
            acks_until(acks, {10})
            door.close()  # and now it goes away: every write fails, and is re-sent
            for i in range(11, 31):
                send_frame(records, b"rec", encode_frame(RecordBatch(
                    stream="matcher", records=[trade(i)])))
            wait_for(lambda: writer.counters["write_errors"] >= 20, what="failed writes")
    finally:
        door.close()
    with Store(pg_url) as store:
        assert store.last_seq("matcher") == 10
    said = [r.getMessage() for r in caplog.records]
    # once per 30 s, not once per attempt or per batch (an outage wrote thousands of lines)
    assert sum("unreachable" in m for m in said) == 1
    assert sum("not stored" in m for m in said) == 1
    assert sum("database engine for" in m for m in said) == 0  # was said at every attempt
    assert sum("storing to" in m for m in said) == 1


def test_a_writer_makes_the_directory_of_its_sqlite_file(tmp_path: Path) -> None:
    """`itg service dbwriter` relied on the start-up check to make it, and no longer runs
    that check (it waits for a database instead): it waited for ever."""
    url = f"sqlite:///{tmp_path}/not/yet/there/itg.db"
    config = make_config(tmp_path / "data", db={"url": url})
    with Cluster(config, ["dbwriter"]) as cluster:
        records = make_socket(cluster.ctx, config, "matcher_persist", bind=True)
        acks = make_socket(cluster.ctx, config, "matcher_acks", bind=True)
        send_frame(records, b"rec", encode_frame(RecordBatch(stream="matcher",
                                                             records=[trade(1)])))
        acks_until(acks, {1})
    with Store(url) as store:
        assert store.last_seq("matcher") == 1


def _sent(sock: Socket, batch: RecordBatch) -> bool:
    try:
        send_frame(sock, b"rec", encode_frame(batch), zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True
