"""Codebook nearest-neighbour search: tokfuse_rt._C.nn_search and tokfuse_rt.nn_search.

Oracle: ``nn_search_ref`` (pure PyTorch, float32) and float64 scores.

Error budget (scores). Any float32 evaluation of a D-term dot product, in any summation order
and with or without FMA, satisfies |fl(q.c) - q.c| <= gamma_D * sum_d |q_d c_d| with
gamma_n = n u / (1 - n u), u = 2**-24 (Higham, Accuracy and Stability, Lemma 3.1 / eq. 3.5).
That is the error bound of the plain torch float32 reference ``q @ C.T``. For squared L2 the
reference evaluates |q|^2 - 2 q.c + |c|^2, bounded by gamma_{D+2} (|q|^2 + 2 sum|q_d c_d| + |c|^2).
The budget allowed for the extension is twice that bound, per (query, code):

    tol = 2 * gamma_{D+2} * mag,   mag = sum|q_d c_d|  (ip)  or  |q|^2 + 2 sum|q_d c_d| + |c|^2  (l2)

(gamma_{D+2} >= gamma_D also covers the ip case). The extension selects with float32 FMA chains
(selection error <= gamma_{D+1} (sum|q_d c_d| + |c|^2/2) in the same units, inside the budget) and
then reports the chosen code's score accumulated in float64 and rounded once, so its scores are
essentially correctly rounded; the tolerance is the a-priori budget, not tuned to the data. For
N >= 256 the sweep also checks the empirical "<= 2x the error of plain torch float32" directly.

Ids. Float near-ties are handled honestly: an implementation whose scores are each within
tol of the exact ones may return any code j with best64 - s64_j <= tol_j + tol_best (the
"candidates"). We require (a) the returned id is a candidate and its score is within tol of the
exact score of that id; (b) wherever all candidates are copies of one row (true ties planted
as duplicate codebook rows, or a single clear winner), the id is *exactly* the lowest index of
that row - for the extension and for the reference alike. The sweep plants duplicate rows and
queries that hit them, and asserts that most planted queries are unambiguous, so (b) is
exercised on exact ties, not vacuous.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch

from tokfuse_rt import nn_search as tnn
from tokfuse_rt.nn_search import HAVE_EXT, nn_search_ref

_C = tnn._C
needs_ext = pytest.mark.skipif(
    not HAVE_EXT, reason="tokfuse_rt._C is not built (run: python setup.py build_ext --inplace)"
)
HAVE_AVX2 = bool(HAVE_EXT and _C.build_info()["default_impl"] == "avx2")
needs_avx2 = pytest.mark.skipif(not HAVE_AVX2, reason="the AVX2/FMA kernel is not available on this CPU/build")

U = 2.0**-24  # float32 unit roundoff


def gamma(n: int) -> float:
    return n * U / (1.0 - n * U)


# ---------------------------------------------------------------------------------------------
# data and checker


def make_case(N: int, K: int, D: int, metric: str, seed: int):
    """Random codebook/queries with planted exact ties (duplicate rows) hit by some queries.

    Even seeds: l2-normalised rows (the project's quantiser setting); odd seeds: raw Gaussians.
    Returns (queries, codebook, n_planted): the first n_planted queries target duplicated rows.
    """
    g = np.random.default_rng(seed)
    C = g.standard_normal((K, D)).astype(np.float32)
    q = g.standard_normal((N, D)).astype(np.float32)
    if seed % 2 == 0:
        C /= np.linalg.norm(C, axis=1, keepdims=True)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    n_planted = 0
    if K >= 2:
        n_dup = max(1, K // 64)
        src = g.choice(K, n_dup, replace=False)
        dst = g.choice(np.setdiff1d(np.arange(K), src), n_dup, replace=False)
        if metric == "ip" and seed % 2 == 1:
            C[src] *= 3.0  # large norm: the planted row wins for queries pointing at it
        C[dst] = C[src]  # exact duplicates, before and after their source (K = 2: both rows equal)
        n_planted = min(N, max(1, N // 4))
        q[:n_planted] = C[dst[g.integers(0, n_dup, n_planted)]]
    return np.ascontiguousarray(q), np.ascontiguousarray(C), n_planted


class Checker:
    """float64 oracle for one (queries, codebook, metric), computed once and shared by all checks.

    Candidates (the codes an implementation within the budget may return) are computed with a
    per-query width that bounds tol_j + tol_best from above via Cauchy-Schwarz
    (sum|q_d c_d| <= |q| |c|), so the candidate set is a (slightly larger) superset - which only
    makes "unambiguous" rarer, never wrongly true. Scores are checked against the exact per-code
    budget of the returned id.
    """

    CHUNK_ELEMS = 1 << 22
    FLOAT64_MAX_WORK = 1 << 31  # N*K*D above this: prefilter candidates in float32 (see below)

    def __init__(self, q: np.ndarray, C: np.ndarray, metric: str):
        self.q = torch.from_numpy(q).double()
        self.C = torch.from_numpy(C).double()
        self.metric = metric
        self.N, self.D = q.shape
        self.K = C.shape[0]
        _, group = torch.unique(torch.from_numpy(C), dim=0, return_inverse=True)  # identical rows
        copies = torch.bincount(group, minlength=self.K)
        qn = self.q.norm(dim=1)
        cmax = float(self.C.norm(dim=1).max())
        g = gamma(self.D + 2)
        mag = qn * cmax if metric == "ip" else qn * qn + 2 * qn * cmax + cmax * cmax
        width = 2 * 2 * g * mag
        # Huge cases: the gaps are taken from a float32 GEMM instead of a float64 one. Its error is
        # <= gamma_{D+2} * mag per score (same bound), so widening by 2 * 2 * g * mag keeps the
        # candidate set a superset of the float64 one (only "unambiguous" gets rarer).
        use64 = self.N * self.K * self.D <= self.FLOAT64_MAX_WORK
        if not use64:
            width = width + 2 * 2 * g * mag
        qq, CC = (self.q, self.C) if use64 else (self.q.float(), self.C.float())
        c2 = (CC * CC).sum(1)
        keys = []
        step = max(1, self.CHUNK_ELEMS // self.K)
        for i0 in range(0, self.N, step):
            qi = qq[i0 : i0 + step]
            # larger is better; for l2 t = 2 q.c - |c|^2 = |q|^2 - dist (same gaps as the distances)
            t = qi @ CC.T if metric == "ip" else torch.addmm(-c2[None, :], qi, CC.T, alpha=2.0)
            lo = t.max(1, keepdim=True).values - width[i0 : i0 + step, None].to(t.dtype)
            r, c = (t >= lo).nonzero(as_tuple=True)
            keys.append((r + i0) * self.K + c)
        self.keys = torch.cat(keys)  # sorted: row-major order of nonzero()
        row, col = self.keys // self.K, self.keys % self.K
        g = group[col]
        gmin = torch.full((self.N,), self.K + 1, dtype=torch.int64).scatter_reduce(0, row, g, "amin")
        gmax = torch.full((self.N,), -1, dtype=torch.int64).scatter_reduce(0, row, g, "amax")
        self.unambiguous = gmin == gmax
        self.expected = torch.full((self.N,), self.K, dtype=torch.int64).scatter_reduce(0, row, col, "amin")
        self.exact_tie = self.unambiguous & (copies[group[self.expected.clamp(max=self.K - 1)]] >= 2)

    def exact(self, ids):
        """float64 score of code ids[i] for query i, and the budget tol for it."""
        c = self.C[ids]
        if self.metric == "ip":
            s = (self.q * c).sum(1)
            mag = (self.q * c).abs().sum(1)
        else:
            s = ((self.q - c) ** 2).sum(1)
            mag = (self.q * self.q).sum(1) + 2 * (self.q * c).abs().sum(1) + (c * c).sum(1)
        return s, 2.0 * gamma(self.D + 2) * mag

    def check(self, ids, scores, who: str):
        """Assert the id/score contract. Returns (unambiguous, exact_tie) boolean masks."""
        ids = torch.as_tensor(np.asarray(ids)).long()
        scores = torch.as_tensor(np.asarray(scores)).double()
        assert ids.shape == (self.N,) and scores.shape == (self.N,)
        assert ids.numel() == 0 or (ids.min() >= 0 and ids.max() < self.K), f"{who}: id out of range"
        # (a) a candidate, with a score within the budget of its exact score
        ok = torch.isin(torch.arange(self.N) * self.K + ids, self.keys)
        assert bool(ok.all()), f"{who}: {int((~ok).sum())} ids are not among the float-near-best codes"
        s, tol = self.exact(ids)
        err = (scores - s).abs()
        bad = err > tol
        assert not bool(bad.any()), (
            f"{who}: score error {err[bad].max().item():.3g} exceeds budget {tol[bad].min().item():.3g}"
        )
        # (b) unambiguous queries: exactly the lowest index of the copies of the best row
        mism = self.unambiguous & (ids != self.expected)
        assert not bool(mism.any()), (
            f"{who}: {int(mism.sum())} unambiguous ids differ from the lowest index of "
            f"the best row (first at query {int(mism.nonzero()[0])})"
        )
        return self.unambiguous, self.exact_tie

    def score_error(self, ids, scores) -> float:
        ids = torch.as_tensor(np.asarray(ids)).long()
        s, _ = self.exact(ids)
        return float((torch.as_tensor(np.asarray(scores)).double() - s).abs().max())


def run_and_check(N, K, D, metric, seed, impls=("auto",), emulated=False, threads=2):
    q, C, n_planted = make_case(N, K, D, metric, seed)
    chk = Checker(q, C, metric)
    ref_ids, ref_scores = nn_search_ref(torch.from_numpy(q), torch.from_numpy(C), metric)
    assert ref_ids.dtype == torch.int64 and ref_scores.dtype == torch.float32
    un_ref, tie_ref = chk.check(ref_ids, ref_scores, "nn_search_ref")
    outs = {}
    for impl in impls:
        ids, scores = _C.nn_search(q, C, metric, threads, impl)
        assert ids.dtype == np.int64 and scores.dtype == np.float32
        un, _ = chk.check(ids, scores, f"_C.nn_search impl={impl}")
        # where both are unambiguous the ids are identical (both equal the expected id)
        both = un & un_ref
        assert torch.equal(torch.from_numpy(ids)[both], ref_ids[both])
        outs[impl] = (ids, scores)
        if impl != "auto" and "auto" in outs:  # same id -> bit-identical score on every path
            same = ids == outs["auto"][0]
            np.testing.assert_array_equal(scores[same], outs["auto"][1][same])
        if N >= 256:
            # empirical: at most 2x the error of plain torch float32 (+ 2 ulps of slack)
            e_ours, e_ref = chk.score_error(ids, scores), chk.score_error(ref_ids, ref_scores)
            slack = 2 * U * float(np.abs(ref_scores.numpy()).max())
            assert e_ours <= 2 * e_ref + slack, (e_ours, e_ref)
    if emulated:
        ids, scores = _C._nn_search_cuda_emulated(q, C, metric)
        chk.check(ids, scores, "CUDA kernel (host emulation)")
        if HAVE_AVX2:  # same FMA chains in the same order: bit-identical to the AVX2 kernel
            a_ids, a_scores = outs.get("auto") or _C.nn_search(q, C, metric, threads, "avx2")
            np.testing.assert_array_equal(ids, a_ids)
            np.testing.assert_array_equal(scores, a_scores)
    if n_planted:  # the exact-tie rule must actually have been exercised
        frac = float(tie_ref[:n_planted].float().mean())
        assert frac >= 0.5, f"only {frac:.2f} of the planted queries are unambiguous exact ties"
    return outs


# ---------------------------------------------------------------------------------------------
# the sweep

SMALL_N = [1, 7, 32, 256, 1023]
ALL_K = [1, 2, 4096, 8192]
ALL_D = [8, 12, 16, 64]
SWEEP = [(N, K, D, m) for N, K, D, m in itertools.product(SMALL_N, ALL_K, ALL_D, ["ip", "l2"])]
# N = 16384: the default shape (both metrics), the degenerate K, and the largest case once.
SWEEP += [(16384, K, 12, m) for K in (1, 2, 4096) for m in ("ip", "l2")]
SWEEP += [(16384, 8192, 64, "l2")]


@needs_ext
@pytest.mark.parametrize("N,K,D,metric", SWEEP, ids=[f"N{n}-K{k}-D{d}-{m}" for n, k, d, m in SWEEP])
def test_sweep_matches_reference(N, K, D, metric):
    seed = (N * 7 + K * 13 + D * 31 + (metric == "l2")) % 1000
    run_and_check(N, K, D, metric, seed)


@needs_ext
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TOKFUSE_SLOW_TESTS"), reason="slow: set TOKFUSE_SLOW_TESTS=1")
def test_sweep_largest_ip():
    run_and_check(16384, 8192, 64, "ip", 5)


SUBSET = [(N, K, D, m) for N, K, D, m in SWEEP if N <= 256 and K <= 4096 and (D <= 16 or N <= 32)]


@needs_ext
@pytest.mark.parametrize("N,K,D,metric", SUBSET, ids=[f"N{n}-K{k}-D{d}-{m}" for n, k, d, m in SUBSET])
def test_scalar_and_emulated_cuda_match_reference(N, K, D, metric):
    """The forced scalar path and the host build of the CUDA kernel, on the same contract."""
    seed = (N * 3 + K * 5 + D * 11 + (metric == "l2")) % 1000
    run_and_check(N, K, D, metric, seed, impls=("auto", "scalar"), emulated=True)


# ---------------------------------------------------------------------------------------------
# ties, tiles, threads


@needs_ext
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("N", [1, 7, 40, 256])
def test_all_rows_identical_gives_index_zero(N, metric):
    """Every code ties: across micro-tiles, across the per-thread code ranges and in the warp merge."""
    g = np.random.default_rng(N)
    C = np.repeat(g.standard_normal((1, 12)).astype(np.float32), 4096, axis=0)
    q = g.standard_normal((N, 12)).astype(np.float32)
    results = [_C.nn_search(q, C, metric, t, impl) for t in (1, 2, 3) for impl in ("auto", "scalar")]
    results.append(_C._nn_search_cuda_emulated(q, C, metric))
    for ids, scores in results:
        assert (ids == 0).all()
        np.testing.assert_array_equal(scores, results[0][1])  # same final-score formula on every path


@needs_ext
@pytest.mark.parametrize("K", [1, 5, 6, 7, 4096, 4099])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_best_at_last_index_and_tail_tiles(K, metric):
    g = np.random.default_rng(K)
    C = (0.1 * g.standard_normal((K, 12))).astype(np.float32)
    q = g.standard_normal((19, 12)).astype(np.float32)
    C[-1] = q[0] * 10 if metric == "ip" else q[0]
    for res in (
        _C.nn_search(q, C, metric, 2, "auto"),
        _C.nn_search(q, C, metric, 1, "scalar"),
        _C._nn_search_cuda_emulated(q, C, metric),
    ):
        assert res[0][0] == K - 1
    ids, _ = _C.nn_search(q, C, metric)
    ref, _ = nn_search_ref(q, C, metric)
    assert ids[0] == ref[0].item() == K - 1


@needs_ext
@pytest.mark.parametrize("N,K", [(7, 4096), (40, 4096), (256, 4096), (33, 8192)])
def test_thread_counts_give_identical_results(N, K):
    q, C, _ = make_case(N, K, 12, "ip", 3)
    base = _C.nn_search(q, C, "ip", 1)
    for t in (2, 3, 4):
        ids, scores = _C.nn_search(q, C, "ip", t)
        np.testing.assert_array_equal(ids, base[0])
        np.testing.assert_array_equal(scores, base[1])


@needs_ext
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_prepared_codebook_matches(metric):
    q, C, _ = make_case(300, 4096, 12, metric, 8)
    C0 = C.copy()
    cb = _C.Codebook(C)
    assert cb.shape == (4096, 12) and cb.K == 4096 and cb.D == 12
    for impl in ("auto", "scalar"):
        a = _C.nn_search(q, C, metric, 2, impl)
        b = cb.search(q, metric, 2, impl)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    C[:] = 0  # the prepared codebook is a snapshot
    np.testing.assert_array_equal(cb.search(q, metric)[0], _C.nn_search(q, C0, metric)[0])


@needs_ext
def test_n_zero_and_k_one():
    C = np.ones((1, 12), np.float32)
    for fn in (
        lambda q: _C.nn_search(q, C),
        lambda q: _C.nn_search(q, C, "l2", 1, "scalar"),
        lambda q: _C._nn_search_cuda_emulated(q, C),
        lambda q: _C.Codebook(C).search(q),
    ):
        ids, scores = fn(np.zeros((0, 12), np.float32))
        assert ids.shape == (0,) and ids.dtype == np.int64 and scores.shape == (0,) and scores.dtype == np.float32
    q = np.random.default_rng(0).standard_normal((50, 12)).astype(np.float32)
    ids, scores = _C.nn_search(q, C, "ip")
    assert (ids == 0).all()
    np.testing.assert_allclose(scores, q.sum(1), rtol=1e-5, atol=1e-5)
    ids, scores = _C.nn_search(q, C, "l2")
    assert (ids == 0).all()
    np.testing.assert_allclose(scores, ((q - 1) ** 2).sum(1), rtol=1e-5)
    # torch wrapper, N = 0
    ids, scores = tnn.nn_search(torch.zeros(0, 12), torch.from_numpy(C))
    assert ids.shape == (0,) and ids.dtype == torch.int64 and scores.dtype == torch.float32


@needs_ext
@pytest.mark.parametrize("impl", ["auto", "scalar", "emulated"])
def test_non_finite_input_does_not_crash(impl):
    q = np.random.default_rng(1).standard_normal((20, 12)).astype(np.float32)
    C = np.random.default_rng(2).standard_normal((100, 12)).astype(np.float32)
    q[3, 4] = np.nan
    q[5, 0] = np.inf
    C[7, 1] = np.nan
    ids, _ = _C._nn_search_cuda_emulated(q, C) if impl == "emulated" else _C.nn_search(q, C, "ip", 2, impl)
    assert ((ids >= 0) & (ids < 100)).all()


def test_reference_ties_go_to_lowest_index():
    C = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    q = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    for metric in ("ip", "l2"):
        ids, _ = nn_search_ref(q, C, metric)
        assert ids.tolist() == [1, 1]


@needs_ext
def test_runtime_dispatch_falls_back_to_scalar_without_avx2():
    """A process that sees no AVX2 (TOKFUSE_NO_AVX2=1) picks the scalar kernel at run time."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from tokfuse_rt import _C, nn_search as nn\n"
        "info = _C.build_info(); assert info['default_impl'] == 'scalar', info\n"
        "g = np.random.default_rng(0); q = g.standard_normal((40, 12), dtype=np.float32)\n"
        "C = g.standard_normal((500, 12), dtype=np.float32)\n"
        "for m in ('ip', 'l2'):\n"
        "    a = _C.nn_search(q, C, m); b = _C.nn_search(q, C, m, 0, 'scalar')\n"
        "    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()\n"
        "    assert (a[0] == nn.nn_search_ref(q, C, m)[0].numpy()).all()\n"
        "try:\n"
        "    _C.nn_search(q, C, 'ip', 0, 'avx2')\n"
        "except ValueError as e:\n"
        "    assert 'AVX2' in str(e)\n"
        "else:\n"
        "    raise AssertionError('impl=avx2 accepted without AVX2')\n"
        "print('ok')\n"
    )
    env = dict(os.environ, TOKFUSE_NO_AVX2="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# input validation and no-copy


@needs_ext
class TestInputValidation:
    C = np.random.default_rng(0).standard_normal((64, 12)).astype(np.float32)
    Q = np.random.default_rng(1).standard_normal((10, 12)).astype(np.float32)

    def test_float64(self):
        with pytest.raises(TypeError, match="queries.*float32.*float64"):
            _C.nn_search(self.Q.astype(np.float64), self.C)
        with pytest.raises(TypeError, match="codebook.*float32.*float64"):
            _C.nn_search(self.Q, self.C.astype(np.float64))
        with pytest.raises(TypeError, match="queries.*float32.*torch.float64"):
            _C.nn_search(torch.from_numpy(self.Q).double(), self.C)
        with pytest.raises(TypeError, match="codebook.*float32"):
            _C.nn_search(self.Q, torch.from_numpy(self.C).half())
        with pytest.raises(TypeError, match="queries"):
            _C.nn_search(self.Q.astype(np.int32), self.C)

    def test_rank(self):
        with pytest.raises(ValueError, match="queries must be a 2-D array"):
            _C.nn_search(self.Q[0], self.C)
        with pytest.raises(ValueError, match="codebook must be a 2-D array"):
            _C.nn_search(self.Q, self.C[0])
        with pytest.raises(ValueError, match="queries must be a 2-D array"):
            _C.nn_search(torch.from_numpy(self.Q)[None], self.C)
        with pytest.raises(ValueError, match="codebook"):
            _C.nn_search(self.Q, torch.from_numpy(self.C)[0])

    def test_dimension_mismatch(self):
        with pytest.raises(ValueError, match=r"queries has D=12 .*codebook has D=16"):
            _C.nn_search(self.Q, np.zeros((8, 16), np.float32))
        with pytest.raises(ValueError, match="codebook.*at least one row"):
            _C.nn_search(self.Q, np.zeros((0, 12), np.float32))

    def test_non_contiguous(self):
        wide = np.zeros((10, 24), np.float32)
        with pytest.raises(ValueError, match="queries must be C-contiguous"):
            _C.nn_search(wide[:, ::2], self.C)
        with pytest.raises(ValueError, match="queries must be C-contiguous"):
            _C.nn_search(np.zeros((20, 12), np.float32)[::2], self.C)
        with pytest.raises(ValueError, match="codebook must be C-contiguous"):
            _C.nn_search(self.Q, np.asfortranarray(self.C))
        with pytest.raises(ValueError, match=r"queries must be C-contiguous.*queries\.contiguous\(\)"):
            _C.nn_search(torch.zeros(10, 24)[:, ::2], self.C)
        with pytest.raises(ValueError, match="codebook must be C-contiguous"):
            _C.nn_search(self.Q, torch.from_numpy(self.C.T.copy()).t())
        with pytest.raises(ValueError, match="queries must be C-contiguous"):
            _C.nn_search(torch.zeros(20, 12)[::2], self.C)

    def test_wrong_types_and_options(self):
        with pytest.raises(TypeError, match="queries must be a numpy.ndarray or torch.Tensor"):
            _C.nn_search(self.Q.tolist(), self.C)
        with pytest.raises(TypeError, match="codebook must be a numpy.ndarray or torch.Tensor"):
            _C.nn_search(self.Q, None)
        with pytest.raises(ValueError, match="metric"):
            _C.nn_search(self.Q, self.C, "cos")
        with pytest.raises(ValueError, match="impl"):
            _C.nn_search(self.Q, self.C, "ip", 0, "sse")
        with pytest.raises(ValueError, match="num_threads"):
            _C.nn_search(self.Q, self.C, "ip", -1)

    def test_cuda_tensor_is_rejected_clearly(self):
        class FakeCudaTensor:  # looks like a CUDA tensor to DLPack consumers; must not be exported here
            def __dlpack_device__(self):
                return (2, 0)

            def __dlpack__(self, stream=None):
                raise RuntimeError("FakeCudaTensor: this machine has no CUDA device")

        with pytest.raises((TypeError, ValueError, RuntimeError)) as ei:
            _C.nn_search(FakeCudaTensor(), self.C)
        msg = str(ei.value)
        assert "queries" in msg and "CUDA" in msg
        if not _C.has_cuda():
            assert "built without CUDA" in msg
        elif _C.cuda_device_count() == 0:
            assert "sees 0 CUDA device" in msg

    def test_emulated_cuda_kernel_limits(self):
        with pytest.raises(ValueError, match="D <= 128"):
            _C._nn_search_cuda_emulated(np.zeros((2, 129), np.float32), np.zeros((3, 129), np.float32))
        with pytest.raises(TypeError, match="codebook"):
            _C._nn_search_cuda_emulated(self.Q, self.C.astype(np.float64))

    def test_other_devices_are_rejected(self):
        with pytest.raises(ValueError, match="queries is on device meta"):
            _C.nn_search(torch.empty(4, 12, device="meta"), self.C)

    def test_contiguous_float32_is_not_copied(self):
        q = np.random.default_rng(3).standard_normal((32, 12)).astype(np.float32)
        assert _C._debug_data_ptr(q, "queries") == q.ctypes.data
        assert _C._debug_data_ptr(q[5:], "queries") == q[5:].ctypes.data  # offset view, still contiguous
        t = torch.randn(32, 12)
        assert _C._debug_data_ptr(t, "queries") == t.data_ptr()
        assert _C._debug_data_ptr(t[3:], "codebook") == t[3:].data_ptr()
        tg = torch.randn(8, 12, requires_grad=True)  # detach() is a view: still the same memory
        assert _C._debug_data_ptr(tg, "queries") == tg.data_ptr()
        # a zero-copy torch view of numpy memory arrives at the same address
        assert _C._debug_data_ptr(torch.from_numpy(q), "queries") == q.ctypes.data

    def test_dlpack_only_objects(self):
        """Objects that only speak DLPack (e.g. other array libraries) take the DLPack route."""

        class DL:
            def __init__(self, t):
                self.t = t

            def __dlpack__(self, stream=None):
                return self.t.__dlpack__()

            def __dlpack_device__(self):
                return self.t.__dlpack_device__()

        q, C = torch.from_numpy(self.Q), torch.from_numpy(self.C)
        assert _C._debug_data_ptr(DL(q), "queries") == q.data_ptr()
        a, b = _C.nn_search(DL(q), DL(C), "l2"), _C.nn_search(self.Q, self.C, "l2")
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        with pytest.raises(TypeError, match="queries must have dtype float32, got float64"):
            _C.nn_search(DL(q.double()), C)
        with pytest.raises(ValueError, match="codebook must be C-contiguous"):
            _C.nn_search(q, DL(torch.zeros(64, 24)[:, ::2]))
        with pytest.raises(ValueError, match="codebook must be a 2-D array"):
            _C.nn_search(q, DL(C[0]))

    def test_results_do_not_alias_or_modify_inputs(self):
        q, C = self.Q.copy(), self.C.copy()
        _C.nn_search(q, C, "l2")
        np.testing.assert_array_equal(q, self.Q)
        np.testing.assert_array_equal(C, self.C)


# ---------------------------------------------------------------------------------------------
# the python wrapper tokfuse_rt.nn_search.nn_search


def test_wrapper_torch_in_torch_out_and_numpy_in_numpy_out():
    q, C, _ = make_case(100, 512, 12, "ip", 4)
    for metric in ("ip", "l2"):
        ids, scores = tnn.nn_search(torch.from_numpy(q), torch.from_numpy(C), metric)
        assert isinstance(ids, torch.Tensor) and ids.dtype == torch.int64 and scores.dtype == torch.float32
        ref_ids, _ = nn_search_ref(q, C, metric)
        assert torch.equal(ids, ref_ids)
        nids, nscores = tnn.nn_search(q, C, metric)
        assert isinstance(nids, np.ndarray) and nids.dtype == np.int64 and nscores.dtype == np.float32
        np.testing.assert_array_equal(nids, ids.numpy())


def test_wrapper_fallback_without_extension(monkeypatch):
    q, C, _ = make_case(64, 300, 12, "l2", 6)
    monkeypatch.setattr(tnn, "HAVE_EXT", False)
    for metric in ("ip", "l2"):
        ids, scores = tnn.nn_search(torch.from_numpy(q), torch.from_numpy(C), metric)
        ref_ids, ref_scores = nn_search_ref(torch.from_numpy(q), torch.from_numpy(C), metric)
        assert torch.equal(ids, ref_ids) and torch.equal(scores, ref_scores)


@needs_ext
def test_wrapper_passes_contiguous_tensors_without_copy(monkeypatch):
    seen = {}
    real = tnn._C

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def nn_search(self, q, c, *args):
            seen["q"], seen["c"], seen["args"] = q.data_ptr(), c.data_ptr(), args
            return real.nn_search(q, c, *args)

    monkeypatch.setattr(tnn, "_C", Spy())
    q, C = torch.randn(20, 12), torch.randn(70, 12)
    torch_threads = torch.get_num_threads()
    tnn.nn_search(q, C)
    assert seen["q"] == q.data_ptr() and seen["c"] == C.data_ptr()
    assert seen["args"] == ("ip", torch_threads)  # thread count follows torch
    tnn.nn_search(q, C, "l2", num_threads=1)
    assert seen["args"] == ("l2", 1)


def test_wrapper_inputs():
    q = torch.randn(30, 12, requires_grad=True)
    C = torch.randn(200, 24)[:, ::2]  # non-contiguous: the wrapper makes it contiguous
    ids, _ = tnn.nn_search(q, C)
    ref, _ = nn_search_ref(q.detach(), C.contiguous())
    assert torch.equal(ids, ref)
    with pytest.raises(TypeError, match="queries.*float32"):
        tnn.nn_search(q.double(), C)
    with pytest.raises(ValueError, match="codebook"):
        tnn.nn_search(q, torch.randn(10, 8))
    with pytest.raises(ValueError, match="metric"):
        tnn.nn_search(q, C, "cosine")
    prepared = tnn.prepare_codebook(C)
    for metric in ("ip", "l2"):
        a = tnn.nn_search(q, prepared, metric)
        b = tnn.nn_search(q, C, metric)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU; see tests/conftest.py)


