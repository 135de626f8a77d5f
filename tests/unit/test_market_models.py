"""Statistical tests of the simulator's pure models on long seeded runs (deterministic, fast)."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter

import msgspec
import numpy as np
import pytest

from common.market_settings import (
    EventsSettings,
    Headline,
    SimulatorSettings,
    scale_matrix,
)
from common.messages import AccountReply, CancelOrder, Command, OpenOrder
from services.simulator.house import HouseSweeper
from services.simulator.models import (
    DOWN,
    UP,
    RegimeChain,
    SpyTracker,
    UnderlyingPath,
)
from services.simulator.pricing import (
    bs_delta,
    bs_price,
    fair_value_ticks,
    option_id,
    parse_option_id,
    to_ticks,
)
from services.simulator.retail import OrderIntent, RetailFlow

SETTINGS = SimulatorSettings()
CHAIN_IDS = [
    option_id(u, k, kind)
    for u, strikes in (("SPX", range(4200, 4601, 100)), ("SPY", range(420, 461, 10)))
    for k in strikes
    for kind in ("call", "put")
]


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def regime_path(chain: RegimeChain, ticks: int) -> np.ndarray:
    path = np.empty(ticks, dtype=np.int64)
    for t in range(ticks):
        path[t] = chain.current
        chain.step()
    return path


def run_lengths(path: np.ndarray) -> dict[int, list[int]]:
    """Completed stays per regime (the first and the last, censored, are dropped)."""
    change = np.flatnonzero(np.diff(path)) + 1
    runs: dict[int, list[int]] = {}
    for start, end in itertools.pairwise(change):
        runs.setdefault(int(path[start]), []).append(int(end - start))
    return runs


def assert_mean_close(samples: list[int] | list[float], expected: float) -> None:
    """Within four standard errors: a fixed seed passes, and so would almost any other."""
    values = np.asarray(samples, dtype=float)
    assert abs(values.mean() - expected) < 4 * values.std() / math.sqrt(values.size)
    assert values.mean() == pytest.approx(expected, rel=0.1)


# --- settings ---


def test_defaults_are_the_documented_game() -> None:
    s = SimulatorSettings()
    assert s.regime_vols == (0.10, 0.20, 0.50)
    assert s.regime_matrix[0] == (0.95, 0.04, 0.01)
    assert s.news_regime_matrix[2] == (0.05, 0.85, 0.10)
    assert (s.tracking_std, s.tracking_half_life_ticks, s.tracking_noise_std) == (
        0.0015,
        7.0,
        0.0005,
    )
    assert (s.jump_min, s.jump_max, s.tracking_lag_ticks) == (0.005, 0.03, 1)
    e = EventsSettings()
    assert (e.news_mean_gap_s, e.news_min_gap_s) == (9000.0, 1800.0)
    assert (e.forecast_accuracy, e.arb_accuracy, e.arb_threshold) == (0.66, 0.80, 0.0015)
    names = {h.headline for h in e.headlines}
    assert {"Fed announces emergency meeting", "Strong jobs report"} <= names
    assert "Markets quiet ahead of data" in names
    assert len(e.headlines) >= 8


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"regime_vols": (0.1, 0.2, -0.5)}, "regime_vols[2]"),
        ({"regime_vols": (0.1, 0.2)}, "regime_names"),
        ({"regime_matrix": ((0.9, 0.05, 0.04), (0.02, 0.94, 0.04), (0.01, 0.09, 0.9))},
         "regime_matrix"),
        ({"news_regime_matrix": ((0.0, 1.1, -0.1), (0.1, 0, 0.9), (0.05, 0.85, 0.1))},
         "news_regime_matrix[0][1]"),
        ({"regime_matrix": ((1.0,),)}, "regime_matrix"),
        ({"retail_market_share": 1.5}, "retail_market_share"),
        ({"tick_interval_s": 0.0}, "tick_interval_s"),
        ({"speed": math.nan}, "speed"),
        ({"jump_min": 0.05, "jump_max": 0.01}, "jump_min"),
        ({"retail_size_min": 10, "retail_size_max": 5}, "retail_size_min"),
        ({"initial_regime": 3}, "initial_regime"),
        ({"tracking_half_life_ticks": -1.0}, "tracking_half_life_ticks"),
    ],
)
def test_simulator_settings_reject_bad_values_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(field)}"):
        SimulatorSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"forecast_accuracy": -0.1}, "forecast_accuracy"),
        ({"arb_accuracy": 1.01}, "arb_accuracy"),
        ({"news_min_gap_s": 10_000.0}, "news_min_gap_s"),
        ({"headlines": ()}, "headlines"),
        ({"forecast_lead_min_ticks": 6}, "forecast_lead_min_ticks"),
        ({"forecast_accuracy": 0.0, "forecast_false_alarm_share": 1.0},
         "forecast_false_alarm_share"),
        ({"indicator_windows": (1,)}, "indicator_windows[0]"),
    ],
)
def test_events_settings_reject_bad_values_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(field)}"):
        EventsSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"p_jump": 0.5, "direction": "none"}, "p_jump"),
        ({"direction": "sideways"}, "direction"),
        ({"p_regime_shift": 2.0}, "p_regime_shift"),
        ({"magnitude_min": 0.02, "magnitude_max": 0.01}, "magnitude_min"),
        ({"headline": "  "}, "headline"),
    ],
)
def test_headline_rejects_bad_rows(kwargs: dict[str, object], field: str) -> None:
    row: dict[str, object] = {
        "headline": "x", "p_regime_shift": 0.1, "p_jump": 0.1, "direction": "up"
    }
    with pytest.raises(ValueError, match=f"^{re.escape(field)}"):
        Headline(**(row | kwargs))  # type: ignore[arg-type]


def test_settings_decode_validates_and_forbids_unknown_fields() -> None:
    ok = msgspec.json.decode(b'{"tick_interval_s": 0.5}', type=SimulatorSettings)
    assert ok.tick_interval_s == 0.5
    with pytest.raises(msgspec.ValidationError, match="regime_vols"):
        msgspec.convert({"regime_vols": [0.1, 0.2, 0.0]}, SimulatorSettings)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"speeed": 2.0}, SimulatorSettings)
    round_trip = msgspec.json.decode(msgspec.json.encode(EventsSettings()), type=EventsSettings)
    assert round_trip == EventsSettings()


def test_row_sum_tolerance_is_1e_9() -> None:
    eps = 5e-10
    near = ((0.95 + eps, 0.04, 0.01), (0.02, 0.94, 0.04), (0.01, 0.09, 0.90))
    SimulatorSettings(regime_matrix=near)
    far = ((0.95 + 1e-8, 0.04, 0.01), (0.02, 0.94, 0.04), (0.01, 0.09, 0.90))
    with pytest.raises(ValueError, match="regime_matrix"):
        SimulatorSettings(regime_matrix=far)


def test_matrix_scaling_to_the_tick_length() -> None:
    base = SETTINGS.regime_matrix
    assert np.allclose(scale_matrix(base, 1.0), base, atol=1e-12)
    half = np.array(SimulatorSettings(tick_interval_s=0.5).tick_regime_matrix())
    assert np.allclose(half.sum(axis=1), 1.0, atol=1e-12)
    assert np.allclose(np.diag(half) ** 2, np.diag(np.array(base)), atol=1e-12)
    # the destination mix of a move is unchanged
    assert half[0, 1] / half[0, 2] == pytest.approx(base[0][1] / base[0][2])


# --- regimes ---


def test_regime_transition_frequencies_match_the_matrix() -> None:
    path = regime_path(RegimeChain(SETTINGS, rng(1)), 200_000)
    counts = np.zeros((3, 3))
    np.add.at(counts, (path[:-1], path[1:]), 1)
    freq = counts / counts.sum(axis=1, keepdims=True)
    assert np.abs(freq - np.array(SETTINGS.regime_matrix)).max() < 0.006
    for regime, runs in run_lengths(path).items():
        expected = 1.0 / (1.0 - SETTINGS.regime_matrix[regime][regime])
        assert_mean_close(runs, expected)


def test_regime_dwell_time_in_game_seconds_survives_a_shorter_tick() -> None:
    fast = SimulatorSettings(tick_interval_s=0.5)
    path = regime_path(RegimeChain(fast, rng(2)), 200_000)
    for regime, runs in run_lengths(path).items():
        stay = fast.regime_matrix[regime][regime]
        expected_s = fast.tick_interval_s / (1.0 - stay**fast.tick_interval_s)
        assert_mean_close([r * fast.tick_interval_s for r in runs], expected_s)
        assert expected_s == pytest.approx(1.0 / (1.0 - stay), rel=0.03)


def test_lookahead_window_is_the_future_that_happens() -> None:
    chain = RegimeChain(SETTINGS, rng(3))
    assert len(chain.window()) == SETTINGS.regime_lookahead_ticks + 1
    windows = []
    path = []
    for _ in range(5000):
        windows.append(chain.window())
        path.append(chain.current)
        chain.step()
    for t, window in enumerate(windows[: len(path) - 6]):
        assert list(window) == path[t : t + len(window)]


def test_the_window_foresees_the_news_shifts_it_is_told_of() -> None:
    """A regime change caused by news is in the window as soon as the news is scheduled, so
    the hedge funds' forecast covers it like any other (GAME.md: ahead of each change)."""
    generator = rng(9)
    for offset in range(1, SETTINGS.regime_lookahead_ticks + 1):
        for _ in range(200):
            chain = RegimeChain(SETTINGS, generator, initial=int(generator.integers(3)))
            window = chain.window({offset})
            path = [chain.current]
            for k in range(1, len(window)):
                path.append(chain.step(shift=k == offset))
            assert list(window) == path


