"""TensorRT's ONNX operator support, as data, and a checker for an exported graph.

The table below reflects the ONNX-TensorRT parser's published operator support matrix
(``docs/operators.md`` of https://github.com/onnx/onnx-tensorrt, release for **TensorRT 10.15**,
which supports ONNX opsets 9 to 24). Each row: operator, Y/N, the data types TensorRT lists for it;
restrictions are summarised in our own words and the ones that can matter for a graph exported by
this project are checked (``check_model``). Update ``TRT_VERSION`` and the table together.

    python -m export.trt_support model.onnx [-o report.md] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

TRT_VERSION = "10.15"
OPSET_MIN, OPSET_MAX = 9, 24
SOURCE = "https://github.com/onnx/onnx-tensorrt/blob/release/10.15-GA/docs/operators.md"

_F = "FP32 FP16 BF16"
_FI = "FP32 FP16 BF16 INT32 INT64"
_FIB = "FP32 FP16 BF16 INT32 INT64 BOOL"

# operator | supported | types (space separated) | restriction (our summary; empty if none listed)
_TABLE = f"""
Abs|Y|{_FI}|
Acos|Y|{_F}|
Acosh|Y|{_F}|
Add|Y|{_FI}|
AffineGrid|N||
And|Y|BOOL|
ArgMax|Y|{_FI}|
ArgMin|Y|{_FI}|
Asin|Y|{_F}|
Asinh|Y|{_F}|
Atan|Y|{_F}|
Atanh|Y|{_F}|
Attention|Y|{_F} INT8 FP8|4D Q/K/V only; no KV-cache inputs/outputs
AveragePool|Y|{_F}|2D/3D only; unit dilations
BatchNormalization|Y|{_F}|
Bernoulli|N||
BitShift|N||
BitwiseAnd|N||
BitwiseNot|N||
BitwiseOr|N||
BitwiseXor|N||
BlackmanWindow|Y|FP32 FP16|
Cast|Y|{_FI} UINT8 BOOL|
CastLike|Y|{_FI} UINT8 BOOL|
Ceil|Y|{_F}|
Col2Im|N||
Celu|Y|{_F}|
CenterCropPad|N||
Clip|Y|{_F}|
Compress|N||
Concat|Y|{_FIB}|
ConcatFromSequence|N||
Constant|Y|{_FIB} FP8 FP4 INT4|no sparse or string values
ConstantOfShape|Y|{_FIB} FP8 FP4 INT4|
Conv|Y|{_F}|
ConvInteger|N||
ConvTranspose|Y|{_F}|
Cos|Y|{_F}|
Cosh|Y|{_F}|
CumSum|Y|{_F}|axis must be a build-time constant
DFT|N||
DeformConv|Y|FP32 FP16|1D/2D spatial; symmetric pads
DepthToSpace|Y|{_FI}|
DequantizeLinear|Y|INT8 FP8 FP4 INT4|zero point must be 0
Det|N||
Div|Y|{_FI}|
Dropout|Y|{_F}|inference only
DynamicQuantizeLinear|N||
Einsum|Y|{_F}|
Elu|Y|{_F}|
Equal|Y|{_FI}|
Erf|Y|{_F}|
Exp|Y|{_F}|
Expand|Y|{_FIB}|
EyeLike|Y|{_FIB}|static input shape
Flatten|Y|{_FIB}|
Floor|Y|{_F}|
Gather|Y|{_FIB}|
GatherElements|Y|{_FIB}|
GatherND|Y|{_FIB}|
Gelu|Y|{_FI} INT8|
Gemm|Y|{_F}|
GlobalAveragePool|Y|{_F}|
GlobalLpPool|Y|{_F}|
GlobalMaxPool|Y|{_F}|
Greater|Y|{_FI}|
GreaterOrEqual|Y|{_FI}|
GridSample|Y|FP32 FP16|4D input only
GroupNormalization|Y|{_F}|
GRU|Y|{_F}|bidirectional: same activations both ways
HammingWindow|Y|FP32 FP16|
HannWindow|Y|FP32 FP16|
HardSigmoid|Y|{_F}|
HardSwish|Y|{_F}|
Hardmax|Y|{_F}|axis dimension must be a build-time constant
Identity|Y|{_FIB}|
If|Y|{_FIB}|branch outputs of equal rank, distinct names
ImageScaler|Y|{_F}|
ImageDecoder|N||
InstanceNormalization|Y|{_F}|
IsInf|Y|{_F}|
IsNaN|Y|{_FI}|
LayerNormalization|Y|{_F}|first output (Y) only
LeakyRelu|Y|{_F}|
Less|Y|{_FI}|
LessOrEqual|Y|{_FI}|
Log|Y|{_F}|
LogSoftmax|Y|{_F}|
Loop|Y|{_FIB}|static scan-output length; loop-carried shapes fixed
LRN|Y|{_F}|
LSTM|Y|{_F}|bidirectional: same activations; input_forget=0, layout=0
LpNormalization|Y|{_F}|
LpPool|Y|{_F}|unit dilations
MatMul|Y|{_F}|
MatMulInteger|N||
Max|Y|{_FI}|
MaxPool|Y|{_F}|2D/3D only; no Indices output; unit dilations
MaxRoiPool|N||
MaxUnpool|N||
Mean|Y|{_FI} FP8|
MeanVarianceNormalization|Y|{_F}|
MelWeightMatrix|N||
Min|Y|{_FI}|
Mish|Y|FP32 FP16|
Mod|Y|{_FI}|
Mul|Y|{_FI}|
Multinomial|N||
Neg|Y|{_FI}|
NegativeLogLikelihoodLoss|N||
NonMaxSuppression|Y|FP32 FP16|
NonZero|Y|FP32 FP16|
Not|Y|BOOL|
OneHot|Y|{_FIB}|depth must be a build-time constant
Optional|N||
OptionalGetElement|N||
OptionalHasElement|N||
Or|Y|BOOL|
Pad|Y|{_FI}|
ParametricSoftplus|Y|{_F}|
Pow|Y|{_FI}|
PRelu|Y|{_F}|
QLinearConv|N||
QLinearMatMul|N||
QuantizeLinear|Y|{_F}|zero point must be 0
RandomNormal|Y|{_F}|seed ignored
RandomNormalLike|Y|{_F}|seed ignored
RandomUniform|Y|{_F}|seed ignored
RandomUniformLike|Y|{_F}|seed ignored
Range|Y|{_FI}|
Reciprocal|Y|{_F}|
ReduceL1|Y|{_FI}|axes must be an initializer
ReduceL2|Y|{_FI}|axes must be an initializer
ReduceLogSum|Y|{_FI}|axes must be an initializer
ReduceLogSumExp|Y|{_FI}|axes must be an initializer
ReduceMax|Y|{_FI}|axes must be an initializer
ReduceMean|Y|{_FI}|axes must be an initializer
ReduceMin|Y|{_FI}|axes must be an initializer
ReduceProd|Y|{_FI}|axes must be an initializer
ReduceSum|Y|{_FI}|axes must be an initializer
ReduceSumSquare|Y|{_FI}|axes must be an initializer
RegexFullMatch|N||
Relu|Y|{_FI}|
Reshape|Y|{_FIB}|
Resize|Y|{_F}|modes nearest/linear; coordinate modes half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, align_corners; aspect policy stretch; no antialias
ReverseSequence|Y|{_FIB}|
RMSNormalization|Y|{_F}|
RNN|Y|{_F}|bidirectional: same activations both ways
RoiAlign|Y|FP32 FP16|
RotaryEmbedding|Y|{_F}|position_ids INT64
Round|Y|{_F}|
STFT|Y|FP32|frame_step and window must be initializers; real input
ScaledTanh|Y|{_F}|
Scan|Y|{_F}|
Scatter|Y|{_FI}|
ScatterElements|Y|{_FI}|
ScatterND|Y|{_FI}|reduction must be none
Selu|Y|{_F}|
SequenceAt|N||
SequenceConstruct|N||
SequenceEmpty|N||
SequenceErase|N||
SequenceInsert|N||
SequenceLength|N||
SequenceMap|N||
Shape|Y|{_FIB}|
Shrink|Y|{_FI}|
Sigmoid|Y|{_F}|
Sign|Y|{_FI}|
Sin|Y|{_F}|
Sinh|Y|{_F}|
Size|Y|{_FIB}|
Slice|Y|{_FIB}|
Softmax|Y|{_F}|
SoftmaxCrossEntropyLoss|N||
Softplus|Y|{_F}|
Softsign|Y|{_F}|
SpaceToDepth|Y|{_FI}|
Split|Y|{_FIB}|
SplitToSequence|N||
Sqrt|Y|{_F}|
Squeeze|Y|{_FIB}|axes must resolve to a constant
StringConcat|N||
StringNormalizer|N||
StringSplit|N||
Sub|Y|{_FI}|
Sum|Y|{_FI}|
Tan|Y|{_F}|
Tanh|Y|{_F}|
TensorScatter|Y|{_F} INT32|4D only; axis -2
TfIdfVectorizer|N||
ThresholdedRelu|Y|{_F}|
Tile|Y|{_FIB}|
TopK|Y|{_FI}|sorted=1; K < 3840
Transpose|Y|{_FIB}|
Trilu|Y|{_FIB}|
Unique|N||
Unsqueeze|Y|{_FIB}|axes must resolve to a constant
Upsample|Y|{_F}|
Where|Y|{_FIB}|
Xor|Y|BOOL|
"""


@dataclass(frozen=True)
class OpSupport:
    op: str
    supported: bool
    types: tuple
    restriction: str


def _parse_table(text: str) -> dict:
    out = {}
    for line in text.strip().splitlines():
        op, yn, types, restr = (c.strip() for c in line.split("|"))
        out[op] = OpSupport(op, yn == "Y", tuple(types.split()), restr)
    return out


OPERATORS: dict = _parse_table(_TABLE)
SUPPORTED = frozenset(o for o, s in OPERATORS.items() if s.supported)
UNSUPPORTED = frozenset(o for o, s in OPERATORS.items() if not s.supported)

# ONNX TensorProto elem_type -> the type names of the table
_ONNX_TO_TRT = {
    1: "FP32",
    10: "FP16",
    16: "BF16",
    6: "INT32",
    7: "INT64",
    9: "BOOL",
    2: "UINT8",
    3: "INT8",
    11: "DOUBLE",
    12: "UINT32",
    13: "UINT64",
    4: "UINT16",
    5: "INT16",
    8: "STRING",
}
# which input carries the data whose type the table lists (default 0)
_DATA_INPUT = {"Where": 1}
_CHECKED = {"Resize", "Squeeze", "Unsqueeze", "CumSum", "OneHot", "TopK", "ScatterND", "LayerNormalization", "MaxPool"}
_REDUCE = {
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
}


@dataclass
class OpResult:
    op: str
    count: int
    status: str  # "supported" | "unsupported" | "restricted" | "unknown"
    types: list = field(default_factory=list)  # input data types seen in the graph
    notes: list = field(default_factory=list)


@dataclass
class CompatReport:
    model: str
    trt_version: str
    source: str
    opset: int
    opset_ok: bool
    ops: list  # [OpResult]
    io: list  # [(name, "input"/"output", type, shape)]

    @property
    def problems(self) -> list:
        return [o for o in self.ops if o.status != "supported"]

    @property
    def ok(self) -> bool:
        return self.opset_ok and not self.problems

    def summary(self) -> str:
        n = len(self.ops)
        if self.ok:
            return f"all {n} op types of the graph are supported by TensorRT {self.trt_version} (opset {self.opset})"
        bad = ", ".join(f"{o.op} ({o.status})" for o in self.problems)
        s = f"{len(self.problems)} of {n} op types not supported as used by TensorRT {self.trt_version}: {bad}"
        if not self.opset_ok:
            s += f"; opset {self.opset} is outside TensorRT's {OPSET_MIN}..{OPSET_MAX}"
        return s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"], d["summary"] = self.ok, self.summary()
        return d

    def to_markdown(self) -> str:
        lines = [
            f"# TensorRT compatibility report: {Path(self.model).name}",
            "",
            f"Checked against TensorRT {self.trt_version}'s supported ONNX operator list "
            f"(opsets {OPSET_MIN}..{OPSET_MAX}; {SOURCE}).",
            "",
            f"**Result:** {'compatible' if self.ok else 'NOT compatible'} - {self.summary()}.",
            "",
            f"Graph opset: {self.opset} ({'ok' if self.opset_ok else 'outside the supported range'}).",
            "",
            "| op | count | status | input types | TensorRT types | notes |",
            "| --- | ---: | --- | --- | --- | --- |",
        ]
        for o in self.ops:
            sup = OPERATORS.get(o.op)
            tt = " ".join(sup.types) if sup else "-"
            notes = "; ".join(o.notes)
            if not notes and sup and sup.restriction:
                checked = o.op in _CHECKED or o.op in _REDUCE
                notes = f"{'checked, satisfied' if checked else 'not checked'}: {sup.restriction}"
            lines.append(f"| {o.op} | {o.count} | {o.status} | {' '.join(o.types) or '-'} | {tt} | {notes} |")
        lines += ["", "Graph inputs and outputs:", "", "| name | kind | type | shape |", "| --- | --- | --- | --- |"]
        for name, kind, typ, shape in self.io:
            lines.append(f"| {name} | {kind} | {typ} | {shape} |")
        lines.append("")
        return "\n".join(lines)


def _const_names(graph) -> set:
    names = {i.name for i in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _elem_types(model) -> dict:
    import onnx

    try:
        inf = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference is a bonus: without it the initializers' types are used
        inf = model
    g = inf.graph
    t = {i.name: i.data_type for i in g.initializer}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            t[vi.name] = vi.type.tensor_type.elem_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    t[n.output[0]] = a.t.data_type
    return t


def _shape_str(vi) -> str:
    dims = [
        d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in vi.type.tensor_type.shape.dim
    ]
    return "[" + ", ".join(dims) + "]"


def _node_notes(n, consts: set) -> list:
    """Restriction checks for the ops whose restrictions can be decided from the graph."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    notes = []

    def s(v):
        return v.decode() if isinstance(v, bytes) else v

    if n.op_type == "Resize":
        mode = s(attrs.get("mode", "nearest"))
        ctm = s(attrs.get("coordinate_transformation_mode", "half_pixel"))
        if mode not in ("nearest", "linear"):
            notes.append(f"Resize mode {mode!r} unsupported")
        if ctm not in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"):
            notes.append(f"Resize coordinate_transformation_mode {ctm!r} unsupported")
        if attrs.get("antialias", 0):
            notes.append("Resize antialias unsupported")
        if s(attrs.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
            notes.append("Resize keep_aspect_ratio_policy must be stretch")
    elif n.op_type in _REDUCE:
        if len(n.input) > 1 and n.input[1] and n.input[1] not in consts:
            notes.append(f"{n.op_type} axes input {n.input[1]!r} is not an initializer")
    elif n.op_type in ("Squeeze", "Unsqueeze", "CumSum", "OneHot"):
        idx = 2 if n.op_type == "OneHot" else 1
        if len(n.input) > idx and n.input[idx] and n.input[idx] not in consts:
            notes.append(f"{n.op_type} input {n.input[idx]!r} is not a constant (TensorRT needs it at build time)")
    elif n.op_type == "TopK":
        if attrs.get("sorted", 1) != 1:
            notes.append("TopK sorted must be 1")
    elif n.op_type == "ScatterND" and s(attrs.get("reduction", "none")) != "none":
        notes.append("ScatterND reduction must be none")
    elif n.op_type == "LayerNormalization" and len([o for o in n.output if o]) > 1:
        notes.append("LayerNormalization: only the first output is supported")
    elif n.op_type == "MaxPool" and len([o for o in n.output if o]) > 1:
        notes.append("MaxPool Indices output unsupported")
    return notes


def check_model(model: str | os.PathLike | onnx.ModelProto) -> CompatReport:
    """Check every node of an ONNX model (path or ModelProto) against TensorRT's operator list."""
    import onnx

    from .to_onnx import iter_nodes

    path = "<in-memory>"
    if not isinstance(model, onnx.ModelProto):
        path = str(model)
        model = onnx.load(path, load_external_data=False)
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), 0)
    types = _elem_types(model)
    consts = _const_names(model.graph)
    results: dict = {}
    for n in iter_nodes(model.graph):
        op = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        r = results.get(op)
        if r is None:
            sup = OPERATORS.get(op)
            status = "unknown" if sup is None else ("supported" if sup.supported else "unsupported")
            r = results[op] = OpResult(op, 0, status)
            if sup is None:
                r.notes.append("not in TensorRT's ONNX operator list (custom or newer op)")
            elif not sup.supported:
                r.notes.append(f"TensorRT {TRT_VERSION} does not implement {op}")
        r.count += 1
        sup = OPERATORS.get(op)
        di = _DATA_INPUT.get(op, 0)
        if len(n.input) > di and n.input[di]:
            et = _ONNX_TO_TRT.get(types.get(n.input[di], 0))
            if et and et not in r.types:
                r.types.append(et)
                if sup is not None and sup.supported and sup.types and et not in sup.types:
                    r.notes.append(f"input type {et} not listed for {op}")
                    r.status = "restricted"
        if sup is not None and sup.supported:
            for note in _node_notes(n, consts):
                if note not in r.notes:
                    r.notes.append(note)
                r.status = "restricted"
    io = []
    for kind, vis in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in vis:
            io.append((vi.name, kind, _ONNX_TO_TRT.get(vi.type.tensor_type.elem_type, "?"), _shape_str(vi)))
    return CompatReport(
        path,
        TRT_VERSION,
        SOURCE,
        opset,
        OPSET_MIN <= opset <= OPSET_MAX,
        sorted(results.values(), key=lambda o: o.op),
        io,
    )


def write_report(report: CompatReport, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``path`` (Markdown) and ``path`` with suffix .json. Returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from tokfuse_rt.outputs import atomic_write

    md, js = report.to_markdown().encode(), json.dumps(report.to_dict(), indent=2).encode()
    atomic_write(path, lambda f: f.write(md))
    jpath = path.with_suffix(".json")
    atomic_write(jpath, lambda f: f.write(js))
    return path, jpath


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m export.trt_support",
        description=f"Check an ONNX graph against TensorRT {TRT_VERSION}'s operator list.",
    )
    p.add_argument("onnx", help="ONNX model")
    p.add_argument("-o", "--output", default=None, help="write the Markdown report here (and .json beside it)")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    a = p.parse_args(argv)
    try:
        rep = check_model(a.onnx)
    except Exception as e:  # noqa: BLE001 - an unreadable model of any kind: one line, exit 2
        print(f"export.trt_support: error: {a.onnx}: {e}", file=sys.stderr)
        return 2
    if a.output:
        write_report(rep, a.output)
    print(json.dumps(rep.to_dict(), indent=2) if a.json else rep.to_markdown())
    return 0 if rep.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
