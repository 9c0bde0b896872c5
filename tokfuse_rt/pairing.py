"""Folder pairing, in one place: which infrared and visible files belong together.

Used by ``Engine.fuse_dir`` (``tokfuse fuse-dir``), ``tokfuse eval``, the training data, the montage
and the scripts. The rules:

- **Files**: the image files directly inside a folder (no recursion) whose extension is one that
  ``fuse`` reads (:data:`tokfuse_rt.imageio.IMAGE_EXTS`: PNG, JPEG, BMP, TIFF, WebP, PNM, GIF, any
  case); hidden files (``.name``) and everything else are ignored.
- **Exact file name first**: ``ir/x.jpg`` pairs with ``vis/x.jpg``.
- **Then the stem** (the name without its extension): among the files left over, ``ir/x.png``
  pairs with ``vis/x.jpg`` when each folder has exactly one left-over file with that stem.
- **Ambiguous stems** (a stem left on several files of one folder and at least one of the other,
  e.g. ``ir/x.png`` + ``ir/x.tif`` with ``vis/x.jpg``) are reported and not paired.
- **Unpaired** files (no partner) are reported.
- Pairs are ordered by the infrared file name. A pair's output stem is its stem, or its full
  infrared file name where two pairs share a stem (``x.png`` -> ``x.png.png``). Pairs whose output
  stems still clash (``x.png`` and ``x.png.png`` beside ``x.jpg``; any case) are reported as
  ambiguous and not paired: no output can hold another pair's image.
- **Folder trees** (:func:`pair_trees`, for ``fuse-dir --ray``): folder by folder at the same
  relative path, each pair of folders by the rules above.
- **Set folders**: ``<set>/ir`` + ``<set>/vi``, ``<set>/ir`` + ``<set>/vis`` (IVIF), ``<set>/a`` +
  ``<set>/b`` (medical: MRI + CT/PET/SPECT), first match in that order (:data:`SET_LAYOUTS`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .imageio import IMAGE_EXTS

#: Sub-folder pairs of a set folder: (infrared-like, visible-like), in order of preference.
SET_LAYOUTS = (("ir", "vi"), ("ir", "vis"), ("a", "b"))


@dataclass(frozen=True)
class Pair:
    name: str  # the infrared file name (what reports show)
    ir: Path
    vis: Path
    stem: str  # output stem, unique within its Pairing


@dataclass
class Pairing:
    """Result of :func:`pair_dirs`. ``unpaired``: ``"ir/<name>"`` / ``"vis/<name>"``;
    ``ambiguous``: (stem, reason) for stems that were not paired."""

    pairs: list = field(default_factory=list)
    unpaired: list = field(default_factory=list)
    ambiguous: list = field(default_factory=list)

    def __iter__(self):
        return iter(self.pairs)

    def __len__(self):
        return len(self.pairs)

    def by_name(self, name: str) -> Pair:
        """The pair whose infrared file is ``name`` (KeyError naming it otherwise)."""
        for p in self.pairs:
            if p.name == name:
                return p
        raise KeyError(f"no pair with the file name {name!r}")


def is_image_file(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".") and p.is_file()


def image_files(folder, label: str = "image") -> list[Path]:
    """Sorted image files directly in ``folder`` (FileNotFoundError naming ``label`` if it is missing)."""
    d = Path(folder)
    if not d.is_dir():
        raise FileNotFoundError(f"{label} directory not found: {d}")
    return sorted(p for p in d.iterdir() if is_image_file(p))


def by_stem(files) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in files:
        out.setdefault(p.stem, []).append(p)
    return out


def by_key(items, key) -> dict:
    out: dict = {}
    for x in items:
        out.setdefault(key(x), []).append(x)
    return out


def pair_files(ir_files, vis_files, labels=("ir", "vis")) -> Pairing:
    """Pair two lists of files by the rules above (the files need not share a folder)."""
    a, b = by_stem(ir_files), by_stem(vis_files)
    res = Pairing()
    found = []  # (ir, vis)
    left_a, left_b = [], []
    for stem in sorted(set(a) | set(b)):
        ca, cb = list(a.get(stem, [])), list(b.get(stem, []))
        names_b = {p.name: p for p in cb}
        for p in list(ca):  # exact file name first
            if p.name in names_b:
                found.append((p, names_b[p.name]))
                ca.remove(p)
                cb.remove(names_b[p.name])
        if len(ca) == 1 and len(cb) == 1:  # then the stem
            found.append((ca[0], cb[0]))
        elif ca and cb:
            res.ambiguous.append(
                (
                    stem,
                    f"ambiguous stem {stem!r}: {labels[0]} has "
                    f"{', '.join(p.name for p in ca)}; {labels[1]} has "
                    f"{', '.join(p.name for p in cb)} (make the file names match exactly)",
                )
            )
        else:
            left_a += ca
            left_b += cb
    found.sort(key=lambda ab: ab[0])
    stems = by_stem(ir for ir, _ in found)
    pairs = [Pair(ir.name, ir, vis, ir.stem if len(stems[ir.stem]) == 1 else ir.name) for ir, vis in found]
    outs = by_key(pairs, lambda q: q.stem.casefold())  # case-insensitive file systems too
    for q in pairs:
        same = outs[q.stem.casefold()]
        if len(same) > 1 and q is same[0]:
            res.ambiguous.append(
                (
                    q.stem,
                    f"output name clash: {labels[0]} {', '.join(x.name for x in same)} would all be written as "
                    f"{q.stem}.<ext> (rename one)",
                )
            )
    res.pairs = [q for q in pairs if len(outs[q.stem.casefold()]) == 1]
    res.unpaired = [f"{labels[0]}/{p.name}" for p in sorted(left_a)] + [f"{labels[1]}/{p.name}" for p in sorted(left_b)]
    return res


def pair_dirs(ir_dir, vis_dir) -> Pairing:
    """Pair the image files of two folders (FileNotFoundError naming a missing folder)."""
    return pair_files(image_files(ir_dir, "ir"), image_files(vis_dir, "vis"))


def pair_trees(ir_root, vis_root) -> Pairing:
    """Pair two folder trees: each folder of one tree with the folder at the same relative path in
    the other, by :func:`pair_dirs` (the rules above, folder by folder; hidden folders are not
    entered). Names are relative to the roots: a pair's ``name`` is ``sub/a.png``, its ``stem``
    ``sub/a`` (so ``out_dir / (stem + ext)`` mirrors the tree), unpaired entries ``ir/sub/x.png``,
    ambiguous stems ``sub/x``. Image files of a folder the other tree lacks are unpaired. The top
    folders alone give exactly what :func:`pair_dirs` gives."""
    roots = (Path(ir_root), Path(vis_root))
    for label, d in zip(("ir", "vis"), roots):
        if not d.is_dir():
            raise FileNotFoundError(f"{label} directory not found: {d}")
    subs = [_sub_folders(d) for d in roots]
    res = Pairing()
    for rel in sorted(subs[0] | subs[1], key=lambda r: (r != ".", r)):
        pre = "" if rel == "." else rel + "/"
        if rel not in subs[0] or rel not in subs[1]:
            side = 0 if rel in subs[0] else 1
            res.unpaired += [f"{('ir', 'vis')[side]}/{pre}{f.name}" for f in image_files(roots[side] / rel)]
            continue
        r = pair_dirs(roots[0] / rel, roots[1] / rel)
        res.pairs += [Pair(pre + q.name, q.ir, q.vis, pre + q.stem) for q in r.pairs]
        res.unpaired += [u.replace("/", "/" + pre, 1) for u in r.unpaired]
        res.ambiguous += [(pre + stem, f"{pre}: {why}" if pre else why) for stem, why in r.ambiguous]
    return res


def _sub_folders(root: Path) -> set:
    """Relative paths (``"."`` for ``root``) of the folders under ``root``, hidden ones not entered."""
    out = {"."}
    for cur, dirs, _ in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        rel = Path(cur).relative_to(root)
        out.update((rel / x).as_posix() for x in dirs)
    return out


def find_set_dirs(set_dir) -> tuple[Path, Path]:
    """(ir_dir, vis_dir) of a set folder with ir/vi, ir/vis or a/b sub-folders."""
    set_dir = Path(set_dir)
    if not set_dir.is_dir():
        raise FileNotFoundError(f"set directory not found: {set_dir}")
    for a, b in SET_LAYOUTS:
        if (set_dir / a).is_dir() and (set_dir / b).is_dir():
            return set_dir / a, set_dir / b
    layouts = ", ".join(f"{a}/+{b}/" for a, b in SET_LAYOUTS)
    raise FileNotFoundError(f"set directory {set_dir} has none of the sub-folder pairs {layouts}")


def pair_set(set_dir) -> Pairing:
    """Pairs of one set folder (see :func:`find_set_dirs`)."""
    return pair_dirs(*find_set_dirs(set_dir))


def find_sets(root) -> list[Path]:
    """Every set folder under ``root`` (``root`` itself included), grouped by layout in the order of
    SET_LAYOUTS and sorted within a layout; each set once, under the first layout it matches."""
    root = Path(root)
    sets = []
    for a, b in SET_LAYOUTS:
        for a_dir in sorted(root.rglob(a)):
            s = a_dir.parent
            if a_dir.is_dir() and (s / b).is_dir() and find_set_dirs(s) == (a_dir, s / b):
                sets.append(s)
    return sets


def find_pairs(root) -> list[tuple[Path, Path]]:
    """Every (ir, vis) pair of every set under ``root`` (order: :func:`find_sets`, then file name)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data directory not found: {root}")
    return [(p.ir, p.vis) for s in find_sets(root) for p in pair_set(s)]


