"""The standard mix through the running matcher service: its own process, ipc, journal on
(fsync per batch). Prints sustained orders/s at saturation with the matcher's CPU time per order,
and ack latency (order sent -> Response received) at saturation and at a steady paced rate.

    python bench/matcher_service.py [--quick] [--orders N] [--runs R] [--rate R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import zmq
from benchkit import ipc_config, start_service
from workload import BENCH_ROLE, generate, registrations

from common.bus_client import MatcherClient
from common.config import Config, load_config
from common.messages import Response, decode_events, encode
from common.transport import recv_frames, send_frame

STALL_S = 30  # no answer for this long: the matcher is gone, stop instead of waiting forever
ROLE = """
[game.roles.bench]
{role}
"""


def start_matcher(directory: Path) -> tuple[subprocess.Popen[bytes], Config]:
    role = "\n".join(f"{k} = {v}" for k, v in BENCH_ROLE.items())
    path = directory / "bench.toml"
    path.write_text(ipc_config(directory) + ROLE.format(role=role))
    prefix = os.environ.get("BENCH_PREFIX", "").split()  # e.g. a profiler's command
    return start_service("matcher", path, prefix=prefix), load_config(path, env={})


def drive(client: MatcherClient, payloads: list[bytes], first: int, window: int,
          rate: float | None) -> tuple[float, list[int]]:
    """Send every payload keeping at most `window` unanswered (and at most `rate` per s).

    payloads[i] has req_id str(first + i)."""
    sent_at = [0] * len(payloads)
    latencies: list[int] = []
    push, sub, clock = client.push, client.sub, time.perf_counter_ns
    nxt = answered = 0
    start = clock()
    interval = int(1e9 / rate) if rate else 0
    while answered < len(payloads):
        blocked = True  # unless a paced send comes due: nothing to send until an answer
        while nxt < len(payloads) and nxt - answered < window:
            now = clock()
            if interval and now < start + nxt * interval:
                blocked = False
                break
            sent_at[nxt] = now
            send_frame(push, b"cmd", payloads[nxt])
            nxt += 1
        # Block while the window is full: a client spinning on poll(0) takes the CPU that the
        # matcher (on a 2-core machine) needs, and the figure measured the client instead.
        if blocked and not sub.poll(STALL_S * 1000):
            raise SystemExit(f"no answer from the matcher for {STALL_S} s ({answered} answered)")
        while sub.poll(0):
            for response in decode_events(recv_frames(sub)[-1]):
                if isinstance(response, Response) and response.req_id.isdigit():
                    latencies.append(clock() - sent_at[int(response.req_id) - first])
                    answered += 1
    return len(payloads) / ((clock() - start) / 1e9), latencies


def one_run(n: int, rate: float) -> dict[str, float]:
    payloads = [encode(c) for c in generate(n, gw="bench")]
    with tempfile.TemporaryDirectory(prefix="itg-bench-") as tmp:
        proc, config = start_matcher(Path(tmp))
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        client = MatcherClient(config, ctx, gw="bench")
        try:
            client.wait_ready(30)
            for cmd in registrations():
                assert client.request(cmd).ok
            cpu = cpu_s(proc.pid)
            throughput, saturated = drive(client, payloads[: n // 2], 0, 4000, None)
            cpu_us = (cpu_s(proc.pid) - cpu) / (n // 2) * 1e6
            _, paced = drive(client, payloads[n // 2 :], n // 2, 1000, rate)
        finally:
            client.close()
            ctx.term()
            proc.terminate()
            proc.wait(10)
    return {"orders_per_s": throughput, "cpu_us": cpu_us, "sat_p50_us": pct(saturated, 0.5),
            "sat_p99_us": pct(saturated, 0.99), "p50_us": pct(paced, 0.5),
            "p99_us": pct(paced, 0.99)}


def cpu_s(pid: int) -> float:
    """CPU seconds the process has used (Linux): per order, a figure the other processes on a
    shared machine disturb far less than the throughput."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run under 30 s")
    parser.add_argument("--orders", type=int, default=0)
    parser.add_argument("--runs", type=int, default=0)
    parser.add_argument("--rate", type=float, default=10_000, help="paced orders/s for latency")
    args = parser.parse_args()
    n = args.orders or (60_000 if args.quick else 300_000)
    runs = [one_run(n, args.rate) for _ in range(args.runs or (1 if args.quick else 3))]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"{len(runs)} run(s) of {n} orders (half saturated, half paced at {args.rate:.0f}/s):")
    print(f"  sustained {med['orders_per_s']:,.0f} orders/s, the matcher using "
          f"{med['cpu_us']:.1f} us of CPU per order; ack latency at saturation "
          f"p50 {med['sat_p50_us']:,.0f} us p99 {med['sat_p99_us']:,.0f} us; "
          f"paced p50 {med['p50_us']:,.0f} us p99 {med['p99_us']:,.0f} us")
    print(f"RESULT orders_per_s={med['orders_per_s']:.0f} cpu_us_per_order={med['cpu_us']:.1f} "
          f"ack_p50_us={med['p50_us']:.0f} "
          f"ack_p99_us={med['p99_us']:.0f} saturated_ack_p50_us={med['sat_p50_us']:.0f} "
          f"saturated_ack_p99_us={med['sat_p99_us']:.0f}")


if __name__ == "__main__":
    main()
