"""The matcher's replay rings: what they hold, and what they say they cannot give."""

from __future__ import annotations

from common.messages import CancelAck, decode, encode
from services.matcher.replay import MIN_SHARE, ReplayRings

TOPIC = b"exec.TEAM_001"


def ack(seq: int) -> CancelAck:
    return CancelAck(seq=seq, order_id=f"ORD_{seq:08d}", client_order_id=None,
                     team_id="TEAM_001", instrument_id="SPX_4500_CALL", cancelled_quantity=1,
                     reason="user_requested")


def test_a_replay_gives_what_the_ring_holds_and_says_when_it_is_short() -> None:
    rings = ReplayRings(private_size=3, public_size=3, private_total=100)
    rings.add(TOPIC, 2, [ack(1), ack(2)])
    rings.add(TOPIC, 5, [ack(3), ack(4), ack(5)])  # 1 and 2 fall out
    held = rings.replay(TOPIC, 3)
    assert (held.payloads, held.complete) == ([encode(ack(s)) for s in (3, 4, 5)], True)
    assert [decode(p) for p in held.payloads] == [ack(3), ack(4), ack(5)]
    short = rings.replay(TOPIC, 1)
    assert (short.payloads, short.complete) == (held.payloads, False)
    assert rings.replay(TOPIC, 6).complete and rings.replay(b"exec.OTHER", 1).complete


def test_after_a_restart_events_from_before_it_are_reported_missing() -> None:
    rings = ReplayRings(private_size=3, public_size=3, private_total=100)
    rings.start_at({TOPIC: 4})  # the engine's seqs, recovered from a snapshot
    gone = rings.replay(TOPIC, 2)
    assert (gone.payloads, gone.complete) == ([], False)
    assert rings.replay(TOPIC, 5).complete  # nothing after 4 yet: nothing is missing
    rings.add(TOPIC, 5, [ack(5)])
    assert rings.replay(TOPIC, 5).payloads == [encode(ack(5))]


def test_a_replay_from_0_of_a_ring_that_holds_seq_1_is_complete() -> None:
    rings = ReplayRings(private_size=3, public_size=3, private_total=100)
    rings.add(TOPIC, 2, [ack(1), ack(2)])
    for start in (0, -5):
        held = rings.replay(TOPIC, start)
        assert (len(held.payloads), held.complete) == (2, True)


def test_the_private_rings_share_a_budget_and_the_public_ones_keep_their_size() -> None:
    """10,000 events for each of 1,000 teams was 4 GB of the matcher's memory."""
    rings = ReplayRings(private_size=1000, public_size=2000, private_total=2500)
    rings.add(TOPIC, 1000, [ack(s) for s in range(1, 1001)])
    rings.add(b"md.trade.SPY", 2000, [ack(s) for s in range(1, 2001)])
    rings.add(b"exec.TEAM_002", 1, [ack(1)])  # two rings of 1,000 fit
    assert rings.share == 1000 and len(rings.replay(TOPIC, 1).payloads) == 1000
    rings.add(b"resp.gw-1", 1, [ack(1)])  # three do not: each keeps half, the newest
    assert rings.share == 500
    short, kept = rings.replay(TOPIC, 1), rings.replay(TOPIC, 501)
    assert not short.complete and kept.complete and len(kept.payloads) == 500
    assert decode(kept.payloads[0]) == ack(501)
    public = rings.replay(b"md.trade.SPY", 1)
    assert public.complete and len(public.payloads) == 2000
    for team in range(3, 60):  # however many: never under the floor
        rings.add(f"exec.TEAM_{team:03d}".encode(), 1, [ack(1)])
    assert rings.share == MIN_SHARE
    rings.add(TOPIC, 1300, [ack(s) for s in range(1001, 1301)])
    assert len(rings.replay(TOPIC, 1).payloads) == MIN_SHARE
