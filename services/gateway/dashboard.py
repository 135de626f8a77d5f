"""The web dashboard, served by the gateway itself: the page, its files, and two live streams.

- `/dashboard`: the page (static HTML, CSS and plain ES modules; charts by lightweight-charts,
  vendored under static/vendor, so nothing is fetched from anywhere else).
- `/ws/public`: the spectator stream. Public data only: what the public feeds say (books,
  trades, status, underlyings, fair values, news), the leaderboard, service health, and the
  volatility regimes that are old enough (see board.py). A `snapshot` first, then `update`s of
  what changed, at most one per `dashboard_interval_s`; a browser may send
  `{"type": "watch", "instrument_id": ...}` to get `depth` of that instrument.
- `/ws/team`: one team's own view after `{"type": "auth", "api_key": ...}` as the first frame
  (the key stays out of URLs and logs, and the bot's own /ws connection is left alone).
- `GET /dashboard/api/leaderboard` (public) and `GET /dashboard/api/team` (X-API-Key).

Accounts are read from the matcher, all in one request, every `leaderboard_interval_s`; a
team the leaderboard has not named yet is asked for by its id, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import zmq
from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from common.bus_client import BusTimeout
from common.clock import SteadyClock
from common.messages import (
    AccountReply,
    AccountsQuery,
    AccountsReply,
    DecodeError,
    ExecutionReport,
    FeedSnapshot,
    SnapshotRequest,
    TeamInfo,
    TeamQuery,
    TeamReply,
    decode,
)
from services.gateway import handlers, schemas, views
from services.gateway.board import Board
from services.gateway.bridge import BusUnavailable
from services.gateway.controls import Controls
from services.gateway.scores import Standings
from services.gateway.spectators import Spectator, serve
from services.gateway.ws import GOING_AWAY, POLICY, REISSUED, TRY_AGAIN

if TYPE_CHECKING:
    from services.gateway.app import Api
    from services.gateway.core import Gateway

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DEPTH = 10
QUOTES_EVERY_S = 5.0  # every quote again now and then (a book mirror resync is silent)
HEALTH_EVERY_S = 1.0
AUTH_TIMEOUT_S = 10.0
PRICES_RETRY_S = 3.0
FIRST_PRICES_WAIT_S = 2.0  # before the first leaderboard: the simulator may not run


class Dashboard:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.controls = Controls(gw)
        self.settings = gw.settings
        self.board = Board(gw.config)
        self.standings = Standings(gw.config)
        self.spectators: set[Spectator] = set()
        self.joining: set[Spectator] = set()
        self.refreshed = asyncio.Event()  # set (and replaced) after each leaderboard refresh
        self.followers: dict[str, set[asyncio.Event]] = {}  # team -> its open views' revocations
        self.instruments = [{
            "id": i.id, "underlying": i.underlying, "kind": i.kind, "multiplier": i.multiplier,
            "strike": views.price(i.strike), "option_type": i.option_type}
            for i in gw.instruments.values()]
        self._priced = asyncio.Event()  # the simulator's prices loaded
        self._clock = SteadyClock()
        self._leaderboard_dirty = False
        self._public_rows: list[dict[str, Any]] | None = None
        self._next_quotes = self._next_health = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    # --- life cycle ---

    async def start(self) -> None:
        self.gw.taps.append(self.board.feed)
        self.gw.private_taps.append(self._on_private)
        self.gw.reissue_taps.append(self._key_reissued)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll_loop()),
                       loop.create_task(self._broadcast_loop()),
                       loop.create_task(self._load_prices())]

    async def stop(self) -> None:
        for spectator in [*self.spectators, *self.joining]:
            spectator.close(GOING_AWAY, "gateway shutting down")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.controls.close()

    async def _load_prices(self) -> None:
        """The simulator's last prices once (see Board.load); until it answers, every few
        seconds: it may be starting, or down."""
        while True:
            try:
                snapshot = await self.controls.call("sim_rpc", SnapshotRequest(), FeedSnapshot)
            except (BusTimeout, BusUnavailable, zmq.ZMQError) as exc:
                log.debug("dashboard: no simulator snapshot yet (%r)", exc)
                await asyncio.sleep(PRICES_RETRY_S)
                continue
            self.board.load(snapshot)
            self._priced.set()
            return

    # --- marks ---

    def mark(self, iid: str) -> int | None:
        fair = self.board.fair.get(iid)
        if fair is not None:
            return fair[0]
        spot = self.board.spots.get(iid)
        return spot if spot is not None else self.gw.mirror.last_trade.get(iid)

    def delta(self, iid: str) -> float | None:
        fair = self.board.fair.get(iid)
        return None if fair is None else fair[1]

    def _on_private(self, topic: bytes, payload: bytes) -> None:
        if b"execution_report" not in payload:  # cheap: acks and cancels are not decoded
            return
        try:
            event = decode(payload)
        except DecodeError:
            return
        if isinstance(event, ExecutionReport):
            self.standings.on_fill(event, self.mark(event.instrument_id))

    # --- the leaderboard ---

    async def _poll_loop(self) -> None:
        # marks first: a refresh before the market is read counts positions at zero, and that
        # point stays in the teams' P&L history. The simulator's prices are waited for briefly
        # only, as it may not run at all (then the marks are last trades, from md_ready).
        await self.gw.md_ready.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._priced.wait(), FIRST_PRICES_WAIT_S)
        failing = False
        while True:
            try:
                await self.refresh()
                failing = False
            except (BusTimeout, BusUnavailable) as exc:
                if not failing:  # once per outage, not once per refresh
                    log.warning("dashboard: accounts not read (%r); trying again", exc)
                failing = True
            except Exception:  # a bug must not end the leaderboard for the rest of the game
                if not failing:
                    log.exception("dashboard: leaderboard refresh failed; trying again")
                failing = True
            await asyncio.sleep(self.settings.leaderboard_interval_s)

    async def refresh(self) -> None:
        """Read every account, name the teams not named yet, and recompute the leaderboard."""
        call, timeout = self.gw.bridge.call, self.settings.request_timeout_s
        # every account in one answer, at one point of the matcher's state: one request a
        # refresh instead of one per team (1,000 a second at game.max_teams)
        # the orders listed only of the teams whose pages are open
        viewed = sorted(team for team, views in self.followers.items() if views)
        every = await call(AccountsQuery(orders_of=viewed), AccountsReply, timeout)
        for tid in [a.team_id for a in every.accounts if not self.standings.named(a.team_id)]:
            reply = await call(TeamQuery(team_id=tid), TeamReply, timeout)
            if reply.team is not None:
                self.standings.add(reply.team)
        now = self._clock.now_s()  # a P&L path never steps back with the wall clock
        for account in every.accounts:
            self.standings.update(account, self.mark, now)
        self._leaderboard_dirty = True
        self._public_rows = None
        self.refreshed.set()
        self.refreshed = asyncio.Event()

    def leaderboard(self, full: bool = False) -> list[dict[str, Any]]:
        """The public rows are built once per refresh, for the broadcast, newcomers' snapshots
        and the public endpoint alike (37 ms at 1,000 teams: per request, anyone could fill
        the loop); the operator's full rows are built when asked."""
        if full:
            return self.standings.rows(self.mark, self.delta, full=True)
        if self._public_rows is None:
            self._public_rows = self.standings.rows(self.mark, self.delta)
        return self._public_rows

    # --- the spectator stream ---

    def status(self) -> dict[str, Any]:
        mirror = self.gw.mirror
        return {"phase": mirror.phase, "halted": list(mirror.halted),
                "expired": list(mirror.expired)}

    def quotes(self, iids: Any) -> dict[str, Any]:
        return {iid: self.gw.hub.quote(iid) for iid in iids}

    def snapshot(self) -> str:
        data = {"instruments": self.instruments, "status": self.status(),
                "quotes": self.quotes(self.gw.instruments), "leaderboard": self.leaderboard(),
                "health": self.gw.health(), "regime_names": list(self.board.regime_names),
                **self.board.snapshot()}
        return _frame("snapshot", data)

    def depth(self, iid: str) -> str:
        book = self.gw.mirror.books.get(iid)
        bids, asks = book.top(DEPTH) if book is not None else ([], [])
        trades = self.board.trades_of(iid)
        return _frame("depth", {
            "instrument_id": iid, "bids": [(views.price(p), q) for p, q in bids],
            "asks": [(views.price(p), q) for p, q in asks], "trades": trades,
            "quote": self.gw.hub.quote(iid)})

    def on_message(self, spectator: Spectator, body: dict[str, Any]) -> None:
        iid = body.get("instrument_id")
        if body.get("type") == "watch" and isinstance(iid, str) and iid in self.gw.instruments:
            spectator.watch = iid
            spectator.put(self.depth(iid))

    async def _broadcast_loop(self) -> None:
        """Every interval, a broadcast. Whatever breaks one, the loop goes on (else every page
        would freeze for good); the changes it took are lost, so everyone starts again from a
        snapshot. Logged once per run of failures."""
        failing = False
        while True:
            await asyncio.sleep(self.settings.dashboard_interval_s)
            try:
                self._broadcast()
                failing = False
            except Exception:
                if not failing:
                    log.exception("dashboard: broadcast failed; spectators get a new snapshot")
                failing = True
                self.joining |= self.spectators
                self.spectators.clear()

    def _broadcast(self) -> None:
        """One update for everyone, then snapshots for the newcomers (taken after the update's
        changes, so nobody gets a change twice or misses one)."""
        changes, books = self.board.take_changes()
        if changes.pop("reset", None):  # a new game: everyone starts afresh
            self.joining |= self.spectators
            self.spectators.clear()
        if self.spectators:
            touched = self._complete(changes, books, time.monotonic())
            self._send(changes, touched)
        if self.joining:
            snapshot = self.snapshot()
            for spectator in self.joining:
                spectator.put(snapshot)
            self.spectators |= self.joining
            self.joining.clear()

    def _complete(self, changes: dict[str, Any], books: set[str], now: float) -> set[str]:
        """Fill in what the board cannot know; returns the instruments whose quotes changed."""
        touched = books | {t["instrument_id"] for t in changes.get("trades", ())}
        if changes.pop("status", None):
            changes["status"] = self.status()
        if now >= self._next_quotes:
            self._next_quotes, touched = now + QUOTES_EVERY_S, set(self.gw.instruments)
        if touched:
            changes["quotes"] = self.quotes(sorted(touched))
        if now >= self._next_health:
            self._next_health = now + HEALTH_EVERY_S
            changes["health"] = self.gw.health()
            changes["clock"] = self.board.clock()
        if self._leaderboard_dirty:
            self._leaderboard_dirty = False
            changes["leaderboard"] = self.leaderboard()
        return touched

    def _send(self, changes: dict[str, Any], touched: set[str]) -> None:
        text = _frame("update", changes) if changes else None
        depths: dict[str, str] = {}
        for spectator in list(self.spectators):
            if text is not None:
                spectator.put(text)
            if spectator.watch in touched and spectator.watch is not None:
                if spectator.watch not in depths:
                    depths[spectator.watch] = self.depth(spectator.watch)
                spectator.put(depths[spectator.watch])

    async def spectate(self, websocket: WebSocket) -> None:
        await websocket.accept()
        spectator = Spectator(websocket)
        self.joining.add(spectator)  # its snapshot goes out with the next update
        try:
            await serve(spectator, self.on_message)
        finally:
            self.spectators.discard(spectator)
            self.joining.discard(spectator)

    # --- one team's own view ---

    async def team_view(self, team: TeamInfo, history_from: int | None = None,
                        fills_after: int | None = None) -> dict[str, Any]:
        """The team's view, or the failure envelope of its orders' query."""
        orders = None
        if not self.standings.orders_listed(team.team_id):  # no page of it was open
            reply = await handlers.account(self.gw, team)
            if not isinstance(reply, AccountReply):
                return reply
            orders = reply.open_orders
        view = self.standings.team_view(team.team_id, self.mark, self.delta, history_from,
                                        fills_after, orders)
        return view or {"team": {"team_id": team.team_id, "team_name": team.team_name,
                                 "role": team.role}, "pending": True}

    async def follow_team(self, websocket: WebSocket, api: Api) -> None:
        """A team's view, sent again after every leaderboard refresh, until the browser goes or
        the team's key is reissued (the view was opened with the old one). The P&L path and
        the fills come whole in the first view, then only what is new: the fills not sent
        yet, the path from the last point sent on (sampled again within its second, that
        point can change)."""
        await websocket.accept()
        team = await self._auth_frame(websocket, api)
        if team is None:
            await _close(websocket, POLICY, "first frame must be {type: auth, api_key: KEY}")
            return
        if isinstance(team, Response):  # the exchange could not say: not a bad key (1008)
            await _close(websocket, TRY_AGAIN, "the exchange is unavailable; retry")
            return
        revoked = asyncio.Event()
        self.followers.setdefault(team.team_id, set()).add(revoked)
        ended = {asyncio.create_task(_until_closed(websocket)),
                 asyncio.create_task(revoked.wait())}
        since: int | None = None
        fills: int | None = None
        try:
            while not any(task.done() for task in ended):
                view = await self.team_view(team, since, fills)
                if revoked.is_set():  # reissued while the view was read: not for this key
                    break
                if view.get("success") is False:  # the exchange did not answer: next time
                    await websocket.send_text(_frame("error", view["error"]))
                else:
                    await websocket.send_text(_frame("team", view))
                if view.get("history"):
                    since, fills = view["history"][-1][0], view["fills_total"]
                refreshed = asyncio.create_task(self.refreshed.wait())
                await asyncio.wait({refreshed, *ended}, return_when=asyncio.FIRST_COMPLETED)
                refreshed.cancel()
            if revoked.is_set():
                await _close(websocket, POLICY, REISSUED)
        except Exception as exc:  # the browser went away mid-send
            log.debug("team view of %s ended: %r", team.team_id, exc)
        finally:
            for task in ended:
                task.cancel()
            self.followers.get(team.team_id, set()).discard(revoked)

    def _key_reissued(self, team_id: str) -> None:
        for revoked in self.followers.pop(team_id, ()):
            revoked.set()

    async def _auth_frame(self, websocket: WebSocket, api: Api) -> TeamInfo | Response | None:
        """The team of the first frame's key; None for no key or a bad one, a Response (503)
        when the matcher could not be asked."""
        try:
            text = await asyncio.wait_for(websocket.receive_text(), AUTH_TIMEOUT_S)
            body = msgspec.json.decode(text)
        except Exception:  # timeout, disconnect, not JSON
            return None
        key = body.get("api_key") if isinstance(body, dict) else None
        if not isinstance(key, str) or body.get("type") != "auth":
            return None
        me = await api.caller(key)
        return None if isinstance(me, Response) and me.status_code == 401 else me


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close, unless the browser has gone already (before its first frame, say): closing a
    closed socket raised, and uvicorn logged a traceback for each such visit."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.close(code, reason)


