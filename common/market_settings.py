"""Typed, validated numbers of the market model (GAME.md "Market model").

Two frozen sections, `simulator` and `events`, meant to be embedded in the project's single config
object. Every default is the documented game default; `__post_init__` rejects an inconsistent
value at load time (and on msgspec decode) with a message naming the field, so a bad config file
never reaches a running model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

Matrix = tuple[tuple[float, ...], ...]

ROW_SUM_TOLERANCE = 1e-9
DIRECTIONS = ("up", "down", "none")


def _require(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"{field}: {problem}")


def _check_probability(field: str, value: float) -> None:
    _require(math.isfinite(value) and 0.0 <= value <= 1.0, field, f"{value} is not in [0, 1]")


def _check_positive(field: str, value: float) -> None:
    _require(math.isfinite(value) and value > 0.0, field, f"{value} must be > 0")


def _check_non_negative(field: str, value: float) -> None:
    _require(math.isfinite(value) and value >= 0.0, field, f"{value} must be >= 0")


def _check_matrix(field: str, matrix: Sequence[Sequence[float]], size: int) -> None:
    """A row-stochastic square matrix matching the number of regimes."""
    _require(len(matrix) == size, field, f"has {len(matrix)} rows, expected {size}")
    for i, row in enumerate(matrix):
        _require(len(row) == size, field, f"row {i} has {len(row)} entries, expected {size}")
        for j, p in enumerate(row):
            _check_probability(f"{field}[{i}][{j}]", p)
        total = math.fsum(row)
        _require(
            abs(total - 1.0) <= ROW_SUM_TOLERANCE, field, f"row {i} sums to {total!r}, not 1"
        )


def _check_range(field: str, low: float, high: float) -> None:
    _require(low <= high, field, f"minimum {low} exceeds maximum {high}")


class Headline(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One row of the news table; `magnitude_*` are fractions of the price (0.01 = 1%)."""

    headline: str
    p_regime_shift: float
    p_jump: float
    direction: str  # "up" | "down" | "none"
    magnitude_min: float = 0.0
    magnitude_max: float = 0.0
    weight: float = 1.0  # relative chance of being drawn

    def __post_init__(self) -> None:
        _require(bool(self.headline.strip()), "headline", "must not be empty")
        _check_probability("p_regime_shift", self.p_regime_shift)
        _check_probability("p_jump", self.p_jump)
        _require(
            self.direction in DIRECTIONS, "direction", f"{self.direction!r} not in {DIRECTIONS}"
        )
        _require(
            self.direction != "none" or self.p_jump == 0.0,
            "p_jump",
            f"{self.headline!r} has no direction, so it cannot jump",
        )
        _check_non_negative("magnitude_min", self.magnitude_min)
        _require(self.magnitude_max < 1.0, "magnitude_max", f"{self.magnitude_max} must be < 1")
        _check_range("magnitude_min", self.magnitude_min, self.magnitude_max)
        _check_positive("weight", self.weight)


DEFAULT_HEADLINES: tuple[Headline, ...] = (
    Headline(
        headline="Fed announces emergency meeting",
        p_regime_shift=0.85, p_jump=0.60, direction="down",
        magnitude_min=0.01, magnitude_max=0.03,
    ),
    Headline(
        headline="Strong jobs report",
        p_regime_shift=0.40, p_jump=0.10, direction="up",
        magnitude_min=0.002, magnitude_max=0.005,
    ),
    Headline(
        headline="Markets quiet ahead of data",
        p_regime_shift=0.05, p_jump=0.0, direction="none",
    ),
    Headline(
        headline="Inflation comes in hotter than expected",
        p_regime_shift=0.50, p_jump=0.40, direction="down",
        magnitude_min=0.005, magnitude_max=0.015,
    ),
    Headline(
        headline="Mega-cap tech earnings beat estimates",
        p_regime_shift=0.20, p_jump=0.35, direction="up",
        magnitude_min=0.005, magnitude_max=0.015,
    ),
    Headline(
        headline="Geopolitical tensions escalate overnight",
        p_regime_shift=0.60, p_jump=0.45, direction="down",
        magnitude_min=0.01, magnitude_max=0.025,
    ),
    Headline(
        headline="Fed signals a pause in rate hikes",
        p_regime_shift=0.35, p_jump=0.30, direction="up",
        magnitude_min=0.005, magnitude_max=0.015,
    ),
    Headline(
        headline="Regional bank reports heavy deposit outflows",
        p_regime_shift=0.70, p_jump=0.50, direction="down",
        magnitude_min=0.01, magnitude_max=0.03,
    ),
    Headline(
        headline="Consumer confidence holds steady",
        p_regime_shift=0.10, p_jump=0.0, direction="none",
    ),
)

