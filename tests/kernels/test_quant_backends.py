"""The PyTorch backend quantises with the C++ nn_search on CPU: ids unchanged vs the torch path."""

import numpy as np
import pytest
import torch

from tokfuse_rt import Engine, default_model_path
from tokfuse_rt.model import TokFuse, TokFuseConfig, kernel_backend, l2norm, quantize
from tokfuse_rt.model.quant import resolve_backend
from tokfuse_rt.nn_search import HAVE_EXT

pytestmark = pytest.mark.skipif(not HAVE_EXT, reason="tokfuse_rt._C.nn_search not built")


def test_auto_picks_ext_on_cpu_and_torch_when_grad_or_forced():
    assert resolve_backend(torch.device("cpu")) == "ext"
    assert resolve_backend(torch.device("cpu"), requires_grad=True) == "torch"
    with kernel_backend("torch"):
        assert resolve_backend(torch.device("cpu")) == "torch"


def test_quantize_ids_identical_ext_vs_torch():
    g = torch.Generator().manual_seed(0)
    cb = l2norm(torch.randn(4096, 12, generator=g))
    z = l2norm(torch.randn(3, 517, 12, generator=g))
    with kernel_backend("torch"):
        ids_t, q_t = quantize(z, cb)
    with kernel_backend("ext"):
        ids_e, q_e = quantize(z, cb)
    assert ids_e.dtype == torch.int64 and ids_e.shape == (3, 517)
    assert torch.equal(ids_t, ids_e) and torch.equal(q_t, q_e)


@pytest.mark.skipif(not default_model_path().exists(), reason="bundled default model missing")
def test_engine_ext_matches_torch_path_on_real_pairs(shared_data):
    pairs = [
        ("TNO", "ir", "vi", "01.png"),
        ("RoadScene", "ir", "vi", "FLIR_00211.jpg"),
        ("MSRS", "ir", "vi", "00004N.png"),
        ("Harvard_MRI_SPECT", "a", "b", "11.png"),
    ]
    with Engine(kernels="torch") as et, Engine(kernels="ext") as ee:
        assert ee.info()["kernels"] == "ext" and et.info()["kernels"] == "torch"
        for s, a, b, n in pairs:
            d = shared_data / "test" / s
            for k in (0, 4, 32):
                ft, it = et.fuse_with_tokens(d / a / n, d / b / n, k=k)
                fe, ie = ee.fuse_with_tokens(d / a / n, d / b / n, k=k)
                assert np.array_equal(it, ie), (s, n, k)
                assert np.array_equal(ft, fe), (s, n, k)


def test_model_forward_ext_vs_torch_random_model():
    torch.manual_seed(1)
    m = TokFuse(TokFuseConfig()).eval()
    with torch.no_grad():
        m.ste.edit_fc2.weight.normal_(0, 0.5)
        x = torch.rand(2, 1, 61, 83), torch.rand(2, 1, 61, 83)
        with kernel_backend("torch"):
            ft, it, _ = m(*x, k=8)
        with kernel_backend("ext"):
            fe, ie, _ = m(*x, k=8)
    assert torch.equal(it, ie) and torch.equal(ft, fe)
