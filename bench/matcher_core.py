"""In-process matcher core: decode -> validate -> match -> positions/fees -> encode, per order,
for the standard mix (bench/workload.py), against the same operations on a bare book.

    python bench/matcher_core.py [--quick] [--orders N] [--runs R]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from workload import bench_config, generate, registrations

from common.messages import CancelOrder, NewOrder, decode, encode
from services.matcher.book import Order, OrderBook
from services.matcher.engine import Engine


def run_engine(payloads: list[bytes]) -> list[int]:
    engine = Engine(bench_config().game)
    for seq, cmd in enumerate(registrations(), start=1):
        engine.apply(cmd, seq, seq)
    seq = len(registrations())
    timings = []
    clock = time.perf_counter_ns
    for payload in payloads:
        seq += 1
        start = clock()
        for _topic, event in engine.apply(decode(payload), seq, seq * 10_000):
            encode(event)
        timings.append(clock() - start)
    return timings


def run_bare_book(payloads: list[bytes]) -> list[int]:
    """The same operations straight on OrderBook: no decode, checks, accounts or events."""
    commands = [decode(p) for p in payloads]
    books: dict[str, OrderBook] = {}
    live: dict[str, Order] = {}
    timings = []
    clock = time.perf_counter_ns
    next_id = 0
    for cmd in commands:
        start = clock()
        if isinstance(cmd, NewOrder):
            next_id += 1
            book = books.get(cmd.instrument_id) or books.setdefault(
                cmd.instrument_id, OrderBook(cmd.instrument_id))
            order = Order(order_id=f"ORD_{next_id:08d}", team_id=cmd.team_id,
                          instrument_id=cmd.instrument_id, side=cmd.side, order_type="limit",
                          price=cmd.price, quantity=cmd.quantity, remaining=cmd.quantity)
            book.match(order)
            if order.remaining:
                book.rest(order)
                live[order.order_id] = order
        elif isinstance(cmd, CancelOrder) and (order := live.pop(cmd.order_id, None)):
            books[order.instrument_id].cancel(order)
        timings.append(clock() - start)
    return timings


def summarise(timings: list[int]) -> dict[str, float]:
    ordered = sorted(timings)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # noqa: E731
    mean_us = sum(timings) / len(timings) / 1000
    return {"mean_us": mean_us, "p50_us": pick(0.5), "p99_us": pick(0.99),
            "p999_us": pick(0.999), "orders_per_s": 1e6 / mean_us}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 30 s")
    parser.add_argument("--orders", type=int, default=0)
    parser.add_argument("--runs", type=int, default=0)
    args = parser.parse_args()
    n = args.orders or (100_000 if args.quick else 500_000)
    runs = args.runs or (3 if args.quick else 5)
    payloads = [encode(c) for c in generate(n)]
    gc.collect()
    gc.freeze()  # as the service does after start-up: long-lived objects leave the GC's scans
    engine_runs, book_runs = [], []
    for _ in range(runs):
        engine_runs.append(summarise(run_engine(payloads)))
        book_runs.append(summarise(run_bare_book(payloads)))
    full, bare = median_of(engine_runs), median_of(book_runs)
    for name, figures in (("matcher core", full), ("bare book", bare)):
        print(f"{name:>12}: " + "  ".join(f"{k}={v:,.2f}" for k, v in figures.items()))
    ratio = full["mean_us"] / bare["mean_us"]
    print(f"{n} orders x {runs} runs (medians); core / bare book = {ratio:.2f}x")
    print(f"RESULT orders_per_s={full['orders_per_s']:.0f} mean_us={full['mean_us']:.2f} "
          f"p50_us={full['p50_us']:.2f} p99_us={full['p99_us']:.2f} "
          f"p999_us={full['p999_us']:.2f} book_orders_per_s={bare['orders_per_s']:.0f} "
          f"book_mean_us={bare['mean_us']:.2f} ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
