"""The official TiTok tokenizer (tokfuse_rt/model/titok.py) against the official implementation's own
outputs (tests/data, see its README), loading of the published file layouts, clear errors, and a TokFuse
model on a frozen TiTok token pathway: checkpoint, Engine, the C++/Triton search paths, training
(stage II only) and ONNX export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tokfuse_rt.model import TokFuse, TokFuseConfig, load_checkpoint, save_checkpoint
from tokfuse_rt.model.config import tokfuse_config
from tokfuse_rt.model.titok import (
    PRESETS,
    TiTokConfig,
    TiTokError,
    TiTokTokenizer,
    load_titok,
    official_config,
    read_state_dict,
)

DATA = Path(__file__).resolve().parents[1] / "data"
TINY_DIR = DATA / "titok_tiny"
# Decoded images: the official float32 forward itself is 9.5e-6 away from float64 on this data (see the
# data README); ours computes attention and the code mixture in another order, and 8 conv + GroupNorm
# layers amplify that. 1e-4 (the acceptance bound) leaves 4x margin over the 2.3e-5 measured.
TOL_IMAGE = 1e-4
# Encoder latents (one 2-layer ViT, 1x1 conv): float32 reassociation only, measured 2.5e-6.
TOL_LATENT = 2e-5
FUSION = dict(mixer_hidden=8, edit_hidden=8, score_hidden=8, default_k=2, detail_channels=4, head_channels=4)


@pytest.fixture(scope="module")
def official():
    d = np.load(DATA / "titok_tiny_official.npz")
    return {k: torch.from_numpy(d[k]) for k in d.files}


@pytest.fixture(scope="module")
def tok():
    return load_titok(TINY_DIR)


@pytest.fixture(scope="module")
def titok_ckpt(tmp_path_factory):
    """A TokFuse checkpoint on the tiny official-format tokenizer (fusion part random, seeded)."""
    from tokfuse_rt.train.loop import titok_model

    torch.manual_seed(0)
    m, info = titok_model(TINY_DIR, cfg=TokFuseConfig(**FUSION))
    with torch.no_grad():  # non-trivial head so outputs depend on base and both inputs
        m.head.conv2.weight.normal_(0, 0.1)
    return save_checkpoint(
        m.eval(), tmp_path_factory.mktemp("titok") / "titok.safetensors", extra={"train": {"tokenizer": info}}
    )


# --- parity with the official implementation ----------------------------------------------------------
def test_parity_with_official_outputs(tok, official):
    x = official["inputs"]
    with torch.no_grad():
        z = tok.encode(x)
        ids, q = tok.quantize_tokens(z)
        logits = tok.code_logits(q)
        dec = tok.decode(q)
        dec_ids = tok.decode_ids(official["ids"][:, 0])
    lat = official["latents"][:, :, 0].transpose(1, 2)  # official [B, d, 1, K] -> [B, K, d]
    assert float((z - lat).abs().max()) < TOL_LATENT
    assert torch.equal(ids, official["ids"][:, 0])
    assert len(set(ids[:, 2].tolist())) > 1, "fixture ids do not depend on the image"
    assert float((logits - official["logits"]).abs().max()) < TOL_IMAGE
    assert float((dec - official["decoded"]).abs().max()) < TOL_IMAGE
    assert float((dec_ids - official["decoded_from_ids"]).abs().max()) < TOL_IMAGE
    assert float(official["decoded"].std()) > 0.1  # not a flat image


def test_tiny_config_is_read_from_official_fields(tok):
    c = tok.cfg
    assert (c.image_size, c.num_latent_tokens, c.token_size, c.codebook_size) == (32, 6, 12, 64)
    assert (c.enc_patch_size, c.dec_patch_size, c.enc_width, c.dec_width, c.dec_heads) == (4, 8, 64, 96, 3)
    assert c.pixel_channel_mult == (1, 2, 2, 1) and c.output_size == 32
    assert not any(p.requires_grad for p in tok.parameters()) and not tok.training


@pytest.mark.parametrize("kernels", ["ext", pytest.param("triton", marks=pytest.mark.requires_triton)])
def test_cpp_and_triton_search_serve_the_titok_codebook(tok, official, kernels):
    from tokfuse_rt.model.quant import kernel_backend, resolve_backend

    if kernels == "ext":
        from tokfuse_rt import nn_search as tnn

        if not tnn.HAVE_EXT:
            pytest.skip("tokfuse_rt._C not built")
    with torch.no_grad(), kernel_backend(kernels):
        assert resolve_backend(torch.device("cpu")) == kernels
        ids, q = tok.quantize_tokens(tok.encode(official["inputs"]))
    assert torch.equal(ids, official["ids"][:, 0])
    assert torch.equal(q, tok.codebook_n()[ids])


# --- released architectures: key names and shapes ----------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_released_key_names_and_shapes(name):
    table = json.loads((DATA / "titok_official_shapes.json").read_text())["models"][name]
    for cfg in (TiTokConfig.from_official(table["config"]), TiTokConfig.preset(name)):
        with torch.device("meta"):
            m = TiTokTokenizer(cfg)
        got = {k: list(v.shape) for k, v in m.state_dict().items()}
        assert got == table["shapes"]
        assert sum(p.numel() for p in m.parameters()) == table["params"]
    assert official_config(name)["model"]["vq_model"].items() <= table["config"]["model"]["vq_model"].items()


def test_bare_weights_file_is_recognised_by_shape(tmp_path, tok, official):
    """A released .bin carries no config: its preset is inferred from its shapes; ours loads the same way."""
    state = read_state_dict(TINY_DIR / "model.safetensors")
    p = tmp_path / "tokenizer_titok_tiny.bin"
    torch.save(state, p)
    with pytest.raises(TiTokError, match="matches none of the released"):
        load_titok(p)
    m = load_titok(p, config=TINY_DIR / "config.json")  # .bin read with weights_only=True
    with torch.no_grad():
        assert torch.equal(m.tokenize(official["inputs"]), official["ids"][:, 0])
    # a file shaped like S-128 (meta tensors stand in for the 84 M weights' shapes) is found as S-128
    with torch.device("meta"):
        s128 = TiTokTokenizer(TiTokConfig.preset("S-128")).state_dict()
    from tokfuse_rt.model.titok import _infer_preset

    assert _infer_preset(s128, p) == official_config("S-128")


# --- clear errors ---------------------------------------------------------------------------------------
def test_wrong_shape_missing_and_unexpected_keys(tmp_path):
    from safetensors.torch import save_file

    state = read_state_dict(TINY_DIR / "model.safetensors")
    cfg = (TINY_DIR / "config.json").read_text()

    def write(st, name):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(cfg)
        save_file(st, str(d / "model.safetensors"))
        return d

    bad = dict(state)
    bad["quantize.embedding.weight"] = torch.zeros(32, 12)
    with pytest.raises(
        TiTokError, match=r"quantize\.embedding\.weight has shape \(32, 12\), the config expects \(64, 12\)"
    ):
        load_titok(write(bad, "shape"))
    miss = {k: v for k, v in state.items() if k != "decoder.mask_token"}
    with pytest.raises(TiTokError, match=r"1 missing keys \['decoder.mask_token'\]"):
        load_titok(write(miss, "missing"))
    extra = dict(state, **{"encoder.extra": torch.zeros(1)})
    with pytest.raises(TiTokError, match=r"unexpected keys \['encoder.extra'\]"):
        load_titok(write(extra, "extra"))
    nan = dict(state)
    nan["latent_tokens"] = state["latent_tokens"].clone()
    nan["latent_tokens"][0, 0] = float("nan")
    with pytest.raises(TiTokError, match="latent_tokens contains NaN"):
        load_titok(write(nan, "nan"))
    # a released config with these (tiny) weights: named mismatch, not a crash
    with pytest.raises(TiTokError, match="do not match the configured architecture: 160 missing keys"):
        load_titok(TINY_DIR / "model.safetensors", config="S-128")


def test_corrupt_and_missing_files(tmp_path):
    data = (TINY_DIR / "model.safetensors").read_bytes()
    cut = tmp_path / "cut" / "model.safetensors"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) // 2])
    (cut.parent / "config.json").write_text((TINY_DIR / "config.json").read_text())
    with pytest.raises(TiTokError, match="corrupt"):
        load_titok(cut.parent)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a pickle at all" * 10)
    with pytest.raises(TiTokError, match="cannot be read as a PyTorch state dict"):
        load_titok(junk, config="L-32")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(TiTokError, match="empty"):
        load_titok(empty)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_titok(tmp_path / "nowhere")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(TiTokError, match="has none of"):
        load_titok(tmp_path / "emptydir")
    bad_json = tmp_path / "bad" / "config.json"
    bad_json.parent.mkdir()
    bad_json.write_text("{not json")
    (bad_json.parent / "model.safetensors").write_bytes(data)
    with pytest.raises(TiTokError, match="cannot be read"):
        load_titok(bad_json.parent)
    with pytest.raises(TiTokError, match="unknown TiTok preset"):
        load_titok(TINY_DIR / "model.safetensors", config="XL-16")


@pytest.mark.parametrize(
    "change,match",
    [
        ({"use_l2_norm": False}, "use_l2_norm false"),
        ({"quantize_mode": "vae"}, "quantize_mode 'vae'"),
        ({"is_legacy": False}, "is_legacy false"),
        ({"finetune_decoder": False}, "finetune_decoder false"),
        ({"vit_enc_model_size": "huge"}, "vit_enc_model_size 'huge'"),
        ({"vit_dec_patch_size": 15}, "not a multiple of vit_dec_patch_size"),
    ],
)
def test_unsupported_or_invalid_configs(change, match):
    c = official_config("B-64")
    c["model"]["vq_model"].update(change)
    with pytest.raises(TiTokError, match=match):
        TiTokConfig.from_official(c)
    del c["model"]["vq_model"]["codebook_size"]
    with pytest.raises(TiTokError):
        TiTokConfig.from_official(c)
    with pytest.raises(TiTokError, match="crop_size"):
        TiTokConfig.from_official({"model": {"vq_model": {}}})


# --- TokFuse on a frozen TiTok token pathway --------------------------------------------------------------
def test_tokfuse_config_and_old_configs():
    t = TiTokConfig.preset("L-32")
    c = tokfuse_config(t)
    assert (c.image_size, c.num_tokens, c.code_dim, c.codebook_size, c.tokenizer) == (256, 32, 12, 4096, "titok")
    assert TokFuseConfig.from_json(c.to_json()) == c
    with pytest.raises(ValueError, match="num_tokens = 64 disagrees"):
        TokFuseConfig(**{**json.loads(c.to_json()), "num_tokens": 64})
    with pytest.raises(ValueError, match="fixed by the TiTok tokenizer"):
        tokfuse_config(t, num_tokens=8)
    with pytest.raises(ValueError, match="tokenizer must be"):
        TokFuseConfig(tokenizer="vqgan")
    old = {k: v for k, v in json.loads(TokFuseConfig().to_json()).items() if not k.startswith("tokenizer")}
    assert TokFuseConfig.from_json(json.dumps(old)).tokenizer == "builtin"  # configs before the field


@pytest.mark.parametrize("name,k", [("L-32", 32), ("B-64", 64), ("S-128", 128)])
def test_released_sizes_as_token_pathway(name, k):
    """A TokFuse model on each released tokenizer at its native 256², K tokens (shapes only: meta tensors)."""
    with torch.device("meta"):
        m = TokFuse(tokfuse_config(TiTokConfig.preset(name))).eval()
        ir, vis = torch.empty(2, 1, 480, 640), torch.empty(2, 1, 480, 640)
        base, ids = m.token_pathway(ir, vis, k=4)
        fused, _, _ = m(ir, vis)
    assert base.shape == (2, 1, 256, 256) and ids.shape == (2, k) and fused.shape == (2, 1, 480, 640)
    assert (m.cfg.image_size, m.cfg.num_tokens, m.cfg.code_dim, m.cfg.codebook_size) == (256, k, 12, 4096)
    assert m.codebook_n().shape == (4096, 12)


def test_titok_model_base_map_is_the_decoded_luminance(titok_ckpt, tok):
    m, meta = load_checkpoint(titok_ckpt)
    assert meta["extra"]["train"]["tokenizer"]["kind"] == "titok"
    for k, v in tok.state_dict().items():  # tokenizer embedded, unchanged
        assert torch.equal(m.state_dict()["tokenizer." + k], v)
    g = torch.Generator().manual_seed(4)
    ir, vis = torch.rand(2, 1, 45, 61, generator=g), torch.rand(2, 1, 45, 61, generator=g)
    with torch.no_grad():
        fused, ids, base = m(ir, vis, k=0)
        # with k = 0 the shared tokens are the mixer's quantised output; decode them with the RGB API
        y = m.to_token_input(ir).expand(-1, 3, -1, -1)
        ids_ir = tok.tokenize(y)
        rgb = tok.decode_ids(ids).clamp(0, 1)
    assert fused.shape == ir.shape and ids.shape == (2, 6) and base.shape == (2, 1, 32, 32)
    want = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    assert float((base - want).abs().max()) < 1e-5  # same ops, float32 reassociation
    _, ids2, q_ir = m.tokenize(m.to_token_input(ir))
    assert torch.equal(ids2, ids_ir)


@pytest.mark.parametrize("kernels", ["ext", pytest.param("triton", marks=pytest.mark.requires_triton)])
def test_titok_model_same_with_every_kernel_backend(titok_ckpt, kernels):
    """The whole token pathway (tokenize, mixer quantisation, STE top-k edit + re-quantisation: Triton's
    fused token_edit under "triton") on the TiTok codebook: ids identical to the PyTorch path."""
    from tokfuse_rt.model.quant import kernel_backend

    if kernels == "ext":
        from tokfuse_rt import nn_search as tnn

        if not tnn.HAVE_EXT:
            pytest.skip("tokfuse_rt._C not built")
    m, _ = load_checkpoint(titok_ckpt)
    g = torch.Generator().manual_seed(7)
    ir, vis = torch.rand(2, 1, 29, 37, generator=g), torch.rand(2, 1, 29, 37, generator=g)
    for k in (3, 6):
        with torch.inference_mode():
            with kernel_backend("torch"):
                f0, i0, b0 = m(ir, vis, k=k)
            with kernel_backend(kernels):
                f1, i1, b1 = m(ir, vis, k=k)
        assert torch.equal(i0, i1), (kernels, k)
        # same codes -> same decode; the STE edit MLP may run in another order in the Triton kernel
        assert float((f0 - f1).abs().max()) < 1e-5 and float((b0 - b1).abs().max()) < 1e-5


def test_engine_runs_a_titok_checkpoint(titok_ckpt):
    from tokfuse_rt import Engine

    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (40, 52), dtype=np.uint8)
    vis = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    with Engine(titok_ckpt, device="cpu", threads=1) as eng:
        out, ids = eng.fuse_with_tokens(ir, vis, k=3)
        info = eng.info()
    assert out.shape == vis.shape and out.dtype == np.uint8 and ids.shape == (6,)
    assert info["config"]["tokenizer"] == "titok"


def test_train_with_tokenizer_skips_stage_one(tmp_path):
    """``tokfuse train --tokenizer``: stage II only, the tokenizer frozen; the checkpoint loads in Engine."""
    from PIL import Image

    from tokfuse_rt import Engine
    from tokfuse_rt.cli import main as cli_main

    rng = np.random.default_rng(1)
    for d in ("ir", "vi"):
        (tmp_path / "data" / "s" / d).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (100, 110), dtype=np.uint8)).save(tmp_path / "data/s/ir" / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (100, 110, 3), dtype=np.uint8)).save(tmp_path / "data/s/vi" / f"{i}.png")
    out = tmp_path / "m.safetensors"
    rc = cli_main(
        [
            "train",
            "--data",
            str(tmp_path / "data"),
            "-o",
            str(out),
            "--work",
            str(tmp_path / "w"),
            "--tokenizer",
            str(TINY_DIR),
            "--steps1",
            "50",
            "--steps2",
            "3",
            "--batch2",
            "2",
            "--crop2",
            "32",
            "--threads",
            "1",
            "--log-every",
            "1",
            "--save-every",
            "100",
        ]
    )
    assert rc == 0
    log = (tmp_path / "w" / "train.log").read_text()
    assert "stage I skipped" in log and "[I]" not in log and "[II] step 3/3" in log
    m, meta = load_checkpoint(out)
    summ = meta["extra"]["train"]
    assert summ["steps1"] == 0 and summ["tokenizer"]["kind"] == "titok"
    ref = load_titok(TINY_DIR).state_dict()
    for k, v in ref.items():
        assert torch.equal(m.state_dict()["tokenizer." + k], v), f"tokenizer weight {k} changed in training"
    fresh = TokFuse(m.cfg).state_dict()
    assert any(not torch.equal(m.state_dict()[k], fresh[k]) for k in fresh if k.startswith("ste."))
    with Engine(out, device="cpu", threads=1) as eng:
        assert eng.fuse(rng.random((33, 47), dtype=np.float32), rng.random((33, 47), dtype=np.float32)).shape == (
            33,
            47,
        )


def test_train_rejects_a_bad_tokenizer(tmp_path):
    from tokfuse_rt.train.loop import TrainArgs, train

    (tmp_path / "data" / "s" / "ir").mkdir(parents=True)
    (tmp_path / "data" / "s" / "vi").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "data/s/ir/0.png")
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "data/s/vi/0.png")
    args = TrainArgs(
        data=str(tmp_path / "data"),
        out=str(tmp_path / "o.safetensors"),
        work=str(tmp_path / "w"),
        tokenizer=str(TINY_DIR / "model.safetensors"),
        tokenizer_config="B-64",
    )
    with pytest.raises(TiTokError, match="do not match the configured architecture"):
        train(args)
    assert not (tmp_path / "o.safetensors").exists()


# --- ONNX export and the TensorRT compatibility report ------------------------------------------------------
@pytest.fixture(scope="module")
def titok_trt_export(titok_ckpt, tmp_path_factory):
    """``python -m export.to_trt`` on the TiTok model: without TensorRT it writes the ONNX file and the
    compatibility report and exits non-zero with one line (with TensorRT it builds an engine)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    root = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("titok_trt") / "titok.plan"
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-m", "export.to_trt", str(titok_ckpt), "-o", str(out)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return r, out


