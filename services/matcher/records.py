"""What the database keeps of the matcher's decisions: persistence records built from the
engine's own objects. Pure functions; the engine numbers them (stream "matcher", gap-free) so a
replay of the journal rebuilds exactly the same records."""

from __future__ import annotations

from common.instruments import Instrument
from common.records import OrderRecord, PositionSnapshotRecord, TeamRecord, TradeRecord
from services.matcher.accounts import Account, Team
from services.matcher.book import Order

STREAM = "matcher"


def team_record(team: Team, seq: int, ts_ns: int) -> TeamRecord:
    return TeamRecord(stream=STREAM, seq=seq, ts_ns=ts_ns, team_id=team.team_id,
                      team_name=team.team_name, role=team.role)


def order_record(order: Order, status: str, seq: int, ts_ns: int) -> OrderRecord:
    return OrderRecord(
        stream=STREAM, seq=seq, ts_ns=ts_ns, order_id=order.order_id, team_id=order.team_id,
        instrument_id=order.instrument_id, side=order.side,  # type: ignore[arg-type]
        order_type=order.order_type, price=order.price, quantity=order.quantity,
        filled_quantity=order.filled, status=status,  # type: ignore[arg-type]
        submitted_ns=order.ts_ns, client_order_id=order.client_order_id)


def trade_record(trade_id: str, buy: tuple[Order, int], sell: tuple[Order, int], price: int,
                 quantity: int, aggressor: str, multiplier: int, seq: int,
                 ts_ns: int) -> TradeRecord:
    """`buy` and `sell` are (order, fee) for each side."""
    return TradeRecord(stream=STREAM, seq=seq, ts_ns=ts_ns, trade_id=trade_id,
                       instrument_id=buy[0].instrument_id, price=price, quantity=quantity,
                       buyer=buy[0].team_id, seller=sell[0].team_id, buyer_fee=buy[1],
                       seller_fee=sell[1], aggressor=aggressor, multiplier=multiplier)


def mark_to_market(acct: Account, marks: dict[str, int], instruments: dict[str, Instrument]) -> int:
    """Cash plus every position at its mark (cents); an unmarked position counts at zero."""
    return acct.cash + sum(qty * marks.get(iid, 0) * instruments[iid].multiplier
                           for iid, qty in acct.positions.items())


def position_record(acct: Account, pnl: int, as_of_seq: int, seq: int,
                    ts_ns: int) -> PositionSnapshotRecord:
    return PositionSnapshotRecord(
        stream=STREAM, seq=seq, ts_ns=ts_ns, snapshot_ns=ts_ns, as_of_seq=as_of_seq,
        team_id=acct.team_id, positions=dict(acct.positions), cash=acct.cash, fees=acct.fees,
        pnl=pnl)
