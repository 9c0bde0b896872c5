"""Where the project's registered image pairs live (``shared/data`` beside the repository)."""
from __future__ import annotations

import os
from pathlib import Path


def find_shared_data(marker: str = "test", start: Path | None = None) -> Path | None:
    """The ``shared/data`` folder: ``$TOKFUSE_SHARED`` (the shared folder or its data folder), else
    ``shared/data`` beside any ancestor of ``start`` (default: this package; the repo is
    ``<X>/main`` and the data ``<X>/shared/data``). ``marker`` must exist inside it. None if absent."""
    env = os.environ.get("TOKFUSE_SHARED")
    cands = [Path(env) / "data", Path(env)] if env else []
    start = Path(start or __file__).resolve()
    cands += [p / "shared" / "data" for p in start.parents]
    return next((c for c in cands if (c / marker).exists()), None)
