"""Store.write throughput: N trade records in batches of 1000, SQLite file vs PostgreSQL.

Each run starts from an empty database (a fresh file, or a fresh schema dropped afterwards),
times only the writes, and the median over runs is reported. The last line is machine-read:
`RESULT sqlite_trades_per_s=... pg_trades_per_s=...`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url
from sqlalchemy.schema import CreateSchema, DropSchema

from common.records import RecordBatch, TradeRecord
from services.dbwriter.store import Store

BATCH = 1000
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def make_batches(rows: int, stream: str = "matcher") -> list[RecordBatch]:
    trades = [
        TradeRecord(
            stream=stream,
            seq=seq,
            ts_ns=1_700_000_000_000_000_000 + seq,
            trade_id=f"T{seq:09d}",
            instrument_id="SPX_4500_CALL",
            price=1250 + seq % 7,
            quantity=1 + seq % 5,
            buyer=f"TEAM_{seq % 13:03d}",
            seller=f"TEAM_{seq % 11:03d}",
            buyer_fee=-2,
            seller_fee=1,
            aggressor="buy",
            multiplier=100,
        )
        for seq in range(1, rows + 1)
    ]
    return [
        RecordBatch(stream=stream, records=list(trades[i : i + BATCH]))
        for i in range(0, rows, BATCH)
    ]


def timed_writes(url: str, batches: list[RecordBatch]) -> float:
    """Rows per second for writing every batch through a fresh Store."""
    with Store(url) as store:
        start = time.perf_counter()
        for batch in batches:
            store.write(batch)
        elapsed = time.perf_counter() - start
        rows = sum(len(b.records) for b in batches)
        if store.last_seq(batches[0].stream) != rows:
            raise RuntimeError("benchmark lost rows: last_seq does not match")
    return rows / elapsed


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="itg-bench-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"


@contextmanager
def pg_schema_url(base: str) -> Iterator[str]:
    name = f"itg_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(CreateSchema(name))
    try:
        url = make_url(base).update_query_dict({"options": f"-csearch_path={name}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(DropSchema(name, cascade=True))
        admin.dispose()


def median_rate(
    label: str,
    fresh: Callable[[], AbstractContextManager[str]],
    batches: list[RecordBatch],
    runs: int,
) -> float:
    rates = []
    for run in range(runs):
        with fresh() as url:
            rates.append(timed_writes(url, batches))
        print(f"{label} run {run + 1}: {rates[-1]:,.0f} rows/s")
    median = statistics.median(rates)
    print(f"{label} median: {median:,.0f} rows/s over {runs} runs")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, under 30 s")
    parser.add_argument("--rows", type=int, help="trade records per run")
    parser.add_argument("--runs", type=int, help="runs per database (median reported)")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="PostgreSQL URL (a scratch schema)")
    args = parser.parse_args()
    rows = args.rows or (50_000 if args.quick else 200_000)
    runs = args.runs or (3 if args.quick else 5)
    batches = make_batches(rows)
    print(f"{rows} trades per run, batches of {BATCH}, {runs} runs per database")
    sqlite_rate = median_rate("sqlite", sqlite_url, batches, runs)
    pg_rate = median_rate("postgresql", lambda: pg_schema_url(args.pg_url), batches, runs)
    print(f"RESULT sqlite_trades_per_s={sqlite_rate:.0f} pg_trades_per_s={pg_rate:.0f}")


if __name__ == "__main__":
    main()
