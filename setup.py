"""Build script: the pybind11 extension tokfuse_rt._C (always), plus its CUDA kernel when nvcc is found
(sources in csrc/), and the package list: ``tokfuse_rt`` with ``tokfuse_rt.kernels`` built from the
top-level ``kernels/`` folder (``kernels`` is a PyPI package name: it is never installed as a top-level
package), and the top-level ``export`` package (``python -m export.to_onnx`` / ``export.to_trt``).

  TOKFUSE_CUDA=auto (default)  build the CUDA kernel when nvcc is found (CUDA_HOME/CUDA_PATH, then PATH)
  TOKFUSE_CUDA=0               CPU only
  TOKFUSE_CUDA=1               CUDA required: fail if nvcc is missing
  TOKFUSE_CUDA_ARCH="80;90"    override the GPU architectures (default: sm_75 ... sm_120 + PTX)

csrc/nn_search_avx2.cpp and csrc/render_avx2.cpp are compiled with -mavx2 -mfma, csrc/render_avx512.cpp with
-mavx512f -mavx2 -mfma, csrc/render_vnni.cpp with -mavx512f -mavx512bw -mavx512vnni -mavx2 -mfma,
csrc/colour_vbmi.cpp with -mavx512f -mavx512bw -mavx512vbmi (x86-64 only); each is entered only after a
run-time CPU check; every other C++ file targets the baseline ISA. All C++ is built with -ffp-contract=off so
that the kernels' rounding is exactly what the source says.
"""

import os
import platform
import re
import shutil
import subprocess
import sys

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import find_packages, setup

CSRC = "csrc"


def _log(msg):
    print(f"tokfuse_rt setup: {msg}", file=sys.stderr, flush=True)


def _find_cuda():
    """Return (nvcc, cuda_home) or (None, reason)."""
    nvcc = None
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")):
            nvcc = os.path.join(root, "bin", "nvcc")
            break
    if nvcc is None:
        nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    # nvcc may be a wrapper script: ask nvcc where its own bin directory is.
    home = None
    try:
        out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True, timeout=60)
        m = re.search(r"^#\$ _HERE_=(.*)$", out.stdout + out.stderr, re.M)
        if m:
            home = os.path.dirname(m.group(1).strip())
    except (OSError, subprocess.SubprocessError) as e:  # pragma: no cover
        return None, f"nvcc at {nvcc} does not run: {e}"
    candidates = [
        home,
        os.environ.get("CUDA_HOME"),
        os.environ.get("CUDA_PATH"),
        os.path.dirname(os.path.dirname(os.path.realpath(nvcc))),
        "/usr/local/cuda",
    ]
    for root in candidates:
        if root and os.path.isfile(os.path.join(root, "include", "cuda_runtime.h")):
            return nvcc, root
    return None, f"nvcc found at {nvcc} but no CUDA toolkit (include/cuda_runtime.h) next to it"


def _cuda_lib_dir(home):
    for sub in (
        "lib64",
        "lib",
        os.path.join("targets", "x86_64-linux", "lib"),
        os.path.join("targets", "sbsa-linux", "lib"),
    ):
        d = os.path.join(home, sub)
        if os.path.isfile(os.path.join(d, "libcudart_static.a")):
            return d
    raise RuntimeError(f"tokfuse_rt: libcudart_static.a not found under {home}")


def _gencode_flags():
    archs = os.environ.get("TOKFUSE_CUDA_ARCH", "75;80;86;89;90;100;120")
    archs = [a.strip().replace("sm_", "").replace(".", "") for a in re.split(r"[;, ]+", archs) if a.strip()]
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    # PTX of the newest architecture, for GPUs newer than the list (JIT-compiled by the driver).
    flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    return flags, archs


mode = os.environ.get("TOKFUSE_CUDA", "auto").strip().lower()
if mode not in ("auto", "0", "1"):
    raise SystemExit(f"tokfuse_rt setup: TOKFUSE_CUDA must be auto, 0 or 1, got {mode!r}")
NVCC = CUDA_HOME = None
if mode == "0":
    _log("CUDA: disabled (TOKFUSE_CUDA=0); building the CPU extension only")
else:
    NVCC, info = _find_cuda()
    if NVCC is None:
        if mode == "1":
            raise SystemExit(f"tokfuse_rt setup: TOKFUSE_CUDA=1 but CUDA cannot be used: {info}")
        _log(f"CUDA: disabled ({info}); building the CPU extension only")
    else:
        CUDA_HOME = info
        _log(f"CUDA: enabled (TOKFUSE_CUDA={mode}), nvcc={NVCC}, CUDA_HOME={CUDA_HOME}")

IS_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
IS_MSVC = sys.platform == "win32"

cxx_flags = [] if IS_MSVC else ["-O3", "-ffp-contract=off", "-fno-math-errno"]
link_flags = []
if not IS_MSVC and sys.platform != "darwin":
    cxx_flags.append("-fopenmp")
    link_flags.append("-fopenmp")
elif IS_MSVC:  # pragma: no cover
    cxx_flags += ["/O2", "/openmp", "/fp:precise"]

