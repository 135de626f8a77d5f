"""The one config object: typed, frozen, loaded from one TOML file plus environment overrides.

Defaults are the numbers of GAME.md. A bad value fails at load with a message naming the key.
Environment overrides: ITG_<SECTION>__<KEY>=value (value parsed as a TOML literal when it can
be, else taken as a string), e.g. ITG_MATCHER__SNAPSHOT_INTERVAL_S=5, ITG_BUS__TRANSPORT=tcp.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from common.market_settings import EventsSettings, SimulatorSettings
from common.money import TICKS_PER_UNIT, to_ticks

log = logging.getLogger(__name__)

PHASES = ("pre_open", "opening_auction", "continuous", "closed")
ORDER_TYPES = ("limit", "market")
SERVICES = ("dbwriter", "matcher", "simulator", "events", "gateway")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _positive(**values: float) -> None:
    """Each value finite and > 0; NaN slips through a plain `<= 0` test."""
    if bad := [k for k, v in values.items() if not (math.isfinite(v) and v > 0)]:
        raise ValueError(f"must be positive and finite: {', '.join(bad)}")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RoleConfig(_Section, frozen=True, kw_only=True):
    maker_fee_cents: int  # per contract, + = rebate (credit)
    taker_fee_cents: int
    position_limit: int  # per option, resting orders counted as worst-case fills
    total_position_limit: int  # sum over options of the worst-case absolute position
    underlying_position_limit: int = 10_000
    min_order_size: int = 1
    max_order_size: int
    max_orders_per_s: int
    order_types: tuple[str, ...] = ORDER_TYPES
    position_limit_code: str = "POSITION_LIMIT_EXCEEDED"
    signals: tuple[str, ...] = ()
    registrable: bool = True  # False for the house retail team: not registrable over the API

    def __post_init__(self) -> None:
        if not 1 <= self.min_order_size <= self.max_order_size:
            raise ValueError("need 1 <= min_order_size <= max_order_size")
        if min(self.position_limit, self.total_position_limit, self.max_orders_per_s) < 1:
            raise ValueError("limits and rates must be positive")
        if unknown := set(self.order_types) - set(ORDER_TYPES):
            raise ValueError(f"unknown order types {sorted(unknown)}")


def _default_roles() -> dict[str, RoleConfig]:
    return {
        "market_maker": RoleConfig(
            maker_fee_cents=2, taker_fee_cents=-1, position_limit=50, total_position_limit=200,
            max_order_size=1000, max_orders_per_s=10, position_limit_code="MM_POS_LIMIT",
        ),
        "hedge_fund": RoleConfig(
            maker_fee_cents=1, taker_fee_cents=-2, position_limit=150, total_position_limit=500,
            max_order_size=500, max_orders_per_s=5, signals=("volatility_forecast",),
        ),
        "arbitrage": RoleConfig(
            maker_fee_cents=1, taker_fee_cents=-2, position_limit=100, total_position_limit=300,
            max_order_size=500, max_orders_per_s=7, signals=("tracking_error",),
        ),
        "retail": RoleConfig(
            maker_fee_cents=-1, taker_fee_cents=-3, position_limit=50, total_position_limit=50,
            max_order_size=50, max_orders_per_s=1,
        ),
        # Retail flow is split over two house accounts: one team's orders never trade with
        # each other (self-trade prevention), two let the market trade with no bot connected.
        **{role: RoleConfig(
            maker_fee_cents=-1, taker_fee_cents=-3, position_limit=1_000_000,
            total_position_limit=10_000_000, max_order_size=50, max_orders_per_s=1000,
            registrable=False,
        ) for role in ("house", "house_2")},
    }


class UnderlyingConfig(_Section, frozen=True, kw_only=True):
    symbol: str
    start_price: float
    strike_min: int
    strike_max: int
    strike_step: int
    multiplier: int = 100  # per option contract

    def __post_init__(self) -> None:
        # instrument ids are <symbol>_<strike>_<CALL|PUT>: a symbol with "_" would be ambiguous
        if not (self.symbol.isascii() and self.symbol.isalnum() and self.symbol.isupper()):
            raise ValueError(f"symbol {self.symbol!r}: upper-case letters and digits only")
        _positive(start_price=self.start_price, multiplier=self.multiplier)
        to_ticks(self.start_price)
        if self.strike_step < 1 or self.strike_min > self.strike_max:
            raise ValueError("need strike_step >= 1 and strike_min <= strike_max")


def _default_underlyings() -> tuple[UnderlyingConfig, ...]:
    return (
        UnderlyingConfig(symbol="SPX", start_price=4400, strike_min=4200, strike_max=4600,
                         strike_step=100),
        UnderlyingConfig(symbol="SPY", start_price=440, strike_min=420, strike_max=460,
                         strike_step=10),
    )


# The most one order or one position may be worth at max_price, in cents: an eighth of the
# 64-bit range the bus carries (see GameConfig._check_values).
MAX_VALUE_CENTS = 2**60


class GameConfig(_Section, frozen=True, kw_only=True):
    seed: int = 42
    initial_phase: str = "continuous"
    max_price: float = 1_000_000.0  # an order above this is an absurd price: INVALID_PRICE
    underlyings: tuple[UnderlyingConfig, ...] = msgspec.field(default_factory=_default_underlyings)
    roles: dict[str, RoleConfig] = msgspec.field(default_factory=_default_roles)
    # registered teams (house teams aside): registration is open to anyone, and every team
    # costs each leaderboard refresh and every dashboard viewer; more get TEAM_LIMIT_REACHED
    max_teams: int = 1_000

    def __post_init__(self) -> None:
        if self.initial_phase not in PHASES:
            raise ValueError(f"initial_phase must be one of {PHASES}")
        _positive(max_price=self.max_price, max_teams=self.max_teams)
        to_ticks(self.max_price)
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        symbols = [u.symbol for u in self.underlyings]
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"underlyings: at least one, each symbol once (got {symbols})")
        if not any(r.registrable for r in self.roles.values()):
            raise ValueError("roles: at least one must be registrable, or no team can join")
        self._check_values()

    def _check_values(self) -> None:
        """Money stays far inside the 64-bit integers the bus carries: an order of 10**17 at
        $10 once made a result the matcher could not publish, after journaling it, so every
        restart replayed it into the same crash."""
        unit = self.max_price_ticks * max(u.multiplier for u in self.underlyings)
        for name, r in self.roles.items():
            if r.max_order_size * unit > MAX_VALUE_CENTS:
                raise ValueError(f"roles.{name}.max_order_size: {r.max_order_size} at max_price "
                                 f"is worth more than {MAX_VALUE_CENTS} cents")
            limit = max(r.position_limit, r.total_position_limit, r.underlying_position_limit)
            if limit * unit > MAX_VALUE_CENTS:
                raise ValueError(f"roles.{name}: a position limit of {limit} at max_price is "
                                 f"worth more than {MAX_VALUE_CENTS} cents")

    @property
    def max_price_ticks(self) -> int:
        return to_ticks(self.max_price)


class MatcherConfig(_Section, frozen=True, kw_only=True):
    snapshot_interval_s: float = 30.0
    max_batch: int = 1000  # commands per journal group commit
    fsync: bool = True  # False only for throwaway benchmarks: acks then survive no power cut
    replay_ring: int = 10_000  # events kept per team topic for replay (minutes of trading)
    # events kept over all team (and gateway response) topics, 400-800 bytes each: with more
    # teams than it holds replay_rings of, each keeps a halved share (never under 100)
    replay_total: int = 2_000_000
    md_replay_ring: int = 5_000  # events kept per public topic
    snapshots_kept: int = 2
    # True: every journal segment is kept (the game's full command log, for audit or an offline
    # replay; it grows with the game). False: a segment goes once no kept snapshot needs it.
    keep_full_journal: bool = False

    def __post_init__(self) -> None:
        _positive(snapshot_interval_s=self.snapshot_interval_s, max_batch=self.max_batch,
                  replay_ring=self.replay_ring, md_replay_ring=self.md_replay_ring,
                  replay_total=self.replay_total,
                  snapshots_kept=self.snapshots_kept)


BUS_OWNERS = ("matcher", "simulator", "events")  # the services that bind (common/transport.py)


_HOST = re.compile(r"[A-Za-z0-9_.-]+")  # a host name or an IPv4 address


class BusConfig(_Section, frozen=True, kw_only=True):
    transport: str = "inproc"  # inproc (threads in one process) | ipc | tcp
    ipc_dir: str = ""  # default: <data_dir>/run
    bind_host: str = "*"
    tcp_base_port: int = 5550
    hosts: dict[str, str] = {}  # service -> host its tcp sockets are reached at (127.0.0.1)
    heartbeat_s: float = 1.0

    def __post_init__(self) -> None:
        if self.transport not in ("inproc", "ipc", "tcp"):
            raise ValueError("transport must be inproc, ipc or tcp")
        if not 1024 <= self.tcp_base_port <= 65000:
            raise ValueError("tcp_base_port must be within 1024..65000")
        if unknown := sorted(set(self.hosts) - set(BUS_OWNERS)):  # a typo fell back to localhost
            raise ValueError(f"hosts: unknown service(s) {unknown}; the services that bind are "
                             f"{', '.join(BUS_OWNERS)}")
        # a port or a scheme in a host made an address no peer ever reached, silently
        for key, host in [("bind_host", self.bind_host)] + [
                (f"hosts.{name}", host) for name, host in sorted(self.hosts.items())]:
            if not (_HOST.fullmatch(host) or (key == "bind_host" and host == "*")):
                raise ValueError(f"{key}: {host!r} is not a host name or an IPv4 address (with "
                                 "no port: ports come from tcp_base_port)")
        _positive(heartbeat_s=self.heartbeat_s)


class GatewayConfig(_Section, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free port (tests)
    id: str = ""  # responses come back on resp.<id>; "" = a fresh random id per process
    request_timeout_s: float = 5.0  # no answer from the matcher by then: PROCESSING_TIMEOUT
    start_timeout_s: float = 30.0  # how long start-up waits for the matcher before going on
    max_body_bytes: int = 16_384
    max_connections: int = 1_000  # HTTP + WebSocket at once (kept below the fd limit); 503 over
    max_ws_frame_bytes: int = 65_536
    ws_queue_size: int = 10_000  # messages pending per connection before it is dropped as slow
    ws_close_timeout_s: float = 2.0  # a dropped slow client gets this long to take its close
    md_interval_s: float = 0.05  # market_data is conflated: at most one per instrument per interval
    session_ttl_s: float = 300.0  # a disconnected team can resume with ?since=N for this long
    # private messages remembered per session for ?since=N: as many as the matcher's replay
    # ring keeps per team (matcher.replay_ring), beyond which a resume cannot be replayed
    # anyway; 16 bytes each (100,000 was 1.6 GB at game.max_teams)
    session_window: int = 10_000
    rate_limit: bool = True  # per-team order rate checked here too, before the matcher
    max_requests_per_s: int = 50  # per team: cancels, account, book and history reads
    auth_cache_size: int = 100_000
    negative_auth_ttl_s: float = 5.0  # an unknown key is not asked about again for this long
    admin_key: str = ""  # X-Admin-Key of the operator API; "" = off (`itg up` makes one up)
    regime_delay_s: float = 300.0  # game seconds before a past volatility regime is shown
    dashboard_interval_s: float = 0.25  # spectator stream: at most one update per interval
    leaderboard_interval_s: float = 1.0  # accounts are read from the matcher this often

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be within 0..65535")
        if self.admin_key and (len(self.admin_key) < 16 or not self.admin_key.isascii()):
            raise ValueError("admin_key: at least 16 ASCII characters (or \"\" for no admin API)")
        if not 0 <= self.regime_delay_s < float("inf"):
            raise ValueError("regime_delay_s must be >= 0 and finite")
        if len(self.id) > 32 or not all(c.isalnum() or c in "-_" for c in self.id):
            raise ValueError("id: at most 32 letters, digits, '-' or '_'")
        _positive(request_timeout_s=self.request_timeout_s, start_timeout_s=self.start_timeout_s,
                  max_body_bytes=self.max_body_bytes, max_ws_frame_bytes=self.max_ws_frame_bytes,
                  max_connections=self.max_connections,
                  ws_queue_size=self.ws_queue_size, ws_close_timeout_s=self.ws_close_timeout_s,
                  md_interval_s=self.md_interval_s, session_ttl_s=self.session_ttl_s,
                  session_window=self.session_window, auth_cache_size=self.auth_cache_size,
                  max_requests_per_s=self.max_requests_per_s,
                  dashboard_interval_s=self.dashboard_interval_s,
                  leaderboard_interval_s=self.leaderboard_interval_s)
        if not 0 <= self.negative_auth_ttl_s < float("inf"):
            raise ValueError("negative_auth_ttl_s must be >= 0 and finite")


class DbConfig(_Section, frozen=True, kw_only=True):
    url: str = ""  # SQLAlchemy URL; "" = SQLite file <data_dir>/itg.db
    batch_max_rows: int = 1000  # a producer sends a batch when it has this many records...
    batch_max_ms: float = 100.0  # ...or when its oldest record waited this long
    resend_after_s: float = 5.0  # an unacknowledged batch goes out again (to any writer)
    position_snapshot_interval_s: float = 60.0
    max_pending_records: int = 2_000_000  # past this, a producer warns: the DB is falling behind

    def __post_init__(self) -> None:
        _positive(batch_max_rows=self.batch_max_rows, batch_max_ms=self.batch_max_ms,
                  resend_after_s=self.resend_after_s,
                  position_snapshot_interval_s=self.position_snapshot_interval_s,
                  max_pending_records=self.max_pending_records)


class Config(_Section, frozen=True, kw_only=True):
    data_dir: str = "data"
    log_level: str = "INFO"
    game: GameConfig = msgspec.field(default_factory=GameConfig)
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    simulator: SimulatorSettings = msgspec.field(default_factory=SimulatorSettings)
    events: EventsSettings = msgspec.field(default_factory=EventsSettings)
    db: DbConfig = msgspec.field(default_factory=DbConfig)
    matcher: MatcherConfig = msgspec.field(default_factory=MatcherConfig)
    bus: BusConfig = msgspec.field(default_factory=BusConfig)

    def __post_init__(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        self._check_start_prices()
        if self.events.forecast_lead_max_ticks > self.simulator.regime_lookahead_ticks:
            # the forecaster sees no further than the simulator has drawn: longer leads were
            # accepted and never given
            raise ValueError(f"events.forecast_lead_max_ticks "
                             f"{self.events.forecast_lead_max_ticks} is beyond "
                             f"simulator.regime_lookahead_ticks "
                             f"{self.simulator.regime_lookahead_ticks}: raise the lookahead")
        if len(self.simulator.regime_vols) < 3 and self.events.forecast_false_alarm_share < 1:
            # it passed the load, then the events service refused to start
            raise ValueError("events.forecast_false_alarm_share must be 1 with two regimes "
                             "(simulator.regime_vols): a wrong forecast can name no other "
                             "regime, so every wrong one is a false alarm")

    def _check_start_prices(self) -> None:
        """The simulator opens SPX at `spx_start` and SPY at SPX / `spy_ratio`: an underlying's
        `start_price` that says otherwise would be silently ignored, and every strike, fair
        value and mark priced off another spot."""
        starts = {u.symbol: u.start_price for u in self.game.underlyings}
        sim = self.simulator
        opening = {"SPX": sim.spx_start, "SPY": sim.spx_start / sim.spy_ratio}
        for symbol, price in opening.items():  # in ticks: the simulator opens on a whole cent
            if symbol in starts and to_ticks(starts[symbol]) != round(price * TICKS_PER_UNIT):
                raise ValueError(
                    f"game.underlyings {symbol} start_price {starts[symbol]} disagrees with the "
                    f"simulator, which opens {symbol} at {price:g} (simulator.spx_start "
                    f"{sim.spx_start:g}, spy_ratio {sim.spy_ratio:g}): set them to agree")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def db_url(self) -> str:
        return self.db.url or f"sqlite:///{self.data_path.resolve() / 'itg.db'}"


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith("ITG_") or name == "ITG_CONFIG":
            continue
        path = name[4:].lower().split("__")
        setting = _setting(path)
        if setting is None:
            raise ConfigError(f"{name}: no such setting ({'.'.join(path)}); a setting's "
                              "variable is ITG_ and its path with __ between the parts, e.g. "
                              "ITG_GATEWAY__PORT")
        node = tree
        for depth, part in enumerate(path[:-1], start=1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                table = "ITG_" + "__".join(path[:depth]).upper()
                raise ConfigError(f"{name}: {table} is also set, to a value, not a table")
        value = _parse_literal(raw)
        node[path[-1]] = value if isinstance(value, str) or not _is_text(setting) else raw
    return tree


def _parse_literal(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _is_text(info: msgspec.inspect.Type) -> bool:
    """Whether a setting of this type takes text, so that a value that reads as a number is
    kept as written (an all-digit admin key or gateway id was refused: "expected str")."""
    kinds = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    return any(isinstance(kind, msgspec.inspect.StrType) for kind in kinds)


def _setting(path: list[str]) -> msgspec.inspect.Type | None:
    """The type of the setting at `path`, or None where there is no such setting."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(Config)
    for part in path:
        if isinstance(info, msgspec.inspect.StructType):
            found = next((f.type for f in info.fields if f.name == part), None)
            if found is None:
                return None
            info = found
        elif isinstance(info, msgspec.inspect.DictType):  # named entries: roles, hosts
            info = info.value_type
        else:
            return None
    return info


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _roles_over_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """A role's table changes only what it names: `[game.roles.market_maker]
    max_orders_per_s = 20` keeps every other role (the house teams' too: without them retail
    flow stops) and the market maker's other settings. A new role names every required field;
    `enabled = false` takes a role out of the game."""
    game = raw.get("game")
    if not isinstance(game, Mapping) or not isinstance(roles := game.get("roles"), Mapping):
        return raw
    merged: dict[str, Any] = {name: msgspec.to_builtins(role)
                              for name, role in _default_roles().items()}
    for name, table in roles.items():  # anything but a table is left for the type check
        merged[name] = _merge(merged.get(name, {}), table) if isinstance(table, Mapping) else table
    kept = {}
    for name, table in merged.items():
        enabled = table.pop("enabled", True) if isinstance(table, dict) else True
        if not isinstance(enabled, bool):
            raise ConfigError(f"game.roles.{name}.enabled: expected true or false")
        if enabled:
            kept[name] = table
    return {**raw, "game": {**game, "roles": kept}}


