"""The matcher's state as one struct: what a snapshot stores and what the state hash covers.

Resting orders are stored per book in priority order, so resting them again in that order
rebuilds every level's FIFO exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

import msgspec
from msgspec.structs import replace

from common.config import GameConfig
from common.messages import OrderResult, Response, TradePrint, canonical
from common.records import AnyRecord
from services.matcher.accounts import Account, Team
from services.matcher.book import Order
from services.matcher.engine import Answered, Engine, answered

# 2: client order id answers keep what was asked; 3: ... as flat tuples (Answered), not
# Responses (version 2 is still read, see decode_state)
STATE_VERSION = 3


class EngineState(msgspec.Struct, kw_only=True):
    version: int = STATE_VERSION
    last_seq: int
    last_ts: int
    phase: str
    halted: list[str]  # the expired too
    counters: dict[str, int]
    teams: list[Team]
    accounts: list[Account]
    orders: list[Order]
    coids: dict[str, dict[str, Answered]]
    seqs: dict[str, int]  # topic -> last seq
    marks: dict[str, int]
    last_trades: list[TradePrint]
    # The rules (fees, limits) the journal after this snapshot was applied under: a restart
    # replays it under them, whatever the config says now (None: snapshots older than this).
    game: GameConfig | None = None
    # Persistence records not yet acknowledged by a DB writer: the service's, kept here so a
    # restart re-sends them (the journal after the snapshot regenerates the later ones). The
    # outbox's closed batches stay the frames they are (oldest first); the records after them
    # are loose.
    unacked_batches: list[bytes] = []
    unacked_records: list[AnyRecord] = []
    expired: list[str] = []  # options past the front expiry (none in older snapshots)


def capture(engine: Engine) -> EngineState:
    """A deep copy of the engine's state (safe to keep while the engine runs on)."""
    return decode_state(snapshot_bytes(engine))


def snapshot_bytes(engine: Engine, unacked_batches: list[bytes] | None = None,
                   unacked_records: list[AnyRecord] | None = None) -> bytes:
    """The engine's state, encoded now (so it is consistent even if the engine runs on)."""
    state = _view(engine)
    state.unacked_batches = unacked_batches or []
    state.unacked_records = unacked_records or []
    return encode_state(state)


def _view(engine: Engine) -> EngineState:
    """The state as a struct sharing the engine's live objects: encode it before they change.

    The last trades are stored without the epoch they were published under: it names the
    process, not the state."""
    return EngineState(
        last_seq=engine.last_seq, last_ts=engine.last_ts, phase=engine.phase,
        halted=sorted(engine.halted), expired=sorted(engine.expired),
        counters=engine.counters, teams=list(engine.teams.values()),
        accounts=list(engine.accounts.values()),
        orders=[o for book in engine.books.values() for o in book.live_orders()],
        coids=engine.coids,
        seqs={t.decode(): n for t, n in engine.seqs.items()},
        marks=engine.marks,
        last_trades=[replace(t, epoch=0) for t in engine.last_trades.values()],
        game=engine.game,
    )


def restore(engine: Engine, state: EngineState) -> None:
    """Load `state` into a freshly built engine."""
    if state.version != STATE_VERSION:
        raise ValueError(f"snapshot version {state.version}, this build reads {STATE_VERSION}")
    _check_roles(state, engine.game.roles.keys())
    _drop_unconfigured(state, engine.instruments.keys())
    engine.take_records()  # the fresh engine's house-team records: the snapshot has them
    engine.last_seq, engine.last_ts, engine.phase = state.last_seq, state.last_ts, state.phase
    engine.halted, engine.expired = set(state.halted), set(state.expired)
    engine.counters = dict(state.counters)
    engine.teams = {t.team_id: t for t in state.teams}
    engine.key_owners = {t.key_hash: t.team_id for t in state.teams if t.key_hash}
    engine.accounts = {a.team_id: a for a in state.accounts}
    engine.team_live = {a.team_id: {} for a in state.accounts}
    engine.coids, engine.marks = state.coids, state.marks
    engine.seqs = {t.encode(): n for t, n in state.seqs.items()}
    engine.last_trades = {t.instrument_id: t for t in state.last_trades}
    # acceptance order: ids are numbered, and by length first "ORD_100000000" follows
    # "ORD_99999999" (cancel-all and the close walk `live` in this order)
    for order in sorted(state.orders, key=lambda o: (len(o.order_id), o.order_id)):
        engine.live[order.order_id] = engine.team_live[order.team_id][order.order_id] = order
    for order in state.orders:
        engine.books[order.instrument_id].rest(order)
    for book in engine.books.values():
        book.drain_changes()
    engine.add_house_teams(state.last_ts)  # of a house role new to the game, with its record


