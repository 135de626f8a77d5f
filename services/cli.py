"""The `itg` command: the embedded exchange, one service as its own process, the supervisord
cluster, recovery from the database, benchmarks and example bots. `itg COMMAND --help`."""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import secrets
import signal
import sys
import threading
import time
from typing import Any

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from common.bus_client import BusTimeout, MatcherClient
from common.config import SERVICES, Config, ConfigError, describe, load_config
from common.messages import AccountsQuery, AccountsReply, Ping, Pong
from common.service import freeze_heap, run_process
from services import benchmarks, logfmt
from services import cluster as cluster_cli
from services.dbwriter.recover import differences, rebuild, table
from services.launcher import SERVICE_CLASSES, Cluster, ClusterError

log = logging.getLogger("itg")
RECOVER_WAIT_S = 10.0  # for the matcher to answer, then for the DB writers to catch up


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="itg", description="Intern Trading Game exchange")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the embedded exchange: every service as a thread")
    _common(up)
    up.add_argument("--port", type=int, help="gateway HTTP port (default 8000)")
    up.add_argument("--seed", type=int, help="game seed")
    up.add_argument("--only", help="comma-separated subset of services, e.g. matcher,gateway")
    up.add_argument("--demo-bots", action="store_true",
                    help="also run example bots (market maker, hedge fund, arbitrage)")
    up.add_argument("--bots", type=int, metavar="N",
                    help="run N example bots (implies --demo-bots)")
    bot = sub.add_parser("bot", help="run an example bot against a gateway")
    bot.add_argument("name", help="market_maker | hedge_fund | arbitrage (or mm, hf, arb)")
    bot.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway's base URL")
    bot.add_argument("--team-name", help="team to register (default: a fresh name)")
    bot.add_argument("--seed", type=int, default=0, help="the bot's random seed")
    bot.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    rec = sub.add_parser("recover", help="rebuild positions and cash from the database alone")
    _common(rec)
    rec.add_argument("--check", action="store_true",
                     help="compare with the running matcher; exit 1 on any difference")
    svc = sub.add_parser("service", help="run one service as this process (ipc or tcp bus)")
    svc.add_argument("name", choices=SERVICES)
    _common(svc)
    cluster_cli.add_parser(sub)
    benchmarks.add_parser(sub)
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: built-in defaults)")
    p.add_argument("--data-dir", help="where journals, snapshots and databases live")
    p.add_argument("--log-format", choices=logfmt.FORMATS, default="text",
                   help="text lines, or one JSON object per line (for log shippers)")


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if getattr(args, "seed", None) is not None:
        overrides["game"] = {"seed": args.seed}
    if getattr(args, "port", None) is not None:
        overrides["gateway"] = {"port": args.port}
    return load_config(args.config, overrides=overrides)


def _up(config: Config, only: str | None, bots: int = 0) -> None:
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = _admin_key(config)
    cluster_cli.check_services(config, names)
    with Cluster(config, names) as cluster:
        freeze_heap()
        print(f"ITG exchange up: {', '.join(cluster.names)} (data in {config.data_dir}/). "
              "Ctrl-C stops it.", flush=True)
        _print_dashboard(cluster)
        demo = _demo_bots(cluster, bots)
        stop.wait()
        if demo is not None:
            demo.close()
    print("ITG exchange stopped.", flush=True)


def _admin_key(config: Config) -> Config:
    """The embedded exchange always has an operator: make up an admin key if none is set."""
    if config.gateway.admin_key:
        return config
    key = secrets.token_urlsafe(24)
    return msgspec.structs.replace(
        config, gateway=msgspec.structs.replace(config.gateway, admin_key=key))


def _print_dashboard(cluster: Cluster) -> None:
    gateway = cluster.services.get("gateway")
    if gateway is None:
        return
    host = cluster.config.gateway.host
    port = getattr(gateway, "port", cluster.config.gateway.port)
    print(f"Dashboard: http://{host}:{port}/dashboard   admin key (Operator tab, X-Admin-Key): "
          f"{cluster.config.gateway.admin_key}", flush=True)


