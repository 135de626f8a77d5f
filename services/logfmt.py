"""Log output for the `itg` command: plain lines for people, or one JSON object per line.

JSON lines (`--log-format json`, what supervisord.conf and the containers use) carry the time,
level, logger, service, pid and message as fields, plus the traceback when there is one, so a
log shipper can index them without parsing prose.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self.pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "service": self.service,
            "pid": self.pid, "thread": record.threadName, "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so a second setup replaces it rather than adding another."""


def setup(level: str, fmt: str = "text", service: str = "itg") -> None:
    """Configure the root logger for this process, unless its host already did (like
    logging.basicConfig: a program embedding `itg`, or pytest, keeps its own handlers)."""
    root = logging.getLogger()
    if any(not isinstance(h, _Handler) for h in root.handlers):
        return
    for old in list(root.handlers):
        root.removeHandler(old)
    handler = _Handler()
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else logging.Formatter(TEXT))
    root.addHandler(handler)
    root.setLevel(level)
