"""The simulator's place in the game, kept across restarts of the service.

Started afresh, a restarted simulator opened the game again at tick 0: the marks jumped back to
the opening prices, and with the same seed it replayed the same path, so anyone who had logged
the first run knew every future price, news jump and regime. Instead the whole tick state (the
price paths, the regime chain, the random streams, shocks held for later ticks) and the game
speed are saved at most every CHECKPOINT_EVERY_S and at a clean stop, and a restart goes on
from there; ticks after the last save are computed again exactly as they were.

Kept beside the matcher's state in the data dir, and for the same game only: a checkpoint of
another game (another seed, other market settings or instruments), or holding objects whose
classes the code has since changed, is set aside (renamed, not deleted) and the game path starts
afresh. The service's own knobs (speed, status log, waits, the house sweep) and the roles'
limits are not the game's. Pickle, because the state is the step object itself (numpy
generators included); it is read only from our own data dir, like the matcher's journal.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from pathlib import Path
from typing import NamedTuple

import msgspec

from common.config import Config
from common.files import write_durably
from common.messages import canonical
from services.simulator.step import SimStep, build_step, house_teams

log = logging.getLogger(__name__)

CHECKPOINT_EVERY_S = 1.0
# How the service runs the game, not what the game is: changing them keeps the game.
SERVICE_KNOBS = frozenset({"speed", "status_log_s", "news_wait_s", "max_catchup_ticks",
                           "retail_order_ttl_s"})


class Saved(NamedTuple):
    fingerprint: str
    step: SimStep
    speed: float


class Checkpoint:
    def __init__(self, directory: Path, config: Config) -> None:
        self.path = directory / "checkpoint.pkl"
        self.fingerprint = fingerprint(config)
        self.failing = False  # the last save failed

    def load(self) -> Saved | None:
        """The saved game, or None for a new one (nothing saved, unreadable, another game)."""
        try:
            saved = pickle.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:  # torn or foreign: the game path starts afresh, said loudly
            self._set_aside(f"unreadable ({exc!r})")
            return None
        if not isinstance(saved, Saved) or saved.fingerprint != self.fingerprint:
            self._set_aside("of another game, or of objects the code has changed")
            return None
        return saved

    def save(self, step: SimStep, speed: float) -> None:
        """A save that fails (a full disk) is logged, once, and the game goes on: the file
        matters only to a restart, which then resumes from the last save that worked.
        Stopping the market for it made a restart loop that replayed the same second."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_durably(self.path, pickle.dumps(Saved(self.fingerprint, step, speed)))
        except OSError as exc:
            if not self.failing:
                log.error("simulator: checkpoint not saved (%s); the game goes on, and a "
                          "restart would resume from the last one saved", exc)
            self.failing = True
            return
        if self.failing:
            log.warning("simulator: checkpoint saved again at %s", self.path)
        self.failing = False

    def _set_aside(self, why: str) -> None:
        kept = self.path.with_name(f"checkpoint.set-aside-{time.time_ns()}.pkl")
        self.path.rename(kept)
        log.error("simulator: checkpoint %s; kept as %s, and the game starts afresh", why,
                  kept.name)


def fingerprint(config: Config) -> str:
    """What makes the game this game, and the shape of the objects a checkpoint holds."""
    sim = {k: v for k, v in msgspec.to_builtins(config.simulator).items()
           if k not in SERVICE_KNOBS}
    game = canonical((sim, config.game.seed, config.game.underlyings, house_teams(config)))
    shape = "\n".join(_shape(build_step(config))).encode()
    return hashlib.sha256(game + shape).hexdigest()


def _shape(obj: object) -> list[str]:
    """The classes and attribute names a pickle of `obj` holds, nested simulator objects
    included: code that changes them cannot take an old checkpoint (code that only behaves
    differently can, and the game goes on under it)."""
    lines = []
    for name, value in sorted(vars(obj).items()):
        lines.append(f"{type(obj).__qualname__}.{name}: {type(value).__qualname__}")
        if type(value).__module__.startswith("services.simulator.") and hasattr(value, "__dict__"):
            lines += _shape(value)
    return lines