sources = [
    f"{CSRC}/module.cpp",
    f"{CSRC}/nn_search_cpu.cpp",
    f"{CSRC}/nn_search_avx2.cpp",
    f"{CSRC}/nn_search_emulated.cpp",
    f"{CSRC}/render_cpu.cpp",
    f"{CSRC}/render_avx2.cpp",
    f"{CSRC}/render_avx512.cpp",
    f"{CSRC}/render_int8.cpp",
    f"{CSRC}/render_vnni.cpp",
    f"{CSRC}/render_py.cpp",
    f"{CSRC}/colour_py.cpp",
    f"{CSRC}/colour_vbmi.cpp",
    f"{CSRC}/thread_pool.cpp",
]
depends = [
    f"{CSRC}/{f}"
    for f in ("nn_search.h", "nn_search_kernel.cuh", "dlpack_min.h", "render.h", "render_tile.h", "thread_pool.h")
]
define_macros = []
libraries = []
library_dirs = []
GENCODE, ARCHS = ([], [])
if NVCC:
    sources.append(f"{CSRC}/nn_search_cuda.cu")
    define_macros.append(("TOKFUSE_WITH_CUDA", "1"))
    # Static cudart: no run-time dependency on a libcudart.so being on the loader path.
    libraries += ["cudart_static", "rt", "pthread", "dl"]
    library_dirs.append(_cuda_lib_dir(CUDA_HOME))
    GENCODE, ARCHS = _gencode_flags()
    _log(f"CUDA: architectures sm_{', sm_'.join(ARCHS)} (+ PTX compute_{ARCHS[-1]}); set TOKFUSE_CUDA_ARCH to change")

ext = Pybind11Extension(
    "tokfuse_rt._C",
    sources=sources,
    depends=depends,
    include_dirs=[CSRC],
    define_macros=define_macros,
    libraries=libraries,
    library_dirs=library_dirs,
    cxx_std=17,
    extra_compile_args=cxx_flags,
    extra_link_args=link_flags,
)

# Everything that changes the objects without changing a source file: a change forces a rebuild
# (otherwise setuptools keeps a stale _C built with another TOKFUSE_CUDA setting).
BUILD_CONFIG = repr(dict(cuda=bool(NVCC), nvcc=NVCC, archs=ARCHS, cxx=cxx_flags, py=sys.version_info[:2]))


class BuildExt(build_ext):
    """pybind11's build_ext plus per-file flags: -mavx2 -mfma for *_avx2.cpp and nvcc for *.cu."""

    def run(self):
        stamp = os.path.join(self.build_temp or "build", "tokfuse_build_config.txt")
        old = None
        if os.path.isfile(stamp):
            with open(stamp) as f:
                old = f.read()
        if old != BUILD_CONFIG:
            if old is not None:
                _log("build configuration changed: rebuilding tokfuse_rt._C")
            self.force = True
        super().run()
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        with open(stamp, "w") as f:
            f.write(BUILD_CONFIG)

    def copy_file(self, infile, outfile, *args, **kwargs):
        # --inplace: replace the shared library atomically (new inode) instead of rewriting it in
        # place, which would corrupt it under processes that have the old one mapped.
        if outfile.endswith((".so", ".pyd", ".dylib")) and os.path.exists(outfile) and not self.dry_run:
            tmp = f"{outfile}.tmp{os.getpid()}"
            shutil.copy2(infile, tmp)
            os.replace(tmp, outfile)
            return outfile, 1
        return super().copy_file(infile, outfile, *args, **kwargs)

    def build_extensions(self):
        compiler = self.compiler
        if ".cu" not in compiler.src_extensions:
            compiler.src_extensions.append(".cu")
        default_compile = compiler._compile

        def _compile(obj, src, ext_, cc_args, extra_postargs, pp_opts):
            if src.endswith(".cu"):
                inc = [a for a in pp_opts if a.startswith(("-I", "-D", "-U"))]
                cmd = [
                    NVCC,
                    "-c",
                    src,
                    "-o",
                    obj,
                    "-O3",
                    "-std=c++17",
                    "--fmad=false",
                    "-Xcompiler",
                    "-fPIC,-fvisibility=hidden",
                    *inc,
                    *GENCODE,
                ]
                _log("nvcc " + os.path.basename(src))
                try:
                    subprocess.run(cmd, check=True)
                except subprocess.CalledProcessError as e:
                    raise RuntimeError(f"tokfuse_rt: nvcc failed on {src} (exit {e.returncode})") from e
                return
            post = list(extra_postargs or [])
            if src.endswith("_avx2.cpp") and IS_X86 and not IS_MSVC:
                post += ["-mavx2", "-mfma"]
            if src.endswith("_avx512.cpp") and IS_X86 and not IS_MSVC:
                post += ["-mavx512f", "-mavx2", "-mfma"]
            if src.endswith("_vbmi.cpp") and IS_X86 and not IS_MSVC:
                post += ["-mavx512f", "-mavx512bw", "-mavx512vbmi"]
            if src.endswith("_vnni.cpp") and IS_X86 and not IS_MSVC:
                post += ["-mavx512f", "-mavx512bw", "-mavx512vnni", "-mavx2", "-mfma"]
            default_compile(obj, src, ext_, cc_args, post, pp_opts)

        compiler._compile = _compile
        try:
            super().build_extensions()
        finally:
            compiler._compile = default_compile


# Compile the translation units in parallel (NPY_NUM_BUILD_JOBS overrides the job count).
ParallelCompile("NPY_NUM_BUILD_JOBS").install()

PACKAGES = find_packages(include=["tokfuse_rt", "tokfuse_rt.*", "export", "export.*"]) + ["tokfuse_rt.kernels"]

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExt},
    packages=PACKAGES,
    package_dir={"tokfuse_rt.kernels": "kernels"},
)
