"""The matcher's wall clock stepped back an hour (NTP, a VM's clock corrected), in a real
process: libfaketime moves its wall clock only, as a step does (the monotonic clock goes on).

Commands were stamped max(wall clock, last stamp + 1 ns): after the step, time crawled a
nanosecond a command, every team's one-second order window stood still, and after its
max_orders_per_s orders each team was refused RATE_LIMIT_EXCEEDED for the hour.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import zmq

from common.bus_client import MatcherClient
from common.config import load_config
from common.messages import AccountQuery, AccountReply, NewOrder, RegisterTeam
from tests.conftest import FAST_TOML
from tests.integration.test_matcher_crash import CONFIG


def test_a_wall_clock_stepped_back_locks_no_team_out(short_dir: Path) -> None:
    faketime = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    assert faketime, "libfaketime is missing: scripts/test-services.sh installs it"
    config_path = short_dir / "itg.toml"
    config_path.write_text(CONFIG.format(dir=short_dir) + FAST_TOML)
    config = load_config(config_path, env={})
    offset = short_dir / "faketime"
    offset.write_text("+0\n")
    env = dict(os.environ, LD_PRELOAD=faketime[0], FAKETIME_TIMESTAMP_FILE=str(offset),
               FAKETIME_NO_CACHE="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
    with open(short_dir / "matcher.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "service", "matcher", "--config",
             str(config_path)], stdout=log, stderr=subprocess.STDOUT, env=env)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    client = MatcherClient(config, ctx)
    try:
        client.wait_ready(30)
        team = client.request(RegisterTeam(team_name="mm", role="market_maker", key_hash="k"))
        assert team.result is not None
        stamps = []

        def orders(n: int) -> list[str | None]:  # 5 a second: half the role's limit
            codes = []
            for i in range(n):
                r = client.request(NewOrder(team_id=team.result.team_id, instrument_id="SPY",
                                            side="buy", quantity=1, price=100 + i), timeout=5)
                codes.append(r.code)
                stamps.append(r.ts_ns)
                time.sleep(0.2)
            return codes

        assert orders(5) == [None] * 5
        before = stamps[-1]
        offset.write_text("-3600\n")
        assert orders(15) == [None] * 15  # refused from the 6th on, for the hour
        assert stamps == sorted(set(stamps))
        assert 2.5e9 < stamps[-1] - before < 6e9  # on at the real rate, not 1 ns a command
        reply = client.call(AccountQuery(team_id=team.result.team_id), AccountReply)
        # the matcher's time, which its orders' ages are measured in (the house sweep), not
        # its wall clock's (an hour behind) nor a reader's
        assert 0 <= reply.as_of_ns - stamps[-1] < 1e9
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        ctx.term()
