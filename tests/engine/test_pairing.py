"""tokfuse_rt.pairing: exact name first, then stem; ambiguous stems; layouts; the training pair list."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tokfuse_rt.imageio import IMAGE_EXTS, READ_FORMATS
from tokfuse_rt.pairing import (
    SET_LAYOUTS,
    find_pairs,
    find_set_dirs,
    find_sets,
    image_files,
    match_outputs,
    pair_dirs,
    pair_set,
    pair_trees,
)


def _touch(d: Path, *names, size=(20, 20)):
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        fmt = {".jpg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".bmp": "BMP", ".png": "PNG"}.get(
            Path(n).suffix.lower()
        )
        if fmt:
            Image.fromarray(np.zeros(size, np.uint8)).save(d / n, format=fmt)
        else:
            (d / n).write_text("x")


def test_image_exts_are_exactly_the_formats_read():
    """IMAGE_EXTS (what is paired) == Pillow's registered extensions of READ_FORMATS (what is decoded)."""
    Image.init()
    registered = {e for e, f in Image.registered_extensions().items() if f in READ_FORMATS}
    assert registered | {".mpo"} == set(IMAGE_EXTS)  # .mpo: multi-picture JPEG, decoded by the JPEG plugin


def test_exact_name_wins_over_stem_the_wrong_ir_is_never_fused(tmp_path):
    # issue case: ir/scene.png + ir/scene.jpg with vi/scene.jpg -> scene.jpg pairs with scene.jpg
    _touch(tmp_path / "ir", "scene.png", "scene.jpg")
    _touch(tmp_path / "vi", "scene.jpg")
    r = pair_dirs(tmp_path / "ir", tmp_path / "vi")
    assert [(p.ir.name, p.vis.name) for p in r] == [("scene.jpg", "scene.jpg")]
    assert r.unpaired == ["ir/scene.png"] and r.ambiguous == []


def test_stem_pairs_and_ambiguous_stems_are_reported_not_fused(tmp_path):
    _touch(tmp_path / "ir", "a.png", "b.png", "b.tif", "c.bmp", "only_ir.png", "d.PNG", "w.webp")
    _touch(tmp_path / "vi", "a.jpg", "b.jpg", "c.jpg", "only_vis.jpg", "d.jpg", "w.webp", "notes.txt", ".hidden.png")
    r = pair_dirs(tmp_path / "ir", tmp_path / "vi")
    assert [(p.ir.name, p.vis.name, p.stem) for p in r] == [
        ("a.png", "a.jpg", "a"),
        ("c.bmp", "c.jpg", "c"),
        ("d.PNG", "d.jpg", "d"),
        ("w.webp", "w.webp", "w"),
    ]
    assert [s for s, _ in r.ambiguous] == ["b"]
    assert "b.png, b.tif" in r.ambiguous[0][1] and "b.jpg" in r.ambiguous[0][1]
    assert r.unpaired == ["ir/only_ir.png", "vis/only_vis.jpg"]


def test_two_exact_pairs_with_one_stem_get_distinct_output_stems(tmp_path):
    _touch(tmp_path / "ir", "x.png", "x.jpg")
    _touch(tmp_path / "vi", "x.png", "x.jpg")
    r = pair_dirs(tmp_path / "ir", tmp_path / "vi")
    assert [(p.name, p.vis.name, p.stem) for p in r] == [("x.jpg", "x.jpg", "x.jpg"), ("x.png", "x.png", "x.png")]