DEFAULT_REGIME_MATRIX: Matrix = (
    (0.95, 0.04, 0.01),
    (0.02, 0.94, 0.04),
    (0.01, 0.09, 0.90),
)
DEFAULT_NEWS_REGIME_MATRIX: Matrix = (
    (0.0, 0.70, 0.30),
    (0.10, 0.0, 0.90),
    (0.05, 0.85, 0.10),
)


def scale_matrix(matrix: Matrix, scale: float) -> Matrix:
    """Transition matrix for a step `scale` times the reference period.

    Each regime is left at a constant rate (the stay probability becomes stay**scale) and the
    destination keeps the original off-diagonal proportions, so scale 1 returns the matrix as is.
    """
    rows = []
    for i, row in enumerate(matrix):
        stay = row[i]
        leave = 1.0 - stay
        new_stay = stay**scale if stay > 0.0 else 0.0
        new_row = [
            new_stay if j == i else (p / leave * (1.0 - new_stay) if leave > 0.0 else 0.0)
            for j, p in enumerate(row)
        ]
        rows.append(tuple(new_row))
    return tuple(rows)


class SimulatorSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Underlying paths, volatility regimes, SPY tracking and retail flow."""

    tick_interval_s: float = 1.0  # game seconds per simulator tick
    speed: float = 1.0  # game seconds per wall second
    year_s: float = 365.0 * 86_400.0  # game seconds in a year, for annualised vols
    spx_start: float = 4400.0
    spy_ratio: float = 10.0  # SPY tracks SPX / spy_ratio
    regime_names: tuple[str, ...] = ("low", "medium", "high")
    regime_vols: tuple[float, ...] = (0.10, 0.20, 0.50)
    initial_regime: int = 1
    regime_matrix: Matrix = DEFAULT_REGIME_MATRIX  # per regime_matrix_period_s
    regime_matrix_period_s: float = 1.0
    news_regime_matrix: Matrix = DEFAULT_NEWS_REGIME_MATRIX  # one draw per regime-shift news
    regime_lookahead_ticks: int = 5  # pre-drawn regimes; must cover events.forecast_lead_max
    jump_min: float = 0.005  # range for a jump that carries no magnitude of its own
    jump_max: float = 0.03
    tracking_std: float = 0.0015  # stationary std of the SPY/SPX tracking error
    tracking_half_life_ticks: float = 7.0
    tracking_noise_std: float = 0.0005  # per-tick noise on top of the tracking error
    tracking_lag_ticks: int = 1
    retail_orders_per_tick: float = 3.0  # Poisson mean
    retail_size_mean: float = 5.0  # exponential mean before clipping
    retail_size_min: int = 1
    retail_size_max: int = 50
    retail_market_share: float = 0.40
    retail_buy_share: float = 0.50
    retail_call_share: float = 0.60
    retail_strike_width: float = 0.03  # std of strike choice around spot, fraction of spot
    retail_limit_offset: float = 0.02  # std of limit price around fair, fraction of fair
    retail_order_ttl_s: float = 300.0  # game seconds a retail limit order rests; 0 = no expiry
    option_expiry_s: float = 30.0 * 86_400.0  # game seconds from the start to the front expiry
    mark_every_ticks: int = 5  # marks go to the matcher this often, only for changed values
    max_catchup_ticks: int = 1000  # a clock further behind than this skips ahead instead
    news_wait_s: float = 5.0  # wall seconds to hold at a news tick for the next one; 0 = never
    status_log_s: float = 30.0  # wall seconds between status lines in the log; 0 = none

    def __post_init__(self) -> None:
        for name in ("tick_interval_s", "speed", "year_s", "spx_start", "spy_ratio"):
            _check_positive(name, getattr(self, name))
        self._check_regimes()
        self._check_tracking()
        self._check_retail()
        _check_probability("jump_min", self.jump_min)
        _require(self.jump_max < 1.0, "jump_max", f"{self.jump_max} must be < 1")
        _check_range("jump_min", self.jump_min, self.jump_max)
        self._check_service()

    def _check_service(self) -> None:
        _check_positive("option_expiry_s", self.option_expiry_s)
        _check_non_negative("retail_order_ttl_s", self.retail_order_ttl_s)
        _check_non_negative("status_log_s", self.status_log_s)
        _check_non_negative("news_wait_s", self.news_wait_s)
        _require(self.mark_every_ticks >= 1, "mark_every_ticks", "must be >= 1")
        _require(self.max_catchup_ticks >= 1, "max_catchup_ticks", "must be >= 1")

    def _check_regimes(self) -> None:
        n = len(self.regime_vols)
        _require(n >= 2, "regime_vols", "needs at least two regimes")
        _require(len(self.regime_names) == n, "regime_names", f"needs {n} names, one per vol")
        _require(len(set(self.regime_names)) == n, "regime_names", "names must be unique")
        for i, vol in enumerate(self.regime_vols):
            _check_positive(f"regime_vols[{i}]", vol)
        _require(0 <= self.initial_regime < n, "initial_regime", f"must be in [0, {n})")
        _check_matrix("regime_matrix", self.regime_matrix, n)
        _check_matrix("news_regime_matrix", self.news_regime_matrix, n)
        _check_positive("regime_matrix_period_s", self.regime_matrix_period_s)
        _require(self.regime_lookahead_ticks >= 1, "regime_lookahead_ticks", "must be >= 1")

    def _check_tracking(self) -> None:
        _check_non_negative("tracking_std", self.tracking_std)
        _check_positive("tracking_half_life_ticks", self.tracking_half_life_ticks)
        _check_non_negative("tracking_noise_std", self.tracking_noise_std)
        _require(self.tracking_lag_ticks >= 0, "tracking_lag_ticks", "must be >= 0")

    def _check_retail(self) -> None:
        _check_non_negative("retail_orders_per_tick", self.retail_orders_per_tick)
        _check_positive("retail_size_mean", self.retail_size_mean)
        _require(self.retail_size_min >= 1, "retail_size_min", "must be >= 1")
        _check_range("retail_size_min", self.retail_size_min, self.retail_size_max)
        for name in ("retail_market_share", "retail_buy_share", "retail_call_share"):
            _check_probability(name, getattr(self, name))
        _check_positive("retail_strike_width", self.retail_strike_width)
        _check_non_negative("retail_limit_offset", self.retail_limit_offset)

    @property
    def dt_years(self) -> float:
        """Length of one tick in years, the GBM time step."""
        return self.tick_interval_s / self.year_s

    @property
    def ticks_per_year(self) -> float:
        return self.year_s / self.tick_interval_s

    def tick_regime_matrix(self) -> Matrix:
        """`regime_matrix` rescaled from its reference period to one tick."""
        return scale_matrix(self.regime_matrix, self.tick_interval_s / self.regime_matrix_period_s)


class EventsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """News schedule and table, private signals and public indicators."""

    news_mean_gap_s: float = 2.5 * 3600.0  # game time
    news_min_gap_s: float = 30.0 * 60.0
    headlines: tuple[Headline, ...] = DEFAULT_HEADLINES
    forecast_accuracy: float = 0.66  # share of published vol forecasts that come true
    forecast_false_alarm_share: float = 0.5  # of the wrong forecasts, share with no change at all
    forecast_lead_min_ticks: int = 1
    forecast_lead_max_ticks: int = 5
    arb_threshold: float = 0.0015  # |tracking error| above which a direction is called
    arb_accuracy: float = 0.80
    sentiment_half_life_s: float = 3600.0  # game time
    indicator_windows: tuple[int, ...] = (20, 60, 300)  # ticks
    rsi_window: int = 14  # ticks

    def __post_init__(self) -> None:
        _check_positive("news_mean_gap_s", self.news_mean_gap_s)
        _check_non_negative("news_min_gap_s", self.news_min_gap_s)
        _check_range("news_min_gap_s", self.news_min_gap_s, self.news_mean_gap_s)
        _require(len(self.headlines) > 0, "headlines", "needs at least one headline")
        self._check_forecast()
        _check_non_negative("arb_threshold", self.arb_threshold)
        _check_probability("arb_accuracy", self.arb_accuracy)
        _check_positive("sentiment_half_life_s", self.sentiment_half_life_s)
        _require(len(self.indicator_windows) > 0, "indicator_windows", "needs a window")
        for i, window in enumerate(self.indicator_windows):
            _require(window >= 2, f"indicator_windows[{i}]", f"{window} must be >= 2")
        _require(self.rsi_window >= 1, "rsi_window", "must be >= 1")

    def _check_forecast(self) -> None:
        _check_probability("forecast_accuracy", self.forecast_accuracy)
        _check_probability("forecast_false_alarm_share", self.forecast_false_alarm_share)
        _require(
            self.forecast_false_alarm_share * (1.0 - self.forecast_accuracy) < 1.0,
            "forecast_false_alarm_share",
            "cannot be 1 when forecast_accuracy is 0 (every forecast would be a false alarm)",
        )
        _require(self.forecast_lead_min_ticks >= 1, "forecast_lead_min_ticks", "must be >= 1")
        _check_range(
            "forecast_lead_min_ticks", self.forecast_lead_min_ticks, self.forecast_lead_max_ticks
        )
