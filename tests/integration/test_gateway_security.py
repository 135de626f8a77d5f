"""Every endpoint tried without a key, with a wrong key and with another team's ids: no answer
may reveal anything of the other team (its orders, ids, fills, key or existence)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.integration.gw import Exchange, Team, running

SECURED = [("GET", "/game/teams/{team}"), ("POST", "/exchange/orders"),
           ("GET", "/exchange/orders"), ("DELETE", "/exchange/orders/{order}"),
           ("GET", "/exchange/orderbook/SPX_4500_CALL"), ("GET", "/positions")]
ORDER = {"instrument_id": "SPX_4500_CALL", "side": "buy", "quantity": 1, "price": 1.0}


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    with running(tmp_path_factory.mktemp("sec") / "data") as ex:
        yield ex


@pytest.fixture(scope="module")
def victim(exchange: Exchange) -> tuple[Team, dict[str, str]]:
    team = exchange.register("victim")
    placed = team.order("sell", 7, 99.99, client_order_id="victim-secret-coid")
    return team, {"order_id": placed["order_id"], "coid": "victim-secret-coid",
                  "team_id": team.team_id, "key": team.key, "name": "victim"}


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


def call(ex: Exchange, method: str, path: str, headers: dict[str, str]) -> Any:
    body = ORDER if method == "POST" else None
    return ex.http.request(method, path, json=body, headers=headers)


def test_no_key_and_wrong_keys_are_refused_everywhere(
    exchange: Exchange, victim: tuple[Team, dict[str, str]]
) -> None:
    team, secrets = victim
    wrong = ["itg_" + "A" * 43, secrets["key"][:-1], secrets["key"] + "x", "x" * 5000,
             secrets["key"].upper(), ""]
    for method, template in SECURED:
        path = template.format(team=team.team_id, order=secrets["order_id"])
        r = call(exchange, method, path, {})
        assert (r.status_code, r.json()) == (401, {
            "detail": "Missing API key. Include X-API-Key header."}), (method, path)
        for key in wrong:
            r = call(exchange, method, path, {"X-API-Key": key})
            assert r.status_code == 401, (method, path, key)
            assert not leaks(r.text, secrets)
    for query in ("", "?api_key=", f"?api_key={secrets['key'][:-2]}"):
        with pytest.raises(InvalidStatus):
            connect(f"{exchange.ws_base}/ws{query}").close()
    assert team.open_orders()[0]["remaining_quantity"] == 7  # nothing happened to it


def test_another_teams_ids_reveal_nothing(
    exchange: Exchange, victim: tuple[Team, dict[str, str]]
) -> None:
    team, secrets = victim
    attacker = exchange.register("attacker")
    stream = attacker.ws()
    stream.next()
    answers = [
        attacker.exchange.http.get(f"/game/teams/{team.team_id}", headers=attacker.headers),
        attacker.exchange.http.get("/game/teams/TEAM_999", headers=attacker.headers),
        attacker.exchange.http.delete(f"/exchange/orders/{secrets['order_id']}",
                                      headers=attacker.headers),
        attacker.exchange.http.delete("/exchange/orders/ORD_77777777", headers=attacker.headers),
        attacker.exchange.http.get("/exchange/orders", headers=attacker.headers),
        attacker.exchange.http.get("/positions", headers=attacker.headers),
        attacker.exchange.http.post("/exchange/orders", headers=attacker.headers, json={
            **ORDER, "client_order_id": secrets["coid"]}),  # same coid: no clash, no replay
    ]
    assert all(r.status_code == 200 for r in answers)
    asked = ["", "", "", "", "", "", ""]  # what the attacker itself sent, echoed back to it
    asked[0], asked[2], asked[6] = team.team_id, secrets["order_id"], secrets["coid"]
    found = {i: leaks(r.text.replace(asked[i], "<asked>") if asked[i] else r.text, secrets)
             for i, r in enumerate(answers)}
    assert found == {i: [] for i in range(len(answers))}
    own, unknown = answers[0].json(), answers[1].json()
    assert own["error"]["code"] == unknown["error"]["code"] == "TEAM_NOT_FOUND"
    foreign, missing = answers[2].json()["error"], answers[3].json()["error"]
    assert (foreign["code"], foreign["message"]) == (missing["code"], missing["message"])
    assert answers[4].json()["data"]["orders"] == []
    assert answers[5].json()["data"]["positions"] == {}
    assert answers[6].json()["success"] and answers[6].json()["order_id"] != secrets["order_id"]
    team.order("sell", 1, 98.00)  # victim activity while the attacker listens
    own_order = attacker.order("sell", 1, 97.00, instrument="SPX_4400_CALL")["order_id"]
    stream.private("new_order_ack", own_order)
    for message in stream.seen:  # its own acks and rejects echo what it sent, nothing more
        text = str(message).replace(secrets["order_id"], "<asked>")
        assert not leaks(text.replace(secrets["coid"], "<asked>"), secrets), message
        assert message["type"] in ("position_snapshot", "new_order_ack", "cancel_reject",
                                   "market_data")
    rejects = [m["data"] for m in stream.seen if m["type"] == "cancel_reject"]
    assert [r["order_id"] for r in rejects] == [secrets["order_id"], "ORD_77777777"]
    assert rejects[0]["reason"] == rejects[1]["reason"]
    [remaining] = [o for o in team.open_orders() if o["order_id"] == secrets["order_id"]]
    assert remaining["remaining_quantity"] == 7
    stream.close()
