// Host build of the CUDA kernel body (csrc/nn_search_kernel.cuh): every CUDA block is executed
// by one host thread with explicit thread loops between barriers and an emulated warp shuffle.
// Blocks are independent (as on the GPU), so they are spread over OpenMP threads.
#include <vector>

#include "nn_search.h"
#include "nn_search_kernel.cuh"

namespace tokfuse {

size_t cuda_kernel_smem_bytes(int D) { return sizeof(float) * (size_t)kern::smem_floats(D); }

const char* nn_search_cuda_emulated(const float* Q, int64_t N, const float* C, int64_t K, int D,
                                    Metric metric, int64_t* ids, float* scores) {
    if (D > kern::kMaxD) return "D > 128 is not supported by the CUDA kernel";
    kern::Params p;
    p.Q = Q;
    p.C = C;
    p.N = N;
    p.K = K;
    p.D = D;
    p.metric = metric == METRIC_L2 ? 1 : 0;
    p.ldc = kern::code_stride(D);
    p.tile_k = kern::tile_codes(D);
    p.ids = ids;
    p.scores = scores;
    const int64_t grid = (N + kern::kQB - 1) / kern::kQB;
    const int64_t smem = kern::smem_floats(D);
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        std::vector<float> shared((size_t)smem);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t b = 0; b < grid; ++b) kern::nn_block(p, b, shared.data());
    }
    return nullptr;
}

}  // namespace tokfuse
