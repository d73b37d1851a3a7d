"""A custom import-linter contract: no import cycle between any two modules of a package tree.

import-linter's own contracts look at layers and at sibling packages; a cycle such as
``lifecycle -> workers -> scheduling -> lifecycle`` inside one app is what made the task pipeline
hard to follow, so this contract walks the module graph itself (Tarjan's strongly connected
components) and reports every cycle with one concrete chain through it.

Registered in ``pyproject.toml`` under ``[tool.importlinter] contract_types`` and run by
``lint-imports`` in the test command (so by CI).
"""

from __future__ import annotations

from typing import Any

from grimp import ImportGraph
from importlinter import Contract, ContractCheck, fields, output


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm without recursion (the graph can be deep). Returns every component of
    more than one module, each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                child = pending.pop()
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(edges.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


class NoModuleCyclesContract(Contract):
    """``containers``: the packages whose modules may not import each other in a circle."""

    type_name = "no_module_cycles"

    containers = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        modules: set[str] = set()
        for container in self.containers:  # type: ignore[attr-defined]
            modules.add(container)
            modules |= graph.find_descendants(container)
        edges = {
            module: graph.find_modules_directly_imported_by(module) & modules for module in modules
        }
        # A package's __init__ importing its own children is not a cycle worth reporting:
        # it is how a package exposes its parts. Drop parent -> descendant edges.
        for module, targets in edges.items():
            edges[module] = {t for t in targets if not t.startswith(module + ".")}
        cycles = strongly_connected(modules, edges)
        metadata: dict[str, Any] = {"cycles": []}
        for component in cycles:
            first, second = component[0], component[1]
            there = graph.find_shortest_chain(importer=first, imported=second) or (first, second)
            back = graph.find_shortest_chain(importer=second, imported=first) or (second, first)
            metadata["cycles"].append({"modules": component, "chain": [*there, *back[1:]]})
        return ContractCheck(kept=not cycles, metadata=metadata)

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(f"Import cycle among {len(cycle['modules'])} modules:")
            output.print(" -> ".join(cycle["chain"]))
            output.new_line()
