"""The model's halves through the backends: run_tokens / upsample_base / run_render (PyTorch and ONNX
Runtime, from the companion graphs written by export.to_onnx) against the model's own halves and the
full run; an .onnx without (or with stale) companions runs but reports that it has no halves."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tokfuse_rt import Engine

onnx = pytest.importorskip("onnx")
pytestmark = pytest.mark.requires_ort


def _dims(vi):
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_companion_graphs_io(tiny_onnx):
    from export.to_onnx import GRAPHS, check_graph, half_paths

    paths = half_paths(tiny_onnx)
    assert [p.name for p in paths.values()] == ["tiny.tokens.onnx", "tiny.render.onnx"]
    main_meta = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    for part, p in paths.items():
        m = onnx.load(str(p))
        check_graph(m)
        ins, outs = [i.name for i in m.graph.input], [o.name for o in m.graph.output]
        assert (tuple(ins), tuple(outs)) == GRAPHS[part]
        meta = {q.key: q.value for q in m.metadata_props}
        assert meta["tokfuse_rt.part"] == part
        assert meta["tokfuse_rt.checkpoint_sha256"] == main_meta["tokfuse_rt.checkpoint_sha256"]
        io = {v.name: _dims(v) for v in list(m.graph.input) + list(m.graph.output)}
        if part == "tokens":
            # tiny model: base [B, 1, 32, 32] (C and S static, from the model), ids [B, 8]
            assert io["base"] == ["batch", 1, 32, 32] and io["ids"] == ["batch", 8] and io["k"] == []
        else:
            assert io["base_up"] == ["batch", 1, "height", "width"]
            assert io["fused"] == ["batch", 1, "height", "width"]


@pytest.mark.parametrize("b,h,w", [(1, 16, 16), (2, 37, 53), (1, 129, 17)])
def test_halves_match_the_model_and_the_full_run(engines, tiny_ckpt, b, h, w):
    from tokfuse_rt.model import load_checkpoint
    from tokfuse_rt.model.quant import kernel_backend

    model = load_checkpoint(tiny_ckpt)[0]
    pt, ox = engines
    rng = np.random.default_rng(b * h + w)
    ir = rng.random((b, 1, h, w), dtype=np.float32)
    vis = rng.random((b, 1, h, w), dtype=np.float32)
    with torch.inference_mode(), kernel_backend("torch"):
        base_ref, ids_ref = model.token_pathway(torch.from_numpy(ir), torch.from_numpy(vis), 3)
        up_ref = model.upsample_base(base_ref, (h, w))
        fused_ref = model.render(torch.from_numpy(ir), torch.from_numpy(vis), up_ref)
    for eng in (pt, ox):
        be = eng._backend
        assert be.has_halves
        base, ids = be.run_tokens(ir, vis, 3)
        assert base.dtype == np.float32 and base.shape == tuple(base_ref.shape) and ids.dtype == np.int64
        np.testing.assert_array_equal(ids, ids_ref.numpy())
        # float32, same ops in a different order (ONNX Runtime kernels): 1e-5 absolute on values in [0, 1]
        assert np.abs(base - base_ref.numpy()).max() < 1e-5
        up = be.upsample_base(base, (h, w))
        assert up.shape == (b, base.shape[1], h, w)
        np.testing.assert_array_equal(be.upsample_base(base_ref.numpy(), (h, w)), up_ref.numpy())
        fused = be.run_render(ir, vis, up_ref.numpy())
        assert fused.shape == (b, 1, h, w) and np.abs(fused - fused_ref.numpy()).max() < 1e-5
        full, ids_full = be.run(ir, vis, 3)
        np.testing.assert_array_equal(ids_full, ids)
        assert np.abs(be.run_render(ir, vis, up) - full).max() < 1e-5


def test_onnx_without_or_with_stale_companions(tiny_ckpt, tiny_onnx, tmp_path):
    from export.to_onnx import export_onnx, half_paths

    bare = tmp_path / "bare.onnx"
    s = export_onnx(tiny_ckpt, bare, verify=False, halves=False)
    assert s["halves"] == {} and not any(p.exists() for p in half_paths(bare).values())
    rng = np.random.default_rng(0)
    ir = rng.random((1, 1, 20, 24), dtype=np.float32)
    with Engine(bare, threads=1) as e:
        be = e._backend
        assert not be.has_halves and "no companion graphs" in be.halves_note
        assert "unavailable" in e.info()["halves"]
        with pytest.raises(RuntimeError, match="halves are not available"):
            be.run_tokens(ir, ir, 2)
        assert be.run(ir, ir, 2)[0].shape == (1, 1, 20, 24)  # the full graph still runs
        # token reuse falls back to recomputing every frame, and says so
        frames = [(rng.integers(0, 256, (20, 24), dtype=np.uint8),) * 2 for _ in range(3)]
        s = e.stream(frames, reuse="auto")
        out = list(s)
        assert all(np.array_equal(o, e.fuse(a, b)) for o, (a, b) in zip(out, frames))
        st = s.stats()
        assert st["key_frames"] == 3 and not st["reuse"] and "token reuse unavailable" in st["note"]
    # companions of another checkpoint beside it: detected, ignored
    for p_src, p_dst in zip(half_paths(tiny_onnx).values(), half_paths(bare).values()):
        shutil.copy(p_src, p_dst)
    other = tmp_path / "other.safetensors"
    from tokfuse_rt.model import load_checkpoint, save_checkpoint

    m = load_checkpoint(tiny_ckpt)[0]
    with torch.no_grad():
        m.head.conv2.bias.add_(0.01)
    save_checkpoint(m, other)
    export_onnx(other, bare, verify=False, halves=False)
    with Engine(bare, threads=1) as e:
        assert not e._backend.has_halves and "another checkpoint" in e._backend.halves_note
    # a corrupt companion: reported, the model still loads
    half_paths(bare)["render"].write_bytes(b"not onnx")
    export_onnx(tiny_ckpt, bare, verify=False, halves=False)
    with Engine(bare, threads=1) as e:
        assert not e._backend.has_halves and "cannot be loaded" in e._backend.halves_note


def test_export_cli_writes_and_checks_the_halves(tiny_ckpt, tmp_path, capsys):
    from export.to_onnx import main

    assert main([str(tiny_ckpt), "-o", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "tokens half" in out and "render half" in out and "self-check of the halves vs PyTorch: ids identical" in out
    assert (tmp_path / "m.tokens.onnx").is_file() and (tmp_path / "m.render.onnx").is_file()
    assert main([str(tiny_ckpt), "-o", str(tmp_path / "n.onnx"), "--no-halves", "--no-verify"]) == 0
    assert not (tmp_path / "n.tokens.onnx").exists()
