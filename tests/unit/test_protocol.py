"""The wire protocol's offsets: round trips and visibility arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from errands.protocol import Offset


@st.composite
def offsets(draw: st.DrawFn) -> Offset:
    xmin = draw(st.integers(1, 2**40))
    xmax = xmin + draw(st.integers(0, 1000))
    xip = (
        draw(st.sets(st.integers(xmin, max(xmin, xmax - 1)), max_size=5)) if xmax > xmin else set()
    )
    key = draw(st.none() | st.uuids().map(str))
    generation = draw(st.text("abcdef0123456789", min_size=1, max_size=12))
    return Offset(generation, xmin, xmax, tuple(sorted(xip)), key)


@given(offsets())
def test_offsets_round_trip(offset: Offset) -> None:
    assert Offset.decode(offset.encode()) == offset


@pytest.mark.parametrize(
    "text",
    ["", "-1", "abc", "g_1_2", "g_x_2_", "g_5_2_", "g_1_5_9", "g_0_0_", "g!_1_2_", "g_1_2_a.b"],
)
def test_garbage_is_not_an_offset(text: str) -> None:
    with pytest.raises(ValueError, match="not an offset"):
        Offset.decode(text)


def test_covers_follows_snapshot_visibility() -> None:
    offset = Offset("g", 10, 20, (12, 15))
    assert offset.covers(5)
    assert offset.covers(11)
    assert not offset.covers(12)
    assert offset.covers(13)
    assert not offset.covers(15)
    assert not offset.covers(20)
    assert not offset.covers(25)
