"""errands.waiting: a wait on an event that never swallows a cancellation, and the rule
that errands never calls asyncio.wait_for (whose 3.11 race hung the worker's stop)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import errands
from errands.waiting import event_set

SOURCE = Path(errands.__file__).parent


async def _waits_forever(event: asyncio.Event) -> None:
    """A background loop as the worker has them: wait a while, clear, again."""
    while True:
        await event_set(event, 0.1)
        event.clear()


def test_a_cancel_that_arrives_as_the_event_is_set_ends_the_loop() -> None:
    async def main() -> bool:
        event = asyncio.Event()
        task = asyncio.create_task(_waits_forever(event))
        await asyncio.sleep(0.05)
        event.set()
        task.cancel()  # in the same turn of the loop: asyncio.wait_for lost it on 3.11
        done, _ = await asyncio.wait([task], timeout=5)
        task.cancel()
        return task in done and task.cancelled()

    assert asyncio.run(main())


def test_it_says_whether_the_event_was_set() -> None:
    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await event_set(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        return timed_out, await event_set(event, 5)

    assert asyncio.run(main()) == (False, True)


def test_no_module_of_errands_calls_asyncio_wait_for() -> None:
    calls = [
        f"{path.relative_to(SOURCE)}:{node.lineno}"
        for path in sorted(SOURCE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute)
        and node.attr == "wait_for"
        and isinstance(node.value, ast.Name)
        and node.value.id == "asyncio"
    ]
    assert calls == [], "use errands.waiting.event_set or asyncio.timeout"
