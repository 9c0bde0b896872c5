"""tokfuse_rt.kernels.vq_lookup (Triton) against its PyTorch reference vq_lookup_ref (= the model's quantiser).

How the Triton kernels run here: this module sets ``TRITON_INTERPRET=1`` (``os.environ.setdefault``) before
it imports triton, so the kernels execute in Triton's CPU interpreter on CPU tensors - no GPU needed.
Triton fixes its mode when first imported, so the variable must be set before any module imports triton;
if something imported triton earlier in compiled mode (and there is no GPU) the kernel tests skip and say
so. With ``TRITON_INTERPRET=0`` on a CUDA machine the same tests run the compiled kernels on the GPU
(``DEVICE`` below). The GPU build itself is checked here without a GPU by compiling the kernels for sm_90
(H100) in a subprocess (test_compiles_for_hopper).

Error budget for the float results (the best-score output): both the kernel and the reference compute
the cosine in float32 from the same inputs (l2-normalise, then a d-term dot product) in different orders
(the kernel: one fma chain over j, as the GPU's FMA dot; torch: a vectorised BLAS dot). Against a float64
evaluation of the same expression, the kernel's max error must be at most 2x the plain-torch float32
error, with the torch error floored at ulp(1.0) = 2^-23: the results are of magnitude <= 1, where float32
values are 2^-24..2^-23 apart, and over a small sample torch's max error can fall below that spacing by
luck (measured over 20000 random queries the two orders have the same mean error, 0.29 u, and max errors
of 2.6 u for torch and 3.4 u for the chain, u = 2^-24). Ids must be identical; vectors q are gathered
codebook rows and must be bit-identical.

About "identical" with duplicate codebook rows: the reference (``argmax(z_n @ C_n.T)``, exactly the
model's ``nearest_code_ref``) uses a BLAS matmul, which does not guarantee bit-identical scores for two
identical codebook rows (a library may sum a product in an order that depends on where its column falls
in the library's blocking; on this project's CPU the copies scored alike, but nothing promises it), so
its "lowest index on ties" could pick a later copy of a duplicated row. The kernel's "ordered" score form does
guarantee it. Where the codebook has duplicate rows the ids are therefore compared after mapping every id
to the lowest index of its group of identical rows (``canon``), and the kernel's ids must themselves be
canonical; ties that are exact under any summation order (one-hot and +-1/2 rows, zero queries) are
compared without any mapping.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tokfuse_rt import kernels
from tokfuse_rt.kernels import vq_lookup as V
from tokfuse_rt.kernels.vq_lookup import l2norm_ref, vq_lookup, vq_lookup_ref

import triton_cases
from triton_cases import canon_map, dyadic_rows, kernel_test, seed_of

REPO = Path(__file__).resolve().parents[2]
ULP1 = 2.0**-23  # ulp(1.0) in float32


DEVICE, WHY = triton_cases.DEVICE, triton_cases.WHY


# ------------------------------------------------------------------------------------------------------
# data: codebooks with planted ties, queries that hit them
# ------------------------------------------------------------------------------------------------------
def make_codebook(kc, d, g, plant=True):
    """l2-normalised [kc, d] with, for kc >= 64, exact-tie rows (one-hot e0 and a +-1/2 row h, each at three
    indices spread over the codebook, i.e. over several tiles and splits) and 32 duplicated random rows."""
    cb = l2norm_ref(torch.randn(kc, d, generator=g))
    info = {}
    if plant and kc >= 64:
        e0, h = dyadic_rows(d)
        idx_e0 = [kc // 7, kc // 2 + 3, kc - 1]
        idx_h = [5, kc // 3, kc - 2]
        cb[idx_e0] = e0
        cb[idx_h] = h
        free = torch.tensor([i for i in range(kc) if i not in idx_e0 + idx_h])
        perm = free[torch.randperm(len(free), generator=g)]
        src, dst = perm[:32], perm[32:64]
        cb[dst] = cb[src]
        info = dict(e0=(e0, min(idx_e0)), h=(h, min(idx_h)), dup_src=src, dup_dst=dst)
    return cb, info


def make_queries(n, d, cb, info, g, normalize):
    """Random queries of random magnitude; from position 1 on, planted queries that hit the exact ties
    (3*e0, 2*h, zero) and duplicated random rows. Returns (z, {position: expected id})."""
    z = torch.randn(n, d, generator=g) * torch.exp(torch.randn(n, 1, generator=g))
    expected = {}
    if info:
        planted = [(3.0 * info["e0"][0], info["e0"][1]), (2.0 * info["h"][0], info["h"][1]), (torch.zeros(d), 0)]
        for i, (v, want) in enumerate(planted, start=1):
            if i < n:
                z[i] = v
                expected[i] = want
        for i in range(4, min(n, 12)):
            z[i] = 1.5 * cb[info["dup_src"][i]]  # nearest is a duplicated row (both copies tie)
    if not normalize:
        z = l2norm_ref(z)  # exact on the planted ones: 3*e0 -> e0, 2*h -> h, 0 -> 0
    return z, expected


def check_against_ref(z, cb, ids, q, scores, expected, normalize=True, canonical_kernel=True):
    ids_r, q_r, s_r = vq_lookup_ref(z.cpu(), cb.cpu(), normalize, return_scores=True)
    ids, q, scores = ids.cpu(), q.cpu(), scores.cpu()
    cmap = canon_map(cb.cpu())
    assert ids.dtype == torch.int32 and ids.shape == z.shape[:-1]
    assert q.dtype == cb.dtype and q.shape == z.shape
    bad = (ids.long() != cmap[ids_r.long()]).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        zi = z[i].double().cpu()
        s64 = (l2norm_ref(zi) if normalize else zi) @ cb.double().cpu().t()
        top = torch.topk(s64, 2).values
        pytest.fail(
            f"{len(bad)} ids differ, first at {i}: kernel {int(ids[i])}, ref {int(ids_r[i])} "
            f"(float64 top-2 gap {float(top[0] - top[1]):.3g}: a near-tie in the test data if < 1e-6)"
        )
    if canonical_kernel:
        assert torch.equal(ids.long(), cmap[ids.long()]), "kernel did not take the lowest index among identical rows"
    for i, want in expected.items():
        assert int(ids[i]) == want and int(ids_r[i]) == want, f"exact planted tie at query {i}"
    assert torch.equal(q, cb.cpu()[ids.long()]), "q must be the gathered codebook rows, bit for bit"
    assert torch.equal(q, q_r)
    # error budget of the best score (module doc)
    z64 = z.double().cpu()
    s64 = ((l2norm_ref(z64) if normalize else z64) * cb.double().cpu()[ids.long()]).sum(-1)
    err_k = float((scores.double() - s64).abs().max())
    err_t = float((s_r.double() - s64).abs().max())
    assert err_k <= 2.0 * max(err_t, ULP1), (
        f"score error {err_k:.3g} > 2 x max(torch float32 error {err_t:.3g}, ulp(1))"
    )


# ------------------------------------------------------------------------------------------------------
# the sweep
# ------------------------------------------------------------------------------------------------------
@kernel_test
@pytest.mark.sweep
@pytest.mark.parametrize("normalize", [True, False], ids=["normalize", "prenormalised"])
@pytest.mark.parametrize("d", [8, 12, 16])
@pytest.mark.parametrize("kc", [1, 4096])
@pytest.mark.parametrize("K", [1, 32, 128])
@pytest.mark.parametrize("B", [1, 3])
def test_sweep_matches_reference(B, K, kc, d, normalize):
    g = torch.Generator().manual_seed(seed_of(B, K, kc, d, int(normalize)))
    cb, info = make_codebook(kc, d, g)
    z, expected = make_queries(B * K, d, cb, info, g, normalize)
    z = z.reshape(B, K, d)  # leading dims are allowed; ids come back [B, K]
    ids, q, s = vq_lookup(z.to(DEVICE), cb.to(DEVICE), normalize, return_scores=True)
    assert ids.shape == (B, K) and q.shape == (B, K, d)
    check_against_ref(z.reshape(-1, d), cb, ids.reshape(-1), q.reshape(-1, d), s.reshape(-1), expected, normalize)


@kernel_test
@pytest.mark.sweep
@pytest.mark.parametrize("score_mode", ["ordered", "dot"])
@pytest.mark.parametrize("kc,splits,block_k", [(4096, 2, 512), (4096, 3, 256), (1000, 7, 64), (70, 5, 16)])
def test_codebook_splits_and_small_tiles(monkeypatch, kc, splits, block_k, score_mode):
    """Several row blocks, many tiles per program, partial last tiles and codebook splits (two-kernel
    reduction), with the planted ties straddling tiles and splits. Both score forms ("dot" runs on CUDA)."""
    monkeypatch.setattr(V, "_INTERP_BLOCK_N", 16)
    monkeypatch.setattr(V, "_INTERP_BLOCK_K", block_k)
    d = 12
    g = torch.Generator().manual_seed(seed_of(kc, splits, len(score_mode)))
    cb, info = make_codebook(kc, d, g)
    z, expected = make_queries(50, d, cb, info, g, True)
    ids, q, s = vq_lookup(z.to(DEVICE), cb.to(DEVICE), True, return_scores=True, splits=splits, score_mode=score_mode)
    # "dot" under the interpreter is a BLAS sgemm: ties between *random* duplicate rows are only exact
    # in the "ordered" form (module doc); exact-arithmetic ties hold in both
    check_against_ref(z, cb, ids, q, s, expected, canonical_kernel=score_mode == "ordered")


@kernel_test
@pytest.mark.parametrize("score_mode", ["ordered", "dot"])
def test_dot_form_sweep_subset(score_mode):
    """The CUDA score form ("dot") on the default model shapes, under the interpreter."""
    d, kc = 12, 4096
    g = torch.Generator().manual_seed(11)
    cb, info = make_codebook(kc, d, g)
    z, expected = make_queries(3 * 32, d, cb, info, g, False)
    ids, q, s = vq_lookup(z.to(DEVICE), cb.to(DEVICE), False, return_scores=True, score_mode=score_mode)
    check_against_ref(z, cb, ids, q, s, expected, False, canonical_kernel=score_mode == "ordered")


@kernel_test
def test_all_equal_scores_and_degenerate_inputs():
    """Zero queries tie with every code (id 0); a codebook of identical rows ties everywhere (id 0); empty
    input; fp16 queries are computed in fp32."""
    d = 12
    cb = l2norm_ref(torch.ones(300, d))
    z = torch.randn(20, d)
    ids, q = vq_lookup(z.to(DEVICE), cb.to(DEVICE))
    assert torch.equal(ids.cpu(), torch.zeros(20, dtype=torch.int32))
    cb = l2norm_ref(torch.randn(500, d, generator=torch.Generator().manual_seed(5)))
    ids, _ = vq_lookup(torch.zeros(7, d, device=DEVICE), cb.to(DEVICE))
    assert torch.equal(ids.cpu(), torch.zeros(7, dtype=torch.int32))
    ids, q = vq_lookup(torch.zeros(0, d, device=DEVICE), cb.to(DEVICE))
    assert ids.shape == (0,) and q.shape == (0, d)
    zh = torch.randn(64, d, generator=torch.Generator().manual_seed(6)).half()
    ids, q = vq_lookup(zh.to(DEVICE), cb.to(DEVICE))
    ids_r, _ = vq_lookup_ref(zh, cb)
    assert torch.equal(ids.cpu(), ids_r)


@kernel_test
def test_model_quantize_hook_uses_kernel():
    """tokfuse_rt.model.quant.quantize under kernel_backend("triton") calls vq_lookup(normalize=False)."""
    from tokfuse_rt.model.quant import kernel_backend, quantize

    g = torch.Generator().manual_seed(8)
    cb = l2norm_ref(torch.randn(4096, 12, generator=g))
    z = l2norm_ref(torch.randn(2, 32, 12, generator=g))
    with kernel_backend("torch"):
        ids_t, q_t = quantize(z, cb)
    with kernel_backend("triton"):
        ids_k, q_k = quantize(z.to(DEVICE), cb.to(DEVICE))
    assert ids_k.dtype == torch.int64 and torch.equal(ids_k.cpu(), ids_t) and torch.equal(q_k.cpu(), q_t)


# ------------------------------------------------------------------------------------------------------
# errors and environment
# ------------------------------------------------------------------------------------------------------
def test_reference_argument_errors():
    cb = l2norm_ref(torch.randn(10, 12))
    with pytest.raises(ValueError, match="code dim"):
        vq_lookup_ref(torch.randn(4, 8), cb)
    with pytest.raises(ValueError, match="codebook_n"):
        vq_lookup_ref(torch.randn(4, 12), cb[0])
    with pytest.raises(TypeError, match="floating"):
        vq_lookup_ref(torch.ones(4, 12, dtype=torch.int64), cb)


@kernel_test
def test_kernel_argument_errors():
    cb = l2norm_ref(torch.randn(10, 12))
    with pytest.raises(ValueError, match="code dim"):
        vq_lookup(torch.randn(4, 8), cb)
    with pytest.raises(ValueError, match="score_mode"):
        vq_lookup(torch.randn(4, 12, device=DEVICE), cb.to(DEVICE), score_mode="fast")


def test_import_without_triton():
    """`import tokfuse_rt.kernels` and the *_ref functions work with triton unavailable; the Triton wrappers raise a
    clear ImportError."""
    code = r"""
