"""API keys: random secrets shown once; the exchange only ever holds their SHA-256.

The matcher's team registry is the source of truth (it journals each key hash with the team),
so any gateway, including a restarted one, learns a key it has not seen by asking the matcher
(TeamQuery by hash) once, then serves it from its cache. Unknown keys are remembered briefly,
so a flood of bad keys costs the matcher at most one question per key per `negative_ttl_s`.
Keys are found by their hash: the timing of a lookup can tell at most a prefix of a SHA-256,
which says nothing of the key (a 256-bit random secret) and lets nobody make one that matches.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from common.messages import TeamInfo

KEY_PREFIX = "itg_"
MAX_KEY_LENGTH = 128

Lookup = Callable[[str], Awaitable[TeamInfo | None]]  # key hash -> its team, if any


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, lookup: Lookup, size: int, negative_ttl_s: float) -> None:
        self._lookup = lookup
        self._size = size
        self._negative_ttl = negative_ttl_s
        self._known: OrderedDict[str, TeamInfo] = OrderedDict()  # key hash -> team
        self._unknown: OrderedDict[str, float] = OrderedDict()
        self._reissues: int | None = None  # the last reissue we know of; None: none known yet
        self._forgets = 0  # times keys were forgotten: an answer asked for before is stale

    def remember(self, hashed: str, team: TeamInfo) -> None:
        self._known[hashed] = team
        self._unknown.pop(hashed, None)
        if len(self._known) > self._size:
            self._known.popitem(last=False)

    def reissued(self, team_id: str, seq: int) -> None:
        """The team's key was replaced (the `seq`th reissue): the next use of any key of the
        team asks the matcher again. After a gap, every key does: the lost one could be any."""
        if self._reissues is None or seq > self._reissues + 1:
            self._known.clear()
        else:
            for hashed in [h for h, team in self._known.items() if team.team_id == team_id]:
                del self._known[hashed]
        self._reissues = max(seq, self._reissues or 0)
        self._forgets += 1

    def reissues_seen(self, reissues: int) -> None:
        """The matcher's count of reissues (heartbeats): more than we were told of means one
        was lost, even the last; so is any before our first count (the cache may predate it)."""
        if self._reissues is None or reissues > self._reissues:
            self._known.clear()
            self._reissues = reissues
            self._forgets += 1

    async def team_for(self, key: str | None) -> TeamInfo | None:
        """The key's team, or None for a key that is malformed or not registered."""
        if not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
            return None
        hashed = key_hash(key)
        known = self._known.get(hashed)
        return known if known is not None else await self._ask(hashed)

    async def _ask(self, hashed: str) -> TeamInfo | None:
        now = time.monotonic()
        if self._unknown.get(hashed, 0.0) > now:
            return None
        while True:  # BusTimeout/BusUnavailable propagate: not a "no"
            forgets = self._forgets
            found = await self._lookup(hashed)
            # a reissue heard while the matcher's answer was on its way may postdate it: the
            # answer could name a key that no longer works, so it is asked again
            if forgets == self._forgets:
                break
        if found is None:
            self._unknown[hashed] = now + self._negative_ttl
            if len(self._unknown) > self._size:
                self._unknown.popitem(last=False)
            return None
        self.remember(hashed, found)
        return found