def test_news_shift_draws_from_the_news_matrix() -> None:
    generator = rng(4)
    for start in range(3):
        seen: Counter[int] = Counter()
        for _ in range(20_000):
            seen[RegimeChain(SETTINGS, generator, initial=start).step(shift=True)] += 1
        freq = [seen[i] / 20_000 for i in range(3)]
        assert np.allclose(freq, SETTINGS.news_regime_matrix[start], atol=0.015)


def test_the_game_masters_regime_is_in_force_unless_news_moves_it() -> None:
    chain = RegimeChain(SETTINGS, rng(5), initial=0)
    assert chain.step(start=2) == 2 and chain.vol == SETTINGS.regime_vols[2]
    shifted = Counter(RegimeChain(SETTINGS, rng(i), initial=0).step(shift=True, start=1)
                      for i in range(2000))
    assert shifted[1] == 0  # GAME.md's news matrix never stays in medium
    assert set(shifted) == {0, 2}


# --- SPX path ---


def test_realised_vol_per_regime_matches_the_configured_vols() -> None:
    generator = rng(6)
    chain = RegimeChain(SETTINGS, generator)
    spx = UnderlyingPath.spx(SETTINGS, generator)
    ticks = 200_000
    prices = np.empty(ticks + 1, dtype=np.int64)
    regimes = np.empty(ticks, dtype=np.int64)
    prices[0] = spx.price_ticks
    for t in range(ticks):
        regimes[t] = chain.current
        spx.step(chain.vol)
        prices[t + 1] = spx.price_ticks
        chain.step()
    returns = np.diff(np.log(prices.astype(float)))
    for regime, vol in enumerate(SETTINGS.regime_vols):
        r = returns[regimes == regime]
        assert r.size > 30_000
        realised = math.sqrt(np.mean(r**2) * SETTINGS.ticks_per_year)
        assert realised == pytest.approx(vol, rel=0.03), (regime, realised)
    # mu = 0: simple returns have no drift beyond sampling error
    simple = np.diff(prices.astype(float)) / prices[:-1]
    assert abs(simple.mean()) < 4 * simple.std() / math.sqrt(simple.size)


