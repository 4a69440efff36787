"""No import cycle between any two modules of the product or the fakes (the layers themselves are the
import-linter contracts in pyproject.toml, run by ./scripts/test)."""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph, skip: set[str]) -> list[list[str]]:
    """Strongly connected groups of more than one module, ``skip`` left out (Tarjan's, iterative)."""

    def imported(module: str) -> list[str]:
        return sorted(m for m in graph.find_modules_directly_imported_by(module) if m not in skip)

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules - skip):
        if root in index:
            continue
        work = [(root, iter(imported(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(imported(child))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("gateway", "billing", "workersim", "stripefake")
    # A package's __init__ importing its own modules is no cycle between files: leave packages out.
    packages = {m for m in graph.modules if graph.find_children(m)}
    assert _cycles(graph, packages) == []
