"""Export a TokFuse checkpoint to ONNX.

    python -m export.to_onnx CKPT -o model.onnx [--opset 18] [--no-graph-opt] [--no-verify] [--no-halves]
                             [--int8 --calib DIR [--calib-pairs N]]

Graph interface (all axes of the images dynamic):

    inputs   ir   float32 [B, 1, H, W]   infrared / MRI luminance in [0, 1]
             vis  float32 [B, 1, H, W]   visible / second-modality luminance in [0, 1]
             k    int64   []             STE: number of shared tokens edited (0..K), chosen at run time
    outputs  fused float32 [B, 1, H, W]  fused luminance in [0, 1]
             ids   int64   [B, K]        shared token ids after STE

Beside ``model.onnx`` the exporter writes the model's two halves as companion graphs (``--no-halves``
skips them), for callers that keep the token pathway's output across calls (video frames reusing the
tokens of a key frame; tiles of a large image sharing one token pass):

    model.tokens.onnx   ir, vis, k           -> base [B, C, S, S] float32, ids [B, K] int64
    model.render.onnx   ir, vis, base_up     -> fused [B, 1, H, W]
                        (base_up = base upsampled to H×W, bilinear with half-pixel centres, [B, C, H, W])

C and S come from the model (``TokFuse.token_pathway`` / ``render``). All three graphs carry the
same ``tokfuse_rt.checkpoint_sha256`` metadata, so a runtime can tell companions that belong to the
model from stale ones. The names, metadata keys and minimum size are the contract of
:mod:`tokfuse_rt.onnx_contract`, which the runtime backends read too.

The model is traced with ``kernel_backend("torch")`` so only plain PyTorch ops (hence standard
ONNX ops) end up in the graph: the nearest-code search is an ArgMax over a MatMul, top-k is the
rank-based comparison of ``topk_mask`` (so ``k`` stays a graph input), the resize to S×S and the
upsample back to H×W are ``Resize`` nodes whose output sizes come from the input's shape.

Exporter: ``torch.onnx.export(..., dynamo=True)`` with ``torch.export.Dim`` dynamic shapes (the
TorchScript exporter is deprecated in torch 2.x); falls back to the TorchScript exporter with
``dynamic_axes`` only if the dynamo path is unavailable or fails. The exporter's own optimiser
(onnxscript: constant folding, dead-code removal) runs; then one exact rewrite of ours,
``split_concat_convs`` (a conv over a 19-channel concat becomes a 16-channel conv plus a 3-channel
conv, which ONNX Runtime's blocked kernels run ~20% faster end to end); ``--no-graph-opt`` skips it.

``--int8 --calib DIR``: the render half's full-resolution convolutions of ``MODEL.onnx`` and
``MODEL.render.onnx`` are quantised to int8 (static, calibrated on the pairs under DIR; the token
pathway stays float32, so the token ids are the float32 model's); see :mod:`export.quantize`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

from tokfuse_rt.onnx_contract import DIM_NAMES, GRAPHS, IMAGE_INPUTS, MIN_SIDE, half_paths, meta_key

if TYPE_CHECKING:
    import onnx

    from tokfuse_rt.model import TokFuse

DEFAULT_OPSET = 18
PathLike = Union[str, os.PathLike]
Sizes = Sequence[tuple[int, int, int]]  # (batch, height, width) of the self-check inputs


class ExportError(RuntimeError):
    """The model could not be exported or the exported graph failed a check."""


def _graph_module(model, graph: str):
    """The module traced for ``graph`` (a key of GRAPHS): ``forward`` takes the graph's inputs by their
    names (the dynamo exporter's dynamic shapes are keyed by them) and returns its outputs."""
    from torch import nn

    class GraphOnnx(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

    class TokFuseOnnx(GraphOnnx):
        def forward(self, ir, vis, k):  # TokFuse.forward without the STE scores
            fused, ids, _ = self.m(ir, vis, k)
            return fused, ids

    class TokensOnnx(GraphOnnx):
        def forward(self, ir, vis, k):  # the token pathway: (base, ids)
            return self.m.token_pathway(ir, vis, k)

    class RenderOnnx(GraphOnnx):
        def forward(self, ir, vis, base_up):  # the 2D half: fused
            return self.m.render(ir, vis, base_up)

    return {"fused": TokFuseOnnx, "tokens": TokensOnnx, "render": RenderOnnx}[graph](model).eval()


def _example_inputs(cfg, batch: int = 2, h: int = 67, w: int = 91):
    import torch

    g = torch.Generator().manual_seed(0)
    ir = torch.rand(batch, 1, h, w, generator=g)
    vis = torch.rand(batch, 1, h, w, generator=g)
    k = torch.tensor(cfg.default_k, dtype=torch.int64)
    return ir, vis, k


def _render_example_inputs(model, batch: int = 2, h: int = 67, w: int = 91):
    """(ir, vis, base_up) of the traced shapes; base_up's channel count comes from the model itself."""
    import torch

    from tokfuse_rt.model.quant import kernel_backend

    ir, vis, k = _example_inputs(model.cfg, batch, h, w)
    with torch.no_grad(), kernel_backend("torch"):
        base, _ = model.token_pathway(ir, vis, k)
    return ir, vis, model.upsample_base(base, (h, w)).contiguous()


@contextlib.contextmanager
def _quiet_torch_logs(quiet: bool):
    """Silence the exporter's INFO/WARNING chatter (e.g. 'torchvision is not installed') on stderr."""
    import logging

    if not quiet:
        yield
        return
    lg = logging.getLogger("torch.onnx")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


def _export_dynamo(wrapper, args, opset: int, dynamic_batch: bool, graph: str):
    import torch
    from torch.export import Dim

    inputs = GRAPHS[graph][0]
    b = Dim("batch", min=1, max=1024) if dynamic_batch else None
    h = Dim("height", min=MIN_SIDE, max=16384)
    w = Dim("width", min=MIN_SIDE, max=16384)
    img = {2: h, 3: w}
    if b is not None:
        img[0] = b
    dynamic_shapes = {n: (img if n in IMAGE_INPUTS else None) for n in inputs}
    prog = torch.onnx.export(
        wrapper,
        args,
        None,
        **_io_options(graph, opset),
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
        optimize=True,
        external_data=False,
        verbose=False,
    )
    return prog.model_proto


def _io_options(graph: str, opset: int) -> dict:
    """What both exporters are told alike: the graph's input and output names and the opset."""
    inputs, outputs = GRAPHS[graph]
    return {"input_names": list(inputs), "output_names": list(outputs), "opset_version": opset}


def _export_torchscript(wrapper, args, opset: int, dynamic_batch: bool, graph: str):
    import torch

    inputs, outputs = GRAPHS[graph]
    axes = {}
    for n in inputs + outputs:
        dims = DIM_NAMES.get(n, [])
        axes[n] = {i: d for i, d in enumerate(dims) if d in ("height", "width") or (d == "batch" and dynamic_batch)}
    buf = io.BytesIO()
    torch.onnx.export(
        wrapper, args, buf, **_io_options(graph, opset), dynamo=False, dynamic_axes=axes, do_constant_folding=True
    )
    import onnx

    return onnx.load_from_string(buf.getvalue())


def _name_dims(model_proto, dynamic_batch: bool) -> None:
    """Give the dynamic axes of the graph IO stable symbolic names (batch, height, width)."""
    for vi in list(model_proto.graph.input) + list(model_proto.graph.output):
        want = DIM_NAMES.get(vi.name)
        if not want:
            continue
        dims = vi.type.tensor_type.shape.dim
        for d, n in zip(dims, want):
            if n is None or (n == "batch" and not dynamic_batch):
                continue
            if not d.HasField("dim_value"):
                d.dim_param = n


def split_concat_convs(model_proto: onnx.ModelProto, block: int = 8) -> list[str]:
    """Rewrite ``Conv(Concat([a, b, ...], axis=1), W, bias)`` as ``Conv(a, W[:, :Ca], bias) +
    Conv(Concat([b, ...]), W[:, Ca:])`` when ``a`` has a multiple of ``block`` channels and the concat
    does not. Mathematically the same convolution (only the float summation order changes); ONNX
    Runtime's blocked NCHWc convolution kernels then take the big part instead of the generic im2col
    path. In TokFuse this is the fusion head's first conv over [detail (16 ch), base, ir, vis] (19 ch),
    the most expensive node of the graph. Returns the names of the rewritten Conv nodes."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    g = model_proto.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model_proto, data_prop=True).graph
    except Exception:  # noqa: BLE001 - no shape information, no rewrite
        return []
    chans = {}
    for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            chans[vi.name] = dims[1].dim_value
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    uses: dict = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    graph_outputs = {o.name for o in g.output}
    done = []
    for conv in list(g.node):
        if conv.op_type != "Conv" or len(conv.input) < 2 or conv.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if attrs.get("group", 1) != 1:
            continue
        cat = producers.get(conv.input[0])
        if cat is None or cat.op_type != "Concat" or uses.get(cat.output[0], 0) != 1 or cat.output[0] in graph_outputs:
            continue
        axis = next((helper.get_attribute_value(a) for a in cat.attribute if a.name == "axis"), None)
        parts = list(cat.input)
        ca = chans.get(parts[0])
        total = sum(chans.get(x, -(10**9)) for x in parts)
        if axis not in (1, -3) or len(parts) < 2 or not ca or ca % block or total % block == 0 or total < 0:
            continue
        w = numpy_helper.to_array(inits[conv.input[1]])
        if w.shape[1] != total:
            continue
        base = conv.name or conv.output[0]
        wa, wb = f"{base}.w_head", f"{base}.w_tail"
        g.initializer.extend(
            [
                numpy_helper.from_array(np.ascontiguousarray(w[:, :ca]), wa),
                numpy_helper.from_array(np.ascontiguousarray(w[:, ca:]), wb),
            ]
        )
        tail_in = parts[1]
        new_nodes = []
        if len(parts) > 2:
            tail_in = f"{base}.tail_in"
            new_nodes.append(helper.make_node("Concat", parts[1:], [tail_in], name=f"{base}.tail_cat", axis=1))
        ya, yb = f"{base}.y_head", f"{base}.y_tail"
        ca_node = helper.make_node("Conv", [parts[0], wa] + list(conv.input[2:3]), [ya], name=f"{base}.head")
        cb_node = helper.make_node("Conv", [tail_in, wb], [yb], name=f"{base}.tail")
        for nd in (ca_node, cb_node):
            nd.attribute.extend(conv.attribute)
        new_nodes += [ca_node, cb_node, helper.make_node("Add", [ya, yb], list(conv.output), name=f"{base}.sum")]
        pos = list(g.node).index(conv)
        del g.node[pos]
        for j, nd in enumerate(new_nodes):
            g.node.insert(pos + j, nd)
        g.node.remove(cat)
        if uses.get(conv.input[1], 0) == 1:
            g.initializer.remove(inits[conv.input[1]])
        done.append(base)
    return done


def check_graph(model_proto: onnx.ModelProto) -> list[str]:
    """onnx.checker (full) + strict shape inference; returns the sorted op types. Raises ExportError."""
    import onnx

    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"onnx.checker rejected the exported graph: {e}") from None
    try:
        onnx.shape_inference.infer_shapes(model_proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # noqa: BLE001 - InferenceError / ValidationError / others of onnx: all mean a bad graph
        raise ExportError(f"ONNX shape inference failed on the exported graph: {e}") from None
    domains = {imp.domain for imp in model_proto.opset_import}
    nonstd = sorted(n.op_type for n in iter_nodes(model_proto.graph) if n.domain not in ("", "ai.onnx"))
    if nonstd:
        raise ExportError(f"exported graph uses non-standard ops {sorted(set(nonstd))} (domains {sorted(domains)})")
    if model_proto.functions:
        raise ExportError(f"exported graph has local functions {[f.name for f in model_proto.functions]}")
    return sorted({n.op_type for n in iter_nodes(model_proto.graph)})


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` including those inside subgraphs (If/Loop/Scan bodies)."""
    import onnx

    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from iter_nodes(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from iter_nodes(g)


def op_counts(model_proto: onnx.ModelProto) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in iter_nodes(model_proto.graph):
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return dict(sorted(out.items()))


def _trace(wrapper, args, graph: str, opset: int, dynamic_batch: bool, exporter: str, quiet: bool):
    """Trace ``wrapper`` into an ONNX ModelProto for ``graph`` (a key of GRAPHS). Returns (proto, exporter used)."""
    import torch

    from tokfuse_rt.model.quant import kernel_backend

    order = {"auto": ("dynamo", "torchscript"), "dynamo": ("dynamo",), "torchscript": ("torchscript",)}[exporter]
    errors = []
    ctx = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
    for name in order:
        fn = _export_dynamo if name == "dynamo" else _export_torchscript
        try:
            with ctx, _quiet_torch_logs(quiet), warnings.catch_warnings(), torch.no_grad(), kernel_backend("torch"):
                warnings.simplefilter("ignore")
                proto = fn(wrapper, args, opset, dynamic_batch, graph)
            return proto, name
        except Exception as e:  # noqa: BLE001 - try the next exporter, report all failures if none works
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    what = "" if graph == "fused" else f" of the {graph} graph"
    raise ExportError(f"ONNX export{what} failed with every exporter: " + " | ".join(errors))


def _finish(proto, graph: str, props: dict, dynamic_batch: bool, graph_opt: bool):
    """Name the dynamic axes, apply the graph rewrites, check the IO names, set the metadata, check the
    graph. Returns (rewritten conv names, op types)."""
    inputs, outputs = GRAPHS[graph]
    _name_dims(proto, dynamic_batch)
    rewritten = split_concat_convs(proto) if graph_opt else []
    got = [i.name for i in proto.graph.input]
    if got != list(inputs):
        raise ExportError(f"exported {graph} graph inputs are {got}, expected {list(inputs)}")
    props = dict(props, graph_opt=",".join(f"split_concat_conv:{n}" for n in rewritten))
    if graph != "fused":
        props["part"] = graph
    del proto.metadata_props[:]
    for k_, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = meta_key(k_), v
    proto.producer_name = "tokfuse_rt.export"
    proto.doc_string = f"TokFuse 1D-token image fusion: ({', '.join(inputs)}) -> ({', '.join(outputs)})"
    return rewritten, check_graph(proto)


def _save_atomic(proto, path: Path) -> None:
    """``proto`` to ``path`` through an exclusive, unpredictable temporary (never a planted link)."""
    from tokfuse_rt.outputs import atomic_write

    atomic_write(path, lambda f: f.write(proto.SerializeToString()))


def export_onnx(
    ckpt: PathLike,
    output: PathLike,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    exporter: str = "auto",
    verify: bool = True,
    quiet: bool = True,
    graph_opt: bool = True,
    halves: bool = True,
    int8: bool = False,
    calib: PathLike | None = None,
    calib_pairs: int | None = None,
    int8_tensorrt: bool = False,
) -> dict:
    """Export checkpoint ``ckpt`` to ONNX file ``output``. Returns a summary dict
    (path, exporter, opset, ops {op: count}, config, seconds). Raises ExportError / CheckpointError.
    ``graph_opt``: apply the exact graph rewrites of this module (``split_concat_convs``).
    ``halves``: also write the token and render halves beside ``output`` (:func:`half_paths`); every
    graph is traced and checked before any file is written.
    ``int8``: quantise the render half's convolutions, calibrated on ``calib_pairs`` pairs under
    ``calib`` (:mod:`export.quantize`); every graph is quantised before any file is written;
    ``int8_tensorrt``: in the form TensorRT's explicit quantization accepts (``export.to_trt --int8``)."""
    import hashlib

    import torch

    from tokfuse_rt.model import load_checkpoint

    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    t0 = time.perf_counter()
    ckpt, output = Path(ckpt), Path(output)
    from tokfuse_rt.outputs import check_not_input

    for p in (output, *half_paths(output).values()):
        check_not_input(p, "output", {"checkpoint": ckpt})

    pairs = None
    if int8:
        from .quantize import DEFAULT_CALIB_PAIRS, calibration_pairs

        if calib is None:
            raise ValueError("--int8 needs --calib DIR: a folder of train/ pairs to calibrate the int8 ranges on")
        pairs = calibration_pairs(calib, calib_pairs or DEFAULT_CALIB_PAIRS)  # bad inputs fail before tracing
    elif calib is not None or calib_pairs is not None:
        raise ValueError("--calib and --calib-pairs apply to --int8 exports only")
    model, meta = load_checkpoint(ckpt, map_location="cpu")
    cfg = model.cfg
    proto, used = _trace(
        _graph_module(model, "fused"), _example_inputs(cfg), "fused", opset, dynamic_batch, exporter, quiet
    )
    # metadata: enough for a runtime to report the model without the checkpoint
    extra = meta.get("extra") or {}
    props = {
        "config": cfg.to_json(),
        "format_version": str(meta.get("format_version", "")),
        "source": ckpt.name,
        "checkpoint_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
        "exporter": f"torch {torch.__version__} ({used})",
        "train": json.dumps(extra.get("train")) if extra.get("train") is not None else "",
        # what tiles of the render graph need (tokfuse_rt.tiling): context pixels and offset alignment
        "render_halo": str(model.render_halo),
        "render_align": str(model.render_align),
    }
    rewritten, ops = _finish(proto, "fused", props, dynamic_batch, graph_opt)
    parts = {}
    if halves or int8:  # an int8 export needs the render graph's convolutions, written or not
        examples = {"tokens": _example_inputs(cfg), "render": _render_example_inputs(model)}
        for part, path in half_paths(output).items():
            if not halves and part != "render":
                continue
            p, used_p = _trace(_graph_module(model, part), examples[part], part, opset, dynamic_batch, exporter, quiet)
            rw, _ = _finish(
                p, part, dict(props, exporter=f"torch {torch.__version__} ({used_p})"), dynamic_batch, graph_opt
            )
            parts[part] = (p, path, rw)
    quant = None
    if int8:
        quant = _save_int8(model, proto, output, parts, pairs, calib, write_halves=halves, tensorrt=int8_tensorrt)
        if not halves:
            parts = {}
    else:
        for p, path, _ in parts.values():  # the halves first: a complete MODEL.onnx means its halves are there
            _save_atomic(p, path)
        _save_atomic(proto, output)
    summary = {
        "path": str(output),
        "exporter": used,
        "opset": _opset(proto),
        "ops": op_counts(proto),
        "op_types": ops,
        "config": json.loads(cfg.to_json()),
        "bytes": output.stat().st_size,
        "graph_opt": rewritten,
        "halves": {
            part: {"path": str(path), "bytes": path.stat().st_size, "graph_opt": rw}
            for part, (_, path, rw) in parts.items()
        },
    }
    if quant is not None:
        summary["int8"] = quant
    if verify:
        summary["verify"] = verify_against_torch(model, output)
        if parts:
            summary["verify_halves"] = verify_halves(model, output)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def _save_int8(
    model, proto, output: Path, parts: dict, pairs, calib, write_halves: bool, tensorrt: bool = False
) -> dict:
    """Write the float32 graphs to a private folder beside ``output``, quantise the fused and render
    graphs there, then move the finished files into place (never a half-written output)."""
    import shutil
    import tempfile

    from .quantize import quantize_graph, render_conv_names

    output.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=".tokfuse-int8-", dir=output.parent))
    try:
        src = {"fused": (proto, output)} | {part: (p, path) for part, (p, path, _) in parts.items()}
        fp32 = {}
        for part, (p, _) in src.items():
            fp32[part] = tmpdir / f"{part}.fp32.onnx"
            _save_atomic(p, fp32[part])
        nodes = render_conv_names(fp32["render"])
        info = {"dir": str(calib), "pairs": len(pairs), "crop": max(max(a.shape[-2:]) for a, _ in pairs)}
        done, quantised = {}, {}
        for part, path in fp32.items():
            if part == "tokens" or (part == "render" and not write_halves):
                done[part] = path
                continue
            done[part] = tmpdir / f"{part}.int8.onnx"
            quantised[part] = quantize_graph(model, path, done[part], part, nodes, pairs, info, tensorrt=tensorrt)
        for part in [*(k for k in src if k != "fused"), "fused"]:  # the halves first, the model last
            if part in ("tokens", "render") and not write_halves:
                continue
            os.replace(done[part], src[part][1])
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return {"nodes": quantised, "calibration": info}


def _opset(proto) -> int:
    return next(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx"))


def verify_against_torch(model: TokFuse, onnx_path: PathLike, sizes: Sizes = ((1, 64, 48), (2, 37, 53))) -> dict:
    """Quick self-check on random inputs of other shapes than traced: ids equal, max |Δ fused|."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime not installed"}
    import numpy as np
    import torch

    from tokfuse_rt.model.quant import kernel_backend

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    worst, ids_ok = 0.0, True
    for b, h, w in sizes:
        ir = rng.random((b, 1, h, w), dtype=np.float32)
        vis = rng.random((b, 1, h, w), dtype=np.float32)
        for k in sorted({0, model.cfg.default_k, model.cfg.num_tokens}):
            fo, io_ = sess.run(None, {"ir": ir, "vis": vis, "k": np.array(k, dtype=np.int64)})
            with torch.inference_mode(), kernel_backend("torch"):
                ft, it, _ = model(torch.from_numpy(ir), torch.from_numpy(vis), k)
            if fo.shape != tuple(ft.shape):
                raise ExportError(f"ONNX output shape {fo.shape} != PyTorch {tuple(ft.shape)} for input {b}x1x{h}x{w}")
            worst = max(worst, float(np.abs(fo - ft.numpy()).max()))
            ids_ok &= bool(np.array_equal(io_, it.numpy()))
    return {"max_abs_diff": worst, "ids_equal": ids_ok}


def verify_halves(model: TokFuse, onnx_path: PathLike, sizes: Sizes = ((1, 64, 48), (2, 37, 53))) -> dict:
    """Self-check of the companion halves on random inputs: tokens graph vs ``token_pathway`` (ids equal,
    max |Δ base|), render graph vs ``render`` (max |Δ fused|)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime not installed"}
    import numpy as np
    import torch

    from tokfuse_rt.model.quant import kernel_backend

    so = ort.SessionOptions()
    so.log_severity_level = 3
    paths = half_paths(onnx_path)
    tok = ort.InferenceSession(str(paths["tokens"]), so, providers=["CPUExecutionProvider"])
    ren = ort.InferenceSession(str(paths["render"]), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    d_base = d_fused = 0.0
    ids_ok = True
    for b, h, w in sizes:
        ir = rng.random((b, 1, h, w), dtype=np.float32)
        vis = rng.random((b, 1, h, w), dtype=np.float32)
        k = model.cfg.default_k
        base_o, ids_o = tok.run(None, {"ir": ir, "vis": vis, "k": np.array(k, dtype=np.int64)})
        with torch.inference_mode(), kernel_backend("torch"):
            base_t, ids_t = model.token_pathway(torch.from_numpy(ir), torch.from_numpy(vis), k)
            up = model.upsample_base(base_t, (h, w))
            fused_t = model.render(torch.from_numpy(ir), torch.from_numpy(vis), up)
        (fused_o,) = ren.run(None, {"ir": ir, "vis": vis, "base_up": up.numpy()})
        if base_o.shape != tuple(base_t.shape) or fused_o.shape != tuple(fused_t.shape):
            raise ExportError(
                f"ONNX halves' output shapes {base_o.shape}, {fused_o.shape} differ from PyTorch's "
                f"{tuple(base_t.shape)}, {tuple(fused_t.shape)} for input {b}x1x{h}x{w}"
            )
        d_base = max(d_base, float(np.abs(base_o - base_t.numpy()).max()))
        d_fused = max(d_fused, float(np.abs(fused_o - fused_t.numpy()).max()))
        ids_ok &= bool(np.array_equal(ids_o, ids_t.numpy()))
    return {"max_abs_diff_base": d_base, "max_abs_diff_fused": d_fused, "ids_equal": ids_ok}


def add_options(p) -> list[argparse.Action]:
    """The options of ONNX export beyond CKPT, -o and --opset, added to parser or group ``p`` (also by
    ``tokfuse export``); returns their argparse actions."""
    return [
        p.add_argument(
            "--exporter",
            choices=("auto", "dynamo", "torchscript"),
            default="auto",
            help="torch exporter (default auto: dynamo, then TorchScript)",
        ),
        p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch self-check"),
        p.add_argument(
            "--no-graph-opt",
            action="store_true",
            help="keep the traced graph as is (no conv split; see split_concat_convs)",
        ),
        p.add_argument(
            "--no-halves",
            action="store_true",
            help="do not write the companion halves MODEL.tokens.onnx and MODEL.render.onnx "
            "(without them token reuse recomputes every video frame)",
        ),
        p.add_argument(
            "--int8",
            action="store_true",
            help="quantise the render half's full-resolution convolutions to int8 (static, needs --calib; "
            "the token pathway stays float32)",
        ),
        p.add_argument("--calib", metavar="DIR", default=None, help="int8 calibration pairs: a train/ folder of sets"),
        p.add_argument(
            "--calib-pairs",
            metavar="N",
            type=int,
            default=None,
            help="int8: calibration pairs, evenly spaced over DIR (default 24)",
        ),
        p.add_argument("--json", action="store_true", help="print the summary as JSON"),
    ]


def build_parser() -> argparse.ArgumentParser:
    from . import exporter_parser

    return exporter_parser(
        "python -m export.to_onnx",
        "Export a TokFuse .safetensors checkpoint to ONNX (dynamic batch, H, W).",
        "TokFuse checkpoint (.safetensors)",
        "output .onnx file (default: CKPT with suffix .onnx)",
        f"ONNX opset, >= 17 (default {DEFAULT_OPSET})",
        add_options,
    )


def run(a: argparse.Namespace, prog: str = "export.to_onnx") -> int:
    """Export as the parsed options ``a`` say (``ckpt``, ``output``, ``opset`` and those of
    :func:`add_options`), print the summary; the exit status."""
    out = Path(a.output) if a.output else Path(a.ckpt).with_suffix(".onnx")
    try:
        s = export_onnx(
            a.ckpt,
            out,
            opset=a.opset or DEFAULT_OPSET,
            exporter=a.exporter,
            verify=not a.no_verify,
            graph_opt=not a.no_graph_opt,
            halves=not a.no_halves,
            int8=a.int8,
            calib=a.calib,
            calib_pairs=a.calib_pairs,
        )
    except (ExportError, ValueError, FileNotFoundError, ImportError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(s, indent=2))
        return 0
    print(
        f"wrote {s['path']} ({s['bytes'] / 1e6:.1f} MB, opset {s['opset']}, {s['exporter']} exporter, "
        f"{sum(s['ops'].values())} nodes, {s['seconds']} s)"
    )
    print("ops: " + ", ".join(f"{k}×{v}" for k, v in s["ops"].items()))
    if s["graph_opt"]:
        print("graph rewrites: split_concat_convs on " + ", ".join(s["graph_opt"]))
    for part, h in s["halves"].items():
        print(f"wrote {h['path']} ({h['bytes'] / 1e6:.1f} MB, {part} half)")
    if "int8" in s:
        q = s["int8"]
        print(
            f"int8: {', '.join(f'{g}: {len(n)} nodes' for g, n in q['nodes'].items())} of the render half "
            f"quantised, calibrated on "
            f"{q['calibration']['pairs']} pairs of {q['calibration']['dir']}; the token pathway is float32"
        )
    for key, what, diffs in (
        (
            "verify",
            "self-check vs PyTorch" + (" (float32; this graph is int8)" if "int8" in s else ""),
            {"fused": "max_abs_diff"},
        ),
        (
            "verify_halves",
            "self-check of the halves vs PyTorch",
            {"base": "max_abs_diff_base", "fused": "max_abs_diff_fused"},
        ),
    ):
        v = s.get(key)
        if v and "skipped" not in v:
            print(
                f"{what}: ids {'identical' if v['ids_equal'] else 'DIFFER'}, "
                + ", ".join(f"max |Δ {name}| {v[k]:.2e}" for name, k in diffs.items())
            )
            if not v["ids_equal"]:
                return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
