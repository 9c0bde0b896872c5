"""``tokfuse train``: the trainer (``python -m tokfuse_rt.train``) as a sub-command, with its own options."""

from __future__ import annotations


def register(sub, help: str) -> None:
    from ..train.__main__ import build_parser as train_parser

    t = sub.add_parser(
        "train",
        help=help,
        description="Train a TokFuse model (stage I tokenizer, stage II fusion with STE); the same "
        "options as python -m tokfuse_rt.train.",
    )
    train_parser(t)
    t.set_defaults(func=cmd_train)


def cmd_train(a) -> int:
    from ..train.__main__ import run

    return run(a)
