"""The bot client library and example bots.

    from bots import Client, AsyncClient
    client = Client("http://127.0.0.1:8000")
    client.register("my-team", "market_maker")
    client.place("SPX_4500_CALL", "buy", 5, 101.25)

Examples: bots/market_maker.py, bots/hedge_fund.py, bots/arbitrage.py (`itg bot NAME`).
Quants: bots/feed.py reads the ZeroMQ market feed directly.
"""

from bots.aclient import AsyncClient, AsyncStream
from bots.api import (
           ROLE_LIMITS,
           ApiError,
           Limits,
           OpenOrder,
           OrderBook,
           OrderReply,
           Team,
           WsMessage,
)
from bots.client import Client, Stream

__all__ = ["ROLE_LIMITS", "ApiError", "AsyncClient", "AsyncStream", "Client", "Limits",
           "OpenOrder", "OrderBook", "OrderReply", "Stream", "Team", "WsMessage"]
