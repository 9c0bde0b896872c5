"""Checkpoint round trip and clear errors for corrupt, truncated or incompatible files."""

import json
import struct

import pytest
import torch

from tokfuse_rt import Engine
from tokfuse_rt.model import CheckpointError, TokFuse, TokFuseConfig, load_checkpoint, save_checkpoint


def test_round_trip_is_exact(tiny_ckpt, tmp_path):
    m, meta = load_checkpoint(tiny_ckpt)
    assert meta["format_version"] == "1" and isinstance(meta["config"], TokFuseConfig)
    out = save_checkpoint(m, tmp_path / "again.safetensors", extra={"note": "x"})
    m2, meta2 = load_checkpoint(out)
    assert meta2["extra"] == {"note": "x"}
    for (n1, t1), (n2, t2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2)
    g = torch.Generator().manual_seed(0)
    ir, vis = torch.rand(1, 1, 24, 40, generator=g), torch.rand(1, 1, 24, 40, generator=g)
    with torch.no_grad():
        a, b = m(ir, vis), m2(ir, vis)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_checkpoint("nope.safetensors")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Engine("nope.safetensors")


def test_empty_and_truncated(tiny_ckpt, tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty or truncated"):
        load_checkpoint(empty)
    data = tiny_ckpt.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|corrupt"):
            load_checkpoint(p)
    with pytest.raises(CheckpointError):
        Engine(tmp_path / f"cut{len(data) // 2}.safetensors")


def test_garbage_and_foreign_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="corrupt header"):
        load_checkpoint(junk)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a tokfuse_rt checkpoint"):
        load_checkpoint(foreign)


def _rewrite_meta(src, dst, **changes):
    data = src.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    header["__metadata__"].update(changes)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    dst.write_bytes(struct.pack("<Q", len(hb)) + hb + data[8 + n :])
    return dst


def test_incompatible_version_and_config(tiny_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(_rewrite_meta(tiny_ckpt, tmp_path / "v99.safetensors", format_version="99"))
    meta, _ = load_checkpoint(tiny_ckpt)
    cfg = json.loads(meta.cfg.to_json())
    deeper = dict(cfg, dec_depth=cfg["dec_depth"] + 1)  # config asks for tensors the file lacks
    with pytest.raises(CheckpointError, match="does not match the model: missing"):
        load_checkpoint(_rewrite_meta(tiny_ckpt, tmp_path / "deep.safetensors", config=json.dumps(deeper)))
    wider = dict(cfg, code_dim=cfg["code_dim"] + 4)  # same tensors, other shapes
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(_rewrite_meta(tiny_ckpt, tmp_path / "wide.safetensors", config=json.dumps(wider)))
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_checkpoint(_rewrite_meta(tiny_ckpt, tmp_path / "bad.safetensors", config='{"width": -1}'))


def test_nan_weights_rejected(tmp_path):
    m = TokFuse(
        TokFuseConfig(
            image_size=32,
            patch_size=8,
            num_tokens=4,
            codebook_size=8,
            width=16,
            heads=2,
            enc_depth=1,
            dec_depth=1,
            default_k=1,
            detail_channels=2,
            head_channels=2,
        )
    )
    with torch.no_grad():
        m.head.conv1.weight[0, 0, 0, 0] = float("nan")
    p = save_checkpoint(m, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(p)


@pytest.mark.parametrize(
    "change,msg",
    [
        ({"width": 10**9}, "config field width = 1000000000 is out of bounds"),
        ({"codebook_size": 1 << 30}, "codebook_size = 1073741824 is out of bounds"),
        ({"image_size": "128"}, "config field image_size must be an int"),
        ({"enc_depth": True}, "config field enc_depth must be an int"),
    ],
)
def test_absurd_config_refused_before_any_allocation(tiny_ckpt, tmp_path, change, msg):
    cfg = dict(json.loads(load_checkpoint(tiny_ckpt)[0].cfg.to_json()), **change)
    p = _rewrite_meta(tiny_ckpt, tmp_path / "absurd.safetensors", config=json.dumps(cfg))
    with pytest.raises(CheckpointError, match=msg):
        load_checkpoint(p)


def test_large_config_claim_checked_against_the_file_without_allocating(tiny_ckpt, tmp_path):
    """Within the bounds but far more than the file holds (a 4096-wide, 64-deep ViT would be ~13 GB of
    float32 to build): refused from the header and a meta-device model, in well under a second of work."""
    import resource
    import time

    cfg = dict(
        json.loads(load_checkpoint(tiny_ckpt)[0].cfg.to_json()),
        width=4096,
        enc_depth=64,
        dec_depth=64,
        heads=64,
        mlp_ratio=16,
    )
    p = _rewrite_meta(tiny_ckpt, tmp_path / "huge.safetensors", config=json.dumps(cfg))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match="does not match the model"):
        Engine(p)
    assert time.perf_counter() - t < 30
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mib < 200, grew_mib


def test_corrupt_tensor_table(tiny_ckpt, tmp_path):
    data = tiny_ckpt.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = "abc"
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    p = tmp_path / "table.safetensors"
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + data[8 + n :])
    with pytest.raises(CheckpointError, match="corrupt tensor table"):
        load_checkpoint(p)


