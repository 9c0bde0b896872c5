"""Checkpoints: one .safetensors file; metadata holds the format tag, format version and model config."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import TokFuseConfig
from .errors import CheckpointError

FORMAT_TAG = "tokfuse_rt"
FORMAT_VERSION = 1


def save_checkpoint(model, path, extra: dict | None = None) -> Path:
    """Write ``model`` (a TokFuse) to ``path`` atomically (an exclusive temporary in the same folder,
    never through a link planted there, renamed into place); ``extra`` goes into metadata as JSON."""
    from safetensors.torch import save

    from ..outputs import atomic_write

    path = Path(path)
    meta = {
        "format": FORMAT_TAG,
        "format_version": str(FORMAT_VERSION),
        "config": model.cfg.to_json(),
        "extra": json.dumps(extra or {}, sort_keys=True),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata=meta)  # bytes: a model is a few MB
    atomic_write(path, lambda f: f.write(data))
    return path


def read_metadata(path) -> dict:
    """Metadata of a checkpoint, validated; raises FileNotFoundError / CheckpointError."""
    return read_header(path)[0]


def read_header(path) -> tuple[dict, dict]:
    """(metadata, {tensor name: shape}) of a checkpoint, validated, without reading tensor data;
    raises FileNotFoundError / CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, expected a .safetensors file")
    size = path.stat().st_size
    if size < 8:
        raise CheckpointError(f"checkpoint {path} is empty or truncated ({size} bytes)")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n <= 0 or 8 + n > size:
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated (header of {n} bytes, file of {size})")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"checkpoint {path} has a corrupt header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"checkpoint {path} has a corrupt header (not a JSON object)")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} has corrupt metadata (not a JSON object)")
    if meta.get("format") != FORMAT_TAG:
        raise CheckpointError(f"{path} is a safetensors file but not a tokfuse_rt checkpoint (no format tag)")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"checkpoint {path} has an invalid format_version") from None
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this tokfuse_rt reads version {FORMAT_VERSION}"
        )
    try:
        tensors = {k: tuple(int(d) for d in v["shape"]) for k, v in header.items() if k != "__metadata__"}
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (KeyError, TypeError, ValueError, IndexError):
        raise CheckpointError(f"checkpoint {path} has a corrupt tensor table") from None
    if 8 + n + max(ends, default=0) > size:
        raise CheckpointError(f"checkpoint {path} is truncated: tensor data extends past the end of the file")
    return meta, tensors


def load_checkpoint(path, map_location="cpu"):
    """Load a TokFuse model (eval mode) from a .safetensors checkpoint. Returns (model, metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .fusion import TokFuse

    meta, shapes = read_header(path)
    try:
        cfg = TokFuseConfig.from_json(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has an invalid model config: {e}") from None
    # the tensors the config implies, on the meta device (no memory), against the file's tensor table:
    # a config that claims more than the file holds fails here, before anything is allocated
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in TokFuse(cfg).state_dict().items()}
    missing, unexpected = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for name, shp in shapes.items():
        if shp != want[name]:
            raise CheckpointError(f"checkpoint {path}: tensor {name} has shape {shp}, config expects {want[name]}")
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from None
    model = TokFuse(cfg)
    for name, t in state.items():  # names and shapes were checked against the header above
        if not torch.isfinite(t).all():
            raise CheckpointError(f"checkpoint {path}: tensor {name} contains NaN or inf")
    model.load_state_dict(state)
    model.eval()
    out = dict(meta)
    out["config"] = cfg
    try:
        out["extra"] = json.loads(meta.get("extra", "{}"))
    except json.JSONDecodeError:
        out["extra"] = {}
    return model, out
