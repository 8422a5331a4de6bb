"""The door's circle finder (errands.sync.dependencies), against the definition: a job
is on a circle when its dependencies within the upload lead back to it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from errands.protocol import Mutation
from errands.sync.dependencies import Upload, _on_cycles

NODES = [f"0190b4a1-2c3d-7e4f-8a9b-0c1d2e3f4a{n:02x}" for n in range(8)]


def reaches_itself(graph: dict[str, list[str]], start: str) -> bool:
    seen: set[str] = set()
    todo = list(graph.get(start, []))
    while todo:
        node = todo.pop()
        if node == start:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, []))
    return False


graphs = st.dictionaries(
    st.sampled_from(NODES), st.lists(st.sampled_from([*NODES, "outside"]), max_size=4)
)


@given(graphs)
def test_exactly_the_jobs_on_a_circle(graph: dict[str, list[str]]) -> None:
    expected = {node for node in graph if reaches_itself(graph, node)}
    assert _on_cycles(graph) == expected


def test_a_chain_of_a_thousand_closed_into_a_circle_is_walked_without_recursion() -> None:
    graph = {str(i): [str(i - 1)] for i in range(1, 1000)} | {"0": ["999"]}
    assert len(_on_cycles(graph)) == 1000
    del graph["0"]
    assert _on_cycles(graph) == set()


def test_an_upload_ignores_malformed_dependencies_and_other_operations() -> None:
    a, b = NODES[0], NODES[1]
    mutations = [
        Mutation(id="1", table="background_jobs", op="insert", key=a, values={"after": [b]}),
        Mutation(id="2", table="background_jobs", op="update", key=b, values={"after": [a]}),
        Mutation(id="3", table="background_jobs", op="insert", key=b, values={"after": "x"}),
    ]
    assert Upload(mutations).cyclic == set()
    mutations.append(
        Mutation(id="4", table="background_jobs", op="insert", key=b.upper(), values={"after": [a]})
    )
    assert Upload(mutations).cyclic == {a, b}
