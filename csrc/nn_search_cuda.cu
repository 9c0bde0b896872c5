// CUDA path of tokfuse_rt._C.nn_search. The kernel body lives in nn_search_kernel.cuh and is also
// compiled for the host (nn_search_emulated.cpp) so its logic is tested without a GPU.
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

// #550: the one-trip TF_FOR_THREADS loop variable is only read by the host emulation in one phase.
#pragma nv_diag_suppress 550
#include "nn_search_kernel.cuh"
#pragma nv_diag_default 550

namespace {

__global__ void __launch_bounds__(tokfuse::kern::kThreads)
    nn_search_kernel(tokfuse::kern::Params p) {
    extern __shared__ float smem[];
    tokfuse::kern::nn_block(p, (int64_t)blockIdx.x, smem);
}

}  // namespace

extern "C" {

// Enqueue the search on `stream` (a cudaStream_t, 0 = legacy default) of device `device`.
// All pointers are device pointers. Returns NULL on success or a static error string.
const char* tokfuse_cuda_nn_search(const float* Q, int64_t N, const float* C, int64_t K, int D,
                                   int metric, int64_t* ids, float* scores, int device,
                                   void* stream) {
    using namespace tokfuse::kern;
    if (N <= 0) return nullptr;
    if (D > kMaxD) return "D > 128 is not supported by the CUDA kernel";
    int prev = -1;
    cudaError_t err = cudaGetDevice(&prev);
    if (err != cudaSuccess) return cudaGetErrorString(err);
    if (prev != device && (err = cudaSetDevice(device)) != cudaSuccess)
        return cudaGetErrorString(err);
    Params p;
    p.Q = Q;
    p.C = C;
    p.N = N;
    p.K = K;
    p.D = D;
    p.metric = metric;
    p.ldc = code_stride(D);
    p.tile_k = tile_codes(D);
    p.ids = ids;
    p.scores = scores;
    const size_t smem = sizeof(float) * (size_t)smem_floats(D);
    if (smem > 48 * 1024)
        err = cudaFuncSetAttribute(nn_search_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)smem);
    if (err == cudaSuccess) {
        const int64_t grid = (N + kQB - 1) / kQB;
        nn_search_kernel<<<(unsigned)grid, kThreads, smem, (cudaStream_t)stream>>>(p);
        err = cudaGetLastError();
    }
    if (prev != device) cudaSetDevice(prev);
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

int tokfuse_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky-free error state
        return 0;
    }
    return n;
}

const char* tokfuse_cuda_runtime_version(void) {
    static char buf[32];
    int v = 0;
    if (cudaRuntimeGetVersion(&v) != cudaSuccess) v = 0;
    snprintf(buf, sizeof(buf), "%d.%d", v / 1000, (v % 1000) / 10);
    return buf;
}

}  // extern "C"
