"""What the benchmark scripts share: a free port, the config of a cluster over ipc in a scratch
directory, trading limits out of the way, and services started as processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Market makers without practical limits: the load is the benchmark's, not the rules'.
RELAXED = """
[game.roles.market_maker]
maker_fee_cents = 2
taker_fee_cents = -1
position_limit = 10000000
total_position_limit = 100000000
underlying_position_limit = 10000000
max_order_size = 1000
max_orders_per_s = 1000000
position_limit_code = "MM_POS_LIMIT"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ipc_config(directory: Path, bus: str = "") -> str:
    """The head of a config file: data and sockets under `directory`, quiet logs; `bus` adds
    lines to the [bus] table."""
    return (f'data_dir = "{directory}/data"\nlog_level = "WARNING"\n'
            f'[bus]\ntransport = "ipc"\nipc_dir = "{directory}/run"\n{bus}\n')


def start_service(name: str, config: Path, log: Path | None = None,
                  prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """`itg service NAME` as a process of this checkout (its output to `log` if given);
    `prefix` goes before the interpreter (a profiler, say)."""
    out = log.open("wb") if log is not None else None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "services.cli", "service", name, "--config", str(config)],
        env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT if out else None)
