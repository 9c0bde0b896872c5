"""tokfuse_rt: a fast runtime for 1D-token multimodal image fusion (IVIF and medical).

    import tokfuse_rt
    tokfuse_rt.Engine().fuse(ir, vis)          # bundled default model, PyTorch backend

Importing this package needs only numpy and torch; everything else is imported when used.

``tokfuse_rt.kernels`` (the Triton kernels) is built from the top-level ``kernels/`` folder of the
repository: an install puts it at ``tokfuse_rt/kernels``; in a source tree used without installing
(``PYTHONPATH=.``) the finder below maps that one name to the folder.
"""

from __future__ import annotations

from .engine import Engine, FuseReport

__version__ = "0.1.0"  # the one version number: pyproject.toml reads it from here


def _find_tree_kernels() -> None:
    """In a source tree, let ``tokfuse_rt.kernels`` resolve to the top-level ``kernels/`` folder."""
    import importlib.abc
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    folder = here.parent / "kernels"
    if (here / "kernels").is_dir() or not (folder / "__init__.py").is_file():
        return  # installed, or not a source tree

    class TreeKernels(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != __name__ + ".kernels":
                return None
            return importlib.util.spec_from_file_location(
                name, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )

    if not any(type(f).__name__ == "TreeKernels" for f in sys.meta_path):
        sys.meta_path.append(TreeKernels())


_find_tree_kernels()

__all__ = ["Engine", "FuseReport", "__version__", "default_model_path"]


def default_model_path():
    """Path of the bundled default checkpoint."""
    from .engine import DEFAULT_MODEL

    return DEFAULT_MODEL
