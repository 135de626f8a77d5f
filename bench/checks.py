"""The load generator's final consistency check: API positions against the trades table and
against what the clients saw on their WebSockets (used by bench/load.py and bench/soak.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from sqlalchemy import create_engine, text

DB_WAIT_S = 60.0  # how long the DB writer may lag behind the last trade


def read_trades(db_url: str) -> list[tuple[str, str, int, str, str]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "select trade_id, instrument_id, quantity, buyer, seller from trades")).all()
    finally:
        engine.dispose()
    return [(str(r[0]), str(r[1]), int(r[2]), str(r[3]), str(r[4])) for r in rows]


async def db_trades(db_url: str, seen: set[str]) -> list[tuple[str, str, int, str, str]]:
    """The trades table once it holds every trade the clients saw (or the wait ran out)."""
    deadline = time.monotonic() + DB_WAIT_S
    while True:
        rows = await asyncio.to_thread(read_trades, db_url)
        if seen <= {r[0] for r in rows} or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.5)


async def consistency(teams: list[Any], db_url: str | None, others: bool) -> dict[str, Any]:
    """`others`: traders outside these teams may exist (the house's retail flow)."""
    ours = {t.client.team.team_id for t in teams}
    api: Counter[str] = Counter()
    for team in teams:
        api.update(await team.client.positions())
    seen = Counter(f for t in teams for f in t.fills.elements())
    seen_ids = {trade_id for trade_id, _ in seen}
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    lines = [f"consistency: {len(seen_ids):,} trades seen by the clients, {duplicates} "
             "execution reports seen twice"]
    failed = duplicates > 0
    rows = await db_trades(db_url, seen_ids) if db_url else []
    if not rows:
        why = "no database given" if not db_url else "the trades table is empty (trade " \
              "persistence not wired yet?)"
        lines.append(f"  fills vs trades table: NOT CHECKED: {why}")
        if others:
            lines.append("  positions: NOT CHECKED: other traders' positions are unknown")
            return {"lines": lines, "status": "FAILED" if failed else "partial"}
        off = {i: n for i, n in api.items() if n}
        lines.append(f"  positions sum to zero per instrument: {off or 'yes'}")
        return {"lines": lines, "status": "FAILED" if failed or off else "partial"}
    db_ids = {r[0] for r in rows}
    missing = seen_ids - db_ids
    ours_in_db = {r[0] for r in rows if r[3] in ours or r[4] in ours}
    unseen = ours_in_db - seen_ids
    other: Counter[str] = Counter()
    for _, iid, qty, buyer, seller in rows:
        other[iid] += (qty if buyer not in ours else 0) - (qty if seller not in ours else 0)
    off = {i: api[i] + other[i] for i in set(api) | set(other) if api[i] + other[i]}
    lines += [
        f"  trades table: {len(rows):,} rows, {len(ours_in_db):,} with these teams",
        f"  fills seen but missing from the table: {len(missing)}"
        + (f" e.g. {sorted(missing)[:3]}" if missing else ""),
        f"  trades of these teams no client saw (lost messages): {len(unseen)}"
        + (f" e.g. {sorted(unseen)[:3]}" if unseen else ""),
        "  positions (API, plus other traders from the trades table) sum to zero per "
        f"instrument: {off or 'yes'}"]
    failed = failed or bool(missing or unseen or off)
    return {"lines": lines, "status": "FAILED" if failed else "ok", "missing": len(missing),
            "unseen": len(unseen), "duplicates": duplicates, "trades": len(ours_in_db)}
