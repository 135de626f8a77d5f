"""Persistence records: what producers send to the DB writer, batched per stream.

Each record carries its producer `stream` and a gap-free `seq` on that stream; the DB writer
inserts idempotently on (stream, seq), so a re-sent batch never duplicates a row. Tags start
with `rec_` so they never collide with the bus messages in `common.messages`.

Prices and money are integer cents (+ = credit), quantities integers, times int nanoseconds.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Side = Literal["buy", "sell"]
OrderStatus = Literal["new", "partially_filled", "filled", "cancelled", "rejected"]
PriceKind = Literal["underlying", "fair_value"]


class Record(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every persistence record."""

    stream: str
    seq: int
    ts_ns: int


class TeamRecord(Record, tag="rec_team"):
    team_id: str
    team_name: str
    role: str


class OrderRecord(Record, tag="rec_order"):
    """Latest known state of an order; the writer keeps only the most advanced state."""

    order_id: str
    team_id: str
    instrument_id: str
    side: Side
    order_type: str
    price: int | None
    quantity: int
    filled_quantity: int
    status: OrderStatus
    submitted_ns: int
    client_order_id: str | None = None


class TradeRecord(Record, tag="rec_trade"):
    """One fill between two teams, with both fees, so cash can be rebuilt from the DB alone."""

    trade_id: str
    instrument_id: str
    price: int
    quantity: int
    buyer: str
    seller: str
    buyer_fee: int
    seller_fee: int
    aggressor: str  # side of the taker; "auction" for the opening cross
    multiplier: int = 1  # contract multiplier: cash moves by price * quantity * multiplier


class PositionSnapshotRecord(Record, tag="rec_position_snapshot"):
    """A team's book at `as_of_seq`: includes every record on this stream up to that seq."""

    snapshot_ns: int
    as_of_seq: int
    team_id: str
    positions: dict[str, int]
    cash: int  # includes fees
    fees: int
    pnl: int


class PriceRecord(Record, tag="rec_price"):
    instrument_id: str
    price: int
    kind: PriceKind


class NewsRecord(Record, tag="rec_news"):
    headline: str
    details: dict[str, Any] = {}  # category, direction, magnitude, regime shift, ...


class SignalRecord(Record, tag="rec_signal"):
    signal_type: str
    role: str | None = None  # None: a public signal
    payload: dict[str, Any] = {}


AnyRecord = (
    TeamRecord
    | OrderRecord
    | TradeRecord
    | PositionSnapshotRecord
    | PriceRecord
    | NewsRecord
    | SignalRecord
)


class RecordBatch(msgspec.Struct, tag_field="type", tag="rec_batch", kw_only=True):
    """Records of one stream, in seq order; acked as a whole once committed. `origin`, when
    set, names the producer's run (the matcher's data dir): a database holding the stream
    of another origin refuses the batch rather than skip its rows as already stored."""

    stream: str
    records: list[AnyRecord]
    origin: str = ""


class BatchAck(msgspec.Struct, tag_field="type", tag="rec_batch_ack", kw_only=True):
    """A batch is committed: it is named by its stream and its seq range. Both ends, because
    an ack can outlive a producer restart, after which batches may be cut differently: a
    stale ack must not clear a longer batch that ends at the same seq."""

    stream: str
    first_seq: int
    last_seq: int


AnyRecordFrame = RecordBatch | BatchAck

# Stateless and thread-safe, like the bus codec in common.messages.
_ENCODER = msgspec.msgpack.Encoder()
_DECODER: msgspec.msgpack.Decoder[AnyRecordFrame] = msgspec.msgpack.Decoder(AnyRecordFrame)


def encode_frame(frame: AnyRecordFrame) -> bytes:
    return _ENCODER.encode(frame)


def decode_frame(data: bytes) -> AnyRecordFrame:
    """Raises msgspec.DecodeError / ValidationError on a malformed or unknown frame."""
    return _DECODER.decode(data)
