"""The game's random streams, all derived from `game.seed`, so a seed replays the whole game.

Every consumer gets its own child of one SeedSequence, always spawned in the same order, so a
stream's draws never depend on how many numbers another stream (or service) used.
"""

from __future__ import annotations

import numpy as np

# Append only: reordering or removing a name changes every game played with an old seed.
STREAMS = ("regime", "spx", "spy", "retail", "house", "news", "forecast", "tracking")


def game_streams(seed: int) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.default_rng(child) for name, child in zip(STREAMS, children,
                                                                      strict=True)}


class KeyedDraws:
    """Draws keyed by a number (a tick): the same for a key whatever was drawn, or seen, before.

    A stream drawn from in the order ticks are observed gives other numbers to a consumer that
    starts at another tick (a restart, a lost first frame); keyed, only what is keyed alike
    can differ."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._key = int(rng.integers(2**63))

    def at(self, key: int) -> np.random.Generator:
        return np.random.default_rng([self._key, key])