import sys
sys.modules["triton"] = None           # makes `import triton` raise ImportError
import torch
from tokfuse_rt import kernels
from tokfuse_rt.kernels.vq_lookup import vq_lookup, vq_lookup_ref
from tokfuse_rt.kernels.token_edit import token_edit_weights, token_edit_weights_ref
assert kernels.HAVE_TRITON is False
cb = torch.nn.functional.normalize(torch.randn(16, 12), dim=1)
ids, q = vq_lookup_ref(torch.randn(5, 12), cb)
assert ids.dtype == torch.int32
for fn, args in ((vq_lookup, (torch.randn(5, 12), cb)),
                 (token_edit_weights, (torch.randn(1, 4, 12), torch.zeros(1, 4, dtype=torch.long), torch.randn(1, 4),
                                       torch.randn(1, 24), torch.randn(8, 36), None, torch.randn(12, 8), None, cb, 1))):
    try:
        fn(*args)
    except ImportError as e:
        assert "needs triton" in str(e) and "_ref" in str(e), e
    else:
        raise AssertionError("no ImportError")
print("OK")
"""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-2000:]


# ------------------------------------------------------------------------------------------------------
# the GPU build: compile for Hopper without a GPU (in a process where triton is in compiled mode)
# ------------------------------------------------------------------------------------------------------
COMPILE_SCRIPT = r"""
import json, re, subprocess, sys, tempfile
from pathlib import Path
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction
import tokfuse_rt.kernels.vq_lookup as V

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"

