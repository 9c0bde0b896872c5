"""Workspace helpers of the scripts, benchmarks and tests (not part of the package): where the project's
registered image pairs live (``shared/data`` beside the repository), and the process tree of a service
under test (:func:`descendants`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def find_shared_data(marker: str = "test", start: Path | None = None) -> Path | None:
    """The ``shared/data`` folder: ``$TOKFUSE_SHARED`` (the shared folder or its data folder), else
    ``shared/data`` beside any ancestor of ``start`` (default: this file; the repo is
    ``<X>/main`` and the data ``<X>/shared/data``). ``marker`` must exist inside it. None if absent."""
    env = os.environ.get("TOKFUSE_SHARED")
    cands = [Path(env) / "data", Path(env)] if env else []
    start = Path(start or __file__).resolve()
    cands += [p / "shared" / "data" for p in start.parents]
    return next((c for c in cands if (c / marker).exists()), None)


def shared_dir(sub: str, start: Path | None = None) -> Path:
    """``shared/data/<sub>`` (found as :func:`find_shared_data` finds the data folder); FileNotFoundError
    naming it when absent."""
    data = find_shared_data(sub, start)
    if data is None:
        raise FileNotFoundError(f"shared/data/{sub} not found beside the repository (set TOKFUSE_SHARED)")
    return data / sub


def data_option(parser: argparse.ArgumentParser, value: str | None, sub: str, start: Path | None = None) -> Path:
    """A command's ``--data`` folder: ``value`` when given, else ``shared/data/<sub>`` (:func:`shared_dir`);
    ``parser.error`` naming both when neither is there."""
    if value is not None:
        return Path(value)
    try:
        return shared_dir(sub, start)
    except FileNotFoundError as e:
        parser.error(f"{e}; give --data")


def descendants(pid: int) -> set:
    """``pid`` and every process below it (from /proc; Linux)."""
    kids: dict = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(e))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += kids.get(p, [])
    return out
