"""The command line sits on top of the library: importing the library never loads ``depthdistill.cli``."""

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
