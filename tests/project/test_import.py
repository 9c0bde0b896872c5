"""``import tokfuse_rt`` needs only numpy and torch."""

import subprocess
import sys

BLOCK = [
    "PIL",
    "safetensors",
    "tqdm",
    "onnx",
    "onnxruntime",
    "tensorrt",
    "triton",
    "scipy",
    "matplotlib",
    "faiss",
    "skimage",
    "pybind11",
    "av",
    "cv2",
]

SCRIPT = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCK!r}:
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
import tokfuse_rt, tokfuse_rt.model, tokfuse_rt.cli, tokfuse_rt.backends, tokfuse_rt.kernels, export
import tokfuse_rt.video, tokfuse_rt.metrics.temporal
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCK!r})
assert not loaded, loaded
print('ok', tokfuse_rt.__version__)
"""


def test_import_needs_only_numpy_and_torch():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")
