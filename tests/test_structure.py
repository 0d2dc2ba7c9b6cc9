"""The package's shape (DESIGN.md "Package layout"): no import cycles between svgen's modules, at
module level or inside functions; stages never import the pipeline or the CLI; a stage does not
orchestrate its siblings; no source file over 600 lines; the motion format named once."""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "svgen"
STAGES = ("preprocessing", "stage1_image_gan", "inversion", "stage2_motion", "editing", "metrics")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=1)
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """svgen modules that ``path`` imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("svgen") and name in modules:
                out.add(name)
    return out


@functools.lru_cache(maxsize=1)
def _import_graph() -> dict[str, frozenset[str]]:
    modules = _modules()
    return {m: frozenset(_imports(p, modules) - {m}) for m, p in modules.items()}


def _graph() -> dict[str, set[str]]:
    return {m: set(d) for m, d in _import_graph().items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _is_package_face(mod: str) -> bool:
    """``svgen.x`` packages whose __init__ only re-exports their own submodules."""
    return _modules()[mod].name == "__init__.py"


def test_no_import_cycles_between_modules():
    graph = _graph()
    # a package's __init__ that hands on names of its own submodules is part of that package, not a cycle
    for mod in graph:
        if _is_package_face(mod):
            graph[mod] = {w for w in graph[mod] if not w.startswith(mod + ".")}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("stage", STAGES)
def test_stages_never_import_the_pipeline_the_demo_or_the_cli(stage):
    graph = _graph()
    bad = {m: sorted(w for w in deps if w.split(".")[1:2] in (["pipeline"], ["cli"], ["demo"]))
           for m, deps in graph.items() if m.startswith(f"svgen.{stage}")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_motion_stage_does_not_orchestrate_preprocessing_or_inversion():
    """stage2_motion reads its input artifacts (latent store, aligned frames for StyleInV's image
    discriminator) and reuses the IR-SE backbone, but never runs preprocessing or inversion."""
    allowed = {"svgen.inversion.latent_store", "svgen.inversion.backbone", "svgen.inversion.encoders",
               "svgen.preprocessing.dataset"}
    graph = _graph()
    used = {w for m, deps in graph.items() if m.startswith("svgen.stage2_motion") for w in deps
            if w.startswith(("svgen.inversion", "svgen.preprocessing"))}
    assert used <= allowed, sorted(used - allowed)


def test_no_source_file_over_600_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}


def test_motion_format_is_named_once():
    hits = [str(p.relative_to(ROOT.parent)) for p in ROOT.rglob("*.py") if '"svgen-motion"' in p.read_text()]
    assert hits == ["svgen/stage2_motion/motion.py"]
