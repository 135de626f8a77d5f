"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against a real
cluster: matcher, simulator, events and a uvicorn gateway, in this process over inproc.

Every page is watched for console errors and uncaught exceptions; screenshots of the main
views are saved under the test's temp dir (screenshots/).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from common.messages import FairValues, FeedSnapshot, SnapshotRequest, UnderlyingTick
from common.transport import make_socket
from services.gateway.board import Board
from services.gateway.service import GatewayService
from services.launcher import Cluster
from tests.conftest import wait_for
from tests.game_master import rpc_call
from tests.integration.gw import Exchange, Team, running

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ADMIN = "test-admin-key-0123456789"
VIEWPORT = {"width": 1440, "height": 900}


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    with running(
        tmp_path_factory.mktemp("dash") / "data", ("matcher", "simulator", "events", "gateway"),
        gateway={"admin_key": ADMIN, "regime_delay_s": 3.0, "dashboard_interval_s": 0.1,
                 "leaderboard_interval_s": 0.2},
        matcher={"fsync": False},
        simulator={"speed": 20.0, "retail_orders_per_tick": 0.0, "status_log_s": 0.0},
        events={"news_mean_gap_s": 40.0, "news_min_gap_s": 10.0},
    ) as ex:
        yield ex


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


class Watched:
    """A page whose console errors and uncaught exceptions are collected."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))


@pytest.fixture
def dash(browser: Browser, exchange: Exchange) -> Iterator[Watched]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    watched = Watched(context.new_page())
    watched.page.goto(exchange.base + "/dashboard")
    expect(watched.page.locator("#link")).to_have_text("live")
    yield watched
    context.close()


def admin(exchange: Exchange, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = exchange.http.post(path, json=body, headers={"X-Admin-Key": ADMIN})
    assert r.status_code == 200 and r.json()["success"], r.text
    return r.json()  # type: ignore[no-any-return]


def money(cents: int) -> str:
    """As the page shows money: sign, thousands separators, two decimals."""
    text = f"{abs(cents) / 100:,.2f}"
    return ("+" if cents > 0 else "-" if cents < 0 else "") + text


def sim_marks(exchange: Exchange) -> tuple[dict[str, int], dict[str, int]]:
    """Fair values and underlying prices straight from the simulator (not via the gateway)."""
    cluster: Cluster = exchange.cluster
    sock = make_socket(cluster.ctx, cluster.config, "sim_rpc", bind=False)
    try:
        snap = rpc_call(sock, SnapshotRequest(), FeedSnapshot, 5.0)
    finally:
        sock.close(linger=0)
    fair = {iid: ticks for e in snap.events.values() if isinstance(e, FairValues)
            for iid, ticks, _ in e.values}
    spots = {e.symbol: e.price for e in snap.events.values() if isinstance(e, UnderlyingTick)}
    return fair, spots


def test_the_page_loads_live_with_no_console_errors(dash: Watched, shots: Path) -> None:
    page = dash.page
    expect(page.locator("#phase")).to_have_text("continuous")
    expect(page.locator("#chart canvas").first).to_be_visible()
    expect(page.locator("#chain tbody tr")).to_have_count(6)  # SPX + its 5 strikes
    expect(page.locator("#health .dot.ok", has_text="simulator")).to_be_visible()
    expect(page.locator("#clock")).to_contain_text("tick")
    expect(page.locator("#regime-legend")).to_contain_text("after the fact")
    expect(page.locator("#leaderboard tbody tr[data-team=HOUSE]")).to_be_visible()
    fair = page.locator("#chain tbody tr").nth(3).locator("td").first
    expect(fair).not_to_have_text("\u2013")  # fair values arrived (no dash)
    page.locator("#chain-underlying button", has_text="SPY").click()
    expect(page.locator("#chain tbody tr").nth(1)).to_contain_text("420")
    page.screenshot(path=shots / "market.png")
    assert dash.errors == []


NEW_CHART = """
  const { MarketChart } = await import('/dashboard/static/js/charts.js');
  const box = document.createElement('div');
  box.style.width = '400px'; box.style.height = '200px';
  document.body.append(box);
  const chart = new MarketChart(box, document.createElement('div'), KEEP);
