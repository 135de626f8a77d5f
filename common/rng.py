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
