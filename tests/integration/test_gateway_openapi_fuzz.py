"""Fuzz the OpenAPI document against the real server (schemathesis): every operation, with
valid and invalid data, authenticated; no 5xx, every answer as documented (status codes,
content types, response schemas), invalid data rejected and valid data accepted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.integration.gw import Exchange, Team, running


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    with running(tmp_path_factory.mktemp("fuzz") / "data") as ex:
        yield ex


@pytest.fixture(scope="module")
def team(exchange: Exchange) -> Team:
    return exchange.register("fuzzer")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_behaves_as_documented(exchange: Exchange, team: Team,
                                               mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(exchange.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations  # the bot API; the operator's and the dashboard's
                  if not op.path.startswith(("/admin", "/dashboard"))]  # have their own tests
    assert len(operations) == 13  # the bot API (8) and the history endpoints (5)

    fuzzed = []
    for operation in operations:
        @given(operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            # The real key replaces a generated one; but a negative case that dropped the
            # required key header must go without it (given back, the request became valid
            # and its acceptance was reported as a failure, depending on the hash seed).
            dropped = mode is GenerationMode.NEGATIVE and "X-API-Key" not in (case.headers or {})
            case.call_and_validate(headers={} if dropped else team.headers)

        try:
            fuzz()
        except Unsatisfiable:  # nothing invalid to say to it (no body, only string params)
            assert mode is GenerationMode.NEGATIVE
            continue
        fuzzed.append(operation.label)
    if mode is GenerationMode.NEGATIVE:
        assert {"POST /exchange/orders", "POST /game/teams/register"} <= set(fuzzed)


def test_the_document_is_served_and_names_the_security_scheme(exchange: Exchange) -> None:
    doc = exchange.http.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    order = doc["paths"]["/exchange/orders"]["post"]
    body = order["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"instrument_id", "side", "quantity"}
    assert {"401", "413", "422"} <= set(order["responses"])
