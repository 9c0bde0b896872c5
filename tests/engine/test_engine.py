"""Engine API: input kinds, output kinds, sizes, batches, folders, info, context manager, threads."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tokfuse_rt import Engine
from tokfuse_rt.engine import FuseReport
from tokfuse_rt.imageio import load_image, luminance


@pytest.fixture(scope="module")
def eng(tiny_ckpt):
    with Engine(tiny_ckpt) as e:
        yield e


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (37, 45), dtype=np.uint8), rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)


def test_all_input_kinds_agree(eng, pair, tmp_path):
    ir, vis = pair
    ref = eng.fuse(ir, vis)
    assert ref.dtype == np.uint8 and ref.shape == (37, 45, 3)
    Image.fromarray(ir).save(tmp_path / "ir.png")
    Image.fromarray(vis).save(tmp_path / "vis.png")
    # paths (str and Path) -> uint8 numpy
    assert np.array_equal(eng.fuse(str(tmp_path / "ir.png"), tmp_path / "vis.png"), ref)
    # PIL -> PIL
    out = eng.fuse(Image.fromarray(ir), Image.fromarray(vis))
    assert isinstance(out, Image.Image) and out.mode == "RGB" and np.array_equal(np.asarray(out), ref)
    # float numpy in [0, 1] -> float numpy of the same dtype; equals the uint8 result within rounding
    f = eng.fuse(ir.astype(np.float64) / 255, vis.astype(np.float64) / 255)
    assert f.dtype == np.float64 and f.shape == ref.shape
    assert np.abs(f * 255 - ref).max() <= 0.5 + 1e-3
    # torch uint8 CHW -> torch uint8 CHW; torch float -> torch float
    t = eng.fuse(torch.from_numpy(ir), torch.from_numpy(vis).permute(2, 0, 1))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.shape == (3, 37, 45)
    assert np.array_equal(t.permute(1, 2, 0).numpy(), ref)
    tf = eng.fuse(torch.from_numpy(ir).float() / 255, torch.from_numpy(vis).permute(2, 0, 1).float() / 255)
    assert tf.dtype == torch.float32 and tf.shape == (3, 37, 45)
    # mixed kinds: the output follows vis
    assert isinstance(eng.fuse(tmp_path / "ir.png", Image.fromarray(vis)), Image.Image)


def test_gray_layouts_follow_vis(eng, pair):
    ir, _ = pair
    assert eng.fuse(ir, ir).shape == (37, 45)
    assert eng.fuse(ir, ir[..., None]).shape == (37, 45, 1)
    assert eng.fuse(ir, np.repeat(ir[..., None], 3, -1)).shape == (37, 45, 3)
    assert eng.fuse(torch.from_numpy(ir), torch.from_numpy(ir)[None]).shape == (1, 37, 45)
    assert Image.Image.getbands(eng.fuse(Image.fromarray(ir), Image.fromarray(ir))) == ("L",)


@pytest.mark.parametrize("hw", [(16, 16), (17, 33), (33, 17), (709, 945), (1023, 31)])
def test_odd_sizes_keep_exact_size(eng, hw):
    rng = np.random.default_rng(sum(hw))
    ir = rng.integers(0, 256, hw, dtype=np.uint8)
    vis = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    assert eng.fuse(ir, vis).shape == (*hw, 3)


def test_k_range_and_tokens(eng, pair):
    ir, vis = pair
    K = eng.info()["config"]["num_tokens"]
    outs = {k: eng.fuse_with_tokens(ir, vis, k=k)[1] for k in (0, 1, K)}
    assert all(v.shape == (K,) for v in outs.values())
    with pytest.raises(ValueError, match=r"k must be in \[0, 8\]"):
        eng.fuse(ir, vis, k=K + 1)
    with pytest.raises(ValueError, match="k must be"):
        eng.fuse(ir, vis, k=-1)
    with pytest.raises(TypeError, match="k must be an int"):
        eng.fuse(ir, vis, k=1.5)


def test_fuse_batch_matches_fuse(eng):
    rng = np.random.default_rng(3)
    pairs = [
        (rng.integers(0, 256, s, dtype=np.uint8), rng.integers(0, 256, (*s, 3), dtype=np.uint8))
        for s in [(20, 30), (20, 30), (41, 17), (20, 30), (20, 30), (20, 30)]
    ]
    outs = eng.fuse_batch(pairs)
    assert len(outs) == len(pairs)
    for (a, b), o in zip(pairs, outs):
        # batched convs may differ from single-image convs by float ulps -> at most 1 grey level
        assert np.abs(o.astype(int) - eng.fuse(a, b).astype(int)).max() <= 1
    with pytest.raises(ValueError, match=r"pairs\[1\]: ir and vis sizes differ"):
        eng.fuse_batch([pairs[0], (pairs[0][0], pairs[2][1])])
    # prepared pairs (Engine.prepare) join the same backend calls as raw pairs: same batches, same bits
    mixed = eng.fuse_batch([eng.prepare(*p) if i % 2 else p for i, p in enumerate(pairs)])
    assert all(np.array_equal(m, o) for m, o in zip(mixed, outs))
    with pytest.raises(ValueError, match="ir and vis sizes differ"):
        eng.prepare(pairs[0][0], pairs[2][1])


def test_fuse_dir_reports_bad_pairs_and_carries_on(eng, tmp_path):
    rng = np.random.default_rng(4)
    ird, visd, out = tmp_path / "ir", tmp_path / "vi", tmp_path / "out"
    ird.mkdir(), visd.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (24, 32), dtype=np.uint8)).save(ird / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(visd / f"{i}.png")
    (visd / "1.png").write_bytes(b"")  # empty file
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(ird / "2.png")  # size mismatch
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(ird / "lonely.png")
    (out).mkdir()
    (out / "keep.txt").write_text("already here")
    rep = eng.fuse_dir(ird, visd, out, progress=False)
    assert sorted(p.name for p in rep.written) == ["0.png", "3.png"]
    failed = dict(rep.failed)
    assert "empty" in failed["1.png"] and "sizes differ" in failed["2.png"]
    assert rep.unpaired == ["ir/lonely.png"] and not rep.ok  # two pairs failed
    # one rule for the report and the CLI: a file without a partner is listed, not an error
    from tokfuse_rt.jobs import exit_code

    only_unpaired = FuseReport(written=rep.written, unpaired=rep.unpaired)
    assert only_unpaired.ok and exit_code(only_unpaired) == 0 and exit_code(rep) == 1
    assert exit_code(FuseReport(interrupted=True)) == 130 and exit_code(FuseReport(ambiguous=[("a", "b")])) == 1
    assert (out / "keep.txt").read_text() == "already here"
    assert load_image(out / "0.png").shape == (24, 32, 3)
    with pytest.raises(FileNotFoundError, match="vis directory not found"):
        eng.fuse_dir(ird, tmp_path / "missing", out, progress=False)


def test_info_and_context_manager(tiny_ckpt):
    with Engine(tiny_ckpt, device="cpu", threads=2) as e:
        info = e.info()
        assert info["backend"] == "pytorch" and info["device"] == "cpu" and info["threads"] == 2
        assert info["config"]["num_tokens"] == 8 and str(tiny_ckpt) == info["model"]
    with pytest.raises(RuntimeError, match="closed"):
        e.fuse(np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8))
    assert "closed" in repr(e)


def test_concurrent_fuse_from_threads(eng):
    rng = np.random.default_rng(5)
    pairs = [
        (rng.integers(0, 256, (30 + i, 40), dtype=np.uint8), rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8))
        for i in range(6)
    ]
    expected = [eng.fuse(a, b) for a, b in pairs]
    results, errors = {}, []

    def work(tid):
        try:
            for r in range(3):
                i = (tid + r) % len(pairs)
                results[(tid, r)] = (i, eng.fuse(*pairs[i]))
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 18
    for i, out in results.values():
        assert np.array_equal(out, expected[i])


def test_real_pairs_from_every_test_set(eng, shared_data):
    """Every test set's file layout, format and colour mode goes through (quality is tested elsewhere)."""
    for set_dir in sorted((shared_data / "test").iterdir()):
        a_dir, b_dir = (set_dir / "ir", set_dir / "vi") if (set_dir / "ir").is_dir() else (set_dir / "a", set_dir / "b")
        name = sorted(p.name for p in a_dir.iterdir())[0]
        out = eng.fuse(a_dir / name, b_dir / name)
        ref = load_image(b_dir / name)
        assert out.shape[:2] == ref.shape[:2], set_dir.name
        assert out.dtype == np.uint8
        assert luminance(out).std() > 0.01, set_dir.name