def build(fn, sig, cx, num_warps, num_stages):
    sig = dict(sig, **{k: "constexpr" for k in cx})
    c = triton.compile(ASTSource(fn=JITFunction(fn), signature=sig, constexprs=cx),
                       target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=num_warps, num_stages=num_stages, enable_fp_fusion=True))
    assert len(c.asm["cubin"]) > 0
    if not CUOBJDUMP.exists():
        return None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(c.asm["cubin"]); f.flush()
        out = subprocess.run([str(CUOBJDUMP), "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return [int(m.group(1)), int(m.group(2))] if m else None

res = {}
sig = dict(z_ptr="*fp32", cb_ptr="*fp32", ids_ptr="*i32", q_ptr="*fp32", score_ptr="*fp32", pval_ptr="*fp32",
           pidx_ptr="*i32", N="i32", KC="i32", CHUNK="i32", NSPLIT="i32", NB="i32")
for i, (bn, bk, w, s) in enumerate(V._VQ_CONFIGS_SPEC):
    cx = dict(D=12, D_PAD=16, NORMALIZE=i % 2 == 0, FINAL=i != 1, DOT=True, BLOCK_N=bn, BLOCK_K=bk)
    res[str((bn, bk, w, s))] = build(V._vq_lookup_kernel, sig, cx, w, s)
sig = dict(pval_ptr="*fp32", pidx_ptr="*i32", cb_ptr="*fp32", ids_ptr="*i32", q_ptr="*fp32", score_ptr="*fp32",
           N="i32", NSPLIT="i32")
res["reduce"] = build(V._vq_reduce_kernel, sig, dict(D=12, D_PAD=16, BLOCK_N=V._REDUCE_BLOCK_N), 4, 1)
# compiled mode without a GPU: CPU tensors get a clear error
try:
    V.vq_lookup(torch.randn(4, 12), torch.nn.functional.normalize(torch.randn(8, 12), dim=1))
    res["cpu_error"] = None
except RuntimeError as e:
    res["cpu_error"] = str(e)
print("RESULT " + json.dumps(res))
"""


def run_compiled_mode(script):
    env = dict(
        os.environ,
        TRITON_INTERPRET="0",
        TRITON_DEFAULT_FP_FUSION="1",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not line:
        if "GPUTarget" in r.stderr and "ImportError" in r.stderr:
            pytest.skip("this triton cannot target CUDA ahead of time")
        pytest.fail(r.stderr[-4000:])
    import json

    return json.loads(line[0][len("RESULT ") :])


@pytest.mark.slow
@pytest.mark.requires_triton
@pytest.mark.skipif(not kernels.HAVE_TRITON, reason="requires_triton: triton is not installed")
def test_compiles_for_hopper():
    """Every autotune config of the CUDA path (the "dot" form) and the split reduction compile for sm_90 -
    the GPU code cannot run here, but it must build (TTIR -> TTGIR -> PTX -> cubin with ptxas). Register
    spills are reported as warnings. Also: compiled mode with CPU tensors raises a clear RuntimeError."""
    res = run_compiled_mode(COMPILE_SCRIPT)
    spills = [f"{k}: {v[0]} regs, {v[1]} B stack" for k, v in res.items() if isinstance(v, list) and v[1] > 0]
    if spills:
        warnings.warn("vq_lookup configs spilling on sm_90: " + "; ".join(spills), stacklevel=1)
    assert res["cpu_error"] and "TRITON_INTERPRET=1" in res["cpu_error"] and "CUDA" in res["cpu_error"]