def _demo_bots(cluster: Cluster, count: int) -> Any:
    gateway = cluster.services.get("gateway")
    if count <= 0 or gateway is None:
        return None
    from bots.run import start_demo  # the bot client library is only loaded when asked for

    port = getattr(gateway, "port", cluster.config.gateway.port)
    print(f"starting {count} demo bots on http://127.0.0.1:{port} "
          "(a leaderboard every 15 s)", flush=True)
    return start_demo(cluster.config, port, count)


def _bot(args: argparse.Namespace) -> int:
    from bots.run import kind_of, run_one

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        kind = kind_of(args.name)
    except ValueError as exc:
        print(f"itg: {exc}", file=sys.stderr)
        return 2
    return run_one(kind, args.url, args.team_name, args.seed, args.seconds)


def _service(config: Config, name: str) -> None:
    if config.bus.transport == "inproc":
        raise ConfigError("a service in its own process needs bus.transport = ipc or tcp")
    if name != "dbwriter":  # a DB writer waits for its database, as through an outage
        cluster_cli.check_services(config, [name])
    run_process(SERVICE_CLASSES[name](config))


def _recover(config: Config, check: bool) -> int:
    if check and config.bus.transport == "inproc":
        raise ClusterError("recover --check asks the running matcher: give the cluster's config "
                           "(bus transport ipc or tcp); inproc reaches only this process")
    live, stored = _live_accounts(config) if check else (None, 0)
    upto = None if live is None else live.record_seq
    try:  # with --check, as of the matcher's answer: trades since then are no difference
        db = rebuild(config, upto)
    except (SQLAlchemyError, FileNotFoundError) as exc:
        raise ClusterError(f"recover: cannot read the database: {exc}") from None
    print(table(db))
    if live is None:
        return 0
    diffs = differences(db, {a.team_id: a for a in live.accounts})
    if stored < live.record_seq:
        diffs.insert(0, f"the DB writers have stored the matcher's records up to {stored}, the "
                        f"state compared includes {live.record_seq}: is a DB writer down or "
                        f"behind?")
    print("\n".join(diffs) if diffs else f"all {len(db)} teams match the matcher")
    return 1 if diffs else 0


def _live_accounts(config: Config) -> tuple[AccountsReply, int]:
    """Every account, at one point of the matcher's state (and the record it includes), and
    how far the DB writers have stored the matcher's records, once they have stored every
    record that state includes (or after RECOVER_WAIT_S)."""
    client = MatcherClient(config)
    try:
        client.wait_ready(RECOVER_WAIT_S)
        live = client.call(AccountsQuery(), AccountsReply)
        deadline = time.monotonic() + RECOVER_WAIT_S
        stored = client.call(Ping(), Pong).records_stored
        if stored < live.record_seq:
            print(f"waiting up to {RECOVER_WAIT_S:g} s for the DB writers to store the "
                  f"matcher's records up to {live.record_seq} (stored: {stored})",
                  file=sys.stderr, flush=True)
        while stored < live.record_seq and time.monotonic() < deadline:
            time.sleep(0.1)
            stored = client.call(Ping(), Pong).records_stored
        return live, stored
    except BusTimeout:
        raise ClusterError(f"recover --check: the matcher did not answer within "
                           f"{RECOVER_WAIT_S:g} s; is the cluster running with this config?"
                           ) from None
    finally:
        client.close()


def _raise_fd_limit() -> None:
    """The soft limit on open files up to the hard one: each client connection is one
    (gateway.max_connections), and a soft limit of 1,024 is common."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "bot":
        return _bot(args)
    if args.command in ("cluster", "bench"):
        return cluster_cli.run(args) if args.command == "cluster" else benchmarks.run(args)
    try:
        config = _config(args)
        logfmt.setup(config.log_level, args.log_format,
                     args.name if args.command == "service" else "itg")
        # once, secrets redacted; a service's own log file gets it, a console only on DEBUG
        log.log(logging.INFO if args.command == "service" else logging.DEBUG,
                "effective config: %s", describe(config))
        if args.command in ("up", "service"):
            _raise_fd_limit()
        if args.command == "up":
            _up(config, args.only, args.bots if args.bots is not None else 3 * args.demo_bots)
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
