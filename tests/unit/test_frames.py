"""Published frames: an array of events, read by our decoders and by plain msgpack alike."""

from __future__ import annotations

import msgpack
import pytest

from common.messages import (
    DecodeError,
    TradePrint,
    decode,
    decode_events,
    encode,
    encode_events,
    split_events,
)


def trade(seq: int) -> TradePrint:
    return TradePrint(seq=seq, epoch=1, trade_id=f"T{seq}", instrument_id="SPX_4500_CALL",
                      price=12850, quantity=seq % 7 + 1, aggressor="buy")


@pytest.mark.parametrize("n", [1, 15, 16, 65_535, 65_536])  # each msgpack array header size
def test_frames_read_back_event_by_event(n: int) -> None:
    payloads = [encode(trade(s)) for s in range(1, n + 1)]
    frame = encode_events(*(trade(s) for s in range(1, n + 1)))
    assert split_events(frame) == payloads  # each as encoded alone (a replay sends them so)
    events = decode_events(frame)
    assert [e.seq for e in events] == list(range(1, n + 1))  # type: ignore[union-attr]
    plain = msgpack.unpackb(frame)
    assert len(plain) == n and plain[-1]["type"] == "trade" and plain[-1]["seq"] == n


def test_a_frame_that_is_not_an_array_is_refused() -> None:
    single = encode(trade(1))
    assert decode(single) == trade(1)
    for bad in (single, b"\xc1", b"", msgpack.packb([1, 2])):
        with pytest.raises(DecodeError):
            decode_events(bad)
    with pytest.raises(DecodeError):
        split_events(single)
