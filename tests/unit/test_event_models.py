"""Statistical tests of the events service's pure models on long seeded runs."""

from __future__ import annotations

import math
from collections import Counter

import msgspec
import numpy as np
import pytest

from common.market_settings import EventsSettings, Headline, SimulatorSettings
from services.events.forecast import change_probability
from services.events.models import (
    Indicators,
    NewsEvent,
    NewsScheduler,
    Sentiment,
    TrackingReading,
    TrackingSignal,
    VolForecast,
    VolForecaster,
    direction_sign,
    forecast_is_right,
    tracking_call_is_right,
)
from services.simulator.models import RegimeChain, SpyTracker, UnderlyingPath

EVENTS = EventsSettings()
SIM = SimulatorSettings()


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def news_run(seed: int, count: int) -> list[NewsEvent]:
    """Poll exactly at each due time: the schedule itself, without polling granularity."""
    scheduler = NewsScheduler(EVENTS, rng(seed))
    events: list[NewsEvent] = []
    while len(events) < count:
        assert scheduler.poll(scheduler.next_due_s - 1e-6) is None
        event = scheduler.poll(scheduler.next_due_s)
        assert event is not None
        events.append(event)
    return events


# --- news ---


def test_news_gaps_have_the_configured_mean_and_never_undercut_the_minimum() -> None:
    events = news_run(1, 20_000)
    times = np.array([0.0] + [e.time_s for e in events])
    gaps = np.diff(times)
    assert gaps.min() >= EVENTS.news_min_gap_s
    assert gaps.mean() == pytest.approx(EVENTS.news_mean_gap_s, rel=0.02)
    # Poisson above the minimum: the excess is exponential, std == mean
    excess = gaps - EVENTS.news_min_gap_s
    assert excess.std() == pytest.approx(excess.mean(), rel=0.04)
    assert [e.index for e in events] == list(range(len(events)))


def test_news_polled_every_tick_keeps_the_minimum_gap() -> None:
    scheduler = NewsScheduler(EVENTS, rng(2))
    times = []
    for second in range(0, 5 * 86_400):
        event = scheduler.poll(float(second))
        if event is not None:
            times.append(event.time_s)
    gaps = np.diff(times)
    assert len(times) > 30
    assert gaps.min() >= EVENTS.news_min_gap_s
    assert gaps.mean() == pytest.approx(EVENTS.news_mean_gap_s, rel=0.35)


def test_news_follow_the_headline_table() -> None:
    events = news_run(3, 20_000)
    table = {h.headline: h for h in EVENTS.headlines}
    by_headline: dict[str, list[NewsEvent]] = {}
    for event in events:
        by_headline.setdefault(event.headline, []).append(event)
    assert set(by_headline) == set(table)
    share = 1.0 / len(table)  # default weights are equal
    for name, group in by_headline.items():
        row = table[name]
        assert len(group) / len(events) == pytest.approx(share, abs=0.01)
        assert np.mean([e.regime_shift for e in group]) == pytest.approx(
            row.p_regime_shift, abs=0.045
        )
        assert np.mean([e.jump for e in group]) == pytest.approx(row.p_jump, abs=0.045)
        assert all(e.direction == row.direction for e in group)
        assert all(row.magnitude_min <= e.magnitude <= row.magnitude_max for e in group)
    quiet = by_headline["Markets quiet ahead of data"]
    assert not any(e.jump for e in quiet)


def test_headline_weights_are_respected() -> None:
    rare = Headline(headline="rare", p_regime_shift=0.0, p_jump=0.0, direction="none", weight=1)
    common = Headline(headline="common", p_regime_shift=0.0, p_jump=0.0, direction="none", weight=3)
    scheduler = NewsScheduler(EventsSettings(headlines=(rare, common)), rng(4))
    seen: Counter[str] = Counter()
    for _ in range(8000):
        event = scheduler.poll(scheduler.next_due_s)
        assert event is not None
        seen[event.headline] += 1
    assert seen["common"] / 8000 == pytest.approx(0.75, abs=0.02)


def test_injected_news_pushes_the_next_arrival_past_the_minimum_gap() -> None:
    scheduler = NewsScheduler(EVENTS, rng(5))
    fed = EVENTS.headlines[0]
    event = scheduler.inject(fed, 100.0)
    assert event.headline == fed.headline and event.time_s == 100.0
    assert scheduler.next_due_s >= 100.0 + EVENTS.news_min_gap_s


# --- sentiment ---


def _event(direction: str, magnitude: float) -> NewsEvent:
    return NewsEvent(
        index=0, time_s=0.0, headline="h", direction=direction, magnitude=magnitude,
        regime_shift=False, jump=False,
    )


