"""The architecture's rules, read off the source (docs/ARCHITECTURE.md explains them):

- the backend never imports bpy, and ``backend/poses`` never imports torch at import time;
- the front end (the add-on's ``__init__``, ``preferences``, ``properties``, ``operators``, ``panels``, ``client``,
  ``synthetic``) imports the backend only through the seam (:data:`SEAM`), and never by name through importlib;
- ``backend/`` has no import cycle, counting imports inside functions too.

Imports are read with :mod:`ast` from every file, so an import that runs only on one path is caught as well.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The backend modules the front end may import: the torch- and bpy-free formats, errors and mesh clean-up that
#: both sides share (numpy and the standard library only).
SEAM = frozenset({"backend.protocol", "backend.capture_files", "backend.errors", "backend.meshing.mesh_io",
                  "backend.meshclean"})
FRONT_END = ("__init__.py", "preferences.py", "properties.py", "operators", "panels", "client", "synthetic")


def module_name(path: Path) -> str:
    """``backend/data/colmap.py`` -> ``backend.data.colmap``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts) or "<root>"


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imported_modules(path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``path`` imports (absolute dotted names; ``from x import y`` gives ``x`` and ``x.y``), with the
    line, skipping ``if TYPE_CHECKING:`` blocks. Relative imports are resolved against the file's package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = [] if package in ("", "<root>") else package.split(".")
                base = pkg[:len(pkg) - (node.level - 1)] if node.level - 1 <= len(pkg) else []
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target:
                yield target, node.lineno
            for alias in node.names:
                yield f"{target}.{alias.name}" if target else alias.name, node.lineno


def python_files(*roots: str) -> list[Path]:
    out: list[Path] = []
    for r in roots:
        p = ROOT / r
        out.extend([p] if p.is_file() else sorted(p.rglob("*.py")))
    return out


def backend_graph() -> dict[str, set[str]]:
    """Module -> the backend modules it imports (edges to a module's own enclosing packages left out: a package's
    ``__init__`` importing its submodules, which import their siblings, is how packages work)."""
    files = python_files("backend")
    modules = {module_name(f) for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for f in files:
        src = module_name(f)
        ancestors = {".".join(src.split(".")[:i]) for i in range(1, len(src.split(".")))}
        for target, _ in imported_modules(f):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                mod = ".".join(parts[:i])
                if mod in modules and mod != src and mod not in ancestors:
                    graph[src].add(mod)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_cycles() -> None:
    """The checker itself: a loop through three modules is found, a chain is not."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    """``from ..protocol import x`` inside ``backend/meshing`` is ``backend.protocol``; TYPE_CHECKING is skipped."""
    found = dict(imported_modules(ROOT / "backend" / "meshing" / "mesh_io.py"))
    assert "backend.protocol" in found
    found = {m for m, _ in imported_modules(ROOT / "backend" / "field.py")}
    assert "backend.config" not in found  # imported for type hints only


def test_backend_has_no_import_cycle() -> None:
    cycles = find_cycles(backend_graph())
    assert not cycles, "import cycles in backend/ (move the shared part into its own module): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_backend_never_imports_bpy() -> None:
    bad = [f"{f.relative_to(ROOT)}:{line} imports {m}" for f in python_files("backend")
           for m, line in imported_modules(f) if m.split(".")[0] in ("bpy", "bmesh", "mathutils", "addon_utils")]
    assert not bad, "\n".join(bad)


def test_poses_never_imports_torch_at_import_time() -> None:
    """``backend/poses`` runs in Blender's Python where torch is absent: no module-level torch import."""
    bad = []
    for f in python_files("backend/poses"):
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad += [f"{f.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "torch"]
    assert not bad, bad


def _front_end_backend_imports(path: Path) -> Iterator[tuple[str, int]]:
    """Backend modules a front-end file imports (as ``backend.x`` or through the add-on package ``..backend.x``)."""
    for target, line in imported_modules(path):
        parts = target.split(".")
        if "backend" in parts:
            rest = parts[parts.index("backend"):]
            yield ".".join(rest), line


def test_front_end_imports_the_backend_only_through_the_seam() -> None:
    bad = []
    for f in python_files(*FRONT_END):
        if f.parent == ROOT and f.name not in FRONT_END:
            continue
        for target, line in _front_end_backend_imports(f):
            # ``from ..backend import protocol`` names backend and backend.protocol: judge the most specific
            if target == "backend" or any(target == s or target.startswith(s + ".") for s in SEAM):
                continue
            if any(s.startswith(target + ".") for s in SEAM):  # a package on the way to a seam module
                continue
            bad.append(f"{f.relative_to(ROOT)}:{line} imports {target}")
        text = f.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Call) and "import_module" in ast.unparse(node.func)
                    and "backend" in ast.unparse(node)):
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno} loads the backend through importlib")
    assert not bad, "the front end reaches past the seam (" + ", ".join(sorted(SEAM)) + "):\n" + "\n".join(bad)


_BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "bpy", "triton", "pycolmap", "scipy", "PIL"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import importlib
importlib.import_module(sys.argv[1])
"""


@pytest.mark.parametrize("module", sorted(SEAM))
def test_the_seam_imports_neither_torch_nor_bpy(module: str) -> None:
    """Each seam module imports with torch, bpy, Triton, pycolmap, SciPy and Pillow all unavailable (as in
    Blender's Python, which has numpy only)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _BLOCK, module], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_import_blocker_blocks() -> None:
    """The check above can fail: a module that needs torch does not import under it."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _BLOCK, "backend.render"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "blocked: torch" in proc.stderr


def test_environment_switches_are_read_in_one_place() -> None:
    """Only backend/debug.py reads ``NEUSBLEND_*`` variables, and every switch the code asks for is declared."""
    import re

    from backend import debug

    bad, used = [], set()
    for f in python_files("backend"):
        text = f.read_text(encoding="utf-8")
        used.update(re.findall(r'debug\.(?:text|on|number)\("(NEUSBLEND_[A-Z0-9_]+)"\)', text))
        if f.name == "debug.py":
            continue
        for m in re.finditer(r'(?:environ\.get|getenv)\(\s*"(NEUSBLEND_[A-Z0-9_]+)"|environ\["(NEUSBLEND_[A-Z0-9_]+)"\]'
                             r'(?!\s*=)', text):
            bad.append(f"{f.relative_to(ROOT)} reads {m.group(1) or m.group(2)}")
    assert not bad, "read NEUSBLEND_* switches through backend.debug:\n" + "\n".join(bad)
    assert used and used <= set(debug.SWITCHES), used - set(debug.SWITCHES)


def test_a_bad_switch_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend import debug
    from backend.errors import BackendError

    monkeypatch.setenv("NEUSBLEND_MC", "fastest")
    with pytest.raises(BackendError, match="NEUSBLEND_MC") as info:
        debug.text("NEUSBLEND_MC")
    assert "Unset NEUSBLEND_MC" in info.value.hint
    monkeypatch.setenv("NEUSBLEND_MARCH_RAYS", "many")
    with pytest.raises(BackendError, match="not an integer"):
        debug.number("NEUSBLEND_MARCH_RAYS")
    monkeypatch.setenv("NEUSBLEND_MC", "Reference")
    assert debug.text("NEUSBLEND_MC") == "reference"
    assert debug.overrides()["NEUSBLEND_MC"] == "Reference"


def test_one_list_of_presets() -> None:
    """The presets are named once (protocol.PRESETS): the backend's preset files, the CLI, the panel's items and the
    headless script's choices all follow it."""
    import importlib.util
    import re
    import sys

    from backend import config, protocol

    assert sorted(protocol.PRESETS) == sorted(p.stem for p in config.PRESET_DIR.glob("*.json"))
    assert tuple(protocol.PRESETS) == config.PRESETS
    spec = importlib.util.spec_from_file_location("headless_for_presets", ROOT / "scripts" / "reconstruct_headless.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    assert module.preset_names() == list(protocol.PRESETS)
    assert module.parse_args(["--images", "x", "--out", "y.blend", "--preset", "quality"]).preset == "quality"
    with pytest.raises(SystemExit):
        module.parse_args(["--images", "x", "--out", "y.blend", "--preset", "fastest"])
    for path in (ROOT / "properties.py", ROOT / "client" / "jobs.py", ROOT / "scripts" / "reconstruct_headless.py"):
        assert not re.search(r'"preview",\s*"default",\s*"quality"', path.read_text(encoding="utf-8")), path
