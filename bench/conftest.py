"""Benchmarks live in ``bench/bench_*.py``: collect them when pytest is pointed at ``bench/``
(files named on the command line are collected by pytest itself)."""
from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):      # given explicitly: pytest's python plugin collects it
        return None
    return pytest.Module.from_parent(parent, path=file_path)