def test_titok_onnx_is_standard_and_trt_report_is_written(titok_trt_export):
    import onnx

    from export.to_onnx import check_graph
    from export.to_trt import EXIT_NO_TRT, tensorrt_available

    r, out = titok_trt_export
    onnx_path = out.with_suffix(".onnx")
    if tensorrt_available()[0]:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == EXIT_NO_TRT and len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr
    proto = onnx.load(str(onnx_path))
    ops = check_graph(proto)  # onnx.checker + strict shape inference, std ops
    assert {"Conv", "LayerNormalization", "Softmax", "Tanh", "Resize", "ArgMax"} <= set(ops)
    rep = json.loads(out.with_name("titok.trt_report.json").read_text())
    assert {o["op"] for o in rep["ops"]} == set(ops)
    assert rep["ok"] is True, rep["summary"]
    assert "TensorRT" in out.with_name("titok.trt_report.md").read_text()


@pytest.mark.requires_ort
def test_titok_onnx_parity_random_and_real_pairs(titok_trt_export, titok_ckpt, shared_data):
    """Parity: ONNX Runtime vs PyTorch, ids identical, fused uint8 within 1 (= 1/255), on random inputs
    of untraced shapes for k in {0, default, K} and on a real pair of every test set."""
    from export.to_onnx import verify_against_torch
    from tokfuse_rt import Engine

    _, out = titok_trt_export
    onnx_path = out.with_suffix(".onnx")
    m, _ = load_checkpoint(titok_ckpt)
    v = verify_against_torch(m, onnx_path, sizes=((1, 64, 48), (2, 37, 53), (1, 16, 16)))
    assert v["ids_equal"] and v["max_abs_diff"] <= 1 / 255, v
    bad = []
    with Engine(titok_ckpt, device="cpu", threads=1) as pt, Engine(onnx_path, device="cpu", threads=1) as ox:
        for s in ("TNO", "RoadScene", "MSRS", "Harvard_MRI_CT", "Harvard_MRI_PET", "Harvard_MRI_SPECT"):
            d = shared_data / "test" / s
            a, b = (d / "ir", d / "vi") if (d / "ir").is_dir() else (d / "a", d / "b")
            name = sorted(p.name for p in a.iterdir() if (b / p.name).is_file())[0]
            f1, i1 = pt.fuse_with_tokens(a / name, b / name)
            f2, i2 = ox.fuse_with_tokens(a / name, b / name)
            diff = int(np.abs(f1.astype(np.int16) - f2.astype(np.int16)).max())
            if f1.shape != f2.shape or diff > 1 or not np.array_equal(i1, i2):
                bad.append(f"{s}/{name}: max|Δ|={diff}, ids {'equal' if np.array_equal(i1, i2) else 'DIFFER'}")
    assert not bad, "; ".join(bad)