"""
MERGE_REGIMES = "async () => {" + NEW_CHART.replace("KEEP", "20000") + """
  const spans = () => chart.spans.map((s) => s.join());
  chart.reset({ SPX: [[0, 1]] }, [], { spans: [[0, 2, 'low']], from_s: 0, until_s: 2 },
              ['low', 'high']);
  const seen = [spans()];
  chart.setRegimes({ spans: [[0, 3, 'low'], [3, 4, 'high']], from_s: 2, until_s: 4 });
  seen.push(spans());
  chart.setRegimes({ spans: [[3, 5, 'high']], from_s: 4, until_s: 5 });
  seen.push(spans());
  chart.addPoints('SPX', [[1, 1], [2, 1], [3, 1], [4, 1]]);  // shaded up to 4 now
  seen.push(spans());
  return seen;
}"""


def test_the_page_merges_regime_updates_that_carry_only_new_spans(dash: Watched) -> None:
    """Updates carry the spans from the one in force at `from_s` (the whole list grew to
    ~35 KB per update late in a game); what is shaded already is dropped on the page."""
    seen = dash.page.evaluate(MERGE_REGIMES)
    assert seen == [["0,2,low"], ["0,3,low", "3,4,high"], ["0,3,low", "3,5,high"],
                    ["3,5,high"]]
    assert dash.errors == []


TRIM = "async () => {" + NEW_CHART.replace("KEEP", "5") + """
  chart.reset({ SPX: [[0, 1]], SPY: [[0, 1]] }, [], { spans: [], until_s: 0 }, ['low']);
  chart.addNews([{ news_id: 1, game_s: 2, direction: 'up' },
                 { news_id: 2, game_s: 11, direction: 'down' }]);
  const more = [...Array(12).keys()].map((i) => [i + 1, 2]);
  chart.addPoints('SPY', more);
  chart.addPoints('SPX', more);
  return { spx: chart.spx.data().map((p) => p.time), spy: chart.spy.data().length,
           news: chart.news.map((m) => m.text) };
}"""


def test_a_page_left_open_keeps_a_bounded_chart(dash: Watched) -> None:
    """Every point of the game stayed in the page's series: a page left open all game grew."""
    kept = dash.page.evaluate(TRIM)
    assert kept == {"spx": [8, 9, 10, 11, 12], "spy": 5, "news": ["#2"]}
    assert dash.errors == []


FOLLOW = "async () => {" + NEW_CHART.replace("KEEP", "20000") + """
  const frame = () => new Promise((done) => requestAnimationFrame(() => done()));
  const shown = async () => {
    await frame(); await frame();
    const range = chart.chart.timeScale().getVisibleLogicalRange();
    return [Math.round(range.from), Math.round(range.to)];
  };
  chart.reset({ SPX: [[0, 1], [1, 1]] }, [], { spans: [], until_s: 0 }, ['low']);
  for (let t = 2; t < 300; t++) chart.addPoints('SPX', [[t, 1 + t / 100]]);
  const whole = await shown();
  box.dispatchEvent(new WheelEvent('wheel', { deltaY: -100 }));  // the user zooms: stay
  for (let t = 300; t < 600; t++) chart.addPoints('SPX', [[t, 1]]);
  const held = await shown();
  box.dispatchEvent(new MouseEvent('dblclick'));
  return { whole, held, again: await shown() };
}"""


def test_the_chart_keeps_the_whole_game_in_view_until_the_user_zooms(dash: Watched) -> None:
    """Fitted once at the start, it kept the first seconds' bar spacing: a page open from the
    start showed the last few seconds only, and never a regime band or an old news marker."""
    seen = dash.page.evaluate(FOLLOW)
    assert seen["whole"][0] <= 0 and seen["whole"][1] >= 299
    assert seen["held"][0] > 0  # not fitted again once the user zoomed
    assert seen["again"][0] <= 0 and seen["again"][1] >= 599
    assert dash.errors == []


