"""The channel table: every bus socket's type, owner and address, built in one place.

The owner binds; everyone else connects. The same names resolve to inproc (threads in one
process sharing a Context), ipc (processes on one host) or tcp (processes anywhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import zmq

from common.config import Config, ConfigError


class AddressError(ConfigError):
    """A bus address this process cannot bind or connect; the message names the setting."""


class Channel(NamedTuple):
    owner: str
    bind_type: int
    connect_type: int
    port_offset: int


# The PUBLIC channels are for anyone, quants included: the feeds and, beside each, a read-only
# ROUTER for snapshots and market-data replays. The others carry per-team and internal traffic
# (executions, account queries, game-master controls, commands) for the exchange's own services
# only: never expose them outside the cluster.
CHANNELS: dict[str, Channel] = {
    "commands": Channel("matcher", zmq.PULL, zmq.PUSH, 0),
    "matcher_pub": Channel("matcher", zmq.PUB, zmq.SUB, 1),
    "matcher_rpc": Channel("matcher", zmq.ROUTER, zmq.DEALER, 2),
    "matcher_private": Channel("matcher", zmq.PUB, zmq.SUB, 3),
    "sim_pub": Channel("simulator", zmq.PUB, zmq.SUB, 4),
    "sim_rpc": Channel("simulator", zmq.ROUTER, zmq.DEALER, 5),
    "sim_private": Channel("simulator", zmq.PUB, zmq.SUB, 6),
    "events_pub": Channel("events", zmq.PUB, zmq.SUB, 7),
    "events_rpc": Channel("events", zmq.ROUTER, zmq.DEALER, 8),
    "events_private": Channel("events", zmq.PUB, zmq.SUB, 9),
    # Persistence: each producer binds a PUSH of record batches and a PULL of acks; every DB
    # writer connects to all of them, so ops can run any number of writers.
    "matcher_persist": Channel("matcher", zmq.PUSH, zmq.PULL, 10),
    "matcher_acks": Channel("matcher", zmq.PULL, zmq.PUSH, 11),
    "sim_persist": Channel("simulator", zmq.PUSH, zmq.PULL, 12),
    "sim_acks": Channel("simulator", zmq.PULL, zmq.PUSH, 13),
    "events_persist": Channel("events", zmq.PUSH, zmq.PULL, 14),
    "events_acks": Channel("events", zmq.PULL, zmq.PUSH, 15),
    "matcher_pub_rpc": Channel("matcher", zmq.ROUTER, zmq.DEALER, 16),
    "sim_pub_rpc": Channel("simulator", zmq.ROUTER, zmq.DEALER, 17),
    "events_pub_rpc": Channel("events", zmq.ROUTER, zmq.DEALER, 18),
}
PUBLIC = ("matcher_pub", "matcher_pub_rpc", "sim_pub", "sim_pub_rpc", "events_pub",
          "events_pub_rpc")

# stream name -> (records channel, acks channel)
PERSIST_CHANNELS = {
    "matcher": ("matcher_persist", "matcher_acks"),
    "simulator": ("sim_persist", "sim_acks"),
    "events": ("events_persist", "events_acks"),
}

HWM = 1_000_000  # deep queues: a burst waits in memory rather than being dropped
_SNDMORE = int(zmq.SNDMORE)  # plain ints: pyzmq's enum flag arithmetic costs more than the send


def send_frame(sock: zmq.Socket[bytes], topic: bytes, payload: bytes, flags: int = 0) -> None:
    """Send one [topic, payload] message (send_multipart costs ~4x more for small frames).

    With NOBLOCK, zmq.Again means nothing was sent (a message's parts go out together)."""
    sock.send(topic, _SNDMORE | flags)
    sock.send(payload, flags)


def recv_frames(sock: zmq.Socket[bytes], flags: int = 0) -> list[bytes]:
    """Every part of one message; with NOBLOCK raises zmq.Again when none is waiting.

    ~3x cheaper than recv_multipart, which asks the socket for RCVMORE after each part.
    """
    frame = sock.recv(flags, copy=False)
    parts = [frame.bytes]
    while frame.more:
        frame = sock.recv(flags, copy=False)
        parts.append(frame.bytes)
    return parts


def ipc_dir(config: Config) -> Path:
    return Path(config.bus.ipc_dir or config.data_path / "run")


def address(config: Config, channel: str, bind: bool = False) -> str:
    ch = CHANNELS[channel]
    bus = config.bus
    if bus.transport == "inproc":
        return f"inproc://itg.{channel}"
    if bus.transport == "ipc":
        return f"ipc://{ipc_dir(config) / channel}.sock"
    host = bus.bind_host if bind else bus.hosts.get(ch.owner, "127.0.0.1")
    return f"tcp://{host}:{bus.tcp_base_port + ch.port_offset}"


def make_socket(ctx: zmq.Context[zmq.Socket[bytes]], config: Config, channel: str,
                bind: bool, immediate: bool = False) -> zmq.Socket[bytes]:
    """A configured socket, bound (by the channel's owner) or connected (by everyone else).

    `immediate`: messages are queued only to a peer that is connected, so a send with no peer
    fails at once (zmq.Again with NOBLOCK) instead of waiting in memory for one to come."""
    ch = CHANNELS[channel]
    sock = ctx.socket(ch.bind_type if bind else ch.connect_type)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    if immediate:
        sock.setsockopt(zmq.IMMEDIATE, 1)  # before connect: it applies to pipes made after
    addr = address(config, channel, bind)
    try:
        if bind and config.bus.transport == "ipc":
            ipc_dir(config).mkdir(parents=True, exist_ok=True)
        (sock.bind if bind else sock.connect)(addr)
    except (zmq.ZMQError, OSError) as exc:
        # an open socket would make the context's term() wait forever: the process would
        # hang with nothing logged instead of exiting for its supervisor to restart it
        sock.close(linger=0)
        raise AddressError(_address_problem(config, channel, bind, addr, exc)) from None
    return sock


def _address_problem(config: Config, channel: str, bind: bool, addr: str,
                     exc: Exception) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    action = "cannot bind" if bind else "cannot connect to"
    settings = {"inproc": "another service of that name runs in this process",
                "ipc": "set bus.ipc_dir (ITG_BUS__IPC_DIR) or data_dir to a writable place",
                "tcp": "is another program or another copy of the service on that port? Set "
                       "bus.tcp_base_port (ITG_BUS__TCP_BASE_PORT) or bus.bind_host"
                       if bind else f"check bus.hosts.{CHANNELS[channel].owner}"}
    return f"{action} {addr} (channel {channel}): {reason}; {settings[config.bus.transport]}"
