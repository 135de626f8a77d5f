"""Pre-trade checks, run by the matcher thread against exact, current state.

Every constraint of GAME.md, configured per role. A reject names the rule, and its `details`
say what was asked, the limit and the current value. Checking changes nothing; the rate
window counts accepted orders only, so a rejected order leaves no trace in the state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from common.config import ORDER_TYPES, GameConfig, RoleConfig
from common.instruments import Instrument
from common.messages import NewOrder
from services.matcher.accounts import Account


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

    def check(
        self, o: NewOrder, acct: Account, ts_ns: int, phase: str, halted: set[str]
    ) -> Reject | None:
        role = self.roles[acct.role]
        return (
            self._shape(o, role)
            or self._market_state(o, phase, halted)
            or self._rate(acct, role, ts_ns)
            or self._position(o, acct, role)
        )

    def _shape(self, o: NewOrder, role: RoleConfig) -> Reject | None:
        if o.side not in ("buy", "sell"):
            return Reject("INVALID_SIDE", f"Invalid side: {o.side!r}", {"side": o.side})
        if o.order_type not in ORDER_TYPES:
            return Reject("INVALID_ORDER_TYPE", f"Invalid order type: {o.order_type!r}",
                          {"order_type": o.order_type})
        if o.instrument_id not in self.instruments:
            return Reject("INVALID_INSTRUMENT", f"Unknown instrument: {o.instrument_id}",
                          {"instrument_id": o.instrument_id})
        if o.order_type not in role.order_types:
            return Reject("ORDER_TYPE_NOT_ALLOWED", f"{o.order_type} orders are not allowed",
                          {"order_type": o.order_type, "allowed": list(role.order_types)})
        if o.order_type == "limit":
            if o.price is None:
                return Reject("MISSING_PRICE", "Limit orders need a price", {})
            if not 0 < o.price <= self.max_price:
                return Reject("INVALID_PRICE", "Price out of range",
                              {"price": o.price, "min": 1, "max": self.max_price})
        if not role.min_order_size <= o.quantity <= role.max_order_size:
            return Reject("INVALID_QUANTITY", "Quantity out of range",
                          {"quantity": o.quantity, "min": role.min_order_size,
                           "max": role.max_order_size})
        return None

    def _market_state(self, o: NewOrder, phase: str, halted: set[str]) -> Reject | None:
        if phase not in ACCEPTING_PHASES:
            return Reject("MARKET_CLOSED", f"Market is {phase}", {"phase": phase})
        if o.instrument_id in halted:
            return Reject("MARKET_CLOSED", f"{o.instrument_id} is halted",
                          {"phase": phase, "halted": True})
        if o.order_type == "market" and phase != "continuous":
            return Reject("MARKET_CLOSED", f"Market orders need continuous trading, not {phase}",
                          {"phase": phase, "order_type": "market"})
        return None

    @staticmethod
    def _rate(acct: Account, role: RoleConfig, ts_ns: int) -> Reject | None:
        current = acct.orders_in_window(ts_ns)
        if current >= role.max_orders_per_s:
            return Reject("RATE_LIMIT_EXCEEDED", "Order rate limit exceeded",
                          {"limit": role.max_orders_per_s, "window_s": 1, "current": current})
        return None

    def _position(self, o: NewOrder, acct: Account, role: RoleConfig) -> Reject | None:
        inst = self.instruments[o.instrument_id]
        after = acct.worst_case(o.instrument_id, o.side, o.quantity)
        limit = role.position_limit if inst.is_option else role.underlying_position_limit
        if after > limit:
            return self._limit_reject(role.position_limit_code, o, acct, limit, after)
        if not inst.is_option:
            return None
        total = acct.option_exposure - acct.exposure.get(o.instrument_id, 0) + after
        if total > role.total_position_limit:
            return self._limit_reject(role.position_limit_code, o, acct,
                                      role.total_position_limit, total, scope="total")
        return None

    @staticmethod
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
