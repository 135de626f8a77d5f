"""Read-only answers from the matcher's state: market snapshots, accounts, teams.

Called on the matching thread between batches, so each answer is consistent with the stream
published so far (a snapshot's seqs say exactly which events it already includes).
"""

from __future__ import annotations

from common import topics
from common.messages import (
    AccountReply,
    AccountsReply,
    BookLevels,
    MarketSnapshot,
    OpenOrder,
    TeamReply,
)
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


def account(engine: Engine, team_id: str) -> AccountReply:
    acct = engine.accounts.get(team_id)
    if acct is None:
        return AccountReply(team_id=team_id, found=False)
    orders = [OpenOrder(order_id=o.order_id, client_order_id=o.client_order_id,
                        instrument_id=o.instrument_id, side=o.side, order_type=o.order_type,
                        price=o.price, quantity=o.quantity, remaining_quantity=o.remaining,
                        ts_ns=o.ts_ns)
              for o in engine.live.values() if o.team_id == team_id]
    return AccountReply(team_id=team_id, found=True, positions=dict(acct.positions),
                        cash=acct.cash, fees=acct.fees, open_orders=orders,
                        exec_seq=engine.seqs.get(topics.execs(team_id), 0))


def accounts(engine: Engine) -> AccountsReply:
    return AccountsReply(accounts=[account(engine, t) for t in engine.accounts],
                         record_seq=engine.counters.get("record", 0))


def team(engine: Engine, team_id: str | None, key_hash: str | None) -> TeamReply:
    found = next((t for t in engine.teams.values()
                  if t.team_id == team_id or (key_hash and t.key_hash == key_hash)), None)
    if found is None:
        return TeamReply(team=None)
    return TeamReply(team=team_info(found), key_hash=found.key_hash)
