"""A bad config fails at load, with a message naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from common.config import BUS_OWNERS, ConfigError, load_config, only_roles
from common.transport import CHANNELS

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("section", "key", "value"), [
    ("matcher", "snapshot_interval_s", NAN),
    ("matcher", "snapshot_interval_s", INF),
    ("matcher", "snapshots_kept", 0),
    ("matcher", "md_replay_ring", -1),
    ("bus", "heartbeat_s", NAN),
    ("bus", "heartbeat_s", 0.0),
    ("gateway", "request_timeout_s", NAN),
    ("gateway", "negative_auth_ttl_s", INF),
    ("gateway", "dashboard_interval_s", NAN),
    ("gateway", "regime_delay_s", NAN),
    ("db", "batch_max_ms", NAN),
    ("db", "resend_after_s", NAN),
    ("db", "position_snapshot_interval_s", -5.0),
    ("db", "max_pending_records", 0),
    ("game", "max_price", 0.0),
    ("game", "seed", -1),
])
def test_a_value_out_of_range_fails_at_load_naming_the_key(section: str, key: str,
                                                           value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(env={}, overrides={section: {key: value}})


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe[matcher]\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, env={})


def test_an_env_override_below_a_plain_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ITG_MATCHER__MAX_BATCH: ITG_MATCHER is also set"):
        load_config(env={"ITG_MATCHER": "5", "ITG_MATCHER__MAX_BATCH": "3"})


@pytest.mark.parametrize("name", ["ITG_BOGUS", "ITG_GATEWAY__PORTS", "ITG_GATEWAY__PORT__X"])
def test_an_env_variable_that_names_no_setting_is_named_in_the_error(name: str) -> None:
    """The error named the field only ("unknown field 'bogus'"), not the variable to fix."""
    with pytest.raises(ConfigError, match=f"^{name}: no such setting"):
        load_config(env={name: "1", "ITG_GATEWAY__PORT": "9001"})


@pytest.mark.parametrize(("name", "value"), [
    ("ITG_BUS__HOSTS__MATCHER", "10.0.0.2:5550"), ("ITG_BUS__HOSTS__EVENTS", ""),
    ("ITG_BUS__BIND_HOST", "tcp://0.0.0.0")])
def test_a_bus_host_with_a_port_or_a_scheme_is_a_config_error(name: str, value: str) -> None:
    """It was accepted and made an address no peer reached (tcp://10.0.0.2:5550:5550): the
    service said it was ready and never heard from its peers."""
    key = name[len("ITG_BUS__"):].lower().replace("__", ".")
    with pytest.raises(ConfigError, match=f"{key}: {value!r} is not a host name"):
        load_config(env={name: value})
    assert load_config(env={name: "matcher-1.internal"})  # names and addresses are fine


SPX = {"symbol": "SPX", "start_price": 4400, "strike_min": 4200, "strike_max": 4600,
       "strike_step": 100}


def test_an_env_value_is_text_where_the_setting_is_text() -> None:
    """Env values read as TOML literals: an all-digit admin key or gateway id became a number
    and the load failed ("expected str"); numbers and quoted strings still read as before."""
    config = load_config(env={
        "ITG_GATEWAY__ADMIN_KEY": "2718281828459045235", "ITG_GATEWAY__ID": "7",
        "ITG_GATEWAY__PORT": "9001", "ITG_DB__URL": '"sqlite:///x.db"',
        "ITG_GAME__ROLES__RETAIL__MAX_ORDERS_PER_S": "3"})
    assert (config.gateway.admin_key, config.gateway.id) == ("2718281828459045235", "7")
    assert (config.gateway.port, config.db.url) == (9001, "sqlite:///x.db")
    assert config.game.roles["retail"].max_orders_per_s == 3


def test_start_prices_agree_with_the_simulator_to_the_cent() -> None:
    """spx_start 1000 / spy_ratio 3 opens SPY at 333.33: compared unrounded, no price passed."""
    spy = SPX | {"symbol": "SPY", "start_price": 333.33, "strike_min": 300, "strike_max": 360,
                 "strike_step": 10}
    spx = SPX | {"start_price": 1000, "strike_min": 900, "strike_max": 1100}
    config = load_config(env={}, overrides={"simulator": {"spx_start": 1000, "spy_ratio": 3},
                                            "game": {"underlyings": [spx, spy]}})
    assert [u.start_price for u in config.game.underlyings] == [1000, 333.33]


def test_a_role_table_changes_only_what_it_names() -> None:
    """It replaced every role: one tweak dropped the others and the house teams (no retail
    flow), and the environment form failed for want of the role's other fields."""
    default = load_config(env={}).game.roles
    tweaked = load_config(env={"ITG_GAME__ROLES__MARKET_MAKER__MAX_ORDERS_PER_S": "20"},
                          overrides={"game": {"roles": {"arbitrage": {"enabled": False}}}})
    roles = tweaked.game.roles
    assert set(roles) == set(default) - {"arbitrage"}
    assert roles["market_maker"] == msgspec.structs.replace(default["market_maker"],
                                                            max_orders_per_s=20)
    assert roles["house"] == default["house"]
    alone = load_config(env={}, overrides={"game": {"roles": only_roles(
        {"hedge_fund": {"position_limit": 7}})}}).game.roles
    assert list(alone) == ["hedge_fund"] and alone["hedge_fund"].position_limit == 7


@pytest.mark.parametrize(("overrides", "message"), [
    ({"log_level": "LOUD"}, "log_level must be one of"),
    ({"log_level": "info"}, "log_level must be one of"),
    ({"game": {"underlyings": []}}, "underlyings: at least one"),
    ({"game": {"underlyings": [SPX, SPX]}}, "each symbol once"),
    ({"game": {"underlyings": [SPX | {"multiplier": 0}]}}, "multiplier"),
    ({"game": {"underlyings": [SPX | {"start_price": -1}]}}, "start_price"),
    ({"game": {"underlyings": [SPX | {"symbol": "SP_X"}]}}, "symbol 'SP_X'"),
    ({"game": {"underlyings": [SPX | {"symbol": ""}]}}, "symbol ''"),
    ({"game": {"roles": only_roles({"house": {"maker_fee_cents": 0, "taker_fee_cents": 0,
                                              "position_limit": 1, "total_position_limit": 1,
                                              "max_order_size": 1, "max_orders_per_s": 1,
                                              "registrable": False}})}},
     "at least one must be registrable"),
    ({"game": {"roles": {"retail": {"enabled": "no"}}}}, "retail.enabled: expected true"),
    # the simulator opened at its own spx_start whatever the underlyings said
    ({"game": {"underlyings": [SPX | {"start_price": 5000, "strike_min": 4800,
                                      "strike_max": 5200}]}}, "SPX start_price 5000.0 disagrees"),
    ({"simulator": {"spy_ratio": 8.0}}, "SPY start_price 440 disagrees"),
    ({"simulator": {"price_tick": 0.05}}, "unknown field `price_tick`"),  # prices are cents
    ({"bus": {"hosts": {"sim": "10.0.0.2"}}}, r"hosts: unknown service\(s\) \['sim'\]"),
    ({"game": {"roles": {"newcomer": {"max_orders_per_s": 3}}}}, "maker_fee_cents"),
    # one order of 10**17 made a result the matcher could not publish, after journaling it
    ({"game": {"roles": {"market_maker": {"max_order_size": 10**17}}}},
     "market_maker.max_order_size: 100000000000000000 at max_price"),
    ({"game": {"max_price": 1e14}}, "max_order_size: 1000 at max_price"),
    ({"game": {"roles": {"house": {"underlying_position_limit": 10**17}}}},
     "roles.house: a position limit of 100000000000000000"),
    ({"simulator": {"regime_names": ["calm", "stormy"], "regime_vols": [0.1, 0.5],
                    "regime_matrix": [[0.95, 0.05], [0.05, 0.95]],
                    "news_regime_matrix": [[0.0, 1.0], [1.0, 0.0]]}},
     "events.forecast_false_alarm_share must be 1 with two regimes"),
    ({"events": {"forecast_lead_max_ticks": 10}},
     "forecast_lead_max_ticks 10 is beyond simulator.regime_lookahead_ticks 5"),
])
def test_a_game_or_log_setting_that_cannot_work_fails_at_load(overrides: dict[str, Any],
                                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, overrides=overrides)


def test_the_defaults_and_a_one_underlying_game_load() -> None:
    assert [u.symbol for u in load_config(env={}).game.underlyings] == ["SPX", "SPY"]
    config = load_config(env={}, overrides={"game": {"underlyings": [SPX]},
                                            "log_level": "DEBUG"})
    assert [u.symbol for u in config.game.underlyings] == ["SPX"]
    assert config.log_level == "DEBUG"


def test_the_hosts_a_config_may_name_are_the_services_that_bind() -> None:
    assert set(BUS_OWNERS) == {channel.owner for channel in CHANNELS.values()}
