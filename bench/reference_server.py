"""The yardstick for bench/gateway.py: a bare Starlette endpoint doing one ZeroMQ round trip.

The gateway's throughput target was set against this server ("a bare Starlette endpoint doing
a ZeroMQ round trip"); measuring it on the same machine, with the same clients, in the same
run turns the gateway's absolute figure into a ratio that holds from one machine to the next.

    python bench/reference_server.py echo ADDRESS          # the other process: a ROUTER echo
    python bench/reference_server.py http PORT ADDRESS     # uvicorn: POST /exchange/orders
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator

import uvicorn
import zmq
import zmq.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def echo(address: str) -> None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(address)
    while True:
        sock.send_multipart(sock.recv_multipart())


def app(address: str) -> Starlette:
    ctx = zmq.asyncio.Context()
    pending: dict[bytes, asyncio.Future[bytes]] = {}
    ids = itertools.count()
    state: dict[str, zmq.asyncio.Socket] = {}

    async def read() -> None:
        sock = state["sock"]
        while True:
            rid, payload = await sock.recv_multipart()
            fut = pending.pop(rid, None)
            if fut is not None:
                fut.set_result(payload)

    async def order(request: Request) -> Response:
        body = await request.body()
        rid = next(ids).to_bytes(8, "big")
        fut = pending[rid] = asyncio.get_running_loop().create_future()
        await state["sock"].send_multipart([rid, body])
        return Response(await fut, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        sock = state["sock"] = ctx.socket(zmq.DEALER)
        sock.connect(address)
        reader = asyncio.get_running_loop().create_task(read())
        yield
        reader.cancel()

    return Starlette(routes=[Route("/exchange/orders", order, methods=["POST"])],
                     lifespan=lifespan)


def main() -> None:
    if sys.argv[1] == "echo":
        echo(sys.argv[2])
    else:
        uvicorn.run(app(sys.argv[3]), port=int(sys.argv[2]), loop="uvloop", http="httptools",
                    log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
