"""Static int8 quantisation of an exported TokFuse graph's full-resolution convolutions.

    python -m export.to_onnx CKPT -o model.onnx --int8 --calib DIR [--calib-pairs N]

What is quantised: the ``Conv`` nodes of the render half (DetailNet, HeadConvs: the convolutions of
``MODEL.render.onnx``, found under the same node names in ``MODEL.onnx``) and the ``Relu`` / ``Add``
nodes that only join their outputs (so ONNX Runtime runs the chain in int8 without float round trips
between the convolutions), with ONNX Runtime's ``quantize_static``: QDQ format, int8 weights per
output channel, int8 activations with ranges from MinMax calibration. Everything else stays float32
-- the whole token pathway (so the token ids equal those of the float32 model), the resizes, the
head's per-pixel rule. ``MODEL.tokens.onnx`` is the float32 graph unchanged. The graphs carry
``tokfuse_rt.quant`` metadata (JSON: scheme, quantised nodes, calibration pairs), which ``tokfuse
info`` reports as ``precision: int8``.

Calibration: the (ir, vis) pairs of every set folder under DIR (``tokfuse_rt.pairing.find_pairs``),
``n`` of them evenly spaced in that order, each the luminance as ``Engine`` reads it, centre-cropped
to at most ``crop``² pixels; the fused graph at the model's default k, the render graph with its
base map from the PyTorch token pathway. A DIR with a ``test`` folder in its path is refused: test
pairs are for evaluation only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

DEFAULT_CALIB_PAIRS = 24
DEFAULT_CROP = 256
SCHEME = "int8 static QDQ (onnxruntime.quantization), per-channel int8 weights, int8 activations, MinMax"
# TensorRT's explicit quantization takes QDQ pairs with zero points 0 and no int32 (bias) DequantizeLinear
TRT_EXTRA = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
TRT_SCHEME = SCHEME + ", symmetric activations, float32 biases (TensorRT explicit quantization)"


def calibration_pairs(calib_dir, n: int = DEFAULT_CALIB_PAIRS, crop: int = DEFAULT_CROP) -> list:
    """[(ir, vis)] float32 [1, 1, h, w] luminance of ``n`` pairs under ``calib_dir`` (see module docstring)."""
    from tokfuse_rt.inputs import Prepared
    from tokfuse_rt.pairing import find_pairs

    calib_dir = Path(calib_dir)
    if "test" in calib_dir.resolve().parts:
        raise ValueError(f"calibration directory {calib_dir}: test/ pairs are for evaluation only; calibrate on train/")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"calibration pairs must be a positive int, got {n!r}")
    pairs = find_pairs(calib_dir)
    if not pairs:
        raise ValueError(f"calibration directory {calib_dir}: no image pairs found (expected ir/ + vi/ set folders)")
    pick = [pairs[i] for i in sorted({round(j * (len(pairs) - 1) / max(1, n - 1)) for j in range(n)})]
    out = []
    for ir_path, vis_path in pick:
        a, b = Prepared(ir_path, vis_path).luminance()
        h, w = a.shape
        y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        out.append((np.ascontiguousarray(a[sl])[None, None], np.ascontiguousarray(b[sl])[None, None]))
    return out


def render_conv_names(render_path) -> list[str]:
    """Names of the Conv nodes of a render graph (all of its convolutions are full-resolution)."""
    import onnx

    return [n.name for n in onnx.load(str(render_path)).graph.node if n.op_type == "Conv"]


def conv_chain(graph, convs: list[str]) -> list[str]:
    """``convs`` plus the Relu and Add nodes whose inputs all come from them (or from such nodes),
    in graph order."""
    chain, produced = set(convs), set()
    out = []
    for n in graph.node:
        if n.name in chain or (n.op_type in ("Relu", "Add") and n.input and all(i in produced for i in n.input)):
            chain.add(n.name)
            produced.update(n.output)
            out.append(n.name)
    return out


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a list of input dicts."""

    def __init__(self, feeds: list[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - not used by MinMax
        pass


def _feeds(model, pairs, graph: str) -> list[dict]:
    import torch

    from tokfuse_rt.model.quant import kernel_backend

    k = np.array(model.cfg.default_k, dtype=np.int64)
    if graph == "fused":
        return [{"ir": a, "vis": b, "k": k} for a, b in pairs]
    feeds = []
    for a, b in pairs:
        with torch.inference_mode(), kernel_backend("torch"):
            base, _ = model.token_pathway(torch.from_numpy(a), torch.from_numpy(b), int(k))
            up = model.upsample_base(base, a.shape[-2:]).contiguous().numpy()
        feeds.append({"ir": a, "vis": b, "base_up": up})
    return feeds


def quantize_graph(
    model, src: Path, dst: Path, graph: str, nodes: list[str], pairs, calib_info: dict, tensorrt: bool = False
) -> list[str]:
    """Quantise the Conv nodes ``nodes`` (those present) of graph file ``src`` into ``dst``; keeps the
    graph's metadata and adds ``tokfuse_rt.quant``. Returns the names of the quantised nodes.
    ``tensorrt``: the form TensorRT's explicit quantization accepts (``TRT_EXTRA``)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from tokfuse_rt.onnx_contract import meta_key

    proto = onnx.load(str(src))
    present = [n.name for n in proto.graph.node if n.op_type == "Conv" and n.name in set(nodes)]
    if not present:
        raise ValueError(f"{src.name}: none of the render convolutions {nodes} is in the graph")
    present = conv_chain(proto.graph, present)
    tmp = dst.with_name(dst.name + f".q{os.getpid()}.tmp")
    try:
        quantize_static(
            str(src),
            str(tmp),
            _Reader(_feeds(model, pairs, graph)),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "Relu", "Add"],
            nodes_to_quantize=present,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=dict(TRT_EXTRA) if tensorrt else None,
        )
        q = onnx.load(str(tmp))
        del q.metadata_props[:]
        for e in proto.metadata_props:
            q.metadata_props.add().CopyFrom(e)
        e = q.metadata_props.add()
        e.key = meta_key("quant")
        scheme = TRT_SCHEME if tensorrt else SCHEME
        e.value = json.dumps({"precision": "int8", "scheme": scheme, "nodes": present, "calibration": calib_info})
        q.producer_name = proto.producer_name
        q.doc_string = proto.doc_string
        onnx.save_model(q, str(tmp))
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    return present
