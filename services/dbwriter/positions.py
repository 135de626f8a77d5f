"""Rebuild team books from a position snapshot plus the trades after it (pure, no I/O).

Rule: a snapshot with `as_of_seq = S` on stream X already reflects every record on X with
seq <= S; a trade on X changes a team's book iff its seq > that team's S. Seq, not time:
it is gap-free and unique per stream, while ts_ns can tie or step backwards, which would
double-count or drop trades at the boundary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(slots=True)
class TeamPositions:
    team_id: str
    positions: dict[str, int] = field(default_factory=dict)  # non-zero positions only
    cash: int = 0  # cents, fees included
    fees: int = 0  # cents, net (+ = rebates received)
    snapshot_seq: int = 0  # as_of_seq of the snapshot this started from; 0 = none
    last_seq: int = 0  # newest stream seq reflected (snapshot or trade)


class TradeFill(NamedTuple):
    seq: int
    instrument_id: str
    price: int
    quantity: int
    multiplier: int
    buyer: str
    seller: str
    buyer_fee: int
    seller_fee: int


def from_snapshot(
    team_id: str, as_of_seq: int, positions: Mapping[str, int], cash: int, fees: int
) -> TeamPositions:
    held = {k: v for k, v in positions.items() if v}
    return TeamPositions(team_id, held, cash, fees, as_of_seq, as_of_seq)


def apply_trades(
    books: dict[str, TeamPositions], trades: Iterable[TradeFill]
) -> dict[str, TeamPositions]:
    """Fold trades (in seq order) into `books`, creating empty books for unseen teams."""
    for trade in trades:
        _apply(books, trade.buyer, trade, 1, trade.buyer_fee)
        _apply(books, trade.seller, trade, -1, trade.seller_fee)
    return books


def _apply(
    books: dict[str, TeamPositions], team_id: str, trade: TradeFill, sign: int, fee: int
) -> None:
    book = books.get(team_id)
    if book is None:
        book = books[team_id] = TeamPositions(team_id)
    if trade.seq <= book.snapshot_seq:
        return
    held = book.positions.get(trade.instrument_id, 0) + sign * trade.quantity
    if held:
        book.positions[trade.instrument_id] = held
    else:
        book.positions.pop(trade.instrument_id, None)
    book.cash += fee - sign * trade.price * trade.quantity * trade.multiplier
    book.fees += fee
    book.last_seq = max(book.last_seq, trade.seq)
