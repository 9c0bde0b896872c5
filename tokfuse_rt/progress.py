"""Progress bars, in one place: a tqdm bar on stderr, or a silent stand-in with the same methods."""

from __future__ import annotations

import sys


class SilentBar:
    """What :func:`progress_bar` gives when disabled: iterates over the items; ``write``, ``update`` and
    ``close`` do nothing."""

    def __init__(self, iterable=None):
        self._items = iterable if iterable is not None else ()

    def __iter__(self):
        return iter(self._items)

    def write(self, msg, file=None) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(iterable=None, *, enabled: bool = True, desc: str, unit: str, total: int | None = None):
    """A progress bar over ``iterable`` (or one advanced with ``update``, of ``total`` steps; None:
    unknown) on stderr, or a :class:`SilentBar` when not ``enabled``. ``bar.write(msg, file=sys.stderr)``
    prints a line without breaking the bar."""
    if not enabled:
        return SilentBar(iterable)
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)
