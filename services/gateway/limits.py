"""Per-team order rate, checked at the gateway before anything reaches the matcher.

The matcher enforces the same limit on accepted orders (it is the authority, across every
gateway); this check spares it the excess. An order the matcher refuses gives its slot back,
so both count roughly the same orders.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from common.config import RoleConfig

WINDOW_S = 1.0


class RateLimiter:
    def __init__(self, roles: dict[str, RoleConfig], enabled: bool = True) -> None:
        self.roles = roles
        self.enabled = enabled
        self._windows: dict[str, deque[float]] = {}

    def admit(self, team_id: str, role: str) -> dict[str, Any] | None:
        """Take a slot; None if admitted, else the details of the refusal."""
        rules = self.roles.get(role)
        if not self.enabled or rules is None:
            return None
        now = time.monotonic()
        window = self._windows.get(team_id)
        if window is None:
            window = self._windows[team_id] = deque()
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        if len(window) >= rules.max_orders_per_s:
            return {"limit": rules.max_orders_per_s, "window_s": 1, "current": len(window),
                    "retry_after_s": round(window[0] + WINDOW_S - now, 3)}
        window.append(now)
        return None

    def give_back(self, team_id: str) -> None:
        window = self._windows.get(team_id)
        if window:
            window.pop()
