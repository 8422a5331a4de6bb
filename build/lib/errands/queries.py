"""Named SQL blocks, loaded from ``sql/queries.sql``.

A block starts with a line ``-- name: NAME``; the text up to the next such line is the
query. Keeping SQL in ``.sql`` files lets it be read, linted and diffed as SQL.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import LiteralString

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def read_sql(name: str) -> LiteralString:
    """Return the text of a file shipped in ``errands/sql``."""
    # The files ship inside the package: they are as trusted as literals in the code.
    return resources.files("errands").joinpath("sql", name).read_text(encoding="utf-8")


def parse_blocks(text: str) -> dict[str, LiteralString]:
    """Split a file of ``-- name:`` blocks into a dict of name -> query."""
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def queries(filename: str = "queries.sql") -> dict[str, LiteralString]:
    """The named queries of one ``.sql`` file in ``errands/sql``."""
    return parse_blocks(read_sql(filename))


def query(name: str, filename: str = "queries.sql") -> LiteralString:
    """One named query; a KeyError names the missing block."""
    return queries(filename)[name]