def test_published_prices_are_integer_ticks() -> None:
    spx = UnderlyingPath.spx(SETTINGS, rng(7))
    assert spx.price_ticks == 440_000
    spx.step(0.2)
    assert isinstance(spx.price_ticks, int)
    assert spx.price_ticks == round(spx.price * 100)


def test_jumps_move_the_price_by_the_stated_fraction() -> None:
    spx = UnderlyingPath(4400.0, SETTINGS.dt_years, rng(8))
    assert spx.apply_jump(DOWN, 0.02) == pytest.approx(4312.0)
    assert spx.apply_jump(UP, 0.01) == pytest.approx(4355.12)
    with pytest.raises(ValueError):
        spx.apply_jump(0, 0.01)
    with pytest.raises(ValueError):
        spx.apply_jump(UP, 1.5)
    for _ in range(3):  # crash after crash: the price stops at one tick, and still prices
        spx.apply_jump(DOWN, 0.999)
    assert spx.price == 0.01 and spx.price_ticks == 1
    assert bs_price(spx.price, 4400.0, 0.1, 0.2, True) >= 0.0


# --- SPY tracking ---


def test_spy_tracking_error_mean_reverts_with_the_configured_half_life() -> None:
    generator = rng(10)
    spx = UnderlyingPath.spx(SETTINGS, generator)
    spy = SpyTracker(SETTINGS, generator)
    ticks = 100_000
    spx_ticks = np.empty(ticks + 1, dtype=np.int64)
    spy_ticks = np.empty(ticks + 1, dtype=np.int64)
    latent = np.empty(ticks)
    spx_ticks[0], spy_ticks[0] = spx.price_ticks, spy.price_ticks
    for t in range(ticks):
        spy.step(spx.step(0.2))
        spx_ticks[t + 1], spy_ticks[t + 1] = spx.price_ticks, spy.price_ticks
        latent[t] = spy.tracking_error
    # the published prices alone show it: SPY against SPX one tick earlier
    observed = spy_ticks[1:] * SETTINGS.spy_ratio / spx_ticks[:-1] - 1.0
    expected_std = math.hypot(SETTINGS.tracking_std, SETTINGS.tracking_noise_std)
    assert observed.std() == pytest.approx(expected_std, rel=0.05)
    assert abs(observed.mean()) < 0.0002
    x = observed - observed.mean()
    acf1 = np.mean(x[1:] * x[:-1])
    acf2 = np.mean(x[2:] * x[:-2])
    half_life = math.log(0.5) / math.log(acf2 / acf1)  # noise does not bias this ratio
    assert half_life == pytest.approx(SETTINGS.tracking_half_life_ticks, abs=0.7)
    phi = np.corrcoef(latent[1:], latent[:-1])[0, 1]
    assert math.log(0.5) / math.log(phi) == pytest.approx(7.0, abs=0.5)
    assert latent.std() == pytest.approx(SETTINGS.tracking_std, rel=0.06)