def test_leaderboard_lists_the_scripted_teams_with_the_right_pnl(
        dash: Watched, exchange: Exchange, shots: Path) -> None:
    alpha = exchange.register("alpha", "market_maker")
    beta = exchange.register("beta", "hedge_fund")
    gamma = exchange.register("gamma", "arbitrage")
    assert alpha.order("sell", 10, 45.00)["success"]
    assert beta.order("buy", 10)["data"]["filled_quantity"] == 10  # market: 10 @ 45.00
    assert alpha.order("sell", 5, 441.00, instrument="SPY")["success"]
    assert gamma.order("buy", 5, 441.00, instrument="SPY")["data"]["filled_quantity"] == 5
    admin(exchange, "/admin/speed", {"speed": 0})  # the marks stand still from here on
    try:
        fair, spots = sim_marks(exchange)
        call, spy = fair["SPX_4500_CALL"], spots["SPY"]
        # cash by hand: price x quantity x multiplier, plus fees (+ = rebate): the market
        # maker earns 2c per contract making, the hedge fund and arbitrage desk pay 2c taking
        expected = {
            alpha.team_id: 10 * 4500 * 100 + 10 * 2 + 5 * 44100 + 5 * 2 - 10 * call * 100
            - 5 * spy,
            beta.team_id: -10 * 4500 * 100 - 10 * 2 + 10 * call * 100,
            gamma.team_id: -5 * 44100 - 5 * 2 + 5 * spy}
        page = dash.page
        for team_id, cents in expected.items():
            row = page.locator(f"#leaderboard tbody tr[data-team={team_id}]")
            expect(row.locator("td.pnl")).to_have_text(money(cents), timeout=10_000)
        names = page.locator("#leaderboard tbody tr td:nth-child(2)")
        expect(names.filter(has_text="alpha")).to_contain_text("MM")
        expect(names.filter(has_text="beta")).to_contain_text("Δ SPX +")  # its delta
        ranked = sorted(expected, key=lambda t: (-expected[t], t))
        rows = page.locator("#leaderboard tbody tr:not(.house)")
        expect(rows).to_have_count(3)
        assert [rows.nth(i).get_attribute("data-team") for i in range(3)] == ranked
        page.screenshot(path=shots / "leaderboard.png")
    finally:
        admin(exchange, "/admin/speed", {"speed": 20})
    assert dash.errors == []


def test_a_trade_through_the_rest_api_is_on_the_tape_within_a_second(
        dash: Watched, exchange: Exchange) -> None:
    seller, buyer = exchange.register("tape-seller"), exchange.register("tape-buyer", "retail")
    page = dash.page
    assert seller.order("sell", 7, 12.34, instrument="SPY_430_CALL")["success"]
    filled = buyer.order("buy", 7, 12.34, instrument="SPY_430_CALL")
    done = time.monotonic()
    assert filled["data"]["status"] == "filled"
    row = page.locator("#tape tbody tr[data-iid=SPY_430_CALL]", has_text="12.34")
    expect(row.first).to_be_visible(timeout=1_000)
    assert time.monotonic() - done < 1.0
    expect(row.first.locator("td").nth(3)).to_have_text("7")
    page.locator("#instrument").select_option("SPY_430_CALL")  # depth of that instrument
    expect(page.locator("#depth")).to_contain_text("last 12.34")
    assert dash.errors == []


