"""Shared by the tests under tests/ and the doctests of depthdistill/ (the two test paths of pyproject.toml)."""

import tempfile

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_temp_files_in_tmp_path(request, monkeypatch):
    """Docstring examples write to ``tempfile.mkdtemp()``: here that lands in the test's own tmp_path.

    pytest removes a passing test's tmp_path (``tmp_path_retention_policy = "failed"`` in pyproject.toml), so a
    run leaves no folders behind in the system's temporary directory.
    """
    if isinstance(request.node, DoctestItem):
        monkeypatch.setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
