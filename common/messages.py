"""The message catalogue: every frame on the bus carries one of these structs as msgpack.

Structs are tagged (`type` field), so one decoder turns any frame straight into a typed object.
Decoding ignores unknown fields: a producer may add a field with a default without breaking
older consumers. On the wire each struct is a plain msgpack map, readable with `msgpack`.

Prices are integer ticks (cents), quantities integers, money integer cents (+ = credit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec


class Message(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    """Base of every bus message."""


# --- commands: into the matcher, journaled, answered with a Response on `resp.<gw>` ---


class Command(Message, kw_only=True):
    req_id: str = ""
    gw: str = ""  # reply routing: the Response goes to topic resp.<gw>; "" means no reply


MAX_TEAM_NAME = 50  # characters, once normalised (the gateway's check, and the matcher's)
SIDES = ("buy", "sell")


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


class ExpireOptions(Command, tag="expire_options", kw_only=True):
    """The front expiry, from the simulator: each option settles at its price (ticks: its
    intrinsic value at the underlying's price then), and its book closes for good."""

    prices: dict[str, int]


class ReissueKey(Command, tag="reissue_key", kw_only=True):
    """A team's API key replaced (an operator's action: a leaked key, or one lost to a
    registration that timed out); the old key stops working on every gateway."""

    team_id: str
    key_hash: str


class SnapshotPositions(Command, tag="snapshot_positions", kw_only=True):
    """Every team's positions, cash and P&L into the database (the matcher's own timer sends
    it into its own sequence, so a replay emits the same snapshot records)."""


AnyCommand = (
    RegisterTeam | NewOrder | CancelOrder | CancelAll | SetPhase | SetHalt | PriceMark
    | SnapshotPositions
    | ReissueKey
    | ExpireOptions
)

# --- published events: every one carries its topic's gap-free seq and its producer's epoch ---


class Event(Message, kw_only=True):
    seq: int = 0
    ts_ns: int = 0
    epoch: int = 0


ENVELOPE_FIELDS = frozenset({"type", *Event.__struct_fields__})  # the bus's, not the event's


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
    # a tuple when the matcher builds it: its replay rings keep thousands per book, and the
    # garbage collector stops walking tuples of numbers (lists it walks at every full pass)
    changes: Sequence[tuple[str, int, int]]
    more: bool = False  # another book_delta of the same command follows (another instrument)


class TradePrint(Event, tag="trade", kw_only=True):
    """Public trade: no team ids, so the tape never reveals who traded."""

    trade_id: str
    instrument_id: str
    price: int
    quantity: int
    aggressor: str  # side of the taker; "auction" for the opening cross


class MarketStatus(Event, tag="market_status", kw_only=True):
    phase: str
    halted: list[str]  # by the operator (who may resume them)
    expired: list[str] = []  # options past their expiry: closed for good


class KeyReissued(Event, tag="key_reissued", kw_only=True):
    """On sys.keys (matcher_private): every gateway forgets the team's cached key and closes
    its stream, which was opened with the old key."""

    team_id: str


class Heartbeat(Event, tag="heartbeat", kw_only=True):
    service: str
    last_seq: int  # the producer's sequencer position (journal seq for the matcher)
    # Public events sent on this *_pub before this beat (md.*; for events: news and public
    # signals): the sum of every public topic's last seq. A subscriber to all of them whose
    # own sum is lower lost a frame, even a topic's last one.
    published: int | None = None
    # The matcher's key reissues so far (the last seq of sys.keys): a gateway that has seen
    # fewer lost one, and drops every key it has cached.
    keys: int | None = None


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
    # the matcher: every persistence record up to this one is stored (a DB writer acknowledged
    # it). Writers commit out of order, so the database's own high-water mark cannot say this.
    records_stored: int = 0


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
    ts_ns: int = 0  # the time of the last command it includes



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
    open_orders: list[OpenOrder] = []  # left out for most teams by AccountsQuery.orders_of
    open_count: int = 0  # resting orders, listed or not
    two_sided: int = 0  # options the team quotes on both sides (a market maker's figure)
    exec_seq: int = 0  # the last exec.<team> event this state includes
    as_of_ns: int = 0  # the matcher's time of the answer, the clock of its orders' ts_ns


class AccountsQuery(Message, tag="accounts_query", kw_only=True):
    """Every team's account at one point of the matcher's state (the leaderboard,
    `itg recover --check`). Resting orders are listed for the teams in `orders_of` only, and
    counted for all: listing 20,000 of them every second cost the matching thread 6-14 ms
    and made the leaderboard's answer 3 MB."""

    orders_of: list[str] = []


class AccountsReply(Message, tag="accounts_reply", kw_only=True):
    accounts: list[AccountReply]
    record_seq: int  # the last persistence record ("matcher" stream) this state includes


class TeamQuery(Message, tag="team_query", kw_only=True):
    team_id: str | None = None
    key_hash: str | None = None


class TeamReply(Message, tag="team_reply", kw_only=True):
    team: TeamInfo | None


class ErrorReply(Message, tag="error_reply", kw_only=True):
    message: str


# --- simulator and events feeds: public data (md.*, news, signal.public.*) ---


class UnderlyingTick(Event, tag="underlying_tick", kw_only=True):
    symbol: str
    price: int  # ticks
    tick: int  # game tick number; 0 is the opening state
    game_s: float  # game seconds since the start


class FairValues(Event, tag="fair_values", kw_only=True):
    """Black-Scholes (r = 0) fair value and delta of every option on one underlying."""

    underlying: str
    tick: int
    game_s: float
    spot: int  # ticks: the published underlying price the values were computed from
    years_to_expiry: float
    values: list[tuple[str, int, float]]  # (instrument_id, fair value in ticks, delta)


class News(Event, tag="news", kw_only=True):
    news_id: int
    tick: int  # the tick the news hit the market (with its jump, if any)
    game_s: float
    headline: str
    direction: str  # up | down | none
    magnitude: float  # fraction of the price (0.01 = 1%)
    jump: bool  # the underlying moved by `magnitude` in `direction` at `tick`
    injected: bool = False  # from the game master rather than the schedule


class SentimentSignal(Event, tag="sentiment", kw_only=True):
    signal_type: str = "market_sentiment"
    tick: int
    game_s: float
    score: float  # decaying sum of news direction * magnitude, in percent points


class IndicatorSignal(Event, tag="indicators", kw_only=True):
    """Technical indicators on one underlying; a figure is None until its window has filled."""

    signal_type: str = "technical_indicators"
    symbol: str
    tick: int
    game_s: float
    price: int  # ticks
    sma: dict[str, float | None]  # window in ticks ("20") -> simple moving average (price units)
    realised_vol: dict[str, float | None]  # window in ticks -> annualised volatility
    rsi: float | None


# --- role signals: private channel only, one topic per receiving role (signal.<role>) ---


class VolForecastSignal(Event, tag="vol_forecast", kw_only=True):
    signal_type: str = "volatility_forecast"
    tick: int  # when it was announced
    target_tick: int  # the first tick the new regime is expected to be in force
    lead_ticks: int
    regime: str
    vol: float  # annualised


class TrackingErrorSignal(Event, tag="tracking_error", kw_only=True):
    signal_type: str = "tracking_error"
    tick: int
    error: float  # SPY over its fair value from lagged SPX (0.001 = 0.1% rich)
    direction: str  # up | down: the call on the error's next move
    threshold: float


# --- internal traffic between the simulator and the events service (private channels) ---


class SimState(Event, tag="sim_state", kw_only=True):
    """One simulator tick as the events service needs it. Holds the regime: never public."""

    tick: int
    game_s: float
    prices: dict[str, int]  # symbol -> published price in ticks
    window: list[int]  # regime in force at tick, tick + 1, ... (the pre-drawn future)
    premium: float  # SPY tracking premium at this tick
    next_premium: float  # the premium the next tick will show (already drawn)
    news_epoch: int  # the events epoch the two news lists refer to
    news_applied: list[tuple[int, int]]  # recent (news_id, tick) taken into the price path
    news_pending: list[int]  # news ids held, waiting for their tick
    game: int = 0  # which game: set when it starts, kept by a simulator that resumes it


class NewsShock(Event, tag="news_shock", kw_only=True):
    """What a news item does to the market, sent ahead of the tick it hits."""

    news_epoch: int  # what news_id counts in (a new schedule numbers afresh); not the envelope's
    news_id: int
    tick: int  # the tick it takes effect; 0 = the simulator's next tick
    direction: str
    magnitude: float
    regime_shift: bool
    jump: bool


# --- game-master controls: requests on sim_rpc / events_rpc, answered with a ControlReply ---


MAX_HEADLINE = 200  # characters of an injected headline (the events service and admin API)


class InjectNews(Message, tag="inject_news", kw_only=True):
    """A headline from the table (by text) or a new one; set fields override the table row."""

    headline: str
    direction: str | None = None
    magnitude: float | None = None
    regime_shift: bool | None = None
    jump: bool | None = None


class ForceRegime(Message, tag="force_regime", kw_only=True):
    regime: str  # a name from simulator.regime_names


class SetSpeed(Message, tag="set_speed", kw_only=True):
    speed: float  # game seconds per wall second; 0 pauses the game clock


class ControlReply(Message, tag="control_reply", kw_only=True):
    ok: bool
    message: str = ""
    details: dict[str, Any] = {}


FeedEvent = UnderlyingTick | FairValues | News | SentimentSignal | IndicatorSignal


class FeedSnapshot(Message, tag="feed_snapshot", kw_only=True):
    """A tick-driven producer's public state: the last event of every topic, with its seq."""

    service: str
    epoch: int
    last_seq: int  # public events published this epoch, as in the heartbeats
    seqs: dict[str, int]
    events: dict[str, FeedEvent]  # topic -> its last event


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
    | KeyReissued
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
    | AccountsQuery
    | AccountsReply
    | TeamQuery
    | TeamReply
    | ErrorReply
    | FeedEvent
    | VolForecastSignal
    | TrackingErrorSignal
    | SimState
    | NewsShock
    | InjectNews
    | ForceRegime
    | SetSpeed
    | ControlReply
    | FeedSnapshot
)

