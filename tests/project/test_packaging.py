"""Packaging: the Triton kernels import as ``tokfuse_rt.kernels`` (installed, or from a source tree
used without installing) and never as a top-level ``kernels``; ``export`` runs as ``python -m export.to_trt``
away from the repository; one version number."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import tokfuse_rt

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, cwd, env=None):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_kernels_install_under_the_package_name(tmp_path):
    """Away from the repository the installed distribution provides tokfuse_rt.kernels, and a top-level
    ``kernels`` (if any) is not ours."""
    r = _run(
        f"""
import importlib.util
spec = importlib.util.find_spec("kernels")
assert spec is None or not (spec.origin or "").startswith({str(ROOT)!r}), spec
import tokfuse_rt.kernels.vq_lookup as V, tokfuse_rt.kernels.token_edit as T, tokfuse_rt.kernels.common as C
assert V.keep_best is C.keep_best or V.triton is None
print("ok", V.__name__)
""",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["ok", "tokfuse_rt.kernels.vq_lookup"]


def test_source_tree_resolves_kernels_without_an_install():
    """A tree on PYTHONPATH (as scripts/gpu_check.py runs it on a GPU machine) finds tokfuse_rt.kernels in the
    top-level kernels/ folder; the installed editable finder is taken out to show the tree alone suffices."""
    r = _run(
        f"""
import sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path.insert(0, {str(ROOT)!r})
import tokfuse_rt.kernels.token_edit as T
assert T.__file__ == {str(ROOT / "kernels" / "token_edit.py")!r}, T.__file__
print("ok")
""",
        cwd=ROOT,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_export_runs_as_a_module_away_from_the_tree(tmp_path):
    for mod in ("export.to_onnx", "export.to_trt"):
        r = subprocess.run(
            [sys.executable, "-m", mod, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0 and f"python -m {mod}" in r.stdout, r.stderr[-2000:]


def test_one_version_number():
    assert importlib.metadata.version("tokfuse_rt") == tokfuse_rt.__version__
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()
