"""`itg recover`: every team's positions and cash rebuilt from the database alone (the last
position snapshot plus the trades after it), optionally checked against the live matcher."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url

from common.config import Config
from common.messages import AccountReply
from services.dbwriter.positions import TeamPositions
from services.dbwriter.store import Store
from services.matcher.records import STREAM


def rebuild(config: Config, upto: int | None = None) -> dict[str, TeamPositions]:
    """Every team's book from the database; with `upto`, as of that record of the matcher's
    (the caller makes sure the writers have stored it: with several, a later record can be
    in while an earlier one is not yet)."""
    url = make_url(config.db_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        # opening it would make an empty database there (and "no such table" after that)
        raise FileNotFoundError(f"no SQLite database at {url.database}")
    with Store(config.db_url, create=False) as store:
        return store.positions_from_db(STREAM, upto)


def differences(db: Mapping[str, TeamPositions],
                live: Mapping[str, AccountReply]) -> list[str]:
    """Human-readable mismatches; positions at zero count as absent on both sides."""
    out = []
    for team in sorted(db.keys() | live.keys()):
        ours, theirs = db.get(team), live.get(team)
        if ours is None or theirs is None or not theirs.found:
            out.append(f"{team}: only in {'the matcher' if ours is None else 'the database'}")
            continue
        mine = {k: v for k, v in ours.positions.items() if v}
        real = {k: v for k, v in theirs.positions.items() if v}
        if (mine, ours.cash, ours.fees) != (real, theirs.cash, theirs.fees):
            out.append(f"{team}: database {mine} cash {ours.cash} fees {ours.fees}; "
                       f"matcher {real} cash {theirs.cash} fees {theirs.fees}")
    return out


def table(db: Mapping[str, TeamPositions]) -> str:
    lines = [f"{'team':<12} {'cash':>16} {'fees':>10}  positions"]
    for team, book in sorted(db.items()):
        held = ", ".join(f"{iid} {qty:+d}" for iid, qty in sorted(book.positions.items()) if qty)
        lines.append(f"{team:<12} {book.cash / 100:>16,.2f} {book.fees / 100:>10,.2f}  "
                     f"{held or '-'}")
    return "\n".join(lines)
