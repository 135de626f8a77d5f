"""Start the example bots: one from the command line (`itg bot NAME`), or a few demo bots as
threads next to the embedded exchange (`itg up --demo-bots`), with a console leaderboard."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bots.api import ROLE_LIMITS, ApiError, Limits
from bots.arbitrage import Arbitrage
from bots.base import Bot
from bots.client import Client
from bots.hedge_fund import HedgeFund
from bots.market_maker import MarketMaker

if TYPE_CHECKING:
    from common.config import Config, RoleConfig

log = logging.getLogger(__name__)

BOTS: dict[str, type[Bot]] = {"market_maker": MarketMaker, "hedge_fund": HedgeFund,
                              "arbitrage": Arbitrage}
ALIASES = {"mm": "market_maker", "hf": "hedge_fund", "arb": "arbitrage"}
DEMO_ORDER = ("market_maker", "hedge_fund", "arbitrage")


def kind_of(name: str) -> str:
    kind = ALIASES.get(name, name)
    if kind not in BOTS:
        raise ValueError(f"unknown bot {name!r}; bots: {', '.join(BOTS)} ({', '.join(ALIASES)})")
    return kind


def wait_up(client: Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.health().get("status") == "ok":
                return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise ApiError("UNREACHABLE", f"no exchange at {client.base_url}: {exc!r}") from exc
        if time.monotonic() > deadline:
            raise ApiError("UNREACHABLE", f"the exchange at {client.base_url} is not healthy")
        time.sleep(0.2)


def connect(url: str, team_name: str, role: str, limits: Limits,
            keys: Path | None = None) -> Client:
    """A client for the team: its stored key if it still works, else a new registration."""
    client = Client(url, role=role)
    client.gate.limit = limits.orders_per_s
    wait_up(client, 60)
    stored = json.loads(keys.read_text()) if keys is not None and keys.exists() else {}
    if team_name in stored:
        client.api_key = stored[team_name]["api_key"]
        try:
            client.positions()
            client.team = client.team_info(stored[team_name]["team_id"])
            return client
        except ApiError:
            client.api_key = None
    try:
        team = client.register(team_name, role)
    except ApiError as exc:
        if exc.code != "DUPLICATE_TEAM_NAME":
            raise
        team = client.register(f"{team_name}-{secrets.token_hex(2)}", role)
    if keys is not None:
        stored[team_name] = {"team_id": team.team_id, "api_key": team.api_key}
        keys.write_text(json.dumps(stored, indent=1))
        keys.chmod(0o600)
    return client


def quiet_http_logs() -> None:
    """httpx logs every request at INFO: far too much next to a running game."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def make_bot(name: str, url: str, team_name: str | None = None, seed: int = 0,
             limits: Limits | None = None, keys: Path | None = None,
             verbose: bool = True) -> Bot:
    kind = kind_of(name)
    quiet_http_logs()
    limits = limits or ROLE_LIMITS[kind]
    team_name = team_name or f"{kind}-{secrets.token_hex(3)}"
    client = connect(url, team_name, kind, limits, keys)
    return BOTS[kind](client, limits=limits, seed=seed, verbose=verbose)


def leaderboard(bots: list[Bot]) -> str:
    rows = sorted(bots, key=lambda b: -b.pnl())
    lines = [f"{'#':>2} {'team':<26} {'role':<13} {'P&L':>12} {'fills':>6} {'resting':>7}"]
    lines += [f"{i:>2} {b.name[:26]:<26} {b.role:<13} {b.pnl():>+12,.2f} {b.stats['fills']:>6} "
              f"{len(b.inv.orders):>7}" for i, b in enumerate(rows, 1)]
    return "\n".join(lines)


class DemoBots:
    """N example bots in threads against a local gateway, and a leaderboard every `every_s`."""

    def __init__(self, url: str, count: int, seed: int, limits: Callable[[str], Limits],
                 keys: Path | None, every_s: float = 15.0) -> None:
        self.url, self.count, self.seed = url, count, seed
        self.limits, self.keys, self.every_s = limits, keys, every_s
        self.stop = threading.Event()
        self.bots: list[Bot] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.count):
            kind = DEMO_ORDER[i % len(DEMO_ORDER)]
            bot = make_bot(kind, self.url, f"demo-{kind.replace('_', '-')}-{i + 1}",
                           self.seed + i, self.limits(kind), self.keys, verbose=False)
            thread = threading.Thread(target=self._run, args=(bot,), daemon=True,
                                      name=f"itg-bot-{i + 1}")
            self.bots.append(bot)
            self.threads.append(thread)
            thread.start()
        board = threading.Thread(target=self._board, daemon=True, name="itg-leaderboard")
        self.threads.append(board)
        board.start()

    def _run(self, bot: Bot) -> None:
        try:
            bot.run(self.stop)
        except Exception:
            log.exception("demo bot %s stopped", bot.name)

    def _board(self) -> None:
        while not self.stop.wait(self.every_s):
            print(f"\ndemo bots (their own mark-to-market; every team: {self.url}/dashboard)"
                  f"\n{leaderboard(self.bots)}", flush=True)

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)
        for bot in self.bots:
            bot.client.close()


def run_one(name: str, url: str, team_name: str | None, seed: int,
            seconds: float | None = None) -> int:
    """`itg bot NAME`: run until Ctrl-C (or `seconds`), cancelling its orders on the way out."""
    bot = make_bot(name, url, team_name, seed)
    print(f"{bot.role} bot {bot.name} ({bot.client.team.team_id if bot.client.team else '?'}) "
          f"trading on {url}; Ctrl-C stops it", flush=True)
    stop = threading.Event()
    try:
        bot.run(stop, seconds)
    except KeyboardInterrupt:
        pass
    finally:
        bot.client.close()
    print(bot.report(), flush=True)
    return 0


def limits_from(role: RoleConfig) -> Limits:
    return Limits(position=role.position_limit, total=role.total_position_limit,
                  underlying=role.underlying_position_limit,
                  max_order_size=role.max_order_size, orders_per_s=role.max_orders_per_s)


def start_demo(config: Config, port: int, count: int) -> DemoBots:
    """Demo bots against the embedded exchange's gateway, with the limits of its config."""
    def limits(kind: str) -> Limits:
        role = config.game.roles.get(kind)
        return limits_from(role) if role is not None else ROLE_LIMITS[kind]

    keys = Path(config.data_dir) / "demo_bots.json"  # same teams again on the next `make run`
    keys.parent.mkdir(parents=True, exist_ok=True)
    demo = DemoBots(f"http://127.0.0.1:{port}", count, config.game.seed, limits, keys)
    demo.start()
    return demo
