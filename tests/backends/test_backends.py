"""tokfuse_rt.backends.token_counts: how the ONNX Runtime and TensorRT backends learn K and default k."""

from pathlib import Path

import pytest

from tokfuse_rt.backends import token_counts

P = Path("m.onnx")


def test_config_wins_and_agrees_with_the_graph():
    assert token_counts({"num_tokens": 32, "default_k": 6}, 32, P, "x") == (32, 6)
    assert token_counts({"num_tokens": 32, "default_k": 0}, None, P, "x") == (32, 0)  # dynamic ids dim
    assert token_counts({"num_tokens": 8}, None, P, "x") == (8, 4)  # no default_k stored


@pytest.mark.parametrize("k_static,want", [(1, (1, 1)), (3, (3, 3)), (7, (7, 4)), (32, (32, 4))])
def test_inferred_from_the_static_ids_dimension(k_static, want):
    assert token_counts(None, k_static, P, "x") == want
    assert token_counts({}, k_static, P, "x") == want


def test_nothing_to_go_on_or_a_contradiction_raises_naming_the_file():
    with pytest.raises(ValueError, match=r"m\.onnx: no config here"):
        token_counts(None, None, P, "no config here")
    with pytest.raises(ValueError, match=r"m\.onnx: ids output has 16 tokens but the config says 32"):
        token_counts({"num_tokens": 32, "default_k": 4}, 16, P, "x")
