"""The matcher's replay rings: what they hold, and what they say they cannot give."""

from __future__ import annotations

from services.matcher.replay import ReplayRings

TOPIC = b"exec.TEAM_001"


def test_a_replay_gives_what_the_ring_holds_and_says_when_it_is_short() -> None:
    rings = ReplayRings(private_size=3, public_size=3)
    rings.add(TOPIC, 2, [b"e1", b"e2"])
    rings.add(TOPIC, 5, [b"e3", b"e4", b"e5"])  # e1 and e2 fall out
    held = rings.replay(TOPIC, 3)
    assert (held.payloads, held.complete) == ([b"e3", b"e4", b"e5"], True)
    short = rings.replay(TOPIC, 1)
    assert (short.payloads, short.complete) == ([b"e3", b"e4", b"e5"], False)
    assert rings.replay(TOPIC, 6).complete and rings.replay(b"exec.OTHER", 1).complete


def test_after_a_restart_events_from_before_it_are_reported_missing() -> None:
    rings = ReplayRings(private_size=3, public_size=3)
    rings.start_at({TOPIC: 4})  # the engine's seqs, recovered from a snapshot
    gone = rings.replay(TOPIC, 2)
    assert (gone.payloads, gone.complete) == ([], False)
    assert rings.replay(TOPIC, 5).complete  # nothing after 4 yet: nothing is missing
    rings.add(TOPIC, 5, [b"e5"])
    assert rings.replay(TOPIC, 5).payloads == [b"e5"]
