"""Pre-trade checks, run by the matcher thread against exact, current state.

Every constraint of GAME.md, configured per role. A reject names the rule, and its `details`
say what was asked, the limit and the current value. Checking changes nothing; the rate
window counts accepted orders only, so a rejected order leaves no trace in the state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from common.config import ORDER_TYPES, GameConfig
from common.instruments import Instrument
from common.messages import NewOrder
from services.matcher.accounts import NS_PER_S, Account, worst_position


class Reject(NamedTuple):
    code: str
    message: str
    details: dict[str, Any]


ACCEPTING_PHASES = ("pre_open", "opening_auction", "continuous")


class Validator:
    def __init__(self, game: GameConfig, instruments: dict[str, Instrument]) -> None:
        self.roles = game.roles
        self.instruments = instruments
        self.max_price = game.max_price_ticks
        self._option = {iid: inst.is_option for iid, inst in instruments.items()}

    def check(
        self, o: NewOrder, acct: Account, ts_ns: int, phase: str, halted: set[str],
        expired: set[str],
    ) -> Reject | None:
        """The first rule broken, in a fixed order: shape, market state, rate, position.
        `halted`: every book no order reaches, the `expired` options' included.

        One flat function, because this runs for every order: each rule is a test or two, and
        only a broken rule pays for building its reject.
        """
        role = self.roles[acct.role]
        side, order_type, iid = o.side, o.order_type, o.instrument_id
        price, quantity = o.price, o.quantity
        # shape
        if side != "buy" and side != "sell":
            return Reject("INVALID_SIDE", f"Invalid side: {side!r}", {"side": side})
        if order_type not in ORDER_TYPES:
            return Reject("INVALID_ORDER_TYPE", f"Invalid order type: {order_type!r}",
                          {"order_type": order_type})
        option = self._option.get(iid)
        if option is None:
            return Reject("INVALID_INSTRUMENT", f"Unknown instrument: {iid}",
                          {"instrument_id": iid})
        if order_type not in role.order_types:
            return Reject("ORDER_TYPE_NOT_ALLOWED", f"{order_type} orders are not allowed",
                          {"order_type": order_type, "allowed": list(role.order_types)})
        if order_type == "limit":
            if price is None:
                return Reject("MISSING_PRICE", "Limit orders need a price",
                              {"order_type": order_type, "side": side,
                               "quantity": quantity})
            if not 0 < price <= self.max_price:
                return Reject("INVALID_PRICE", "Price out of range",
                              {"price": price, "min": 1, "max": self.max_price})
        if not role.min_order_size <= quantity <= role.max_order_size:
            return Reject("INVALID_QUANTITY", "Quantity out of range",
                          {"quantity": quantity, "min": role.min_order_size,
                           "max": role.max_order_size})
        # market state
        if phase != "continuous" or iid in halted:
            reject = _market_state(o, phase, halted, expired)
            if reject is not None:
                return reject
        # rate
        current = acct.orders_in_window(ts_ns)
        if current >= role.max_orders_per_s:
            return _rate_reject(acct, role.max_orders_per_s, current, ts_ns)
        # position: worst case with this order fully filled, resting orders included
        buys, sells = acct.open_buy.get(iid, 0), acct.open_sell.get(iid, 0)
        if side == "buy":
            buys += quantity
        else:
            sells += quantity
        after = worst_position(acct.positions.get(iid, 0), buys, sells)
        if not option:
            if after > role.underlying_position_limit:
                return _limit_reject(role.position_limit_code, o, acct,
                                     role.underlying_position_limit, after)
            return None
        if after > role.position_limit:
            return _limit_reject(role.position_limit_code, o, acct, role.position_limit, after)
        total = acct.option_exposure - acct.exposure.get(iid, 0) + after
        if total > role.total_position_limit:
            return _limit_reject(role.position_limit_code, o, acct, role.total_position_limit,
                                 total, scope="total")
        return None


def expired_reject(iid: str) -> Reject:
    return Reject("MARKET_CLOSED", f"{iid} has expired: its book is closed for good",
                  {"instrument_id": iid, "expired": True})


def _market_state(o: NewOrder, phase: str, halted: set[str],
                  expired: set[str]) -> Reject | None:
    if o.instrument_id in expired:  # for good, whatever the phase
        return expired_reject(o.instrument_id)
    if phase not in ACCEPTING_PHASES:
        return Reject("MARKET_CLOSED", f"Market is {phase}", {"phase": phase})
    if o.instrument_id in halted:
        return Reject("MARKET_CLOSED", f"{o.instrument_id} is halted",
                      {"phase": phase, "halted": True})
    if o.order_type == "market" and phase != "continuous":
        return Reject("MARKET_CLOSED", f"Market orders need continuous trading, not {phase}",
                      {"phase": phase, "order_type": "market"})
    return None


def _rate_reject(acct: Account, limit: int, current: int, ts_ns: int) -> Reject:
    """As the gateway's own refusal says it (most come from here when a team uses several
    gateways): the next order may go once the window's oldest orders but limit - 1 are out."""
    frees = acct.recent[len(acct.recent) - limit] + NS_PER_S - ts_ns
    return Reject("RATE_LIMIT_EXCEEDED", "Order rate limit exceeded", {
        "limit": limit, "window_s": 1, "current": current, "scope": "orders",
        "retry_after_s": round(frees / NS_PER_S, 3)})


def _limit_reject(
    code: str, o: NewOrder, acct: Account, limit: int, worst: int, scope: str = "instrument"
) -> Reject:
    iid = o.instrument_id
    return Reject(code, f"Position exceeds {scope} limit of {limit}", {
        "scope": scope, "limit": limit, "worst_case_after": worst,
        "position": acct.positions.get(iid, 0),
        "open_buy": acct.open_buy.get(iid, 0), "open_sell": acct.open_sell.get(iid, 0),
        "side": o.side, "quantity": o.quantity,
    })
