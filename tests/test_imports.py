"""The package's import graph has no cycles (lazy imports inside functions count too)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """memposer module -> the memposer modules it imports anywhere in its body."""
    files = {_module_name(p): p for p in (ROOT / "memposer").rglob("*.py")}
    graph: Dict[str, Set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                # ``from pkg import sub`` imports the submodule ``pkg.sub``
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            graph[mod] |= {t for t in targets if t in files and t != mod}
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_graph_sees_relative_and_lazy_imports():
    g = import_graph()
    assert "memposer.metric.search" in g["memposer.metric.score"]         # from .search import register
    assert "memposer.pipeline.predict" in g["memposer.pipeline.cli"]      # imported inside main()


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_mapping_workers_start_without_torch():
    """Each dataset spawns fresh mapping processes; they import the reconstruction stage and the
    entry script, and torch's ~2 s import would be paid by each (docs/results.md, "Stage ceilings")."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = ("import runpy, sys; import memposer.pipeline.reconstruction, memposer.pipeline.seeding, memposer.pipeline.split; "
            f"runpy.run_path({str(ROOT / 'infer.py')!r}, run_name='__mp_main__'); "
            "print(sorted(m for m in ('torch', 'h5py', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
