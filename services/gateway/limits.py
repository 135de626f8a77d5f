"""Per-team request rates, checked at the gateway before anything reaches the matcher.

Orders: the role's `max_orders_per_s`. The matcher enforces the same limit on accepted orders
(it is the authority, across every gateway); this check spares it the excess. An order the
matcher refuses gives its slot back, so both count roughly the same orders.

Every other authenticated REST request (cancels, account and book reads, history):
`[gateway] max_requests_per_s` per team on this gateway. The spec is silent; without it a bot
looping on DELETE of unknown ids had every one journaled (fsynced) by the matcher.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

WINDOW_S = 1.0


class RateLimiter:
    """One sliding window of WINDOW_S per key."""

    def __init__(self, scope: str, enabled: bool = True) -> None:
        self.scope = scope  # in the refusal's details: which limit a client hit
        self.enabled = enabled
        self._windows: dict[str, deque[float]] = {}

    def admit(self, key: str, limit: int) -> dict[str, Any] | None:
        """Take a slot; None if admitted, else the details of the refusal."""
        if not self.enabled:
            return None
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = deque()
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            return {"limit": limit, "window_s": 1, "current": len(window), "scope": self.scope,
                    "retry_after_s": round(window[0] + WINDOW_S - now, 3)}
        window.append(now)
        return None

    def give_back(self, key: str) -> None:
        window = self._windows.get(key)
        if window:
            window.pop()
