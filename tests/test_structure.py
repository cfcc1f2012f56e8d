"""The package's shape: one direction of dependency between its folders, no import cycle (imports inside
functions included), and modules and functions small enough to read.

The layers, lowest first (``vitdata/__init__.py`` states the same order): a module may import its own
folder and the layers below it, never one above. ``vitdata/__init__.py`` is the public face on top of
everything; no module inside imports names from it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> layer; a module's package is the longest prefix listed here
LAYERS = {
    "vitdata.errors": 0, "vitdata.version": 0, "vitdata.io": 0.5, "vitdata.optional": 0.5,
    "vitdata.data": 1, "vitdata.kernels": 1, "vitdata.decode": 1,
    "vitdata.curriculum": 2,
    "vitdata.oracle": 3,
    "vitdata.pipelines": 4,
    "vitdata.loader": 5,
    "vitdata.train": 6,
    "vitdata.bench": 7,
    "vitdata.cli": 8, "vitdata.__main__": 9,
}
MAX_MODULE_LINES = 500
MAX_KERNEL_MODULE_LINES = 600     # a kernel file holds kernel, launcher and reference together
MAX_FUNCTION_LINES = 80
# The training loop keeps its epoch body whole: it reads top to bottom like nanoGPT's.
LONG_FUNCTIONS_ALLOWED = {"vitdata.train.loop.train"}


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, name in (("vitdata", "vitdata"), ("kernels", "vitdata.kernels"), ("pipelines", "vitdata.pipelines")):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            mods[".".join([name, *parts])] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The vitdata modules ``name`` imports anywhere in its file (top level, functions, TYPE_CHECKING)."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
            # "from pkg import submodule" depends on the submodule; "from pkg import name" on pkg itself
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(mod)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> tuple[str, int]:
    pkg = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len)
    return pkg, LAYERS[pkg]


def test_no_module_imports_the_public_face_vitdata_init():
    offenders = sorted(name for name, deps in GRAPH.items() if "vitdata" in deps)
    assert not offenders, f"import names from their own modules, not from vitdata/__init__.py: {offenders}"


def test_every_import_points_down_the_layers():
    wrong = []
    for name, deps in GRAPH.items():
        if name == "vitdata":
            continue
        pkg, layer = _layer(name)
        for dep in deps - {"vitdata"}:     # the public face: test_no_module_imports_the_public_face_vitdata_init
            dep_pkg, dep_layer = _layer(dep)
            if dep_pkg != pkg and dep_layer >= layer:
                wrong.append(f"{name} (layer {layer}) imports {dep} (layer {dep_layer})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(wrong))


def test_there_is_no_import_cycle_lazy_imports_included():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_sees_an_import_inside_a_function():
    code = "def f():\n    from vitdata.train import loop\n"
    tmp = ast.parse(code)
    assert any(isinstance(n, ast.ImportFrom) and n.module == "vitdata.train" for n in ast.walk(tmp))
    assert "vitdata.train.loop" in MODULES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_readable_in_size(name):
    lines = len(MODULES[name].read_text().splitlines())
    limit = MAX_KERNEL_MODULE_LINES if name.startswith("vitdata.kernels.") else MAX_MODULE_LINES
    assert lines <= limit, f"{MODULES[name].relative_to(ROOT)}: {lines} lines (at most {limit}): split it by concern"


def test_functions_stay_readable_in_size():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and f"{name}.{node.name}" not in LONG_FUNCTIONS_ALLOWED:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_every_folder_says_what_it_owns_and_what_it_may_import():
    for pkg in ("data", "decode", "curriculum", "oracle", "loader", "train", "bench"):
        doc = ast.get_docstring(ast.parse((ROOT / "vitdata" / pkg / "__init__.py").read_text())) or ""
        assert len(doc) > 200, f"vitdata/{pkg}/__init__.py needs a docstring saying what it owns"
        assert "May import" in doc or "may import" in doc, f"vitdata/{pkg}/__init__.py: say what it may import"
    for top in ("kernels", "pipelines"):
        doc = ast.get_docstring(ast.parse((ROOT / top / "__init__.py").read_text())) or ""
        assert "May import" in doc or "may import" in doc or "Importing this package needs" in doc, top


def test_no_issue_numbers_in_code_or_tests():
    """Code and tests cite the project's own docs (``docs/``), never a tracker's issue numbers."""
    import re

    pattern = re.compile(r"\b[Ii]ssues? #?\d{1,3}\b")   # ours; other projects' (DALI #3861) are references
    hits = []
    for folder in ("vitdata", "kernels", "pipelines", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".sh") and path.name != "test_structure.py":
                for i, line in enumerate(path.read_text().splitlines(), 1):
                    if pattern.search(line):
                        hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:100]}")
    assert not hits, "issue numbers in code or tests:\n" + "\n".join(hits)
