"""Config dataclasses from JSON text, one rule for every config of the model package (a leaf module)."""

from __future__ import annotations

import dataclasses
import json


def config_from_json(cls, text: str, what: str, unknown_hint: str = ""):
    """``cls(**fields)`` of a config dataclass from its JSON text; ValueError naming ``what`` when the text
    is not a JSON object or has fields ``cls`` does not know (``unknown_hint`` is appended)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} fields {unknown}{unknown_hint}")
    return cls(**data)
