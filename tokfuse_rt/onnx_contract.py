"""The contract of the exported graphs, in one place: what ``export/`` writes and what the ONNX Runtime
and TensorRT backends expect.

Graphs (:data:`GRAPHS`; batch, height and width dynamic, images at least :data:`MIN_SIDE` on a side)::

    fused   MODEL.onnx          ir, vis, k        -> fused, ids     (the model; TensorRT builds from it)
    tokens  MODEL.tokens.onnx   ir, vis, k        -> base, ids      (the token pathway)
    render  MODEL.render.onnx   ir, vis, base_up  -> fused          (the 2D half)

    ir, vis  float32 [B, 1, H, W] luminance in [0, 1]     k     int64 [] (tokens edited, 0..K)
    fused    float32 [B, 1, H, W] in [0, 1]              ids   int64 [B, K]
    base     float32 [B, C, S, S]                        base_up = base resized to H x W [B, C, H, W]

ONNX metadata (``metadata_props``; keys :data:`META_PREFIX` + one of :data:`META_KEYS`): ``config`` (the
model config as JSON), ``format_version``, ``source`` (checkpoint file name), ``checkpoint_sha256`` (the
same in all three graphs: it ties the halves to their model), ``exporter``, ``train`` (JSON),
``render_halo`` and ``render_align`` (what tiles of the render graph need), ``graph_opt`` (rewrites
applied), ``part`` (``tokens``/``render``, halves only), ``quant`` (JSON, int8 graphs only: precision,
scheme, quantised nodes, calibration; see ``export/quantize.py``). TensorRT plans carry no metadata: the exporter
writes ``MODEL.plan.json`` beside the plan (:func:`sidecar_path`) with the config and build settings.
"""

from __future__ import annotations

import json
from pathlib import Path

from .imageio import MIN_SIZE

#: graph name -> (input names, output names)
GRAPHS = {
    "fused": (("ir", "vis", "k"), ("fused", "ids")),
    "tokens": (("ir", "vis", "k"), ("base", "ids")),
    "render": (("ir", "vis", "base_up"), ("fused",)),
}
HALVES = ("tokens", "render")
INPUTS, OUTPUTS = GRAPHS["fused"]
#: inputs whose H and W are dynamic
IMAGE_INPUTS = ("ir", "vis", "base_up")
#: symbolic names of the dynamic axes of every graph IO tensor (None: static)
DIM_NAMES = {
    "ir": ["batch", None, "height", "width"],
    "vis": ["batch", None, "height", "width"],
    "fused": ["batch", None, "height", "width"],
    "ids": ["batch", None],
    "base": ["batch", None, None, None],
    "base_up": ["batch", None, "height", "width"],
}
#: smallest height and width of an image input
MIN_SIDE = MIN_SIZE

META_PREFIX = "tokfuse_rt."
META_KEYS = (
    "config",
    "format_version",
    "source",
    "checkpoint_sha256",
    "exporter",
    "train",
    "render_halo",
    "render_align",
    "graph_opt",
    "part",
    "quant",
)


def meta_key(name: str) -> str:
    """The metadata key of ``name`` (one of :data:`META_KEYS`)."""
    if name not in META_KEYS:
        raise KeyError(f"{name!r} is not a tokfuse_rt graph metadata key ({', '.join(META_KEYS)})")
    return META_PREFIX + name


def read_meta(props: dict) -> dict:
    """The tokfuse_rt entries of a graph's metadata (``{key: value}``), by name without the prefix."""
    return {k[len(META_PREFIX) :]: v for k, v in props.items() if k.startswith(META_PREFIX)}


def read_precision(meta: dict) -> str:
    """ "int8" for a graph written by ``export.to_onnx --int8`` (the ``quant`` entry of :func:`read_meta`'s
    result), else "float32"."""
    try:
        quant = json.loads(meta.get("quant") or "{}")
    except json.JSONDecodeError:
        return "float32"
    return quant.get("precision", "float32") if isinstance(quant, dict) else "float32"


def read_config(meta: dict) -> dict | None:
    """The model config of :func:`read_meta`'s result; None when absent or not a JSON object."""
    raw = meta.get("config")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return cfg if isinstance(cfg, dict) else None


def half_paths(onnx_path) -> dict:
    """{"tokens": MODEL.tokens.onnx, "render": MODEL.render.onnx} beside ``onnx_path`` (MODEL.onnx)."""
    p = Path(onnx_path)
    return {part: p.with_name(f"{p.stem}.{part}{p.suffix or '.onnx'}") for part in HALVES}


def sidecar_path(plan_path) -> Path:
    """``model.plan`` -> ``model.plan.json`` (model config and build settings of a TensorRT engine)."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")
