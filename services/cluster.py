"""`itg cluster up | down | status`: every service as its own process under supervisord.

`up` renders supervisord.conf into the data dir, checks what would otherwise fail later and
less clearly (a busy port, an unreachable database, a bad config, an ipc path too long),
starts supervisord from this interpreter's environment (the project's .venv), and waits with
progress output until every program runs and the gateway reports the market healthy.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from common.config import SERVICES, Config, ConfigError, load_config, redacted_url
from common.transport import CHANNELS, ipc_dir
from services.dbwriter.engine import make_sqlite_dir
from services.launcher import ClusterError
from services.supervisor import DEFAULT_CONFIG, REPO, TEMPLATE, Proc, Supervisor, render

MAX_IPC_PATH = 100  # AF_UNIX paths are limited to 107 bytes
FEEDS = ("matcher", "simulator", "events")  # services whose heartbeats the gateway reports


def add_parser(sub: Any) -> None:
    cluster = sub.add_parser(
        "cluster", help="the cluster as one process per service, under supervisord",
        description="Run every service as its own process (ipc or tcp bus) under supervisord "
                    "from this environment; see supervisord.conf.")
    actions = cluster.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start the cluster and wait until it is healthy")
    _data_dir(up)
    up.add_argument("--config", help=f"TOML config (default {DEFAULT_CONFIG.relative_to(REPO)})")
    up.add_argument("--dbwriters", type=int, help="DB writer processes (default: numprocs in "
                                                  "supervisord.conf)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health")
    down = actions.add_parser("down", help="stop every service in order, then supervisord")
    _data_dir(down)
    down.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    status = actions.add_parser("status", help="process states and the gateway's health")
    _data_dir(status)


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="where state, logs and supervisord's socket live "
                                      "(default: $ITG_DATA_DIR, else data/ in the repository)")


def run(args: argparse.Namespace) -> int:
    # the cluster's data dir is the command line's (or the environment's), for up, status and
    # down alike; a config file's data_dir is overridden (supervisord passes ITG_DATA_DIR)
    data = Path(args.data_dir or os.environ.get("ITG_DATA_DIR") or REPO / "data").resolve()
    try:
        if args.action == "up":
            return up(data, args.config, args.dbwriters, args.timeout)
        if args.action == "down":
            return down(data, args.timeout)
        return status(data)
    except (ClusterError, ConfigError) as exc:
        print(f"itg cluster: {exc}", file=sys.stderr)
        return 2


def _own_data_dir(config_path: Path) -> Path | None:
    try:
        return load_config(config_path, env={}).data_path.resolve()
    except ConfigError:  # complete only with the environment's settings: not ours to judge
        return None


def _say(line: str) -> None:
    print(line, flush=True)


# --- up ---


def up(data: Path, config_arg: str | None, dbwriters: int | None, timeout: float) -> int:
    sup = Supervisor(data / "supervisor.sock")
    if sup.running():
        raise ClusterError(f"a cluster is already running from {data}; see `itg cluster "
                           f"status{_flag(data)}` or stop it with `itg cluster down{_flag(data)}`")
    config_path = Path(config_arg or DEFAULT_CONFIG).resolve()
    if not config_path.is_file():
        raise ClusterError(f"config file {config_path} not found")
    if dbwriters is not None and dbwriters < 1:
        raise ClusterError("--dbwriters must be at least 1")
    config = load_config(config_path, env={**os.environ, "ITG_DATA_DIR": str(data)})
    if (own := _own_data_dir(config_path)) not in (None, data):
        _say(f"itg cluster: the config's data_dir ({own}) is not used: data goes to {data} "
             f"(--data-dir or ITG_DATA_DIR)")
    preflight(config, config_path)
    (data / "logs").mkdir(parents=True, exist_ok=True)
    conf = data / "supervisord.conf"
    bin_dir = Path(sys.executable).parent
    conf.write_text(render(TEMPLATE.read_text(), data, config_path, bin_dir, dbwriters))
    url = _gateway_url(config)
    (data / "cluster.json").write_text(json.dumps({"gateway": url, "config": str(config_path)}))
    _say(f"itg cluster: config {config_path}, data {data}, database {_db_label(config)}")
    _say(f"itg cluster: starting {bin_dir / 'supervisord'} -c {conf}")
    started = subprocess.run([str(bin_dir / "supervisord"), "-c", str(conf)],
                             capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise ClusterError(f"supervisord did not start: {started.stderr.strip()}")
    deadline = time.monotonic() + timeout
    procs = _wait_running(sup, deadline)
    _wait_healthy(url, deadline)
    _say(f"ITG cluster up: {len(procs)} processes running under supervisord.")
    _say(f"  API and docs: {url}/docs    health: {url}/health    metrics: {url}/metrics")
    _say(f"  logs: {data / 'logs'}/    status: itg cluster status{_flag(data)}    "
         f"stop: itg cluster down{_flag(data)}")
    return 0


def preflight(config: Config, config_path: Path) -> None:
    """Fail now, with the fix in the message, rather than as a restart loop later."""
    if config.bus.transport == "inproc":
        raise ClusterError(f"{config_path}: bus.transport must be ipc or tcp for a cluster of "
                           "processes (inproc is the embedded `itg up`)")
    if config.bus.transport == "ipc":
        longest = ipc_dir(config).resolve() / f"{max(CHANNELS, key=len)}.sock"
        if len(str(longest)) > MAX_IPC_PATH:
            raise ClusterError(f"ipc socket path {longest} is longer than {MAX_IPC_PATH} "
                               "characters; use a shorter --data-dir or set bus.ipc_dir")
    gw = config.gateway
    _port_free(gw.host, gw.port, "gateway.port (or ITG_GATEWAY__PORT)")
    if config.bus.transport == "tcp":
        host = "0.0.0.0" if config.bus.bind_host == "*" else config.bus.bind_host
        for name, channel in CHANNELS.items():
            port = config.bus.tcp_base_port + channel.port_offset
            _port_free(host, port, f"bus.tcp_base_port + {channel.port_offset} ({name})")
    check_database(config)


def check_services(config: Config, names: Sequence[str] | None = None) -> None:
    """Before `itg up` or `itg service NAME` starts anything: the gateway's port is free and
    the database answers, or a message that says which and what to do."""
    wanted = set(names or SERVICES)
    if "gateway" in wanted:
        _port_free(config.gateway.host, config.gateway.port, "--port or gateway.port")
    if "dbwriter" in wanted:
        check_database(config)


def _port_free(host: str, port: int, setting: str) -> None:
    if port == 0:
        return
    try:
        socket.create_server((host, port)).close()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ClusterError(f"port {port} on {host} is busy: another program holds it. "
                               f"Stop it or choose another port with {setting}") from exc
        raise ClusterError(f"cannot listen on {host}:{port} ({setting}): {exc}") from exc


def check_database(config: Config) -> None:
    if not config.db.url:
        return  # SQLite in the data dir: created by the first DB writer
    url = make_url(config.db.url)
    if url.get_backend_name() == "sqlite":
        make_sqlite_dir(config.db.url)  # the writer creates the file
        return
    args = {"connect_timeout": 5} if url.get_backend_name() == "postgresql" else {}
    engine = create_engine(url, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise ClusterError(f"database {_db_label(config)} is unreachable: "
                           f"{str(cause).strip().splitlines()[0]}. Start it, or fix db.url "
                           "(ITG_DB__URL)") from exc
    finally:
        engine.dispose()


def _db_label(config: Config) -> str:
    return redacted_url(config.db_url)


def _gateway_url(config: Config) -> str:
    host = config.gateway.host
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '', '::') else host}:{config.gateway.port}"


def _flag(data: Path) -> str:
    return "" if data == (REPO / "data").resolve() else f" --data-dir {data}"


def _wait_running(sup: Supervisor, deadline: float) -> list[Proc]:
    seen: dict[str, str] = {}
    while True:
        procs = sup.processes() if sup.running() else []
        for proc in procs:
            if seen.get(proc.name) != proc.state:
                seen[proc.name] = proc.state
                _say(f"  {proc.name:<22} {proc.state}")
            if proc.state == "FATAL":
                raise ClusterError(f"{proc.name} could not start; the end of {proc.log}:\n"
                                   + _tail(Path(proc.log)))
        if procs and all(p.state == "RUNNING" for p in procs):
            return procs
        if time.monotonic() > deadline:
            raise ClusterError("not every program is running in time: `itg cluster status`")
        time.sleep(0.2)


def _wait_healthy(url: str, deadline: float) -> None:
    _say(f"itg cluster: waiting for {url}/health to report the market")
    shown = ""
    while True:
        health = fetch_health(url)
        line = _health_line(health)
        if line != shown:
            _say(f"  {line}")
            shown = line
        if health is not None and health.get("status") == "ok" and all(
                health["services"].get(s, {}).get("alive") for s in FEEDS):
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"the gateway did not report healthy in time: {url}/health")
        time.sleep(0.3)


def fetch_health(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _health_line(health: dict[str, Any] | None) -> str:
    if health is None:
        return "gateway: not answering yet"
    parts = [f"status {health.get('status')}"]
    for name, info in sorted(health.get("services", {}).items()):
        if "alive" not in info:  # the DB writers: what they committed, per stream
            committed = ", ".join(f"{s} {n}" for s, n in info.get("committed_seq", {}).items())
            parts.append(f"{name} {'db ok' if info.get('readable') else 'db not readable'}"
                         + (f" ({committed})" if committed else ""))
            continue
        age = info.get("heartbeat_age_s")
        parts.append(f"{name} {'up' if info.get('alive') else 'DOWN'}"
                     + (f" ({age:.1f} s)" if isinstance(age, int | float) else ""))
    return ", ".join(parts)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc.strerror})"


# --- down and status ---


def down(data: Path, timeout: float) -> int:
    sup = Supervisor(data / "supervisor.sock")
    if not sup.running():
        _say(f"itg cluster: nothing is running from {data}")
        return 0
    pid = sup.pid()
    log = data / "supervisord.log"
    offset = log.stat().st_size if log.exists() else 0
    _say("itg cluster: stopping gateway, simulator, events, matcher, then the DB writers")
    sup.shutdown()
    deadline = time.monotonic() + timeout
    while _alive(pid):
        offset = _progress(log, offset)
        if time.monotonic() > deadline:
            raise ClusterError(f"supervisord (pid {pid}) still running after {timeout:g} s")
        time.sleep(0.2)
    _progress(log, offset)
    _say("ITG cluster stopped.")
    return 0


def _progress(log: Path, offset: int) -> int:
    """Echo supervisord's stop lines ("waiting for...", "stopped: ...") written since offset."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
    except OSError:
        return offset
    done = chunk.rfind(b"\n") + 1
    for line in chunk[:done].decode(errors="replace").splitlines():
        if "stopped:" in line or "waiting for" in line:
            _say(f"  {line.split(' ', 3)[-1]}")
    return offset + done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def status(data: Path) -> int:
    sup = Supervisor(data / "supervisor.sock")
    if not sup.running():
        _say(f"itg cluster: not running from {data}")
        return 3
    procs = sup.processes()
    for proc in procs:
        _say(f"{proc.name:<22} {proc.state:<9} {proc.description}")
    info = data / "cluster.json"
    if info.exists():
        url = json.loads(info.read_text())["gateway"]
        _say(f"gateway {url}: {_health_line(fetch_health(url))}")
    return 0 if all(p.state == "RUNNING" for p in procs) else 3