def _check_roles(state: EngineState, configured: Collection[str]) -> None:
    """Teams of a role taken out of the config: refused. Their next order, or a fill against
    one of their resting orders, needs the role's limits and fees (it was a KeyError that
    stopped the matcher each time)."""
    orphans = sorted(f"{t.team_id} ({t.role})" for t in state.teams if t.role not in configured)
    if orphans:
        raise ValueError(
            f"teams {', '.join(orphans)} are in this game but their roles are not in the "
            "configured game.roles; configure them again to restart it (to stop new teams "
            "of a role joining, set its registrable = false)")


def _drop_unconfigured(state: EngineState, configured: Collection[str]) -> None:
    """Instruments cut from the config since the snapshot: refused while they hold resting
    orders or positions (those cannot just vanish); otherwise their traces go with them."""
    held = {o.instrument_id for o in state.orders} | {
        iid for a in state.accounts for iid, quantity in a.positions.items() if quantity}
    missing = sorted(held.difference(configured))
    if missing:
        raise ValueError(
            f"instruments {', '.join(missing)} hold resting orders or positions in this game "
            "but are not in the configured game.underlyings; configure them again to restart it")
    for acct in state.accounts:
        for table in (acct.positions, acct.exposure):
            for iid in [iid for iid in table if iid not in configured]:
                del table[iid]
    state.last_trades = [t for t in state.last_trades if t.instrument_id in configured]
    state.marks = {iid: price for iid, price in state.marks.items() if iid in configured}
    state.halted = [iid for iid in state.halted if iid in configured]
    state.expired = [iid for iid in state.expired if iid in configured]


def state_hash(engine: Engine, sequencing: bool = True) -> str:
    """Hash of the whole state; with sequencing=False, of the trading state alone (books,
    accounts, teams, windows), leaving out the seq counters and clock every command advances."""
    state = capture(engine)
    if not sequencing:
        state.last_seq = state.last_ts = 0
        state.seqs = {}
    return hashlib.blake2b(canonical(state), digest_size=16).hexdigest()


def encode_state(state: EngineState) -> bytes:
    return msgspec.msgpack.encode(state)


def decode_state(data: bytes) -> EngineState:
    """This version's state, or version 2's (a matcher upgraded over its own snapshots)."""
    if msgspec.msgpack.decode(data, type=_Version).version == 2:
        return _from_v2(msgspec.msgpack.decode(data, type=_StateV2))
    return msgspec.msgpack.decode(data, type=EngineState)


class _Version(msgspec.Struct):
    version: int = 1


class _AnsweredV2(msgspec.Struct, array_like=True):
    order: tuple[str, str, int, str, int | None]
    response: Response


class _StateV2(EngineState, kw_only=True):
    coids: dict[str, dict[str, _AnsweredV2]]  # type: ignore[assignment]


def _from_v2(old: _StateV2) -> EngineState:
    coids: dict[str, dict[str, Answered]] = {}
    for team_id, answers in old.coids.items():
        coids[team_id] = kept = {}
        for coid, answer in answers.items():
            result = answer.response.result
            if not isinstance(result, OrderResult):  # only accepted orders' answers are kept
                raise ValueError(f"snapshot version 2: {team_id} {coid!r} has no order result")
            kept[coid] = answered(answer.order, answer.response.ts_ns, result)
    fields = {f: getattr(old, f) for f in EngineState.__struct_fields__}
    return EngineState(**{**fields, "version": STATE_VERSION, "coids": coids})