def test_the_team_view_shows_its_own_orders_fills_and_pnl(
        dash: Watched, exchange: Exchange, shots: Path) -> None:
    team = exchange.register("viewer", "market_maker")
    other = exchange.register("viewer-2", "retail")
    assert team.order("sell", 3, 21.50, instrument="SPX_4400_CALL")["success"]
    assert other.order("buy", 2, instrument="SPX_4400_CALL")["success"]  # fills 2 of 3
    page = dash.page
    page.locator("nav button[data-tab=team]").click()
    page.fill("#team-login input[name=key]", "itg_not-a-key")
    page.click("#team-login button")
    expect(page.locator("#team-error")).to_have_text("Unknown API key")
    page.fill("#team-login input[name=key]", team.key)
    page.click("#team-login button")
    expect(page.locator("#team-summary")).to_contain_text("viewer")
    expect(page.locator("#orders tbody tr")).to_have_count(1)
    expect(page.locator("#orders tbody tr")).to_contain_text("SPX_4400_CALL")
    expect(page.locator("#fills tbody tr")).to_have_count(1)
    expect(page.locator("#fills tbody tr")).to_contain_text("21.50")
    expect(page.locator("#holdings tbody tr", has_text="SPX_4400_CALL")).to_contain_text("-2")
    expect(page.locator("#pnl-chart canvas").first).to_be_visible()
    last = exchange.register("viewer-3", "hedge_fund").order(
        "buy", 1, instrument="SPX_4400_CALL")  # the last lot
    assert last["success"], last["error"]
    expect(page.locator("#fills tbody tr")).to_have_count(2)  # added on top, the first kept
    expect(page.locator("#fills tbody tr").first).to_contain_text("21.50")
    expect(page.locator("#holdings tbody tr", has_text="SPX_4400_CALL")).to_contain_text("-3")
    expect(page.locator("#orders tbody tr")).to_have_count(0)
    page.screenshot(path=shots / "team.png")
    assert dash.errors == []


def test_the_team_stream_sends_the_path_and_fills_once_then_only_what_is_new(
        exchange: Exchange) -> None:
    """Every view carried the whole P&L path and the last 200 fills, shaped again for every
    open view each refresh: the views' cost and size grew with the game."""
    # a hedge fund buys: retail's one order a second could refuse the second fill
    team, buyer = exchange.register("path-reader"), exchange.register("path-buyer", "hedge_fund")

    def fill(price: float) -> None:
        assert team.order("sell", 1, price, instrument="SPY_430_PUT")["success"]
        bought = buyer.order("buy", 1, instrument="SPY_430_PUT")
        assert bought["success"] and bought["data"]["filled_quantity"] == 1, bought["error"]

    fill(3.10)
    views: list[dict[str, Any]] = []
    with connect(exchange.ws_base + "/ws/team") as ws:
        ws.send(json.dumps({"type": "auth", "api_key": team.key}))
        while len(views) < 12:  # 0.2 s refreshes: a few seconds
            message = json.loads(ws.recv(timeout=5))
            if message["type"] == "team" and not message["data"].get("pending"):
                views.append(message["data"])
            if len(views) == 6:
                fill(3.20)
    whole = exchange.http.get("/dashboard/api/team", headers=team.headers).json()
    first, later = views[0], views[1:]
    assert first["history_from"] is None and first["history"]
    assert first["fills_after"] is None
    path = {t: pnl for t, pnl in first["history"]}
    fills = first["fills"]
    for before, view in zip(views, later, strict=False):
        assert view["history_from"] == before["history"][-1][0]  # the last point seen on
        times = [t for t, _ in view["history"]]
        assert times[0] == view["history_from"] and times == sorted(set(times))
        path.update({t: pnl for t, pnl in view["history"]})
        assert view["fills_after"] == before["fills_total"]
        assert len(view["fills"]) == view["fills_total"] - before["fills_total"]
        fills = view["fills"] + fills
    assert len(path) >= 3  # the path grew over the seconds watched...
    # ...as the gateway keeps it (the last second's point may have been sampled again since)
    seen = [[t, pnl] for t, pnl in path.items()]
    assert seen[:-1] == whole["history"][:len(path) - 1]
    assert seen[-1][0] == whole["history"][len(path) - 1][0]
    assert [f["price"] for f in fills] == [3.2, 3.1] and fills == whole["fills"]


PNL_CHART = """async () => {
  const { PnlChart } = await import('/dashboard/static/js/charts.js');
  const box = document.createElement('div');
  box.style.width = '400px'; box.style.height = '200px';
  document.body.append(box);
  const chart = new PnlChart(box, 3);
  const shown = () => chart.series.data().map((p) => [p.time, p.value]);
  chart.set([[10, '1.00'], [11, '2.00']]);
  chart.extend([[11, '3.00'], [12, '4.00']]);  // the last point sampled again, and a new one
  chart.extend([[9, '9.00']]);  // never backwards
  const extended = shown();
  chart.extend([[13, '5'], [14, '6'], [15, '7'], [16, '8']]);
  return { extended, trimmed: shown() };
}"""


