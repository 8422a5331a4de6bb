"""The door's rules for a client's workflow: the jobs a new job runs after.

A client's insert may carry ``after`` (job ids) and ``on_failure``
(:data:`errands.protocol.DEPENDENCY_FIELDS`). Offline, a client makes a whole graph
before it uploads (a job, then jobs after it), and the outbox uploads it in the order it
was made, so every dependency is either a job of the caller's that exists, or one
inserted earlier in the same upload (the batch is one transaction, applied in order).
The door holds every insert to that:

* ``after`` follows :data:`errands.protocol.DEPENDENCY_RULE` (``validation_error``);
* each id is a job of the caller's (an operator: any job) that exists now, that is
  already inserted or inserted by an earlier mutation of the upload. An id no job has
  and an id of another user's job get the same refusal, word for word
  (``unknown_dependency``): the answer says nothing of other users' jobs;
* a job named by a *later* insert of the same upload is refused too
  (``unknown_dependency``, saying so), and inserts that run after one another in a
  circle, or a job after itself, are refused as ``dependency_cycle``: each of them,
  whatever order they come in. Only client-made ids can draw a circle (a job takes
  dependencies only as it is created, and only on jobs that exist), so only an
  upload's own inserts need looking at.

A refused insert changes nothing, and a job that runs after it is then refused in turn
(its dependency does not exist): a workflow whose first job is refused is refused
whole, job by job, each with its reason. The edges themselves are written by
``errands_wait_for`` (migration 0010), as for server-side enqueues.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from errands.protocol import ErrorCode, Mutation, check_dependencies
from errands.queries import query
from errands.sync.errors import Rejection
from errands.sync.shapes import SYNC_QUERIES


def unknown_dependency(job_id: uuid.UUID | str) -> Rejection:
    """The one refusal for a dependency that is nobody's job and one that is another
    user's: the same code and words, so that neither tells which."""
    return Rejection(
        ErrorCode.UNKNOWN_DEPENDENCY,
        f"no job of yours has the id {job_id}: a job runs after jobs of yours that "
        "exist, or that the same upload inserts before it",
    )


class Upload:
    """The inserts of one batch, in order: which come later than which, and which run
    after one another in a circle."""

    def __init__(self, mutations: Iterable[Mutation]) -> None:
        self.position: dict[str, int] = {}
        graph: dict[str, list[str]] = {}
        for index, m in enumerate(mutations):
            if m.op != "insert":
                continue
            key = m.key.lower()
            self.position.setdefault(key, index)
            try:
                after, _ = check_dependencies(m.values.get("after"))
            except ValueError:
                continue  # refused by its own check
            graph.setdefault(key, []).extend(after)
        self.cyclic = _on_cycles(graph)

    def at(self, index: int) -> Place:
        """The ``index``-th mutation's place in the upload."""
        return Place(self, index)


@dataclass(frozen=True)
class Place:
    """Where a mutation stands in its upload: what its dependencies are checked against."""

    upload: Upload
    index: int

    def check(self, m: Mutation) -> tuple[list[str], str]:
        """The dependencies of insert ``m`` and its ``on_failure``; :class:`Rejection`
        for a malformed ``after``, a circle, or a dependency inserted later in the
        upload."""
        try:
            values = m.values
            after, on_failure = check_dependencies(values.get("after"), values.get("on_failure"))
        except ValueError as exc:
            raise Rejection(ErrorCode.VALIDATION_ERROR, str(exc)) from None
        if m.key.lower() in self.upload.cyclic:
            raise Rejection(
                ErrorCode.DEPENDENCY_CYCLE,
                f"job {m.key} would run after itself (its dependencies in this upload lead "
                "back to it); a workflow's jobs must run one after another, not in a circle",
            )
        for dependency in after:
            if self.upload.position.get(dependency, -1) > self.index:
                raise Rejection(
                    ErrorCode.UNKNOWN_DEPENDENCY,
                    f"job {dependency} comes later in this upload: insert a job after the "
                    "jobs it runs after",
                )
        return after, on_failure


def _on_cycles(graph: dict[str, list[str]]) -> set[str]:
    """The nodes of ``graph`` that lie on a cycle (a self-loop included): Tarjan's
    strongly connected components, walked without recursion (an upload of 1,000 jobs
    may chain them all)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cyclic: set[str] = set()
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, edge = work.pop()
            if edge == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            edges = graph[node]
            if edge < len(edges):
                work.append((node, edge + 1))
                target = edges[edge]
                if target not in graph:  # a job outside the upload cannot wait for these
                    continue
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                cyclic.update(_component(stack, on_stack, node, graph))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return cyclic


def _component(
    stack: list[str], on_stack: set[str], root: str, graph: dict[str, list[str]]
) -> list[str]:
    """Pop the strongly connected component of ``root`` off ``stack``; return it if it is
    a cycle (more than one node, or a node after itself), else nothing."""
    component = stack[stack.index(root) :]
    del stack[stack.index(root) :]
    on_stack.difference_update(component)
    return component if len(component) > 1 or root in graph[root] else []


async def wait_for(conn: AsyncConnection[Any], params: dict[str, Any]) -> None:
    """Make the job just inserted (``params['id']``) run after ``params['after']``:
    :func:`unknown_dependency` unless each is a job of ``params['owner']`` (any job for
    an operator), then the edges, as server-side enqueues write them."""
    after = [uuid.UUID(job_id) for job_id in params["after"]]
    check = {"after": after, "owner": params["owner"], "operator": params["operator"]}
    cursor = await conn.execute(query("visible_dependencies", SYNC_QUERIES), check)
    found = {row[0] for row in await cursor.fetchall()}
    for job_id in after:
        if job_id not in found:
            raise unknown_dependency(job_id)
    edges = {"jobs": [params["id"]], "after": after, "on_failure": params["on_failure"]}
    await conn.execute(query("wait_for", SYNC_QUERIES), edges)