def test_pair_trees_folder_by_folder(tmp_path):
    ir, vi = tmp_path / "ir", tmp_path / "vi"
    _touch(ir, "a.png", "b.png", "only.png")
    _touch(vi, "a.jpg", "b.png")
    _touch(ir / "s", "x.png", "x.tif", "y.bmp", "z.png")  # x: ambiguous; z.png and z.jpg: stem pair
    _touch(vi / "s", "x.jpg", "y.bmp", "z.jpg")
    _touch(ir / "s" / "t", "a.png")  # same name as the top a.png: its own folder
    _touch(vi / "s" / "t", "a.png")
    _touch(ir / "ir_only", "q.png")
    _touch(vi / "vis_only", "r.png", "notes.txt")
    _touch(ir / ".hidden", "h.png")
    _touch(vi / ".hidden", "h.png")
    r = pair_trees(ir, vi)
    assert [(p.name, p.vis.relative_to(vi).as_posix(), p.stem) for p in r] == [
        ("a.png", "a.jpg", "a"),
        ("b.png", "b.png", "b"),
        ("s/y.bmp", "s/y.bmp", "s/y"),
        ("s/z.png", "s/z.jpg", "s/z"),
        ("s/t/a.png", "s/t/a.png", "s/t/a"),
    ]
    assert r.unpaired == ["ir/only.png", "ir/ir_only/q.png", "vis/vis_only/r.png"]
    assert [s for s, _ in r.ambiguous] == ["s/x"] and r.ambiguous[0][1].startswith("s/: ambiguous stem 'x'")
    top = pair_dirs(ir, vi)  # the top folder alone: exactly pair_dirs
    assert [p for p in r if "/" not in p.name] == top.pairs and top.unpaired == ["ir/only.png"]
    with pytest.raises(FileNotFoundError, match="vis directory not found"):
        pair_trees(ir, tmp_path / "nope")


def test_missing_folder_and_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="vis directory not found"):
        pair_dirs(tmp_path, tmp_path / "nope")
    for a, b in SET_LAYOUTS:
        s = tmp_path / f"set_{a}_{b}"
        _touch(s / a, "1.png")
        _touch(s / b, "1.png")
        assert find_set_dirs(s) == (s / a, s / b)
        assert [p.name for p in pair_set(s)] == ["1.png"]
    with pytest.raises(FileNotFoundError, match="none of the sub-folder pairs"):
        find_set_dirs(tmp_path)


def test_find_sets_order_and_first_layout_only(tmp_path):
    for s, (a, b) in (("z", ("ir", "vi")), ("m", ("a", "b")), ("k", ("ir", "vis")), ("c", ("ir", "vi"))):
        _touch(tmp_path / s / a, "1.png")
        _touch(tmp_path / s / b, "1.png")
    _touch(tmp_path / "c" / "vis", "1.png")  # c/ has vi and vis: ir/vi wins, counted once
    assert [p.name for p in find_sets(tmp_path)] == ["c", "z", "k", "m"]
    assert len(find_pairs(tmp_path)) == 4


def test_match_outputs_by_stem(tmp_path):
    _touch(tmp_path / "ir", "a.jpg", "b.jpg", "c.jpg")
    _touch(tmp_path / "vi", "a.jpg", "b.jpg", "c.jpg", "v.jpg")
    _touch(tmp_path / "out", "a.png", "b.png", "b.bmp", "z.png")
    m = match_outputs(pair_dirs(tmp_path / "ir", tmp_path / "vi"), tmp_path / "out")
    assert [(p.name, f.name) for p, f in m.found] == [("a.jpg", "a.png")]
    why = {s: r for s, _, r in m.problems}
    assert why["b"].startswith("ambiguous") and why["c"] == "unpaired: no fused image with this stem"
    assert why["z"] == "unpaired: no ir / vis image with this stem"
    assert why["v"] == "unpaired: no fused / ir image with this stem"


def _old_find_pairs(root: Path):
    """The training pair list as it was computed before the pairing module (the bundled default model's
    data): for ir/vi then a/b, every sorted <set>/ir folder, the sorted ir files whose name exists in vi."""
    exts = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    pairs = []
    for a_name, b_name in (("ir", "vi"), ("a", "b")):
        for a_dir in sorted(root.rglob(a_name)):
            b_dir = a_dir.parent / b_name
            if a_dir.is_dir() and b_dir.is_dir():
                pairs += [
                    (a, b_dir / a.name)
                    for a in sorted(a_dir.iterdir())
                    if a.suffix.lower() in exts and (b_dir / a.name).exists()
                ]
    return pairs


def test_training_pairs_unchanged(shared_data):
    """The bundled default must stay reproducible: same pairs, same order as before."""
    from tokfuse_rt.train.data import find_pairs as train_pairs

    root = shared_data / "train"
    got = train_pairs(root)
    assert got == _old_find_pairs(root)
    assert len(got) == 306


def test_every_test_set_pairs_completely(shared_data):
    for s in sorted((shared_data / "test").iterdir()):
        r = pair_set(s)
        a, b = find_set_dirs(s)
        assert len(r) == len(image_files(a)) == len(image_files(b)) and not r.unpaired and not r.ambiguous, s.name
