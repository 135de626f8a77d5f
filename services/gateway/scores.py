"""The leaderboard: every team's mark-to-market P&L and its role's figures. Pure bookkeeping.

P&L = cash (fees included) + sum of position x mark x multiplier, all in integer cents until
the rows are shaped for display. Marks: the simulator's fair value for an option, the published
price for an underlying, else the last trade; a position with no mark at all is counted at 0
and reported in `unmarked`. Accounts come from the matcher (one AccountsQuery per refresh,
every team at one point of its state); the per-role figures of GAME.md are measured by this
gateway from the moment it started: the market maker's quoted share (two-sided quotes over the
option chain, sampled at each refresh) and edge captured (fills against the fair value at fill
time), the hedge fund's portfolio delta, the arbitrage desk's SPX/SPY dollar balance.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice, takewhile
from typing import Any

from common.config import Config
from common.instruments import Instrument, build_instruments
from common.messages import AccountReply, ExecutionReport, OpenOrder, TeamInfo
from common.money import from_ticks
from services.gateway.views import iso

Data = dict[str, Any]
Mark = Callable[[str], int | None]  # instrument -> ticks, or None when nothing is known
Delta = Callable[[str], float | None]
HISTORY = 3_600  # P&L samples kept per team (one per second at most)
FILLS = 200


@dataclass
class TeamStats:
    info: TeamInfo
    account: AccountReply | None = None
    pnl: int = 0  # cents
    unmarked: list[str] = field(default_factory=list)
    quoted_sum: float = 0.0
    samples: int = 0
    edge: int = 0  # cents captured against the fair value at fill time
    history: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    # kept as they came and shaped only when a team's page is read: fills come at the
    # exchange's full rate, the page is read now and then
    fills: deque[ExecutionReport] = field(default_factory=lambda: deque(maxlen=FILLS))
    fills_total: int = 0  # ever appended: a page's place in the fills


def fill_row(report: ExecutionReport) -> Data:
    return {"time": iso(report.ts_ns), "order_id": report.order_id,
            "instrument_id": report.instrument_id, "side": report.side,
            "quantity": report.executed_quantity, "price": from_ticks(report.executed_price),
            "liquidity": report.liquidity, "fee": from_ticks(report.fee)}


def pnl(account: AccountReply, mark: Mark, instruments: Mapping[str, Instrument]
        ) -> tuple[int, list[str]]:
    """Mark-to-market P&L in cents, and the instruments held that have no mark."""
    total, unmarked = account.cash, []
    for iid, quantity in account.positions.items():
        if not quantity:
            continue
        ticks = mark(iid)
        if ticks is None:
            unmarked.append(iid)
            continue
        total += quantity * ticks * _multiplier(instruments, iid)
    return total, sorted(unmarked)


def deltas(positions: Mapping[str, int], delta: Delta,
           instruments: Mapping[str, Instrument]) -> dict[str, float]:
    """Portfolio delta per underlying, in units of the underlying."""
    out: dict[str, float] = {}
    for iid, quantity in positions.items():
        inst = instruments.get(iid)
        if inst is None or not quantity:
            continue
        d = 1.0 if not inst.is_option else delta(iid)
        if d is not None:
            out[inst.underlying] = out.get(inst.underlying, 0.0) + quantity * d * inst.multiplier
    return out


def _multiplier(instruments: Mapping[str, Instrument], iid: str) -> int:
    inst = instruments.get(iid)
    return inst.multiplier if inst is not None else 1


class Standings:
    def __init__(self, config: Config) -> None:
        self.instruments = build_instruments(config.game)
        self.options = sum(1 for inst in self.instruments.values() if inst.is_option)
        self.house_ids = [role.upper() for role, rules in config.game.roles.items()
                          if not rules.registrable]
        self.teams: dict[str, TeamStats] = {}
        # the order changes only with update(): sorted once, not for every row or view asked
        self._ranking: list[tuple[int | None, TeamStats]] | None = None

    def add(self, info: TeamInfo) -> None:
        self._ranking = None
        stats = self.teams.get(info.team_id)
        if stats is None:
            self.teams[info.team_id] = TeamStats(info)
        else:
            stats.info = info  # a team first seen through its fills gets its name

    def named(self, tid: str) -> bool:
        stats = self.teams.get(tid)
        return stats is not None and bool(stats.info.role)

    def on_fill(self, report: ExecutionReport, fair: int | None) -> None:
        """A fill of any team, even one the leaderboard has not read yet (kept for it)."""
        stats = self.teams.get(report.team_id)
        if stats is None:
            stats = self.teams[report.team_id] = TeamStats(TeamInfo(
                team_id=report.team_id, team_name=report.team_id, role="", created_ns=0))
        if fair is not None:
            sign = 1 if report.side == "buy" else -1
            stats.edge += (sign * (fair - report.executed_price) * report.executed_quantity
                           * _multiplier(self.instruments, report.instrument_id))
        stats.fills.append(report)
        stats.fills_total += 1

    def update(self, account: AccountReply, mark: Mark, now_s: int) -> None:
        stats = self.teams.get(account.team_id)
        if stats is None or not account.found:
            return
        self._ranking = None
        stats.account = account
        stats.pnl, stats.unmarked = pnl(account, mark, self.instruments)
        # the share of the option chain quoted on both sides right now
        stats.quoted_sum += account.two_sided / self.options if self.options else 0.0
        stats.samples += 1
        if stats.history and stats.history[-1][0] >= now_s:
            stats.history.pop()
        stats.history.append((now_s, stats.pnl))

    # --- shaped for display: cents become decimals here ---

    def ranked(self) -> list[tuple[int | None, TeamStats]]:
        """Teams by P&L, best first; the house teams last and unranked."""
        if self._ranking is not None:
            return self._ranking
        ordered = sorted((s for s in self.teams.values() if s.account is not None),
                         key=lambda s: (s.info.team_id in self.house_ids, -s.pnl,
                                        s.info.team_id))
        self._ranking = [(None if s.info.team_id in self.house_ids else i + 1, s)
                         for i, s in enumerate(ordered)]
        return self._ranking

    def rows(self, mark: Mark, delta: Delta, full: bool = False) -> list[Data]:
        return [{**self.row(stats, mark, delta, full), "rank": rank}
                for rank, stats in self.ranked()]

    def row(self, stats: TeamStats, mark: Mark, delta: Delta, full: bool) -> Data:
        account = stats.account
        assert account is not None
        positions = {k: v for k, v in account.positions.items() if v}
        options = [v for k, v in positions.items() if self._is_option(k)]
        row: Data = {
            "team_id": stats.info.team_id, "team_name": stats.info.team_name,
            "role": stats.info.role, "pnl": from_ticks(stats.pnl),
            "fees": from_ticks(account.fees), "unmarked": stats.unmarked,
            "positions": {"options_net": sum(options), "options_gross": sum(map(abs, options)),
                          "underlyings": {k: v for k, v in positions.items()
                                          if not self._is_option(k)},
                          "instruments": len(positions)},
            "figures": self.figures(stats, positions, mark, delta)}
        if full:  # the team's own view, the operator's: not for other teams to infer from
            row["cash"] = from_ticks(account.cash)
            row["holdings"] = positions
            row["open_orders"] = account.open_count
        return row

    def figures(self, stats: TeamStats, positions: Mapping[str, int], mark: Mark,
                delta: Delta) -> Data:
        """Every role's figures (the dashboard highlights the team's own role's)."""
        by_underlying = deltas(positions, delta, self.instruments)
        dollars = {u: _round2(d * (mark(u) or 0) / 100) for u, d in by_underlying.items()}
        return {
            "quoted_share": round(stats.quoted_sum / stats.samples, 4) if stats.samples else 0,
            "edge": from_ticks(stats.edge),
            "delta": {u: round(d, 2) for u, d in by_underlying.items()},
            "delta_usd": dollars, "net_delta_usd": sum(dollars.values(), Decimal(0))}

    def orders_listed(self, team_id: str) -> bool:
        """Whether the last account read lists the team's orders (see AccountsQuery)."""
        stats = self.teams.get(team_id)
        account = stats.account if stats is not None else None
        return account is None or len(account.open_orders) == account.open_count

    def team_view(self, team_id: str, mark: Mark, delta: Delta, history_from: int | None = None,
                  fills_after: int | None = None, orders: list[OpenOrder] | None = None
                  ) -> Data | None:
        """One team's own page: its row, holdings with marks, open orders (`orders`, or those
        of its last account read), fills (newest first) and P&L path. For a page that holds
        the earlier ones, only the points of the path from second `history_from` on and the
        fills after its first `fills_after` (fills_total counts them): shaped for every open
        page each second, an hour of path and 200 fills were most of a view's cost."""
        stats = self.teams.get(team_id)
        if stats is None or stats.account is None:
            return None
        account = stats.account
        holdings = []
        for iid, quantity in sorted(account.positions.items()):
            ticks = mark(iid)
            value = None if ticks is None else quantity * ticks * _multiplier(
                self.instruments, iid)
            holdings.append({"instrument_id": iid, "quantity": quantity,
                             "mark": None if ticks is None else from_ticks(ticks),
                             "value": None if value is None else from_ticks(value)})
        rows = [{"order_id": o.order_id, "instrument_id": o.instrument_id, "side": o.side,
                 "price": None if o.price is None else from_ticks(o.price),
                 "quantity": o.quantity, "remaining": o.remaining_quantity,
                 "time": iso(o.ts_ns)} for o in (account.open_orders if orders is None else orders)]
        row = self.row(stats, mark, delta, full=True)
        row["rank"] = next((rank for rank, s in self.ranked() if s is stats), None)
        path = stats.history if history_from is None else reversed(
            list(takewhile(lambda p: p[0] >= history_from, reversed(stats.history))))
        new = len(stats.fills) if fills_after is None else stats.fills_total - fills_after
        fills = islice(reversed(stats.fills), min(new, len(stats.fills)))
        return {"team": row, "holdings": holdings, "orders": rows,
                "fills": [fill_row(r) for r in fills], "fills_after": fills_after,
                "fills_total": stats.fills_total,
                "history": [(t, from_ticks(c)) for t, c in path], "history_from": history_from}

    def _is_option(self, iid: str) -> bool:
        inst = self.instruments.get(iid)
        return inst is not None and inst.is_option


def _round2(value: float) -> Decimal:
    return Decimal(round(value, 2)).quantize(Decimal("0.01"))