@dataclass
class Matched:
    """Result of :func:`match_outputs`: (pair, output file) triplets and what could not be matched,
    as (stem, path(s), reason)."""

    found: list = field(default_factory=list)
    problems: list = field(default_factory=list)


def match_outputs(pairing: Pairing, out_dir, labels=("ir", "vis")) -> Matched:
    """Match the image files of ``out_dir`` to the pairs of ``pairing`` by output stem (fused images
    are written as ``<stem>.<ext>``). Several files with one stem are ambiguous; files without a
    pair and pairs without a file are reported. The pairing's own ambiguous/unpaired entries are
    reported too."""
    outs = by_stem(image_files(out_dir, "fused"))
    res = Matched()
    for stem, why in pairing.ambiguous:
        res.problems.append((stem, "", why))
    pair_stems = {p.stem for p in pairing.pairs}
    amb = {stem for stem, _ in pairing.ambiguous}
    lone = {}
    for u in pairing.unpaired:
        role, _, name = u.partition("/")
        lone.setdefault(Path(name).stem, []).append((role, name))
    for stem in sorted((set(outs) | pair_stems | set(lone)) - amb):
        files = outs.get(stem, [])
        if len(files) > 1:
            res.problems.append(
                (
                    stem,
                    ", ".join(str(p) for p in files),
                    f"ambiguous: {len(files)} files with this stem in the fused folder",
                )
            )
        elif stem in pair_stems:
            pair = next(p for p in pairing.pairs if p.stem == stem)
            if files:
                res.found.append((pair, files[0]))
            else:
                res.problems.append((stem, f"{pair.ir}, {pair.vis}", "unpaired: no fused image with this stem"))
        else:
            have = {role for role, _ in lone.get(stem, [])} | ({"fused"} if files else set())
            missing = [r for r in ("fused", *labels) if r not in have]
            paths = [str(p) for p in files] + [f"{r}/{n}" for r, n in lone.get(stem, [])]
            res.problems.append(
                (stem, ", ".join(paths), "unpaired: no " + " / ".join(missing) + " image with this stem")
            )
    return res
