"""Device strings, parsed in one place for every backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""

from __future__ import annotations

FORMS = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def parse_device(device) -> tuple[str, int | None]:
    """``device`` -> (kind, index): kind ``"auto"``, ``"cpu"`` or ``"cuda"``; index N of ``"cuda:N"``, else
    None. Case and surrounding spaces are ignored. TypeError for a non-string, ValueError for anything
    else (both name the value)."""
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {type(device).__name__}")
    dev = device.strip().lower()
    if dev in ("auto", "cpu", "cuda"):
        return dev, None
    kind, _, idx = dev.partition(":")
    if kind == "cuda" and idx.isdigit():
        return "cuda", int(idx)
    raise ValueError(f"device={device!r}: expected {FORMS}")
