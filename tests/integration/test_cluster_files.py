"""supervisord.conf, docker-compose.yml and the Dockerfile describe the same cluster: the same
services, commands, start and stop order, stop timeouts and bus addresses. No Docker engine
runs here, so compose is checked as a file; supervisord.conf is parsed by supervisor itself."""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from supervisor.options import ServerOptions

from common.config import SERVICES, Config, load_config
from common.transport import CHANNELS, PUBLIC, address
from services.cli import main
from services.supervisor import REPO, TEMPLATE, render

CONFIG = REPO / "config" / "cluster.toml"
START_ORDER = ["dbwriter", "matcher", "events", "simulator", "gateway"]
COMPOSE_ENV = {"POSTGRES_PASSWORD": "s3cret-for-the-test", "EXCHANGE_ADMIN_KEY": ""}
_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def substitute(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ${X}, ${X:-default}, ${X:?error}."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if op.endswith("?"):
            assert env.get(name), f"${{{name}}} is required: {arg}"
        return env.get(name) or (arg if op.endswith("-") else "")
    return _VAR.sub(one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return doc


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """supervisord.conf as supervisord itself reads it, rendered for a data dir."""
    data = tmp_path_factory.mktemp("sup")
    (data / "logs").mkdir()
    conf = data / "supervisord.conf"
    conf.write_text(render(TEMPLATE.read_text(), data, CONFIG, Path(sys.executable).parent, 3))
    options = ServerOptions()
    options.configfile = str(conf)
    options.process_config(do_usage=False)
    return {g.name: g for g in options.process_group_configs}


def normalized(argv: list[str]) -> list[str]:
    """A command with the install location taken out of paths (the .venv or the image)."""
    out = [Path(argv[0]).name]
    for arg in argv[1:]:
        out.append(arg[arg.index("config/"):] if arg.endswith(".toml") else arg)
    return out


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    return {k: substitute(str(v), COMPOSE_ENV) for k, v in service["environment"].items()}


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def test_the_same_services_and_commands(compose: dict[str, Any],
                                        programs: dict[str, Any]) -> None:
    apps = {name: svc for name, svc in compose["services"].items() if name != "postgres"}
    assert set(programs) == set(apps) == set(SERVICES)
    for name, group in programs.items():
        commands = {tuple(normalized(shlex.split(p.command))) for p in group.process_configs}
        assert commands == {tuple(normalized(apps[name]["command"]))}, name
        assert next(iter(commands))[:3] == ("itg", "service", name)
    assert CONFIG.is_file()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^WORKDIR /app$", dockerfile, re.M)  # so /app/config/cluster.toml is it
    assert re.search(r"^COPY config config$", dockerfile, re.M)
    assert all(a["command"][4] == "/app/config/cluster.toml" for a in apps.values())


def test_one_image_and_no_baked_in_secrets(compose: dict[str, Any]) -> None:
    apps = [svc for name, svc in compose["services"].items() if name != "postgres"]
    assert {(a["build"], a["image"]) for a in apps} == {(".", "itg-exchange:latest")}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "pip install ." in dockerfile and re.search(r"^USER \w+", dockerfile, re.M)
    assert not re.search(r"(?i)^(ENV|ARG).*(password|secret|key)", dockerfile, re.M)
    text = (REPO / "docker-compose.yml").read_text()
    for line in text.splitlines():  # a secret only ever comes from the environment, required
        if "POSTGRES_PASSWORD" in line and not line.lstrip().startswith("#"):
            assert "${POSTGRES_PASSWORD:?" in line, line
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        substitute(compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"], {})


def test_postgres_has_a_volume_and_a_health_check_and_writers_wait_for_it(
    compose: dict[str, Any],
) -> None:
    pg = compose["services"]["postgres"]
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert pg["volumes"][0].split(":")[0] in compose["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert compose["services"]["dbwriter"]["depends_on"]["postgres"]["condition"] == (
        "service_healthy")
    url = compose_env(compose["services"]["dbwriter"])["ITG_DB__URL"]
    assert url.startswith("postgresql+psycopg://itg:s3cret-for-the-test@postgres:5432/")


def _compose_order(services: dict[str, Any]) -> list[str]:
    """Start order implied by depends_on (compose stops in the reverse order)."""
    order: list[str] = []
    pending = {n: set(s.get("depends_on", ())) - {"postgres"} for n, s in services.items()
               if n != "postgres"}
    while pending:
        ready = sorted(n for n, deps in pending.items() if deps <= set(order))
        assert len(ready) == 1, f"start order is ambiguous or cyclic: {ready or pending}"
        order.append(ready[0])
        del pending[ready[0]]
    return order


def test_the_same_start_and_stop_order_timeouts_and_restarts(
    compose: dict[str, Any], programs: dict[str, Any]
) -> None:
    by_priority = [g.name for g in sorted(programs.values(), key=lambda g: g.priority)]
    assert by_priority == _compose_order(compose["services"]) == START_ORDER
    for name, group in programs.items():
        svc = compose["services"][name]
        assert {p.stopwaitsecs for p in group.process_configs} == {
            seconds(svc["stop_grace_period"])}, name
        assert all(p.autorestart and p.stopsignal == 15 for p in group.process_configs)
        assert svc["restart"] == "unless-stopped"
        assert all(p.stdout_logfile and p.redirect_stderr for p in group.process_configs)
    writers = [p.name for p in programs["dbwriter"].process_configs]
    assert writers == ["dbwriter_0", "dbwriter_1", "dbwriter_2"]  # numprocs, --dbwriters 3
    scalable = compose["services"]["dbwriter"]
    assert "container_name" not in scalable and "ports" not in scalable


def _configs(envs: Mapping[str, Mapping[str, str]]) -> dict[str, Config]:
    return {name: load_config(CONFIG, env=env) for name, env in envs.items()}


def test_the_same_bus_addresses(compose: dict[str, Any], programs: dict[str, Any]) -> None:
    apps = {n: s for n, s in compose["services"].items() if n != "postgres"}
    containers = _configs({n: compose_env(s) for n, s in apps.items()})
    processes = _configs({n: g.process_configs[0].environment for n, g in programs.items()})
    base = load_config(CONFIG, env={})
    for channel, ch in CHANNELS.items():
        port = base.bus.tcp_base_port + ch.port_offset
        owner = containers[ch.owner]
        assert address(owner, channel, bind=True) == f"tcp://*:{port}"
        for name, config in containers.items():  # everyone reaches the owner by its name
            if name != ch.owner:
                assert address(config, channel) == f"tcp://{ch.owner}:{port}", (name, channel)
        ipc = {address(c, channel, bind=b) for c in processes.values() for b in (False, True)}
        assert len(ipc) == 1 and ipc.pop().startswith("ipc:///"), channel  # one path for all
    published = {int(p.split(":")[-1]): n for n, s in apps.items() for p in s.get("ports", ())}
    public = {base.bus.tcp_base_port + CHANNELS[c].port_offset: CHANNELS[c].owner
              for c in PUBLIC}
    gateway = containers["gateway"].gateway
    assert published == {**public, gateway.port: "gateway"}  # never a private channel
    assert gateway.host == "0.0.0.0" and gateway.port == processes["gateway"].gateway.port
    exposed = set()  # the image documents what compose publishes
    for spec in re.findall(r"^EXPOSE (.*)$", (REPO / "Dockerfile").read_text(), re.M)[0].split():
        low, _, high = spec.partition("-")
        exposed |= set(range(int(low), int(high or low) + 1))
    assert set(published) <= exposed


# --- the `itg` command: help everywhere, clear errors before anything starts ---


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [[], ["up"], ["service"], ["cluster"], ["cluster", "up"], ["cluster", "down"],
                ["cluster", "status"], ["recover"], ["bench"], ["bot"]]
    for command in commands:
        with pytest.raises(SystemExit) as done:
            main([*command, "--help"])
        assert done.value.code == 0, command
        assert "usage: itg" in capsys.readouterr().out


def test_clear_errors_for_a_busy_port_a_missing_database_and_a_bad_config(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    config = short_dir / "c.toml"
    config.write_text(f'[bus]\ntransport = "ipc"\n[gateway]\nport = {port}\n')
    try:
        assert main(["service", "gateway", "--config", str(config)]) == 2
        assert f"port {port} on 127.0.0.1 is busy" in capsys.readouterr().err
        assert main(["cluster", "up", "--config", str(config), "--data-dir",
                     str(short_dir / "d")]) == 2
        assert f"port {port} on 127.0.0.1 is busy" in capsys.readouterr().err
    finally:
        busy.close()
    config.write_text('[bus]\ntransport = "ipc"\n[gateway]\nport = 0\n[db]\n'
                      'url = "postgresql+psycopg://postgres@127.0.0.1:1/none"\n')
    # (a DB writer process of its own waits for its database instead: test_dbwriter_service)
    assert main(["up", "--only", "matcher,dbwriter", "--config", str(config),
                 "--data-dir", str(short_dir / "d")]) == 2
    assert "database postgresql+psycopg://postgres@127.0.0.1:1/none is unreachable" in (
        capsys.readouterr().err)
    config.write_text('[bus]\ntransport = "carrier-pigeon"\n')
    assert main(["cluster", "up", "--config", str(config), "--data-dir", str(short_dir)]) == 2
    assert "transport must be inproc, ipc or tcp" in capsys.readouterr().err
    assert main(["cluster", "status", "--data-dir", str(short_dir / "none")]) == 3
    assert "not running" in capsys.readouterr().out
    assert not (short_dir / "d" / "supervisord.conf").exists()  # nothing was started


def test_a_service_that_cannot_bind_its_bus_port_exits_saying_which_setting(
    short_dir: Path,
) -> None:
    """It hung instead, logging nothing: the failed socket stayed open and the context's
    term() waited for it, so supervisord showed it RUNNING and never restarted it."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    base = busy.getsockname()[1] - CHANNELS["events_pub"].port_offset
    config = short_dir / "c.toml"
    config.write_text(f'[bus]\ntransport = "tcp"\ntcp_base_port = {base}\n'
                      f'bind_host = "127.0.0.1"\n')
    try:
        done = subprocess.run([sys.executable, "-m", "services.cli", "service", "events",
                               "--config", str(config), "--data-dir", str(short_dir / "d")],
                              capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert done.returncode == 2, done.stderr
    assert f"cannot bind tcp://127.0.0.1:{base + 7} (channel events_pub)" in done.stderr
    assert "bus.tcp_base_port" in done.stderr
    assert f'"tcp_base_port":{base}' in done.stderr  # the effective config, logged at start


def test_a_gateway_that_cannot_connect_a_bus_address_exits_too(short_dir: Path) -> None:
    """Its first sockets stayed open after a later one failed (an ipc path too long for
    matcher_private.sock, not for commands.sock), and the process hung in the same way."""
    run = short_dir / ("r" * (92 - len(str(short_dir)) - 1))
    config = short_dir / "c.toml"
    config.write_text(f'[bus]\ntransport = "ipc"\nipc_dir = "{run}"\n[gateway]\nport = 0\n')
    done = subprocess.run([sys.executable, "-m", "services.cli", "service", "gateway",
                           "--config", str(config), "--data-dir", str(short_dir / "d")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "cannot connect to ipc://" in done.stderr
    assert "(channel matcher_private)" in done.stderr


def test_cluster_commands_find_the_data_dir_in_the_environment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ITG_DATA_DIR was ignored: state, logs and the database went into the checkout."""
    monkeypatch.setenv("ITG_DATA_DIR", str(tmp_path / "elsewhere"))
    assert main(["cluster", "status"]) == 3
    assert f"not running from {tmp_path / 'elsewhere'}" in capsys.readouterr().out
    assert main(["cluster", "status", "--data-dir", str(tmp_path / "flag")]) == 3  # flag first
    assert f"not running from {tmp_path / 'flag'}" in capsys.readouterr().out


def test_recover_says_what_is_missing_instead_of_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing database raised an SQLAlchemy traceback after creating an empty one there;
    --check on the embedded (inproc) config waited 10 s and raised BusTimeout."""
    assert main(["recover", "--data-dir", str(tmp_path / "none")]) == 2
    assert "no SQLite database at" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()  # nothing made where nothing was
    assert main(["recover", "--check", "--data-dir", str(tmp_path)]) == 2
    assert "asks the running matcher" in capsys.readouterr().err


def test_the_services_that_keep_state_keep_it_in_named_volumes(compose: dict[str, Any]) -> None:
    """The matcher's journal and the simulator's checkpoint outlive their containers."""
    for service in ("matcher", "simulator"):
        mounts = compose["services"][service].get("volumes", [])
        named = [m.split(":")[0] for m in mounts if m.split(":")[1] == "/data"]
        assert named and named[0] in compose["volumes"], service