# What decoding bad input may raise. msgspec raises RecursionError for a frame nested deeper
# than the interpreter's stack allows: a kilobyte of nested arrays in any `Any` field (or in a
# field it skips) would otherwise take down whichever service read it.
DecodeError = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
K = TypeVar("K", bound=msgspec.Struct)

# Stateless and thread-safe: one encoder/decoder pair serves every service.
_ENCODER = msgspec.msgpack.Encoder()
_DECODER: msgspec.msgpack.Decoder[AnyMessage] = msgspec.msgpack.Decoder(AnyMessage)
_EVENTS: msgspec.msgpack.Decoder[list[AnyMessage]] = msgspec.msgpack.Decoder(list[AnyMessage])
_SPLIT: msgspec.msgpack.Decoder[list[msgspec.Raw]] = msgspec.msgpack.Decoder(list[msgspec.Raw])
_CANONICAL = msgspec.msgpack.Encoder(order="deterministic")


def encode(msg: msgspec.Struct) -> bytes:
    return _ENCODER.encode(msg)


def decode(data: bytes) -> AnyMessage:
    """Decode any bus payload; raises one of `DecodeError` on a malformed or unknown frame."""
    return _DECODER.decode(data)


def decode_if(data: bytes, kind: type[K]) -> K | None:
    """The payload as a `kind`; None if it is malformed or another message."""
    try:
        msg = _DECODER.decode(data)
    except DecodeError:
        return None
    return msg if isinstance(msg, kind) else None


# --- published frames: [topic, msgpack array of one or more events of that topic, in seq order]


def encode_events(*events: msgspec.Struct) -> bytes:
    return _ENCODER.encode(events)


def decode_events(data: bytes) -> list[AnyMessage]:
    """The events of one published frame; raises one of `DecodeError` like `decode`."""
    return _EVENTS.decode(data)


def split_events(data: bytes) -> list[bytes]:
    """The events of one published frame, each still encoded (for readers that look at the
    bytes first, or decode only some); raises one of `DecodeError` if it is not an array."""
    return [bytes(raw) for raw in _SPLIT.decode(data)]


def canonical(obj: Any) -> bytes:
    """Byte-stable encoding (sorted maps) for hashing state."""
    return _CANONICAL.encode(obj)
