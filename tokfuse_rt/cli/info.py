"""``tokfuse info``: what an engine runs (model, backend, device, threads, configuration)."""

from __future__ import annotations

import json

from .options import add_engine_args, open_engine


def register(sub, help: str) -> None:
    i = sub.add_parser("info", help=help, description="Show what an engine runs.")
    i.add_argument("--json", action="store_true", help="print JSON")
    add_engine_args(i, inputs=False)
    i.set_defaults(func=cmd_info)


def cmd_info(a) -> int:
    with open_engine(a) as eng:
        info = eng.info()
    if a.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        for key, val in info.items():
            if isinstance(val, dict):
                val = ", ".join(f"{k2}={v2}" for k2, v2 in val.items())
            print(f"{key:>9}: {val}")
    return 0