def test_the_team_chart_extends_its_path_and_stays_bounded(dash: Watched) -> None:
    seen = dash.page.evaluate(PNL_CHART)
    assert seen["extended"] == [[10, 1], [11, 3], [12, 4]]
    assert seen["trimmed"] == [[14, 6], [15, 7], [16, 8]]  # 3 kept, as the gateway keeps
    assert dash.errors == []


def test_the_operators_halt_button_stops_trading_in_that_instrument(
        dash: Watched, exchange: Exchange, shots: Path) -> None:
    maker, taker = exchange.register("halt-maker"), exchange.register("halt-taker", "hedge_fund")
    assert maker.order("sell", 5, 30.00, instrument="SPX_4300_PUT")["success"]
    page = dash.page
    page.on("dialog", lambda d: d.accept())
    page.locator("nav button[data-tab=operator]").click()
    page.fill("#admin-login input[name=key]", "wrong-key-wrong-key")
    page.click("#admin-login button")
    expect(page.locator("#admin-error")).to_have_text("Invalid admin key")
    page.fill("#admin-login input[name=key]", ADMIN)
    page.click("#admin-login button")
    page.locator("#halt-instrument").select_option("SPX_4300_PUT")
    page.click("#halt-button")
    expect(page.locator("#halted")).to_have_text("halted: SPX_4300_PUT")
    expect(page.locator("#halted-list")).to_contain_text("SPX_4300_PUT")
    refused = taker.order("buy", 1, instrument="SPX_4300_PUT")
    assert refused["error"]["code"] == "MARKET_CLOSED" and refused["error"]["details"]["halted"]
    assert taker.order("buy", 1, 1.00, instrument="SPX_4200_PUT")["success"]  # others trade
    page.screenshot(path=shots / "operator.png")
    page.click("#resume-button")
    expect(page.locator("#halted")).to_be_hidden()
    assert taker.order("buy", 1, instrument="SPX_4300_PUT")["data"]["filled_quantity"] == 1
    orders = page.locator(f"#admin-teams tr[data-team={maker.team_id}] td:nth-child(4)")
    expect(orders).to_have_text("1")  # from /admin/leaderboard: not on the public stream
    kill = page.locator(f"#admin-teams tr[data-team={maker.team_id}] button")
    kill.click()  # the kill switch: every resting order of that team is cancelled
    expect(page.locator("#admin-log li").first).to_contain_text(f"kill switch {maker.team_id}")
    assert maker.open_orders() == []
    assert [e for e in dash.errors if "401" not in e] == []  # the wrong key's answer only
    assert len(dash.errors) <= 1


def test_the_spectator_stream_is_public_and_the_team_stream_needs_a_key(
        exchange: Exchange) -> None:
    board = httpx.get(exchange.base + "/dashboard/api/leaderboard", timeout=5).json()
    row = board["leaderboard"][0]
    assert {"cash", "holdings", "open_orders"}.isdisjoint({*row, *row["positions"]})
    assert exchange.http.get("/dashboard/api/team").status_code == 401
    team: Team = exchange.register("api-reader")
    r = exchange.http.get("/dashboard/api/team", headers=team.headers)
    assert r.status_code == 200 and r.json()["team"]["team_id"] == team.team_id
    placed = team.order("buy", 1, 1.25, instrument="SPY_440_CALL")["order_id"]

    seen: list[dict[str, Any]] = []

    def counted() -> bool:  # an answer over the team's request rate is a refusal: polled on
        seen[:] = [exchange.http.get("/dashboard/api/team", headers=team.headers).json()]
        return bool(seen[0].get("team", {}).get("open_orders"))

    # no page of it is open, so the leaderboard's reads leave its orders out: asked apart
    wait_for(counted, what="the order counted")
    assert [o["order_id"] for o in seen[0]["orders"]] == [placed]