def only_roles(roles: Mapping[str, Any]) -> dict[str, Any]:
    """A `game.roles` table for a game of these roles alone: every default one disabled."""
    return {**{name: {"enabled": False} for name in _default_roles()}, **roles}


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """File, then environment, then explicit overrides (CLI flags); validated as a whole."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = path or env.get("ITG_CONFIG")
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path}: not UTF-8 text ({exc.reason} at byte "
                              f"{exc.start})") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    raw = _roles_over_defaults(_merge(_merge(raw, _env_overrides(env)), overrides or {}))
    try:
        return msgspec.convert(raw, Config, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config: {exc}") from exc


def describe(config: Config) -> str:
    """One log line with the effective config, secrets (admin key, database password)
    redacted: logged once at start."""
    if config.gateway.admin_key:
        config = msgspec.structs.replace(config, gateway=msgspec.structs.replace(
            config.gateway, admin_key="<redacted-admin-key>"))
    url = redacted_url(config.db.url)
    config = msgspec.structs.replace(config, db=msgspec.structs.replace(config.db, url=url))
    return msgspec.json.encode(config).decode()


def redacted_url(url: str) -> str:
    """A database URL to show (logs, errors, /health): its password hidden, as SQLAlchemy
    reads it (in the authority, or as a `password` query parameter, which psycopg takes too)."""
    if not url:
        return url
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<redacted: not a URL>"
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": "redacted"})
    return parsed.render_as_string(hide_password=True)
