"""``errands.__all__`` lists exactly the public names (as httpx holds its own)."""

from __future__ import annotations

import errands


def test_all_lists_exactly_the_public_names() -> None:
    for name in errands.__all__:  # the facade is lazy: each name arrives at first use
        getattr(errands, name)
    public = {name for name in vars(errands) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(errands, name)).__name__ == "module"}
    assert set(errands.__all__) - {"__version__"} == public - modules


def test_all_is_sorted_and_unique() -> None:
    assert list(errands.__all__) == sorted(set(errands.__all__))


def test_every_public_name_has_a_docstring() -> None:
    undocumented = [
        name
        for name in errands.__all__
        if name != "__version__" and not getattr(errands, name).__doc__
    ]
    assert undocumented == []
