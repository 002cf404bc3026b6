"""The package's import structure: the command line sits on top of the library (importing the library never loads
``depthdistill.cli``), no module reaches into another's private names, and the import graph has no cycle.

The last two read the source with ``ast``; imports inside functions count too (a lazy import is still a
dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import depthdistill

PACKAGE = Path(depthdistill.__file__).parent


@pytest.mark.parametrize("module", ["depthdistill", "depthdistill.data", "depthdistill.demo",
                                    "depthdistill.data.prepare", "depthdistill.inference", "depthdistill.deploy"])
def test_importing_the_library_does_not_load_the_cli(module):
    code = f"import sys, {module}; print('depthdistill.cli' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parent)
    assert result.stdout.strip() == "False"


def test_no_library_module_imports_the_cli():
    importers = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).as_posix() in ("cli.py", "__main__.py"):
            continue
        package = ["depthdistill", *path.relative_to(PACKAGE).parent.parts]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # relative imports resolved against the module's package
                base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
                module = ".".join(part for part in (base, node.module or "") if part)
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            else:
                continue
            if any(name == "depthdistill.cli" or name.startswith("depthdistill.cli.") for name in names):
                importers.append(str(path.relative_to(PACKAGE)))
    assert importers == []


def _modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = ast.parse(path.read_text(), str(path))
    return modules


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the nodes under ``if TYPE_CHECKING:``: imports for type hints, never run."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            hidden.update(id(inner) for child in node.body for inner in ast.walk(child))
    return hidden


def _imports(modules: dict[str, ast.Module],
             runtime_only: bool = False) -> dict[str, list[tuple[str, str | None, int]]]:
    """Per module: (imported module, imported name or None, line) for every import of a depthdistill module
    (``runtime_only``: leaving out those under ``if TYPE_CHECKING:``)."""
    found = {}
    for name, tree in modules.items():
        is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
        hidden = _type_checking_only(tree) if runtime_only else set()
        rows = []
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.Import):
                rows += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("depthdistill")]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(name, node, is_package)
                if source.startswith("depthdistill"):
                    for a in node.names:
                        # "from package import submodule" imports the submodule
                        sub = f"{source}.{a.name}"
                        rows.append((sub, None, node.lineno) if sub in modules else (source, a.name, node.lineno))
        found[name] = rows
    return found


def _private_uses(modules: dict[str, ast.Module]) -> list[str]:
    problems = []
    for name, rows in _imports(modules).items():
        problems += [f"{name}:{line} imports {imported} from {source}"
                     for source, imported, line in rows
                     if imported is not None and imported.startswith("_") and not imported.startswith("__")
                     and source != name]
        # module._name through a module imported as a name ("from depthdistill.nn import triton_conv")
        bound = {}
        for node in ast.walk(modules[name]):
            if isinstance(node, ast.ImportFrom):
                is_package = (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()
                source = _absolute(name, node, is_package)
                for a in node.names:
                    if f"{source}.{a.name}" in modules:
                        bound[a.asname or a.name] = f"{source}.{a.name}"
        for node in ast.walk(modules[name]):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                problems.append(f"{name}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def _graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module → the depthdistill modules it imports when it runs (``from depthdistill.nn import x`` imports the
    package ``depthdistill.nn``, its ``__init__``, unless ``x`` is a submodule; imports for type hints alone, under
    ``if TYPE_CHECKING:``, run never and close no loop)."""
    graph = {}
    for name, rows in _imports(modules, runtime_only=True).items():
        targets = set()
        for source, _, _ in rows:
            while source not in modules and "." in source:
                source = source.rsplit(".", 1)[0]
            if source != name:
                targets.add(source)
        graph[name] = targets
    return graph


def test_no_module_imports_a_private_name_of_another():
    assert _private_uses(_modules()) == []


def test_the_scan_sees_private_imports():
    tree = {"depthdistill.a": ast.parse("from depthdistill.b import _helper\nfrom depthdistill import c\nc._x()"),
            "depthdistill.b": ast.parse("_helper = 1"), "depthdistill.c": ast.parse("_x = 1")}
    assert _private_uses(tree) == ["depthdistill.a:1 imports _helper from depthdistill.b",
                                   "depthdistill.a:3 uses depthdistill.c._x"]


def test_the_package_import_graph_has_no_cycle():
    assert _cycles(_graph(_modules())) == []


def test_the_cycle_search_finds_a_lazy_import_loop():
    tree = {"depthdistill.a": ast.parse("from depthdistill.b import f"),
            "depthdistill.b": ast.parse("def f():\n    from depthdistill.a import g")}
    assert _cycles(_graph(tree)) == [["depthdistill.a", "depthdistill.b", "depthdistill.a"]]


def test_the_engine_names_no_setting_of_the_method():
    # The engine runs any phase: what a phase's identity or a checkpoint's record holds is its callers' (the
    # Distiller's settings, convert.py's record of a conversion), never a key the engine spells out itself.
    from dataclasses import fields

    from depthdistill.distill import DistillSettings

    # "preset" also names a transform preset of a run file's data section, which the registry builds
    method_keys = ({f.name for f in fields(DistillSettings)} - {"preset"}) | {"distill", "recipe", "distillation",
                                                                              "depth_aware_layers", "config"}
    named = []
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in method_keys:
                named.append(f"engine/{path.name}:{node.lineno} {node.value!r}")
    assert named == []