async def _until_closed(websocket: WebSocket) -> None:
    with contextlib.suppress(Exception):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass


def _frame(kind: str, data: Any) -> str:
    return views.dumps({"type": kind, "data": data}).decode()


def install(app: FastAPI, api: Api) -> Dashboard:
    """Mount the dashboard on `app`; it starts and stops with the app, after the gateway."""
    dash = Dashboard(api.gw)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> Any:
        await dash.start()
        try:
            yield
        finally:
            await dash.stop()

    router = APIRouter(lifespan=lifespan, tags=["dashboard"])

    @router.get("/dashboard", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @router.get("/dashboard/api/leaderboard", summary="Every team's mark-to-market P&L")
    async def leaderboard() -> Response:
        return views.json_response({"leaderboard": dash.leaderboard(),
                                    "timestamp": views.now_iso()})

    @router.get("/dashboard/api/team", summary="Your team: holdings, orders, fills, P&L path",
                openapi_extra=schemas.SECURED)
    async def own_team(request: Request) -> Response:
        return await api.authed(request, dash.team_view)  # within the team's request rate

    @router.websocket("/ws/public")
    async def public(websocket: WebSocket) -> None:
        await dash.spectate(websocket)

    @router.websocket("/ws/team")
    async def team(websocket: WebSocket) -> None:
        await dash.follow_team(websocket, api)

    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
    return dash