def test_sentiment_is_a_decaying_sum_of_direction_times_magnitude() -> None:
    sentiment = Sentiment(EVENTS)
    assert sentiment.add(_event("up", 0.02)) == pytest.approx(2.0)
    assert sentiment.advance(EVENTS.sentiment_half_life_s) == pytest.approx(1.0)
    assert sentiment.add(_event("down", 0.005)) == pytest.approx(0.5)
    assert sentiment.add(_event("none", 0.5)) == pytest.approx(0.5)
    for _ in range(10):  # decay composes: ten tenths of a half-life is one half-life
        sentiment.advance(EVENTS.sentiment_half_life_s / 10)
    assert sentiment.value == pytest.approx(0.25)
    with pytest.raises(ValueError):
        sentiment.advance(-1.0)
    assert [direction_sign(d) for d in ("up", "down", "none")] == [1, -1, 0]
    with pytest.raises(ValueError):
        direction_sign("sideways")


# --- hedge-fund volatility forecast ---


def _forecast_run(
    seed: int, ticks: int, settings: EventsSettings = EVENTS, sim: SimulatorSettings = SIM
) -> tuple[list[VolForecast], list[int]]:
    generator = rng(seed)
    chain = RegimeChain(sim, generator)
    forecaster = VolForecaster(settings, generator, sim.tick_regime_matrix(), sim.regime_vols)
    forecasts: list[VolForecast] = []
    path: list[int] = []
    for tick in range(ticks):
        path.append(chain.current)
        due = forecaster.observe(tick, chain.window())
        assert all(f.announce_tick == tick for f in due)
        forecasts.extend(due)
        chain.step()
    return [f for f in forecasts if f.target_tick < ticks], path


def test_vol_forecast_accuracy_leads_and_coverage() -> None:
    forecasts, path = _forecast_run(6, 150_000)
    right = [forecast_is_right(f, path) for f in forecasts]
    accuracy = float(np.mean(right))
    assert accuracy == pytest.approx(EVENTS.forecast_accuracy, abs=0.05)
    assert accuracy == pytest.approx(EVENTS.forecast_accuracy, abs=0.015)  # much tighter really
    leads = Counter(f.lead_ticks for f in forecasts)
    assert set(leads) == {1, 2, 3, 4, 5}
    assert min(leads.values()) > 0.18 * len(forecasts)  # uniform lead
    changes = [t for t in range(6, len(path)) if path[t] != path[t - 1]]
    targets = Counter(f.target_tick for f in forecasts)
    assert all(targets[t] == 1 for t in changes)  # every real change is announced once
    false_alarms = [f for f in forecasts if path[f.target_tick] == path[f.target_tick - 1]]
    wrong = len(forecasts) - sum(right)
    share = EVENTS.forecast_false_alarm_share
    assert len(false_alarms) / wrong == pytest.approx(share, abs=0.04)
    assert all(f.vol == SIM.regime_vols[f.regime] for f in forecasts)


def test_vol_forecast_accuracy_follows_its_setting() -> None:
    sharp = EventsSettings(forecast_accuracy=0.9, forecast_false_alarm_share=0.0)
    forecasts, path = _forecast_run(7, 60_000, sharp)
    assert np.mean([forecast_is_right(f, path) for f in forecasts]) == pytest.approx(0.9, abs=0.02)
    assert all(path[f.target_tick] != path[f.target_tick - 1] for f in forecasts)


def test_change_probability_is_the_stationary_switch_rate() -> None:
    path = np.array(_forecast_run(8, 100_000)[1])
    observed = np.mean(path[1:] != path[:-1])
    assert change_probability(SIM.regime_matrix) == pytest.approx(observed, abs=0.004)
    assert change_probability(SIM.regime_matrix) == pytest.approx(0.066737, abs=1e-5)


def test_two_regimes_allow_only_false_alarms() -> None:
    """A wrong forecast can name no regime but the one in force: with two, every wrong one is
    a false alarm (a config that says otherwise fails at load: see test_config)."""
    two = SimulatorSettings(regime_names=("calm", "stormy"), regime_vols=(0.1, 0.5),
                            initial_regime=0, regime_matrix=((0.95, 0.05), (0.05, 0.95)),
                            news_regime_matrix=((0.0, 1.0), (1.0, 0.0)))
    only_false = EventsSettings(forecast_false_alarm_share=1.0)
    forecasts, path = _forecast_run(9, 20_000, only_false, two)
    wrong = [f for f in forecasts if not forecast_is_right(f, path)]
    assert wrong and all(path[f.target_tick] == path[f.target_tick - 1] for f in wrong)
    assert {f.vol for f in forecasts} == {0.1, 0.5}


# --- arbitrage tracking signal ---


