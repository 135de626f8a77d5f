"""The operator's API: game-master controls behind a separate admin key (`X-Admin-Key`).

The key is `gateway.admin_key` (at least 16 characters; "" switches the API off, and every
/admin route then answers 403). It is compared in constant time and never logged. Checks run
in the bot API's order: key (401/403), body size (413), schema (422), then the answer, which
is the bot API's envelope. Halts, phases and the kill switch (cancel every resting order of a
team) are matcher commands, journaled like orders; news, regime and speed are requests on the
events and simulator ROUTERs, answered with a ControlReply.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Annotated, Any

import zmq
import zmq.asyncio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from pydantic import ConfigDict, Field, StrictBool, StrictStr

from common.bus_client import BusTimeout
from common.config import PHASES
from common.messages import (
    MAX_HEADLINE,
    CancelAll,
    Command,
    ControlReply,
    ForceRegime,
    InjectNews,
    Message,
    ReissueKey,
    SetHalt,
    SetPhase,
    SetSpeed,
    TeamInfo,
    TeamQuery,
    TeamReply,
)
from services.gateway import handlers, schemas, views
from services.gateway.auth import key_hash, new_key
from services.gateway.bridge import BusUnavailable

if TYPE_CHECKING:
    from services.gateway.app import Api
    from services.gateway.controls import Controls
    from services.gateway.dashboard import Dashboard

log = logging.getLogger(__name__)

HEADER = "x-admin-key"
MISSING = "Missing admin key. Include X-Admin-Key header."
INVALID = "Invalid admin key"
DISABLED = "The admin API is off: set gateway.admin_key"
SECURED: dict[str, Any] = {"security": [{"AdminKeyHeader": []}]}


class _AdminRequest(schemas._Request):
    # an operator's misspelt field is an error, not silently dropped (bots' bodies keep
    # "ignore": the original API let them send extra fields)
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


class NewsRequest(_AdminRequest):
    headline: Annotated[StrictStr, Field(min_length=1, max_length=MAX_HEADLINE,
                                         pattern=schemas.PRINTABLE,
                                         description=(
        "A headline of the news table (its row's odds apply) or any new text"))]
    direction: Annotated[StrictStr | None, Field(max_length=schemas.SHORT,
                                                 description="up | down | none")] = None
    magnitude: Annotated[float | None, Field(description="Fraction of the price: 0.01 = 1%")
                         ] = None
    regime_shift: StrictBool | None = None
    jump: StrictBool | None = None


class RegimeRequest(_AdminRequest):
    regime: Annotated[StrictStr, Field(max_length=schemas.SHORT)]


class SpeedRequest(_AdminRequest):
    speed: Annotated[float, Field(description="Game seconds per wall second; 0 pauses")]


class PhaseRequest(_AdminRequest):
    phase: Annotated[StrictStr, Field(max_length=schemas.SHORT, description=" | ".join(PHASES))]


class HaltRequest(_AdminRequest):
    instrument_id: schemas.Short
    halted: StrictBool = True


class Admin:
    def __init__(self, api: Api, controls: Controls) -> None:
        self.gw = api.gw
        self.key = api.gw.settings.admin_key
        self.controls = controls  # the dashboard's: it opens and closes them

    def denied(self, request: Request) -> Response | None:
        if not self.key:
            return views.json_response({"detail": DISABLED}, 403)
        given = request.headers.get(HEADER)
        if not given:
            return views.json_response({"detail": MISSING}, 401)
        if not hmac.compare_digest(given.encode(), self.key.encode()):
            return views.json_response({"detail": INVALID}, 401)
        return None

    async def command(self, cmd: Command, what: str) -> handlers.Body:
        answer = await handlers.ask(self.gw, cmd, None)
        if not isinstance(answer, dict):
            if not answer.ok:
                return handlers.refused(None, answer)
            log.warning("admin: %s", what)
            return handlers.envelope(None, data=answer.details or {})
        return answer

    async def control(self, channel: str, request: Message, what: str) -> handlers.Body:
        try:
            reply = await self.controls.call(channel, request, ControlReply)
        except (BusTimeout, BusUnavailable) as exc:
            return handlers.unanswered(exc, self.gw.settings.request_timeout_s, channel=channel)
        except zmq.ZMQError as exc:
            return handlers.failure(None, "SERVICE_UNAVAILABLE", str(exc))
        if not reply.ok:
            return handlers.failure(None, "CONTROL_REJECTED", reply.message, reply.details)
        log.warning("admin: %s", what)
        return handlers.envelope(None, data=reply.details)

    async def kill(self, team_id: str) -> handlers.Body:
        timeout = self.gw.settings.request_timeout_s
        try:
            found = await self.gw.bridge.call(TeamQuery(team_id=team_id), TeamReply, timeout)
        except (BusTimeout, BusUnavailable) as exc:
            return handlers.unanswered(exc, timeout)
        if found.team is None:
            return handlers.failure(None, "TEAM_NOT_FOUND", "Team not found",
                                    {"team_id": team_id})
        return await self.command(CancelAll(team_id=team_id, reason="admin"),
                                  f"kill switch: every order of {team_id} cancelled")

    async def reissue_key(self, team_id: str) -> handlers.Body:
        """A new key for the team, shown once; the matcher tells every gateway to drop the old.
        After a timeout the outcome is unknown: asking again is safe (the last key wins)."""
        key = new_key()
        hashed = key_hash(key)
        answer = await handlers.ask(self.gw, ReissueKey(team_id=team_id, key_hash=hashed), None)
        if isinstance(answer, dict):
            return answer
        if not answer.ok or not isinstance(answer.result, TeamInfo):
            return handlers.refused(None, answer)
        self.gw.keys.remember(hashed, answer.result)
        log.warning("admin: the API key of %s reissued", team_id)
        return handlers.envelope(None, data={**views.team(answer.result), "api_key": key})

    def choices(self) -> dict[str, Any]:
        config = self.gw.config
        return {"headlines": [h.headline for h in config.events.headlines],
                "regimes": list(config.simulator.regime_names), "phases": list(PHASES),
                "instruments": list(self.gw.instruments), "phase": self.gw.mirror.phase,
                "halted": list(self.gw.mirror.halted)}


def _documented(model: type[schemas._Request] | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = dict(SECURED)
    if model is not None:
        extra["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": model.model_json_schema()}}}
    return {"openapi_extra": extra, "responses": {
        401: {"description": "Missing or invalid admin key", "model": schemas.Detail},
        403: {"description": "The admin API is off", "model": schemas.Detail},
        **({413: {"description": "Body too large", "model": schemas.Detail},
            422: {"description": "Body fails schema validation",
                  "model": schemas.ValidationErrors}} if model is not None else {})}}


def install(app: FastAPI, api: Api, dash: Dashboard) -> Admin:
    admin = Admin(api, dash.controls)
    router = APIRouter(prefix="/admin", tags=["admin"])

    async def guarded(request: Request, model: type[schemas._Request] | None, then: Any
                      ) -> Response:
        denied = admin.denied(request)
        if denied is not None:
            return denied
        body = None
        if model is not None:
            body = await api.body(request, model)
            if isinstance(body, Response):
                return body
        return views.json_response(await then(body))

    @router.get("/leaderboard", summary="Every team, with cash and holdings", **_documented())
    async def leaderboard(request: Request) -> Response:
        if denied := admin.denied(request):
            return denied
        return views.json_response({"leaderboard": dash.leaderboard(full=True),
                                    "timestamp": views.now_iso()})

    @router.get("/choices", summary="Headlines, regimes, phases, instruments", **_documented())
    async def choices(request: Request) -> Response:
        if denied := admin.denied(request):
            return denied
        return views.json_response(admin.choices())

    @router.post("/news", summary="Inject a news item now", **_documented(NewsRequest))
    async def news(request: Request) -> Response:
        return await guarded(request, NewsRequest, lambda b: admin.control(
            "events_rpc", InjectNews(**b.model_dump()), f"news {b.headline!r}"))

    @router.post("/regime", summary="Force a volatility regime from the next tick",
                 **_documented(RegimeRequest))
    async def regime(request: Request) -> Response:
        return await guarded(request, RegimeRequest, lambda b: admin.control(
            "sim_rpc", ForceRegime(regime=b.regime), f"regime {b.regime}"))

    @router.post("/speed", summary="Game clock speed (0 pauses)", **_documented(SpeedRequest))
    async def speed(request: Request) -> Response:
        return await guarded(request, SpeedRequest, lambda b: admin.control(
            "sim_rpc", SetSpeed(speed=b.speed), f"speed {b.speed:g}"))

    @router.post("/phase", summary="Move the market to a phase", **_documented(PhaseRequest))
    async def phase(request: Request) -> Response:
        return await guarded(request, PhaseRequest, lambda b: admin.command(
            SetPhase(phase=b.phase), f"phase {b.phase}"))

    @router.post("/halt", summary="Halt (or resume) one instrument", **_documented(HaltRequest))
    async def halt(request: Request) -> Response:
        return await guarded(request, HaltRequest, lambda b: admin.command(
            SetHalt(instrument_id=b.instrument_id, halted=b.halted),
            f"{b.instrument_id} {'halted' if b.halted else 'resumed'}"))

    @router.post("/teams/{team_id}/kill", summary="Kill switch: cancel every order of a team",
                 **_documented())
    async def kill(team_id: str, request: Request) -> Response:
        return await guarded(request, None, lambda _: admin.kill(team_id))

    @router.post("/teams/{team_id}/key", summary="Reissue a team's API key: the old key stops "
                 "working on every gateway and its stream is closed; the new key is shown once",
                 **_documented())
    async def reissue(team_id: str, request: Request) -> Response:
        return await guarded(request, None, lambda _: admin.reissue_key(team_id))

    app.include_router(router)
    return admin
