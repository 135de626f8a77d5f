"""Retail limit orders expire: the house teams' stale resting orders are cancelled.

Stateless on purpose: every so often (in game time) the matcher is asked for the house teams'
resting orders, and those older than the TTL are cancelled. The matcher's answer is the truth,
so a lost frame or a restart of either side leaves nothing to reconcile. Order ages are the
matcher's time (the answer says what it is) scaled by the current speed: the simulator's own
clock, on another host or stepped, aged every order at once or none for an hour.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import zmq

from common.messages import AccountQuery, AccountReply, CancelOrder, Command, encode
from common.service import Socket

NS_PER_S = 1_000_000_000
SWEEPS_PER_TTL = 4


class HouseSweeper:
    def __init__(self, teams: Sequence[str], ttl_s: float, rpc: Socket,
                 send: Callable[[Command], None]) -> None:
        self.teams = tuple(teams)
        self.ttl_s = ttl_s
        self.rpc = rpc
        self._send = send
        self._next_game_s = ttl_s / SWEEPS_PER_TTL
        self.cancelled = 0

    def maybe_sweep(self, game_s: float) -> None:
        if self.ttl_s <= 0.0 or game_s < self._next_game_s:
            return
        self._next_game_s = game_s + self.ttl_s / SWEEPS_PER_TTL
        for team in self.teams:
            try:
                self.rpc.send(encode(AccountQuery(team_id=team)), zmq.NOBLOCK)
            except zmq.Again:  # no matcher: nothing rests there either
                return

    def on_reply(self, reply: AccountReply, speed: float) -> None:
        if speed <= 0.0 or reply.team_id not in self.teams:
            return
        max_age_ns = self.ttl_s / speed * NS_PER_S
        for order in reply.open_orders:
            if reply.as_of_ns - order.ts_ns > max_age_ns:
                self._send(CancelOrder(team_id=reply.team_id, order_id=order.order_id))
                self.cancelled += 1
