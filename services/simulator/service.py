"""The simulator on the bus: paces the pure `SimStep` with the game clock and publishes it.

Per tick: underlying ticks and fair values on the public feed (sim_pub), the tick's state with
the regime window on the private channel for the events service (sim_private), changed marks
and the retail orders of the house teams as commands to the matcher. News shocks arrive from
the events service on events_private; game-master controls on sim_rpc.
"""

from __future__ import annotations

import logging
import math
import time

import zmq

from common import topics
from common.feed import FeedService
from common.messages import (
    AccountReply,
    Command,
    ControlReply,
    ExpireOptions,
    ForceRegime,
    Message,
    NewOrder,
    NewsShock,
    PriceMark,
    SetSpeed,
    TradePrint,
    encode,
)
from common.outbox import RecordLink
from common.records import PriceKind, PriceRecord
from common.service import Context
from services.simulator.checkpoint import CHECKPOINT_EVERY_S, Checkpoint
from services.simulator.clock import GameClock
from services.simulator.house import HouseSweeper
from services.simulator.step import TickOutput, build_step, house_teams

log = logging.getLogger(__name__)

MAX_SPEED = 1_000_000.0
MAX_DRAIN = 1000  # frames per handler call, so the clock keeps its pace under a flood


class SimulatorService(FeedService):
    name = "simulator"
    poll_ms = 10  # pacing granularity of the game clock

    def on_start(self, ctx: Context) -> None:
        s = self.config.simulator
        self.checkpoint = Checkpoint(self.config.data_path / "simulator", self.config)
        saved = self.checkpoint.load()
        if saved is None:
            self.step = build_step(self.config)
            self.step.game = self.epoch  # a new game, named after the run that starts it
        else:
            self.step = saved.step
            log.info("simulator: going on with the game at tick %d", self.step.tick)
            # no waiting for the next news schedule: the events service that sent the last one
            # may have sent the next to the simulator that stopped (shocks held still apply)
            self.step.release()
        self.open_feed(ctx, "sim")
        self.records = RecordLink(self, ctx, "simulator")  # price history for the database
        self.commands = self.socket(ctx, "commands", bind=False)
        self.shocks = self.socket(ctx, "events_private", bind=False)
        self.shocks.subscribe(topics.NEWS_SHOCK)
        self.matcher_rpc = self.socket(ctx, "matcher_rpc", bind=False)
        self.trades = self.socket(ctx, "matcher_pub", bind=False)  # for the status line only
        self.trades.subscribe(topics.TRADE)
        self.on_readable(self.shocks, self._drain_shocks)
        self.on_readable(self.matcher_rpc, self._drain_replies)
        self.on_readable(self.trades, self._drain_trades)
        teams = house_teams(self.config)
        if len(teams) < 2:
            log.warning("simulator: %d house team(s); retail orders of one team never trade "
                        "with each other (self-trade prevention)", len(teams))
        self.house = HouseSweeper(teams, s.retail_order_ttl_s, self.matcher_rpc, self._command)
        now = time.monotonic()
        speed = s.speed if saved is None else saved.speed  # a pause outlives a restart
        if speed != s.speed:
            log.warning("simulator: going on at the game's saved speed %g, not the configured "
                        "%g; the game master (admin API) sets it", speed, s.speed)
        self.clock = GameClock(s.tick_interval_s, speed, now, s.max_catchup_ticks)
        self._next_checkpoint = now + CHECKPOINT_EVERY_S
        self._last: TickOutput | None = None
        self._held_since: float | None = None
        self._trades_seen, self._last_trade = 0, ""
        self._next_status = now + s.status_log_s
        self._emit(self.step.start())  # the prices where the game stands (a new epoch)

    def on_stop(self) -> None:
        # where the game stands, for the next start; not after a crash, which may have left a
        # tick half done (the last periodic save stands)
        if hasattr(self, "clock") and self.stopping.is_set():
            self.checkpoint.save(self.step, self.clock.speed)
        super().on_stop()

    # --- the clock ---

    def on_tick(self, now: float) -> None:
        self.records.send_due(now)
        due = self.clock.due(now)
        while due and self._may_advance(now):
            self._emit(self.step.advance())
            due -= 1
        self.clock.give_back(due)
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + CHECKPOINT_EVERY_S
            self.checkpoint.save(self.step, self.clock.speed)
        self.house.maybe_sweep(self.step.tick * self.config.simulator.tick_interval_s)
        if self.config.simulator.status_log_s and now >= self._next_status:
            self._next_status = now + self.config.simulator.status_log_s
            self._log_status()

    def _may_advance(self, now: float) -> bool:
        """Hold at a news tick for the next scheduled shock, but never longer than news_wait_s."""
        if self.step.can_advance:
            self._held_since = None
            return True
        if self._held_since is None:
            self._held_since = now
        wait = self.config.simulator.news_wait_s
        if now - self._held_since < wait:
            return False
        log.warning("simulator: no news schedule from the events service for %.1f s at tick %d; "
                    "running on without it", wait, self.step.tick)
        self.counters["news_waits_expired"] += 1
        self.step.release()
        self._held_since = None
        return True

    def _emit(self, out: TickOutput) -> None:
        feed, pub = self.feed, self.pub
        assert pub is not None
        for tick in out.underlyings:
            feed.publish(pub, topics.underlying(tick.symbol), tick)
        for values in out.fair_values:
            feed.publish(pub, topics.fair(values.underlying), values)
        feed.send(self.private, topics.SIM_STATE, out.state)
        self._record_prices(out)
        for instrument_id, price in out.marks:
            self._command(PriceMark(instrument_id=instrument_id, price=price))
        if out.expiry:  # the matcher settles once; a resumed game says it again, harmlessly
            self._command(ExpireOptions(prices=out.expiry))
        for i, (team, o) in enumerate(out.orders):
            # named by game, tick and place: the orders of a tick computed again after a
            # restart reach the matcher under their first ids, and are answered as retries
            self._command(NewOrder(team_id=team, instrument_id=o.instrument_id, side=o.side,
                                   quantity=o.quantity, order_type=o.order_type, price=o.price,
                                   client_order_id=f"r{self.step.game:x}.{out.tick}.{i}"))
        self._last = out

    def _record_prices(self, out: TickOutput) -> None:
        """Numbered by game and tick, not by run: a resumed game computes the ticks after its
        last checkpoint again, and the same numbers make the writers keep the rows they have
        (numbered afresh, each such tick was stored twice and the history stepped back)."""
        rows: list[tuple[str, int, PriceKind]] = [
            (t.symbol, t.price, "underlying") for t in out.underlyings] + [
            (iid, fair, "fair_value") for values in out.fair_values
            for iid, fair, _delta in values.values]
        first = self.step.game + out.tick * len(rows)  # the same count every tick of a game
        ts, now = time.time_ns(), time.monotonic()
        for i, (instrument_id, price, kind) in enumerate(rows):
            self.records.add(PriceRecord(stream="simulator", seq=first + i, ts_ns=ts,
                                         instrument_id=instrument_id, price=price, kind=kind),
                             now)

    def _command(self, cmd: Command) -> None:
        """Fire and forget (gw = ""): no response is published; fills show on exec.<team>."""
        try:
            self.commands.send_multipart([b"cmd", encode(cmd)], zmq.NOBLOCK)
            self.counters["commands"] += 1
        except zmq.Again:
            self.counters["commands_dropped"] += 1

    # --- inputs ---

    def _drain_shocks(self) -> None:
        for _ in range(MAX_DRAIN):
            try:
                frames = self.shocks.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for shock in self.events_of(frames[-1], NewsShock):
                if self.step.add_shock(shock):
                    self.counters["shocks"] += 1

    def _drain_replies(self) -> None:
        for _ in range(MAX_DRAIN):
            try:
                payload = self.matcher_rpc.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = self.decode_as(payload, AccountReply)
            if reply is not None:
                self.house.on_reply(reply, self.clock.speed)

    def _drain_trades(self) -> None:
        for _ in range(MAX_DRAIN):
            try:
                frames = self.trades.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for trade in self.events_of(frames[-1], TradePrint):
                self._trades_seen += 1
                self._last_trade = f"{trade.instrument_id} {trade.quantity}@{trade.price / 100:.2f}"

    # --- game-master controls ---

    def control(self, request: Message) -> Message:
        match request:
            case ForceRegime(regime=name):
                return self._force_regime(name)
            case SetSpeed(speed=speed):
                return self._set_speed(speed)
        return super().control(request)

    def _force_regime(self, name: str) -> ControlReply:
        names = self.step.regime_names
        if name not in names:
            return ControlReply(ok=False, message=f"unknown regime {name!r}",
                                details={"allowed": list(names)})
        self.step.force_regime(names.index(name))
        log.warning("game master: regime %s from tick %d", name, self.step.tick + 1)
        return ControlReply(ok=True, details={"regime": name, "tick": self.step.tick + 1})

    def _set_speed(self, speed: float) -> ControlReply:
        if not (math.isfinite(speed) and 0.0 <= speed <= MAX_SPEED):
            return ControlReply(ok=False, message=f"speed must be within 0..{MAX_SPEED:g}",
                                details={"speed": speed})
        previous = self.clock.speed
        self.clock.set_speed(speed, time.monotonic())
        log.warning("game master: speed %g -> %g at tick %d", previous, speed, self.step.tick)
        return ControlReply(ok=True, details={"speed": speed, "previous": previous,
                                              "tick": self.step.tick})

    def _log_status(self) -> None:
        if self._last is None:
            return
        prices = " ".join(f"{t.symbol} {t.price / 100:.2f}" for t in self._last.underlyings)
        log.info("simulator: tick %d (game %s, speed %g) %s; %d commands sent, %d trades seen "
                 "(last %s), %d stale retail orders cancelled", self.step.tick,
                 _hms(self._last.underlyings[0].game_s), self.clock.speed, prices,
                 self.counters["commands"], self._trades_seen, self._last_trade or "none",
                 self.house.cancelled)


def _hms(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