def test_checkpoint_of_an_earlier_release_loads_as_blend(tmp_path):
    """A format-1 checkpoint written before the "tone" head existed has no ``head`` / ``tone_hidden``
    in its config: it loads as the "blend" model it is, and fuses exactly as before."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    cfg = TokFuseConfig(width=32, enc_depth=1, dec_depth=1, codebook_size=64, head="blend")
    m = TokFuse(cfg).eval()
    new = save_checkpoint(m, tmp_path / "new.safetensors")
    with open(new, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    old_cfg = {k: v for k, v in json.loads(meta["config"]).items() if k not in ("head", "tone_hidden")}
    meta["config"] = json.dumps(old_cfg, sort_keys=True)
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(new)), str(old), metadata=meta)
    m2, meta2 = load_checkpoint(old)
    assert meta2["config"].head == "blend" and not hasattr(m2, "tone")
    ir, vis = torch.rand(1, 1, 20, 30), torch.rand(1, 1, 20, 30)
    with torch.no_grad():
        assert torch.equal(m(ir, vis)[0], m2(ir, vis)[0])


@pytest.mark.parametrize("head", ["blend", "tone", "layers"])
def test_every_head_loads_through_the_header_check(tmp_path, head):
    """load_checkpoint builds the config's model on the meta device first (no memory): every head's
    constructor must work there, and a config/file mismatch is caught there for every head."""
    from tokfuse_rt.model.config import HEADS

    assert head in HEADS
    torch.manual_seed(0)
    cfg = TokFuseConfig(
        image_size=32,
        patch_size=8,
        num_tokens=4,
        codebook_size=8,
        width=16,
        heads=2,
        enc_depth=1,
        dec_depth=1,
        default_k=1,
        detail_channels=2,
        head_channels=2,
        head=head,
    )
    p = save_checkpoint(TokFuse(cfg), tmp_path / f"{head}.safetensors")
    m, _ = load_checkpoint(p)
    assert m.cfg == cfg
    bigger = dict(json.loads(cfg.to_json()), width=4096, heads=64, enc_depth=64)
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_checkpoint(_rewrite_meta(p, tmp_path / "bigger.safetensors", config=json.dumps(bigger)))


def test_save_never_writes_through_a_planted_link(tmp_path):
    """The old predictable ``OUT.tmp`` is ignored: a link planted there (or at the output name) is never
    followed; the checkpoint lands at its name as a regular file and the link's target is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "m.safetensors"
    (tmp_path / "m.safetensors.tmp").symlink_to(victim)
    torch.manual_seed(0)
    m = TokFuse(TokFuseConfig(width=32, enc_depth=1, dec_depth=1, codebook_size=64)).eval()
    save_checkpoint(m, out)
    out.unlink()
    out.symlink_to(victim)  # a link at the output name itself is replaced, not written through
    save_checkpoint(m, out)
    assert victim.read_text() == "keep me"
    assert out.is_file() and not out.is_symlink()
    assert load_checkpoint(out)[0].cfg == m.cfg