def _tracking_run(seed: int, ticks: int) -> tuple[list[TrackingReading], list[float]]:
    generator = rng(seed)
    spx = UnderlyingPath.spx(SIM, generator)
    spy = SpyTracker(SIM, generator)
    signal = TrackingSignal(EVENTS, generator)
    readings = []
    realised_next = []
    for tick in range(ticks):
        readings.append(signal.evaluate(tick, spy.premium, spy.next_premium))
        spy.step(spx.step(0.2))
        realised_next.append(spy.premium)
    return readings, realised_next


def test_tracking_direction_is_right_80_percent_above_the_threshold() -> None:
    readings, realised_next = _tracking_run(10, 100_000)
    calls = [(r, n) for r, n in zip(readings, realised_next, strict=True) if r.direction]
    assert all(abs(r.error) > EVENTS.arb_threshold for r, _ in calls)
    assert all(r.direction is None for r in readings if abs(r.error) <= EVENTS.arb_threshold)
    std = math.hypot(SIM.tracking_std, SIM.tracking_noise_std)
    expected_share = math.erfc(EVENTS.arb_threshold / std / math.sqrt(2))
    assert len(calls) / len(readings) == pytest.approx(expected_share, abs=0.02)
    accuracy = np.mean([tracking_call_is_right(r, n) for r, n in calls])
    assert accuracy == pytest.approx(EVENTS.arb_accuracy, abs=0.05)
    assert accuracy == pytest.approx(EVENTS.arb_accuracy, abs=0.01)
    assert tracking_call_is_right(readings[0], 0.0) in (None, True, False)


def test_tracking_signal_is_worth_more_than_betting_on_reversion() -> None:
    readings, realised_next = _tracking_run(11, 50_000)
    calls = [(r, n) for r, n in zip(readings, realised_next, strict=True) if r.direction]
    naive = np.mean([(n < r.error) == (r.error > 0) for r, n in calls])
    assert naive < EVENTS.arb_accuracy - 0.05


# --- indicators ---


def test_moving_averages_and_rsi_against_direct_computation() -> None:
    settings = EventsSettings(indicator_windows=(5, 20), rsi_window=14)
    indicators = Indicators(settings, SIM.ticks_per_year)
    prices = 100.0 + np.cumsum(rng(12).normal(0, 0.5, 400))
    snapshots = [indicators.update(float(p)) for p in prices]
    assert snapshots[3].sma[5] is None and snapshots[4].sma[5] == pytest.approx(prices[:5].mean())
    assert snapshots[-1].sma[20] == pytest.approx(prices[-20:].mean())
    assert snapshots[13].rsi is None and snapshots[14].rsi is not None
    changes = np.diff(prices)
    gain = np.clip(changes, 0, None)
    loss = np.clip(-changes, 0, None)
    avg_gain, avg_loss = gain[:14].mean(), loss[:14].mean()
    for g, lo in zip(gain[14:], loss[14:], strict=True):
        avg_gain, avg_loss = (avg_gain * 13 + g) / 14, (avg_loss * 13 + lo) / 14
    assert snapshots[-1].rsi == pytest.approx(100 - 100 / (1 + avg_gain / avg_loss))
    returns = np.diff(np.log(prices))[-20:]
    expected_vol = math.sqrt(np.mean(returns**2) * SIM.ticks_per_year)
    assert snapshots[-1].realised_vol[20] == pytest.approx(expected_vol)


def test_rsi_extremes() -> None:
    up = Indicators(EVENTS, SIM.ticks_per_year)
    down = Indicators(EVENTS, SIM.ticks_per_year)
    for i in range(30):
        last_up = up.update(100.0 + i)
        last_down = down.update(100.0 - i)
    assert last_up.rsi == 100.0 and last_down.rsi == 0.0


def test_realised_vol_indicator_reads_the_regime_vol() -> None:
    generator = rng(13)
    spx = UnderlyingPath.spx(SIM, generator)
    indicators = Indicators(EventsSettings(indicator_windows=(20_000,)), SIM.ticks_per_year)
    snapshot = indicators.update(spx.price)
    assert snapshot.realised_vol[20_000] is None
    for _ in range(20_000):  # one more price than the window: 20 000 returns
        snapshot = indicators.update(spx.step(0.5))
    assert snapshot.realised_vol[20_000] == pytest.approx(0.5, rel=0.03)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="finite and > 0"):
            indicators.update(bad)


# --- determinism ---


def _events_bytes(seed: int) -> bytes:
    news = news_run(seed, 300)
    forecasts, _ = _forecast_run(seed, 3000)
    readings, _ = _tracking_run(seed, 3000)
    return msgspec.msgpack.encode([news, forecasts, readings])


def test_same_seed_same_news_and_signals() -> None:
    first = _events_bytes(42)
    assert first == _events_bytes(42)
    assert first != _events_bytes(43)
