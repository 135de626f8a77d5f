"""Read-only answers from the matcher's state: market snapshots, accounts, teams.

Called on the matching thread between batches, so each answer is consistent with the stream
published so far (a snapshot's seqs say exactly which events it already includes).
"""

from __future__ import annotations

from collections.abc import Collection

from common import topics
from common.messages import (
    AccountReply,
    AccountsReply,
    BookLevels,
    MarketSnapshot,
    OpenOrder,
    TeamReply,
)
from services.matcher.book import Order
from services.matcher.engine import Engine, team_info


def market_snapshot(engine: Engine, epoch: int) -> MarketSnapshot:
    books = []
    for iid, book in engine.books.items():
        bids, asks = book.depth(None)
        books.append(BookLevels(instrument_id=iid, bids=bids, asks=asks))
    seqs = {t.decode(): n for t, n in engine.seqs.items() if t.startswith(topics.MD)}
    return MarketSnapshot(epoch=epoch, seqs=seqs, books=books,
                          last_trades=list(engine.last_trades.values()), status=engine.status(),
                          ts_ns=engine.last_ts)


def account(engine: Engine, team_id: str, now_ns: int = 0) -> AccountReply:
    """`now_ns`: the matcher's time, for ages of its orders (a reader's clock may differ)."""
    if team_id not in engine.accounts:
        return AccountReply(team_id=team_id, found=False, as_of_ns=now_ns)
    return _reply(engine, team_id, True, now_ns)


def accounts(engine: Engine, orders_of: Collection[str] = ()) -> AccountsReply:
    listed = set(orders_of)
    return AccountsReply(accounts=[_reply(engine, t, t in listed) for t in engine.accounts],
                         record_seq=engine.counters.get("record", 0))


def _reply(engine: Engine, team_id: str, listed: bool, now_ns: int = 0) -> AccountReply:
    acct, live = engine.accounts[team_id], engine.team_live[team_id]
    # both sides resting: open_buy/open_sell hold only instruments with open quantity
    two_sided = sum(1 for iid in acct.open_buy
                    if iid in acct.open_sell and engine.instruments[iid].is_option)
    return AccountReply(team_id=team_id, found=True, positions=dict(acct.positions),
                        cash=acct.cash, fees=acct.fees,
                        open_orders=[_open(o) for o in live.values()] if listed else [],
                        open_count=len(live), two_sided=two_sided,
                        exec_seq=engine.seqs.get(topics.execs(team_id), 0), as_of_ns=now_ns)


def _open(o: Order) -> OpenOrder:
    return OpenOrder(order_id=o.order_id, client_order_id=o.client_order_id,
                     instrument_id=o.instrument_id, side=o.side, order_type=o.order_type,
                     price=o.price, quantity=o.quantity, remaining_quantity=o.remaining,
                     ts_ns=o.ts_ns)


def team(engine: Engine, team_id: str | None, key_hash: str | None) -> TeamReply:
    """By id or by key hash; a gateway asks by hash for every key it has not seen, so neither
    walks the teams (a flood of made-up keys would make the matcher's thread do it for each)."""
    found = engine.teams.get(team_id) if team_id else None
    if found is None and key_hash:
        found = engine.teams.get(engine.key_owners.get(key_hash, ""))
    if found is None:
        return TeamReply(team=None)
    return TeamReply(team=team_info(found))
