"""Request models (strict: what fails here is a 422) and response models (for the OpenAPI doc).

Requests are validated by the route itself, after authentication and the body size check, so
the order is always: 401, then 413, then 422, then the business answer. A type that is wrong
(a string, a boolean or a float for a quantity, a string, boolean, NaN or infinity for a price,
a string too long) is a 422. A value of the right type that the exchange refuses (a zero or
huge quantity, an off-tick or negative price, an unknown side or instrument) is an HTTP 200
envelope with its error code, as in the original API.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from common.messages import MAX_TEAM_NAME

SHORT = 64  # ids, names, client references
# No control characters in text the exchange stores: PostgreSQL refuses NUL outright, and a
# record it refuses would hold its whole batch back from the database for ever.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
Short = Annotated[StrictStr, Field(max_length=SHORT, pattern=PRINTABLE)]
Price = Annotated[float, Field(allow_inf_nan=False, strict=True,
                               description="Decimal price, at most 2 decimals (tick 0.01)")]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class RegisterRequest(_Request):
    # The 1-50 characters are counted once the name is normalised (handlers.team_name): before,
    # combining accents and spaces to trim may make it longer, up to a bound on the work.
    team_name: Annotated[StrictStr, Field(
        min_length=1, max_length=4 * MAX_TEAM_NAME, pattern=PRINTABLE,
        description=f"1-{MAX_TEAM_NAME} characters once NFKC-normalised and trimmed")]
    role: Annotated[StrictStr, Field(max_length=SHORT, description=(
        "market_maker | hedge_fund | arbitrage | retail (anything else: UNSUPPORTED_ROLE)"))]
    request_id: Short | None = None


class OrderRequest(_Request):
    instrument_id: Short
    side: Annotated[StrictStr, Field(max_length=SHORT, description="buy | sell")]
    quantity: Annotated[StrictInt, Field(description="Contracts; range per role")]
    order_type: Annotated[StrictStr | None, Field(max_length=SHORT, description=(
        "limit | market; absent: limit if a price is given, else market"))] = None
    price: Price | None = None
    client_order_id: Short | None = None
    request_id: Short | None = None


def validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    """FastAPI's 422 shape: pydantic's errors with `loc` starting at "body"."""
    out = []
    for err in exc.errors(include_url=False):
        entry = {"type": err["type"], "loc": ["body", *err["loc"]], "msg": err["msg"]}
        if err["type"] != "json_invalid":
            entry["input"] = _safe(err.get("input"))
        out.append(entry)
    return out


def _safe(value: Any) -> Any:
    if (isinstance(value, float) and value != value) or value in (float("inf"), float("-inf")):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 53:
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


# --- responses (documentation; the routes build the same shapes) ---

D = TypeVar("D")


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class Envelope(BaseModel, Generic[D]):
    success: bool
    request_id: str
    order_id: str | None
    data: D | None
    error: ErrorInfo | None
    timestamp: str = Field(description="ISO-8601 UTC")


class Team(BaseModel):
    team_id: str
    team_name: str
    role: str
    created_at: str


class NewTeam(Team):
    api_key: str = Field(description="Shown once; send it as X-API-Key")


class OrderData(BaseModel):
    order_id: str
    client_order_id: str | None
    status: str = Field(description="new | partially_filled | filled | cancelled")
    filled_quantity: int
    remaining_quantity: int
    average_price: float | None = None


class OpenOrderData(BaseModel):
    order_id: str
    client_order_id: str | None
    instrument_id: str
    side: str
    order_type: str
    price: float | None
    original_quantity: int
    remaining_quantity: int
    filled_quantity: int
    status: str = Field(description="open | partially_filled")
    submitted_at: str


class OrdersData(BaseModel):
    orders: list[OpenOrderData]


class Level(BaseModel):
    price: float
    quantity: int


class OrderBookData(BaseModel):
    instrument_id: str
    bids: list[Level]
    asks: list[Level]
    timestamp: str


class PositionsData(BaseModel):
    team_id: str
    positions: dict[str, int]
    last_updated: str


class Health(BaseModel):
    status: str = Field(description="ok | degraded (the matcher is not answering)")
    service: str
    version: str
    gateway_id: str
    services: dict[str, dict[str, Any]]


class Detail(BaseModel):
    detail: str


class ValidationErrorItem(BaseModel):
    type: str
    loc: list[str | int]
    msg: str
    input: Any = None


class ValidationErrors(BaseModel):
    detail: list[ValidationErrorItem]


# --- the OpenAPI document's shared parts ---

SECURED: dict[str, Any] = {"security": [{"APIKeyHeader": []}]}  # a route that takes X-API-Key


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route may give, by status code."""
    described = {401: ("Missing or invalid API key", Detail),
                 413: ("Body larger than the configured limit", Detail),
                 422: ("Body fails schema validation", ValidationErrors),
                 503: ("The exchange cannot be asked who this key belongs to", Detail)}
    return {c: {"description": described[c][0], "model": described[c][1]} for c in codes}