def test_spy_lags_spx_by_one_tick() -> None:
    generator = rng(11)
    quiet = SimulatorSettings(tracking_std=0.0, tracking_noise_std=0.0)
    spx = UnderlyingPath.spx(quiet, generator)
    spy = SpyTracker(quiet, generator)
    previous = spx.price
    for _ in range(100):
        now = spx.step(0.5)
        assert spy.step(now) == pytest.approx(previous / 10.0, rel=1e-12)
        previous = now


def test_next_premium_is_what_the_next_step_shows() -> None:
    generator = rng(12)
    spy = SpyTracker(SETTINGS, generator)
    for _ in range(1000):
        promised = spy.next_premium
        spy.step(4400.0)
        assert spy.premium == promised


# --- Black-Scholes ---


@pytest.mark.parametrize(
    ("spot", "strike", "years", "vol", "is_call", "price", "delta"),
    [
        (100.0, 100.0, 1.0, 0.2, True, 7.965567, 0.539828),
        (100.0, 100.0, 1.0, 0.2, False, 7.965567, -0.460172),
        (4400.0, 4500.0, 30 / 365, 0.2, True, 59.494361, 0.358202),
        (4400.0, 4500.0, 30 / 365, 0.2, False, 159.494361, -0.641798),
        (440.0, 420.0, 0.25, 0.5, False, 33.509297, -0.377870),
        (440.0, 420.0, 0.25, 0.5, True, 53.509297, 0.622130),
        (4400.0, 4200.0, 7 / 365, 0.1, True, 200.006041, 0.999619),
    ],
)
def test_black_scholes_reference_values(
    spot: float, strike: float, years: float, vol: float, is_call: bool, price: float, delta: float
) -> None:
    assert bs_price(spot, strike, years, vol, is_call) == pytest.approx(price, abs=1e-5)
    assert bs_delta(spot, strike, years, vol, is_call) == pytest.approx(delta, abs=1e-5)


