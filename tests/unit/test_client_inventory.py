"""The bots' own limit arithmetic agrees with the matcher's: `Inventory.room` never offers an
order the validator would refuse, and the stream's corrections keep resting orders exact."""

from __future__ import annotations

import random

from bots.api import Limits, OrderReply, WsMessage
from bots.base import SAFETY, Bot, Inventory
from bots.client import Client
from bots.pricing import black_scholes, parse, to_tick
from services.matcher.accounts import worst_position

LIMITS = Limits(position=50, total=200, underlying=1000, max_order_size=1000, orders_per_s=10)
OPTIONS = ["SPX_4400_CALL", "SPX_4400_PUT", "SPY_440_CALL"]


def random_inventory(rng: random.Random) -> Inventory:
    inv = Inventory(LIMITS)
    for n in range(rng.randint(0, 8)):
        iid = rng.choice([*OPTIONS, "SPX"])
        side = rng.choice(("buy", "sell"))
        inv.placed(iid, side, OrderReply(ok=True, order_id=f"o{n}", remaining_quantity=None,
                                         status="new"), rng.randint(1, 20), 1.0)
    for iid in [*OPTIONS, "SPX"]:
        inv.positions[iid] = rng.randint(-30, 30)
    return inv


def exchange_worst(inv: Inventory, iid: str, side: str = "buy", extra: int = 0) -> int:
    buys = sum(o.remaining for o in inv.orders.values() if o.iid == iid and o.side == "buy")
    sells = sum(o.remaining for o in inv.orders.values() if o.iid == iid and o.side == "sell")
    buys, sells = (buys + extra, sells) if side == "buy" else (buys, sells + extra)
    return worst_position(inv.positions.get(iid, 0), buys, sells)


def test_room_is_what_the_exchange_would_accept_within_the_safety_margin() -> None:
    rng = random.Random(5)
    for _ in range(300):
        inv = random_inventory(rng)
        iid, side = rng.choice([*OPTIONS, "SPX"]), rng.choice(("buy", "sell"))
        room = inv.room(iid, side)
        assert inv.worst(iid, side, room) == exchange_worst(inv, iid, side, room)
        if parse(iid) is None:
            cap = int(LIMITS.underlying * SAFETY)
            assert room == 0 or exchange_worst(inv, iid, side, room) <= cap
            continue
        others = sum(exchange_worst(inv, i) for i in OPTIONS if i != iid)
        after = exchange_worst(inv, iid, side, room)
        if room:
            assert after <= LIMITS.position * SAFETY
            assert others + after <= LIMITS.total * SAFETY
        if room < LIMITS.max_order_size:  # one more would not fit
            more = exchange_worst(inv, iid, side, room + 1)
            assert more > LIMITS.position * SAFETY or others + more > LIMITS.total * SAFETY


def test_stream_corrections_keep_resting_orders_exact() -> None:
    inv = Inventory(LIMITS)
    fill = {"instrument_id": "SPY", "side": "buy", "executed_quantity": 2, "order_id": "A",
            "remaining_quantity": 3}
    inv.filled(fill)  # the fill arrives before the REST answer of its order
    inv.placed("SPY", "buy", OrderReply(ok=True, order_id="A", remaining_quantity=5,
                                        status="new"), 5, 440.0)
    assert inv.orders["A"].remaining == 3 and inv.positions["SPY"] == 2
    inv.filled({**fill, "executed_quantity": 3, "remaining_quantity": 0})
    assert "A" not in inv.orders and inv.positions["SPY"] == 5
    inv.gone("B")  # a cancel_ack before its order's answer: it never rests here
    inv.placed("SPY", "sell", OrderReply(ok=True, order_id="B", remaining_quantity=4,
                                         status="new"), 4, 441.0)
    assert "B" not in inv.orders


def test_pricing_helpers() -> None:
    assert parse("SPX_4500_CALL") == ("SPX", 4500.0, True) and parse("SPY") is None
    call, put_option = parse("SPX_4400_CALL"), parse("SPX_4400_PUT")
    assert call is not None and put_option is not None
    price, delta = black_scholes(4400.0, call, 30 / 365, 0.2)
    assert 95 < price < 105 and 0.5 < delta < 0.55
    put, put_delta = black_scholes(4400.0, put_option, 30 / 365, 0.2)
    assert abs((price - put) - 0.0) < 1e-6 and abs(delta - put_delta - 1) < 1e-9  # parity, r=0
    assert to_tick(1.234) == 1.23 and to_tick(1.231, up=True) == 1.24 and to_tick(0.0) == 0.01
    assert to_tick(0.57) == 0.57 and repr(to_tick(57.0 / 100)) == "0.57"


def test_a_position_limit_reject_teaches_a_tighter_limit() -> None:
    inv = Inventory(LIMITS)
    inv.learn("SPX_4400_CALL", {"scope": "instrument", "limit": 20})
    inv.learn("SPX_4400_CALL", {"scope": "total", "limit": 80})
    inv.learn("SPY", {"scope": "instrument", "limit": 500})
    inv.learn("SPY", {"scope": "instrument", "limit": 5000})  # looser: ignored
    assert (inv.limits.position, inv.limits.total, inv.limits.underlying) == (20, 80, 500)
    assert inv.room("SPX_4400_CALL", "buy") == int(20 * SAFETY)


def test_a_bots_cash_is_summed_in_cents_like_the_exchanges() -> None:
    """It was a float sum: three SPY buys at 440.10, 440.20, 440.30 with 0.02 taker fees came
    to -1320.6599999999999 against the exchange's exact -1320.66."""
    with Client("http://127.0.0.1:9", api_key="itg_x") as client:
        bot = Bot(client, verbose=False)
    for seq, price in enumerate((440.10, 440.20, 440.30), start=1):
        bot.handle(WsMessage(seq=seq, type="execution_report", data={
            "order_id": f"O{seq}", "instrument_id": "SPY", "side": "buy", "executed_quantity": 1,
            "executed_price": price, "remaining_quantity": 0, "fees": -0.02}))
    assert bot.cash_cents == -132_066 and bot.cash == -1320.66
    assert bot.inv.positions == {"SPY": 3}