def test_the_team_tab_keeps_its_key_through_a_gateway_restart(
        browser: Browser, tmp_path: Path) -> None:
    """It retried once and then forgot the key (back to the login form) if that retry failed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with running(tmp_path / "data", gateway={"port": port, "leaderboard_interval_s": 0.2},
                 matcher={"fsync": False}) as ex:
        team = ex.register("restarted-tab", "hedge_fund")
        context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        page = context.new_page()
        page.goto(ex.base + "/dashboard")
        page.locator("nav button[data-tab=team]").click()
        page.fill("#team-login input[name=key]", team.key)
        page.click("#team-login button")
        expect(page.locator("#team-summary")).to_contain_text("restarted-tab")
        cluster = ex.cluster
        cluster.services["gateway"].stop()
        cluster._threads["gateway"].join(15)
        time.sleep(2.5)  # long enough for a retry or two to fail
        again = GatewayService(cluster.config, cluster.ctx)
        thread = threading.Thread(target=again.run, daemon=True, name="test-gw-again")
        thread.start()
        cluster.services["gateway"], cluster._threads["gateway"] = again, thread
        assert again.ready.wait(30)
        expect(page.locator("#team-view")).to_be_visible(timeout=15_000)
        expect(page.locator("#team-login")).to_be_hidden()
        assert page.evaluate("sessionStorage.getItem('itg.teamKey')") == team.key
        context.close()


def test_the_team_stream_says_try_again_not_bad_key_while_the_matcher_is_down(
        tmp_path: Path) -> None:
    """A 1008 (bad key) made the page forget a good key during a matcher outage."""
    with running(tmp_path / "data", gateway={"request_timeout_s": 0.5},
                 matcher={"fsync": False}) as ex:
        team = ex.register("outage-tab", "hedge_fund")

        def closed_with(key: str) -> tuple[int | None, str | None]:
            with connect(ex.ws_base + "/ws/team") as ws:
                ws.send(json.dumps({"type": "auth", "api_key": key}))
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=5)
                return ws.close_code, ws.close_reason

        assert closed_with("itg_not-a-key")[0] == 1008  # a key that is wrong is told so
        ex.gateway.gateway.keys._known.clear()  # as after a gateway restart: the key unknown
        ex.cluster.services["matcher"].stop()
        ex.cluster._threads["matcher"].join(10)
        assert closed_with(team.key) == (1013, "the exchange is unavailable; retry")


def test_a_gateway_started_while_the_game_stands_still_has_the_simulators_prices(
        tmp_path: Path) -> None:
    """It learnt prices only from live ticks: started after the simulator's last one (a paused
    game), it marked every position to its last trade and showed no fair value or spot."""
    with running(tmp_path / "data", ("matcher", "simulator", "gateway"),
                 matcher={"fsync": False},
                 simulator={"speed": 0.001, "retail_orders_per_tick": 0.0}) as ex:

        def public_snapshot() -> dict[str, Any]:
            with connect(ex.ws_base + "/ws/public") as ws:
                first = json.loads(ws.recv(timeout=5))
            assert first["type"] == "snapshot"
            return first["data"]  # type: ignore[no-any-return]

        wait_for(lambda: public_snapshot()["fair"], 10, "the simulator's fair values")
        data = public_snapshot()
        assert set(data["spots"]) == {"SPX", "SPY"} and data["spots"]["SPX"] > 0
        assert "SPX_4400_CALL" in data["fair"]


def test_a_broadcast_that_fails_is_followed_by_a_new_snapshot_and_the_stream_goes_on(
        exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop ended for good on any unexpected exception: every page froze (fault injected
    into the board, as no input is known to break it)."""
    board = next(tap.__self__ for tap in exchange.gateway.gateway.taps
                 if isinstance(getattr(tap, "__self__", None), Board))
    real, failed = board.take_changes, threading.Event()

    def fails_once() -> tuple[dict[str, Any], set[str]]:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("injected")
        return real()

    with connect(exchange.ws_base + "/ws/public") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"
        monkeypatch.setattr(board, "take_changes", fails_once)
        kinds = []
        while kinds[-2:] != ["snapshot", "update"]:
            kinds.append(json.loads(ws.recv(timeout=5))["type"])
            assert len(kinds) < 200, kinds
    assert failed.is_set()
