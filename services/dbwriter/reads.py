"""Read queries behind Store's helpers; callers run them in one transaction."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Connection, Subquery, and_, func, or_, select

from services.dbwriter import schema
from services.dbwriter.positions import TeamPositions, TradeFill, from_snapshot


def last_seq(conn: Connection, stream: str) -> int:
    progress = schema.stream_progress
    found = conn.execute(select(progress.c.last_seq).where(progress.c.stream == stream))
    return found.scalar_one_or_none() or 0


# `upto`: the last record of the stream to count (the state as of that record); None: all.


def team_ids(conn: Connection, upto: int | None = None) -> list[str]:
    teams = schema.teams
    query = select(teams.c.team_id)
    if upto is not None:
        query = query.where(teams.c.seq <= upto)
    return list(conn.execute(query).scalars())


def _latest_seq(stream: str, upto: int | None) -> Subquery:
    """Per team, the as_of_seq of its newest snapshot on `stream`."""
    snaps = schema.position_snapshots
    query = select(snaps.c.team_id, func.max(snaps.c.as_of_seq).label("as_of_seq")).where(
        snaps.c.stream == stream)
    if upto is not None:
        query = query.where(snaps.c.seq <= upto)
    return query.group_by(snaps.c.team_id).subquery()


def latest_snapshots(conn: Connection, stream: str,
                     upto: int | None = None) -> dict[str, TeamPositions]:
    snaps, latest = schema.position_snapshots, _latest_seq(stream, upto)
    query = (
        select(snaps)
        .join(
            latest,
            and_(snaps.c.team_id == latest.c.team_id, snaps.c.as_of_seq == latest.c.as_of_seq),
        )
        .where(snaps.c.stream == stream)
        .order_by(snaps.c.snapshot_ns)  # a tie on as_of_seq: the newer snapshot wins
    )
    books: dict[str, TeamPositions] = {}
    for row in conn.execute(query).mappings():
        books[row["team_id"]] = from_snapshot(
            row["team_id"], row["as_of_seq"], row["positions"], row["cash"], row["fees"]
        )
    return books


def trades_after_snapshots(conn: Connection, stream: str,
                           upto: int | None = None) -> Iterator[TradeFill]:
    """Trades that are newer than the buyer's or the seller's latest snapshot, in seq order."""
    trades = schema.trades
    buyer = _latest_seq(stream, upto).alias("buyer")
    seller = _latest_seq(stream, upto).alias("seller")
    query = (
        select(*(trades.c[name] for name in TradeFill._fields))
        .select_from(
            trades.outerjoin(buyer, buyer.c.team_id == trades.c.buyer).outerjoin(
                seller, seller.c.team_id == trades.c.seller
            )
        )
        .where(
            trades.c.stream == stream,
            or_(
                trades.c.seq > func.coalesce(buyer.c.as_of_seq, 0),
                trades.c.seq > func.coalesce(seller.c.as_of_seq, 0),
            ),
        )
        .order_by(trades.c.seq)
    )
    if upto is not None:
        query = query.where(trades.c.seq <= upto)
    for row in conn.execute(query):
        yield TradeFill(*row)