def test_put_call_parity_and_delta_by_finite_difference() -> None:
    generator = rng(13)
    for _ in range(500):
        spot, strike = generator.uniform(50, 5000), generator.uniform(50, 5000)
        years, vol = generator.uniform(0.001, 2.0), generator.uniform(0.05, 1.0)
        call = bs_price(spot, strike, years, vol, True)
        put = bs_price(spot, strike, years, vol, False)
        assert call - put == pytest.approx(spot - strike, abs=1e-9 * max(spot, strike))
        h = spot * 1e-5
        numeric = (bs_price(spot + h, strike, years, vol, True)
                   - bs_price(spot - h, strike, years, vol, True)) / (2 * h)
        assert bs_delta(spot, strike, years, vol, True) == pytest.approx(numeric, abs=1e-5)
        assert bs_delta(spot, strike, years, vol, False) == pytest.approx(numeric - 1, abs=1e-5)


def test_expiry_gives_intrinsic_value() -> None:
    assert bs_price(4450.0, 4400.0, 0.0, 0.2, True) == 50.0
    assert bs_price(4450.0, 4400.0, 0.0, 0.2, False) == 0.0
    assert bs_price(4350.0, 4400.0, 1.0, 0.0, False) == 50.0
    assert bs_delta(4450.0, 4400.0, 0.0, 0.2, True) == 1.0
    assert bs_delta(4400.0, 4400.0, 0.0, 0.2, False) == -0.5


def test_option_ids_and_ticks() -> None:
    spec = parse_option_id("SPX_4500_CALL")
    assert spec is not None
    assert (spec.underlying, spec.strike, spec.kind, spec.expiry) == ("SPX", 4500.0, "call", None)
    later = parse_option_id("SPY_440_PUT_20240119")
    assert later is not None and later.expiry == "20240119" and not later.is_call
    for bad in ("SPX", "SPX_4500", "SPX_abc_CALL", "SPX_4500_STRADDLE", "SPX_4500_CALL_2024"):
        assert parse_option_id(bad) is None
    assert option_id("SPX", 4500.0, "call") == "SPX_4500_CALL"
    assert option_id("SPY", 440.5, "put", "20240119") == "SPY_440.5_PUT_20240119"
    assert to_ticks(7.965567) == 797
    assert fair_value_ticks(spec, 4400.0, 30 / 365, 0.2) == 5949


# --- retail flow ---


def _retail_run(seed: int, ticks: int) -> tuple[list[OrderIntent], list[float]]:
    """Orders over `ticks` with a spot that wanders, plus the float fair of each order."""
    generator = rng(seed)
    flow = RetailFlow(SETTINGS, generator, ["SPX", "SPY", *CHAIN_IDS])
    spx = UnderlyingPath.spx(SETTINGS, generator)
    orders: list[OrderIntent] = []
    fairs: list[float] = []
    for _ in range(ticks):
        spot = spx.step(0.2)
        spots = {"SPX": spot, "SPY": spot / 10.0}
        for intent in flow.generate(spots, 0.2, 30 / 365):
            spec = parse_option_id(intent.instrument_id)
            assert spec is not None
            fairs.append(bs_price(spots[spec.underlying], spec.strike, 30 / 365, 0.2, spec.is_call))
            orders.append(intent)
    return orders, fairs


def test_retail_flow_shape_matches_the_configuration() -> None:
    ticks = 20_000
    orders, _ = _retail_run(14, ticks)
    n = len(orders)
    assert n / ticks == pytest.approx(3.0, rel=0.02)
    market = [o for o in orders if o.order_type == "market"]
    assert len(market) / n == pytest.approx(0.40, abs=0.01)
    assert all(o.price is None for o in market)
    limits = [o for o in orders if o.order_type == "limit"]
    assert all(isinstance(o.price, int) and o.price >= 1 for o in limits)
    assert sum(o.side == "buy" for o in orders) / n == pytest.approx(0.50, abs=0.01)
    calls = sum(o.instrument_id.endswith("CALL") for o in orders)
    assert calls / n == pytest.approx(0.60, abs=0.01)
    sizes = np.array([o.quantity for o in orders])
    assert sizes.min() >= 1 and sizes.max() <= 50
    assert sizes.mean() == pytest.approx(5.0, abs=0.3)
    strikes = Counter(
        o.instrument_id.split("_")[1] for o in orders if o.instrument_id.startswith("SPX")
    )
    assert strikes.most_common(1)[0][0] == "4400"  # at the money trades most
    assert strikes["4400"] > 2 * strikes["4200"] and strikes["4400"] > 2 * strikes["4600"]


