"""DB writer processes end to end: trades/s sustained into SQLite and PostgreSQL with one and
two writers, and the lag from a trade's creation to its acknowledged commit at a steady rate.

The bench plays the matcher's side of the persistence channels (record batches out, acks in)
with the same Outbox the matcher uses; the writers are real `itg service dbwriter` processes.

    python bench/dbwriter.py [--quick] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq
from benchkit import ipc_config, start_service
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from common.config import load_config
from common.outbox import Outbox
from common.records import BatchAck, TradeRecord, decode_frame
from common.transport import make_socket, recv_frames, send_frame

CONFIG = """
[db]
url = "{url}"
batch_max_rows = 1000
batch_max_ms = {batch_ms}
"""


def trade(seq: int) -> TradeRecord:
    return TradeRecord(stream="matcher", seq=seq, ts_ns=time.time_ns(), trade_id=f"T{seq:09d}",
                       instrument_id="SPX_4500_CALL", price=12850 + seq % 50, quantity=1 + seq % 9,
                       buyer=f"TEAM_{seq % 20:03d}", seller=f"TEAM_{(seq + 7) % 20:03d}",
                       buyer_fee=-2, seller_fee=1, aggressor="buy", multiplier=100)


@contextmanager
def pg_schema(base_url: str) -> Iterator[str]:
    name = f"itg_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    try:
        yield make_url(base_url).update_query_dict(
            {"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()


class Producer:
    """The matcher's end of the persistence channels, with N writer processes behind it."""

    def __init__(self, directory: Path, url: str, writers: int, batch_ms: float) -> None:
        path = directory / "bench.toml"
        path.write_text(ipc_config(directory) + CONFIG.format(url=url, batch_ms=batch_ms))
        self.config = load_config(path, env={})
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.out = make_socket(self.ctx, self.config, "matcher_persist", bind=True)
        self.acks = make_socket(self.ctx, self.config, "matcher_acks", bind=True)
        self.outbox = Outbox("matcher", self.config.db)
        self.procs = [start_service("dbwriter", path) for _ in range(writers)]
        self.acked_at: dict[int, int] = {}

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(15)
        self.out.close()
        self.acks.close()
        self.ctx.term()

    def pump(self) -> None:
        """Send what is due, then take every ack waiting (for up to 1 ms)."""
        now = time.monotonic()
        for top, frame in self.outbox.due(now):
            try:
                send_frame(self.out, b"rec", frame, zmq.NOBLOCK)
            except zmq.Again:
                self.outbox.refused(now)
                break
            self.outbox.taken(top, now)
        while self.acks.poll(1):
            ack = decode_frame(recv_frames(self.acks)[-1])
            assert isinstance(ack, BatchAck)
            self.outbox.ack(ack.first_seq, ack.last_seq)
            self.acked_at[ack.last_seq] = time.time_ns()

    def drain(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.outbox.pending_records:
            assert time.monotonic() < deadline, "the writers did not keep up"
            self.pump()


def throughput(directory: Path, url: str, writers: int, n: int) -> float:
    producer = Producer(directory, url, writers, batch_ms=50)
    try:
        warm = [trade(s) for s in range(1, 1001)]
        for record in warm:
            producer.outbox.add(record, time.monotonic())
        producer.drain()  # writers up, schema made
        records = [trade(seq) for seq in range(1001, n + 1001)]
        start = time.perf_counter()
        for record in records:
            producer.outbox.add(record, time.monotonic())
            if record.seq % 1000 == 0 and producer.outbox.pending_records > 30_000:
                producer.pump()
        producer.drain()
        return n / (time.perf_counter() - start)
    finally:
        producer.close()


def lag(directory: Path, url: str, rate: int, seconds: float) -> tuple[float, float]:
    """p50/p99 ms from a trade's creation to the ack of its batch (committed), at `rate`/s."""
    producer = Producer(directory, url, 1, batch_ms=100)
    try:
        producer.outbox.add(trade(1), time.monotonic())
        producer.drain()
        created: dict[int, int] = {}
        start, seq = time.monotonic(), 1
        while time.monotonic() - start < seconds:
            due = int((time.monotonic() - start) * rate)
            while seq - 1 < due:
                seq += 1
                created[seq] = time.time_ns()
                producer.outbox.add(trade(seq), time.monotonic())
            producer.pump()
        producer.drain()
        tops = sorted(producer.acked_at)
        lags, i = [], 0
        for s in sorted(created):
            while tops[i] < s:
                i += 1
            lags.append((producer.acked_at[tops[i]] - created[s]) / 1e6)
        lags.sort()
        return lags[len(lags) // 2], lags[int(len(lags) * 0.99)]
    finally:
        producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 30 s")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    n, runs, lag_s = (30_000, 1, 3.0) if args.quick else (200_000, 3, 20.0)
    figures: dict[str, float] = {}
    for backend in ("sqlite", "pg"):
        for writers in (1, 2):
            rates = []
            for _ in range(runs):
                with tempfile.TemporaryDirectory(prefix="itg-dbw-") as tmp:
                    if backend == "sqlite":
                        rates.append(throughput(Path(tmp), f"sqlite:///{tmp}/itg.db", writers, n))
                    else:
                        with pg_schema(args.pg_url) as url:
                            rates.append(throughput(Path(tmp), url, writers, n))
            rate = figures[f"{backend}_{writers}w_trades_per_s"] = statistics.median(rates)
            print(f"{backend} with {writers} writer(s): {rate:,.0f} trades/s "
                  f"(median of {runs} x {n})", flush=True)
    with tempfile.TemporaryDirectory(prefix="itg-dbw-") as tmp, pg_schema(args.pg_url) as url:
        p50, p99 = lag(Path(tmp), url, 1000, lag_s)
    print(f"lag at 1,000 trades/s into PostgreSQL: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    print("RESULT " + " ".join(f"{k}={v:.0f}" for k, v in figures.items())
          + f" lag_p50_ms={p50:.0f} lag_p99_ms={p99:.0f}")


if __name__ == "__main__":
    main()