@pytest.mark.requires_cuda_ext
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("N,K,D", [(1, 1, 12), (7, 2, 8), (256, 4096, 12), (1023, 8192, 64), (16384, 4096, 12)])
def test_cuda_kernel_matches_cpu_bit_for_bit(N, K, D, metric):
    q, C, _ = make_case(N, K, D, metric, 9)
    ids, scores = _C.nn_search(torch.from_numpy(q).cuda(), torch.from_numpy(C).cuda(), metric)
    assert ids.is_cuda and ids.dtype == torch.int64 and scores.dtype == torch.float32
    e_ids, e_scores = _C._nn_search_cuda_emulated(q, C, metric)
    np.testing.assert_array_equal(ids.cpu().numpy(), e_ids)
    np.testing.assert_array_equal(scores.cpu().numpy(), e_scores)
    Checker(q, C, metric).check(ids.cpu(), scores.cpu(), "CUDA kernel")


@pytest.mark.requires_cuda
def test_wrapper_on_cuda_tensors():
    q, C, _ = make_case(300, 4096, 12, "ip", 10)
    ids, scores = tnn.nn_search(torch.from_numpy(q).cuda(), torch.from_numpy(C).cuda())
    assert ids.is_cuda and scores.is_cuda and ids.dtype == torch.int64
    Checker(q, C, "ip").check(ids.cpu(), scores.cpu(), "wrapper on CUDA")