def test_retail_flow_has_no_edge() -> None:
    orders, fairs = _retail_run(15, 20_000)
    edges = []  # what the retail trader gains against fair value, per unit
    offsets: dict[str, list[int]] = {"buy": [], "sell": []}  # limit minus published fair, ticks
    for order, fair in zip(orders, fairs, strict=True):
        if order.price is None:
            continue
        price = order.price / 100.0
        edges.append((fair - price) if order.side == "buy" else (price - fair))
        offsets[order.side].append(order.price - order.fair)
    edge = np.array(edges)
    assert abs(edge.mean()) < 4 * edge.std() / math.sqrt(edge.size)
    assert abs(edge.mean()) < 0.02 * edge.std()
    # buys are not placed at better prices relative to fair than sells
    buys, sells = np.array(offsets["buy"]), np.array(offsets["sell"])
    pooled = np.concatenate([buys, sells]).std()
    standard_error = pooled * math.sqrt(1 / buys.size + 1 / sells.size)
    assert abs(buys.mean() - sells.mean()) < 4 * standard_error


def test_retail_flow_needs_options_and_ignores_underlyings() -> None:
    with pytest.raises(ValueError):
        RetailFlow(SETTINGS, rng(16), ["SPX", "SPY"])
    flow = RetailFlow(SETTINGS, rng(16), ["SPX", "SPX_4400_CALL"])
    assert flow.underlyings == ("SPX",)
    intents = [i for _ in range(50) for i in flow.generate({"SPX": 4400.0}, 0.2, 0.1)]
    assert {i.instrument_id for i in intents} == {"SPX_4400_CALL"}  # puts fall back to calls


# --- determinism ---


def _game_bytes(seed: int, ticks: int = 3000) -> bytes:
    generator = rng(seed)
    chain = RegimeChain(SETTINGS, generator)
    spx = UnderlyingPath.spx(SETTINGS, generator)
    spy = SpyTracker(SETTINGS, generator)
    flow = RetailFlow(SETTINGS, generator, CHAIN_IDS)
    out = np.empty((ticks, 3), dtype=np.int64)
    intents = []
    for t in range(ticks):
        price = spx.step(chain.vol)
        if t % 700 == 0:
            spx.apply_jump(DOWN, 0.01)
        spy.step(price)
        out[t] = (spx.price_ticks, spy.price_ticks, chain.current)
        intents.extend(flow.generate({"SPX": spx.price, "SPY": spy.price}, chain.vol, 0.05))
        chain.step(shift=t % 700 == 0)
    return out.tobytes() + msgspec.msgpack.encode(intents)


def test_same_seed_same_game_bytes() -> None:
    first = _game_bytes(42)
    assert first == _game_bytes(42)
    assert first != _game_bytes(43)


# --- the house sweep ---


def test_retail_orders_age_in_the_matchers_time_not_the_sweepers() -> None:
    """Aged by the simulator's own clock, they were all cancelled at once when it ran ahead
    of the matcher's (another host), and none for an hour when the matcher's stepped back."""
    sent: list[Command] = []
    sweeper = HouseSweeper(["HOUSE"], ttl_s=300.0, rpc=None, send=sent.append)  # type: ignore[arg-type]
    now = 10**18  # the matcher's time: nothing here reads a clock
    orders = [OpenOrder(order_id=f"ORD_{age}", client_order_id=None, instrument_id="SPY",
                        side="buy", order_type="limit", price=100, quantity=1,
                        remaining_quantity=1, ts_ns=now - age * 10**9) for age in (1, 2, 4)]
    sweeper.on_reply(AccountReply(team_id="HOUSE", found=True, open_orders=orders,
                                  as_of_ns=now), speed=100.0)  # 300 game-s: 3 s of wall time
    assert [c.order_id for c in sent if isinstance(c, CancelOrder)] == ["ORD_4"]
    sweeper.on_reply(AccountReply(team_id="OTHER", found=True, open_orders=orders,
                                  as_of_ns=now), speed=100.0)  # not a house team: left alone
    assert len(sent) == 1
