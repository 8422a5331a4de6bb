"""Typed payloads: a handler that annotates its payload declares what it accepts.

``def resize(ctx, payload: Resize)`` with ``Resize`` a pydantic model or a
``TypedDict``: the worker publishes the type's JSON Schema with the kind (the sync
service checks clients' payloads against it before they are queued), and parses each
payload into the type before the handler runs. A payload that does not match fails the
job at once (:class:`~errands.Permanent`): no retry can make it match.
"""

from __future__ import annotations

import inspect
import json
import typing
from dataclasses import dataclass, field
from typing import Any

import pydantic
import typing_extensions

from errands.exceptions import Permanent


@dataclass(frozen=True)
class PayloadType:
    """A handler's declared payload type, its adapter and its JSON Schema."""

    annotation: Any
    adapter: pydantic.TypeAdapter[Any] = field(compare=False)

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) payloads must match."""
        schema: dict[str, Any] = self.adapter.json_schema()
        return schema

    @property
    def schema_json(self) -> str:
        """:attr:`schema` as JSON text, as the kinds table stores it."""
        return json.dumps(self.schema, sort_keys=True)

    def parse(self, payload: Any) -> Any:
        """``payload`` as the declared type; :class:`~errands.Permanent` if it does not
        match, naming the first field that does not."""
        try:
            return self.adapter.validate_python(payload)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the payload"
            raise Permanent(
                f"the payload does not match {_name(self.annotation)}: {where}: {first['msg']}"
            ) from None


def payload_type(function: Any) -> PayloadType | None:
    """The payload type ``function(ctx, payload)`` declares, if it declares one that
    has a schema: a pydantic model or a TypedDict. Other annotations (``dict``, ``Any``)
    and none declare nothing."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
        hints = typing.get_type_hints(function)
    except (TypeError, ValueError, NameError):
        return None
    if len(parameters) < 2:
        return None
    annotation: Any = hints.get(parameters[1].name)
    model = isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)
    if not (model or typing_extensions.is_typeddict(annotation)):
        return None
    try:
        return PayloadType(annotation, pydantic.TypeAdapter(annotation))
    except pydantic.PydanticUserError as exc:  # e.g. typing.TypedDict before Python 3.12
        raise ValueError(f"the payload type {_name(annotation)} cannot be checked: {exc}") from None


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", repr(annotation))
