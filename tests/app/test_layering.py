"""Where the application sits: above ``coordinator`` and ``participant_sdk``, which never
import it; ``bench/`` uses public entry points only and has no import cycle.

Read from the source (every ``import``, at any depth), so lazy imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# what bench/ may use of the coordinator: the app factory (create_app); everything else
# goes over HTTP, through the SDK, or through the fedrec application
# (with the settings and migration it needs in process: bench.request_cpu), and the
# microbenchmarks' subjects: the aggregator (bench.peers.aggregation) and the EASE solve
# (bench.ease_solve), timed directly
BENCH_MAY_IMPORT = {
    "coordinator.app",
    "coordinator.config",
    "coordinator.migrate",
    "coordinator.domain.aggregation",
    "coordinator.domain.ease_solve",
    # bench.ease_offthread: the solve in a thread against its child process
    "coordinator.domain.ease_process",
    # bench.upload_cpu times the upload's domain call and the worker's kick apart
    "coordinator.domain.rounds",
    "coordinator.worker",
    # bench.held_polls_heap prices the heap policy's thaw per its interval
    "coordinator.heap",
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _modules(package: str) -> dict[str, set[str]]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts): _imports(path)
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("coordinator", {"fedrec", "bench"}), ("participant_sdk", {"fedrec", "coordinator", "bench"})],
)
def test_the_libraries_never_import_the_application(package: str, forbidden: set[str]) -> None:
    offending = {
        module: sorted(name for name in names if _top(name) in forbidden)
        for module, names in _modules(package).items()
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_bench_uses_public_entry_points_only() -> None:
    internal = {
        module: sorted(
            name for name in names if _top(name) == "coordinator" and name not in BENCH_MAY_IMPORT
        )
        for module, names in _modules("bench").items()
    }
    assert {module: names for module, names in internal.items() if names} == {}


def test_bench_has_no_import_cycle() -> None:
    modules = _modules("bench")
    graph = {
        module: {name for name in names if name in modules and name != module}
        for module, names in modules.items()
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for target in graph[module]:
            visit(target, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
