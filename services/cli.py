"""The `itg` command: run the embedded exchange, or one service as its own process."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from common.bus_client import MatcherClient
from common.config import SERVICES, Config, ConfigError, load_config
from common.messages import AccountQuery, AccountReply
from common.service import run_process
from services.dbwriter.recover import differences, rebuild, table
from services.launcher import BUILT, Cluster, ClusterError

log = logging.getLogger("itg")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="itg", description="Intern Trading Game exchange")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the embedded exchange: every service as a thread")
    _common(up)
    up.add_argument("--port", type=int, help="gateway HTTP port (default 8000)")
    up.add_argument("--seed", type=int, help="game seed")
    up.add_argument("--only", help="comma-separated subset of services, e.g. matcher,gateway")
    rec = sub.add_parser("recover", help="rebuild positions and cash from the database alone")
    _common(rec)
    rec.add_argument("--check", action="store_true",
                     help="compare with the running matcher; exit 1 on any difference")
    svc = sub.add_parser("service", help="run one service as this process (ipc or tcp bus)")
    svc.add_argument("name", choices=SERVICES)
    _common(svc)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: built-in defaults)")
    p.add_argument("--data-dir", help="where journals, snapshots and databases live")


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "seed", None) is not None:
        overrides["game"] = {"seed": args.seed}
    if getattr(args, "port", None) is not None:
        overrides["gateway"] = {"port": args.port}
    return load_config(args.config, overrides=overrides)


def _up(config: Config, only: str | None) -> None:
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Cluster(config, names) as cluster:
        print(f"ITG exchange up: {', '.join(cluster.names)} (data in {config.data_dir}/). "
              "Ctrl-C stops it.", flush=True)
        stop.wait()
    print("ITG exchange stopped.", flush=True)


def _service(config: Config, name: str) -> None:
    if config.bus.transport == "inproc":
        raise ConfigError("a service in its own process needs bus.transport = ipc or tcp")
    if name not in BUILT:
        raise ClusterError(f"service {name!r} is not built yet; built: {', '.join(BUILT)}")
    run_process(BUILT[name](config))


def _recover(config: Config, check: bool) -> int:
    db = rebuild(config)
    print(table(db))
    if not check:
        return 0
    client = MatcherClient(config)
    try:
        client.wait_ready(10)
        live = {t: client.call(AccountQuery(team_id=t), AccountReply) for t in db}
    finally:
        client.close()
    diffs = differences(db, live)
    print("\n".join(diffs) if diffs else f"all {len(db)} teams match the matcher")
    return 1 if diffs else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _config(args)
        logging.basicConfig(level=config.log_level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.command == "up":
            _up(config, args.only)
        elif args.command == "recover":
            return _recover(config, args.check)
        else:
            _service(config, args.name)
    except (ConfigError, ClusterError) as exc:
        print(f"itg: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
