"""Example arbitrage desk: trade SPY against SPX when their tracking error is wide.

SPY tracks SPX/10 with a mean-reverting error. The private `tracking_error` signal gives that
error (SPY over its fair value from SPX: 0.002 = SPY 0.2% rich) and calls its next move,
right about four times in five above the threshold. When SPY is rich and the call is that it
falls back, we sell SPY and buy SPX for the same money (10 SPY per SPX); when SPY is cheap, the
reverse. Once the error is back within half the threshold, we unwind. Long one and short the
other, the desk does not care where the market goes: it earns the convergence.

    itg bot arbitrage --url http://127.0.0.1:8000 --team-name my-arb
"""

from __future__ import annotations

from typing import Any

from bots.base import Bot

PAIRS = 2  # pairs added per signal: 1 SPX against 10 SPY each
MAX_PAIRS = 8
EDGE = 0.001  # trade up to 0.1% through the current price


class Arbitrage(Bot):
    role = "arbitrage"
    interval_s = 0.25

    def setup(self) -> None:
        self.pairs = 0  # + long SPX / short SPY, - the reverse

    def on_signal(self, data: dict[str, Any]) -> None:
        if data.get("signal_type") != "tracking_error":
            return
        error, threshold = float(data["error"]), float(data.get("threshold") or 0.0015)
        if error > threshold and data.get("direction") == "down":  # SPY rich, will cheapen
            self.pairs = min(MAX_PAIRS, self.pairs + PAIRS)
        elif error < -threshold and data.get("direction") == "up":  # SPY cheap, will richen
            self.pairs = max(-MAX_PAIRS, self.pairs - PAIRS)
        elif abs(error) < threshold / 2:
            self.pairs = 0
        self.stats["signals"] += 1

    def step(self) -> None:
        self.cancel_older(1.0)
        self.trade_towards("SPX", self.pairs, EDGE)
        self.trade_towards("SPY", -10 * self.pairs, EDGE)
