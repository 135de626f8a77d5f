"""Read-only database access for the services that only look (gateway history, health):
SQLite opened with mode=ro (a missing file stays missing), PostgreSQL with read-only
transactions, so nothing on these connections can ever change a row."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url


def read_only_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return create_engine(f"sqlite:///file:{parsed.database}?mode=ro&uri=true",
                             connect_args={"check_same_thread": False})
    options = " ".join(filter(None, [str(parsed.query.get("options", "")),
                                     "-c default_transaction_read_only=on"]))
    return create_engine(parsed.difference_update_query(["options"]), pool_pre_ping=True,
                         connect_args={"options": options, "connect_timeout": 5})
