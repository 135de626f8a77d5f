"""Ticks from prices: the gateway's float path agrees with the strict Decimal one."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from common.money import EXACT_BELOW, float_to_ticks, from_ticks, to_ticks


def strict(value: float) -> int | None:
    try:
        return to_ticks(Decimal(repr(value)))
    except ValueError:
        return None


def fast(value: float) -> int | None:
    try:
        return float_to_ticks(value)
    except ValueError:
        return None


@given(st.integers(-10**12, 10**12))
def test_every_price_on_the_tick_is_taken_exactly(ticks: int) -> None:
    assert float_to_ticks(ticks / 100) == ticks
    assert float_to_ticks(float(str(from_ticks(ticks)))) == ticks  # as a JSON parser reads it


@given(st.one_of(st.floats(-1e12, 1e12), st.sampled_from([float("nan"), float("inf"),
                                                          -float("inf")])))
@example(0.1 + 0.2)  # 0.30000000000000004: off the tick, though it prints close to 0.30
@example(100.005)
@example(-0.0)
@example(1e-300)
def test_any_float_gets_the_strict_answer(value: float) -> None:
    assert fast(value) == strict(value)


@given(st.integers(-10**6, 10**6), st.integers(1, 9))
def test_a_third_decimal_is_refused(cents: int, digit: int) -> None:
    value = float(f"{cents / 100:.2f}{digit}")
    assert fast(value) is None and strict(value) is None


def test_non_numbers_are_refused() -> None:
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="finite"):
            float_to_ticks(value)


@pytest.mark.parametrize("value", [1.7e308, -1.7e308, 1e300, EXACT_BELOW])
def test_magnitudes_beyond_exact_conversion_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="too large"):
        float_to_ticks(value)
