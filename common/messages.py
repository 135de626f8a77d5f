"""The message catalogue: every frame on the bus carries one of these structs as msgpack.

Structs are tagged (`type` field), so one decoder turns any frame straight into a typed object.
Decoding ignores unknown fields: a producer may add a field with a default without breaking
older consumers. On the wire each struct is a plain msgpack map, readable with `msgpack`.

Prices are integer ticks (cents), quantities integers, money integer cents (+ = credit).
"""

from __future__ import annotations

from typing import Any

import msgspec


class Message(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    """Base of every bus message."""


# --- commands: into the matcher, journaled, answered with a Response on `resp.<gw>` ---


class Command(Message, kw_only=True):
    req_id: str = ""
    gw: str = ""  # reply routing: the Response goes to topic resp.<gw>; "" means no reply


class RegisterTeam(Command, tag="register_team", kw_only=True):
    team_name: str
    role: str
    key_hash: str  # the gateway keeps the key; the exchange only ever sees its hash


class NewOrder(Command, tag="new_order", kw_only=True):
    team_id: str
    instrument_id: str
    side: str  # "buy" | "sell"; validated by the matcher so a bad value gets INVALID_SIDE
    quantity: int
    order_type: str = "limit"
    price: int | None = None
    client_order_id: str | None = None


class CancelOrder(Command, tag="cancel_order", kw_only=True):
    team_id: str
    order_id: str


class CancelAll(Command, tag="cancel_all", kw_only=True):
    team_id: str
    reason: str = "admin"


class SetPhase(Command, tag="set_phase", kw_only=True):
    phase: str


class SetHalt(Command, tag="set_halt", kw_only=True):
    instrument_id: str
    halted: bool


class PriceMark(Command, tag="price_mark", kw_only=True):
    instrument_id: str
    price: int


AnyCommand = RegisterTeam | NewOrder | CancelOrder | CancelAll | SetPhase | SetHalt | PriceMark

# --- published events: every one carries its topic's gap-free seq and its producer's epoch ---


class Event(Message, kw_only=True):
    seq: int = 0
    ts_ns: int = 0
    epoch: int = 0


class OrderResult(Message, tag="order_result", kw_only=True):
    order_id: str
    client_order_id: str | None
    status: str  # new | partially_filled | filled | cancelled
    filled_quantity: int
    remaining_quantity: int
    notional: int  # sum of price * quantity over fills, in ticks; average = notional / filled


class TeamInfo(Message, tag="team_info", kw_only=True):
    team_id: str
    team_name: str
    role: str
    created_ns: int


class Response(Event, tag="response", kw_only=True):
    req_id: str
    ok: bool
    code: str | None = None
    message: str = ""
    details: dict[str, Any] | None = None
    order_id: str | None = None
    result: OrderResult | TeamInfo | None = None


class OrderAck(Event, tag="new_order_ack", kw_only=True):
    order_id: str
    client_order_id: str | None
    team_id: str
    instrument_id: str
    side: str
    quantity: int
    order_type: str
    price: int | None


class OrderReject(Event, tag="new_order_reject", kw_only=True):
    order_id: str | None
    client_order_id: str | None
    team_id: str
    instrument_id: str
    error_code: str
    reason: str
    details: dict[str, Any] | None = None


class ExecutionReport(Event, tag="execution_report", kw_only=True):
    order_id: str
    client_order_id: str | None
    team_id: str
    trade_id: str
    instrument_id: str
    side: str
    executed_quantity: int
    executed_price: int
    remaining_quantity: int
    order_status: str  # partially_filled | filled
    liquidity: str  # maker | taker
    fee: int  # cents, + = rebate (credit), - = fee


class CancelAck(Event, tag="cancel_ack", kw_only=True):
    order_id: str
    client_order_id: str | None
    team_id: str
    instrument_id: str
    cancelled_quantity: int
    reason: str  # user_requested | market_closed | admin | self_trade | market_remainder


class CancelReject(Event, tag="cancel_reject", kw_only=True):
    order_id: str
    team_id: str
    error_code: str
    reason: str


class BookDelta(Event, tag="book_delta", kw_only=True):
    """Price levels changed by one command: (side, price, new total quantity; 0 = gone)."""

    instrument_id: str
    changes: list[tuple[str, int, int]]


class TradePrint(Event, tag="trade", kw_only=True):
    """Public trade: no team ids, so the tape never reveals who traded."""

    trade_id: str
    instrument_id: str
    price: int
    quantity: int
    aggressor: str  # side of the taker; "auction" for the opening cross


class MarketStatus(Event, tag="market_status", kw_only=True):
    phase: str
    halted: list[str]


class Heartbeat(Event, tag="heartbeat", kw_only=True):
    service: str
    last_seq: int  # the producer's sequencer position (journal seq for the matcher)


# --- request/reply over a producer's ROUTER (snapshots, replay, read-only queries) ---


class Ping(Message, tag="ping", kw_only=True):
    pass


class Probe(Message, tag="probe", kw_only=True):
    """Asks a producer to publish a Pong on resp.<gw>: proves a SUB socket is joined."""

    gw: str


class Pong(Message, tag="pong", kw_only=True):
    service: str
    epoch: int
    last_seq: int


class SnapshotRequest(Message, tag="snapshot_request", kw_only=True):
    pass


class BookLevels(msgspec.Struct, kw_only=True):
    instrument_id: str
    bids: list[tuple[int, int]]  # (price, quantity), best first
    asks: list[tuple[int, int]]


class MarketSnapshot(Message, tag="market_snapshot", kw_only=True):
    """Exact public state at `seqs`: apply buffered events with a higher seq on top of it."""

    epoch: int
    seqs: dict[str, int]
    books: list[BookLevels]
    last_trades: list[TradePrint]
    status: MarketStatus


class ReplayRequest(Message, tag="replay_request", kw_only=True):
    topic: str
    from_seq: int


class ReplayReply(Message, tag="replay_reply", kw_only=True):
    topic: str
    payloads: list[bytes]  # encoded events, seq from_seq upward
    complete: bool  # False when from_seq is older than what the producer still holds


class AccountQuery(Message, tag="account_query", kw_only=True):
    team_id: str


class OpenOrder(msgspec.Struct, kw_only=True):
    order_id: str
    client_order_id: str | None
    instrument_id: str
    side: str
    order_type: str
    price: int | None
    quantity: int
    remaining_quantity: int
    ts_ns: int


class AccountReply(Message, tag="account_reply", kw_only=True):
    team_id: str
    found: bool
    positions: dict[str, int] = {}
    cash: int = 0
    fees: int = 0
    open_orders: list[OpenOrder] = []


class TeamQuery(Message, tag="team_query", kw_only=True):
    team_id: str | None = None
    key_hash: str | None = None


class TeamReply(Message, tag="team_reply", kw_only=True):
    team: TeamInfo | None
    key_hash: str | None = None


class ErrorReply(Message, tag="error_reply", kw_only=True):
    message: str


AnyMessage = (
    AnyCommand
    | Response
    | OrderAck
    | OrderReject
    | ExecutionReport
    | CancelAck
    | CancelReject
    | BookDelta
    | TradePrint
    | MarketStatus
    | Heartbeat
    | Ping
    | Probe
    | Pong
    | SnapshotRequest
    | MarketSnapshot
    | ReplayRequest
    | ReplayReply
    | AccountQuery
    | AccountReply
    | TeamQuery
    | TeamReply
    | ErrorReply
)

DecodeError = (msgspec.DecodeError, msgspec.ValidationError)

# Stateless and thread-safe: one encoder/decoder pair serves every service.
_ENCODER = msgspec.msgpack.Encoder()
_DECODER: msgspec.msgpack.Decoder[AnyMessage] = msgspec.msgpack.Decoder(AnyMessage)
_CANONICAL = msgspec.msgpack.Encoder(order="deterministic")


def encode(msg: msgspec.Struct) -> bytes:
    return _ENCODER.encode(msg)


def decode(data: bytes) -> AnyMessage:
    """Decode any bus payload; raises one of `DecodeError` on a malformed or unknown frame."""
    return _DECODER.decode(data)


def canonical(obj: Any) -> bytes:
    """Byte-stable encoding (sorted maps) for hashing state."""
    return _CANONICAL.encode(obj)
