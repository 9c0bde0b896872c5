"""Files of a folder-tree fusion job: which pairs, where each output goes, how it is written.

Each job has one small function here so the whole package agrees on it:

- ``list_pairs``: the pairs of two folder trees (each folder paired by ``engine.pair_files``);
- ``output_path``: the output file of one pair (``fuse_dir``'s naming: ``<stem><ext>``);
- ``write_output_atomic``: one output written under a unique temporary name, then renamed;
- ``output_done``: an output that exists and decodes (a finished pair, skipped on resume);
- ``clean_partials``: temporary files left by a process killed while writing.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from ..engine import pair_files
from ..imageio import IMAGE_EXTS, load_image, save_image

PARTIAL_PREFIX = ".tokfuse-part-"


def check_ext(ext: str) -> str:
    """A supported output extension (``.png``, ``.jpg``, ...) or ValueError."""
    if not isinstance(ext, str) or ext.lower() not in IMAGE_EXTS:
        raise ValueError(f"output extension {ext!r} not supported; use one of {sorted(IMAGE_EXTS)}")
    return ext


def check_output_dir(out_dir, *inputs) -> Path:
    """``out_dir`` as a Path; ValueError if it is one of ``inputs`` or lies inside one of them."""
    out = Path(out_dir).resolve()
    for d in inputs:
        d = Path(d).resolve()
        if out == d or d in out.parents:
            raise ValueError(f"output folder {out_dir} lies inside the input folder {d}; choose a folder outside it")
    return Path(out_dir)


def list_pairs(ir_dir, vis_dir) -> tuple[list, list]:
    """Pairs of two folder trees: ``([(name, ir_path, vis_path)], [unpaired])`` where ``name`` is the
    infrared file's path relative to ``ir_dir`` (``sub/a.png``). Folders with the same relative path
    are paired by ``engine.pair_files``; images in a folder that the other tree lacks are unpaired.
    Hidden folders (``.name``) are not entered."""
    roots = {}
    for label, d in (("ir", ir_dir), ("vis", vis_dir)):
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"{label} directory not found: {d}")
        roots[label] = d
    subdirs = {label: _subdirs(root) for label, root in roots.items()}
    pairs, unpaired = [], []
    for rel in sorted(subdirs["ir"] | subdirs["vis"]):
        if rel in subdirs["ir"] and rel in subdirs["vis"]:
            p, u = pair_files(roots["ir"] / rel, roots["vis"] / rel)
            pairs += [(_join(rel, n), a, b) for n, a, b in p]
            unpaired += [_join_side(rel, x) for x in u]
            continue
        side = "ir" if rel in subdirs["ir"] else "vis"
        d = roots[side] / rel
        unpaired += [f"{side}/{_join(rel, p.name)}" for p in sorted(d.iterdir())
                     if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    return pairs, unpaired


def _subdirs(root: Path) -> set:
    out = {"."}
    for cur, dirs, _ in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        rel = Path(cur).relative_to(root)
        out.update(str(rel / x) for x in dirs)
    return out


def _join(rel: str, name: str) -> str:
    return name if rel == "." else f"{rel}/{name}"


def _join_side(rel: str, entry: str) -> str:
    side, _, name = entry.partition("/")          # pair_files reports "ir/a.png"
    return f"{side}/{_join(rel, name)}"


def output_path(out_dir, name: str, ext: str = ".png") -> Path:
    """Output file of pair ``name`` (as listed by ``list_pairs``): ``out_dir/<sub>/<stem><ext>``."""
    n = Path(name)
    return Path(out_dir) / n.parent / (n.stem + ext)


def partial_path(path) -> Path:
    """A unique temporary name beside ``path``, recognised by ``clean_partials``."""
    p = Path(path)
    return p.with_name(f"{PARTIAL_PREFIX}{uuid.uuid4().hex[:12]}-{p.name}")


def write_output_atomic(img, path) -> Path:
    """Write ``img`` (uint8 (H, W) or (H, W, 3)) to ``path`` atomically: encoded into a unique
    temporary file in the same folder (``imageio.save_image``, format from the extension), then
    renamed over ``path``. A reader sees the old file or the whole new one, never a part."""
    p = Path(path)
    tmp = partial_path(p)
    try:
        save_image(img, tmp)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


def output_done(path) -> bool:
    """True when ``path`` exists and decodes as an image (a finished pair)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        load_image(p, "output")
    except (ValueError, OSError):
        return False
    return True


def clean_partials(out_dir) -> int:
    """Remove the temporary files that a killed writer left under ``out_dir``; returns how many."""
    n = 0
    root = Path(out_dir)
    if not root.is_dir():
        return 0
    for p in root.rglob(PARTIAL_PREFIX + "*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n
