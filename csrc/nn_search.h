// Internal C++ API of the codebook nearest-neighbour search (tokfuse_rt._C.nn_search).
//
// NOTE: this header is included by nn_search_avx2.cpp, which is compiled with -mavx2 -mfma.
// It must stay free of the C++ standard library (no inline templates/functions that the
// linker could merge with copies compiled for the baseline ISA), plain declarations only.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace tokfuse {

enum Metric : int { METRIC_IP = 0, METRIC_L2 = 1 };

enum Impl : int {
    IMPL_AUTO = 0,    // AVX2/FMA when the CPU has it, else scalar
    IMPL_SCALAR = 1,  // portable scalar C++ (mul + add, no FMA)
    IMPL_AVX2 = 2,    // blocked AVX2/FMA kernel (x86-64 with AVX2+FMA only)
};

// Score convention used by every kernel (CPU, CUDA, emulated CUDA): the search MAXIMISES
//   s(q, k) = bias[k] + sum_d q[d] * C[k][d]          (accumulated in d order, from bias[k])
// with bias = 0 for inner product and bias[k] = -0.5 * |C[k]|^2 for squared L2, because
//   |q - c|^2 = |q|^2 - 2 (q.c - |c|^2 / 2)   (scaling by 2 is exact in binary floating point).
// Ties go to the lowest code index. The FMA kernels (AVX2, CUDA, emulated CUDA) evaluate
// this with fused multiply-adds in exactly the same order, so they agree bit for bit; the
// scalar fallback uses separate multiply and add (it targets CPUs without FMA).

// Search queries Q[0, nq) (row-major, row stride D) against codes [k0, k1) of the row-major
// codebook C (row stride D, k1 > k0). bias: NULL (inner product) or the per-code bias array
// indexed by absolute code index. Writes, per query, the best score and its (absolute) code
// index; ties -> lowest index.
typedef void (*BlockKernelFn)(const float* Q, int64_t nq, const float* C, int64_t k0, int64_t k1,
                              int D, const float* bias, float* best_val, int64_t* best_id);

void block_scalar(const float* Q, int64_t nq, const float* C, int64_t k0, int64_t k1, int D,
                  const float* bias, float* best_val, int64_t* best_id);

// Defined in nn_search_avx2.cpp. Only call when cpu_has_avx2_fma() && avx2_kernel_compiled().
void block_avx2(const float* Q, int64_t nq, const float* C, int64_t k0, int64_t k1, int D,
                const float* bias, float* best_val, int64_t* best_id);
bool avx2_kernel_compiled();

// L2 bias -0.5 * sum_d C[k][d]^2 for k in [k0, k1): the FMA flavour (fused chain in d order,
// identical to the CUDA kernel's) and the scalar flavour (mul + add).
void l2_bias_fma_avx2(const float* C, int64_t k0, int64_t k1, int D, float* bias);
void l2_bias_scalar(const float* C, int64_t k0, int64_t k1, int D, float* bias);

// Single-core FMA throughput probe (GFLOP/s) for benchmark reports; 0 when AVX2 is absent.
double fma_peak_probe_avx2(double seconds);

// Runtime CPU features (x86: __builtin_cpu_supports).
bool cpu_has_avx2_fma();

// Resolve IMPL_AUTO to the implementation that will run on this CPU.
Impl resolve_impl(Impl requested);

struct SearchArgs {
    const float* Q = nullptr;
    int64_t N = 0;
    const float* C = nullptr;
    int64_t K = 0;
    int D = 0;
    Metric metric = METRIC_IP;
    // Optional precomputed L2 bias (K floats, flavour matching the impl); NULL -> computed here.
    const float* l2_bias = nullptr;
    int num_threads = 0;  // <= 0: OpenMP default (omp_get_max_threads)
    Impl impl = IMPL_AUTO;
    int64_t* ids = nullptr;   // out, N
    float* scores = nullptr;  // out, N
};

// CPU search (OpenMP over query tiles / code ranges). Thread-safe, re-entrant, no Python.
void nn_search_cpu(const SearchArgs& a);

// The reported score of the selected code: sum_d q[d] c[d] (ip) or sum_d (q[d] - c[d])^2 (l2),
// accumulated in float64 in d order and rounded once to float32 (products of floats are exact in
// float64, so this is the correctly rounded value up to ~D * 2^-53 relative). Every path (AVX2,
// scalar, CUDA, emulated CUDA) reports this same function of (q, C[id]), bit for bit.
float final_score(const float* q, const float* c, int D, Metric metric);

// Host build of the CUDA kernel (csrc/nn_search_kernel.cuh), block/thread loops emulating the
// SIMT execution. Returns NULL on success or a static error message.
const char* nn_search_cuda_emulated(const float* Q, int64_t N, const float* C, int64_t K, int D,
                                    Metric metric, int64_t* ids, float* scores);

// Shared-memory requirement of the CUDA kernel (bytes) and its limit used on both builds.
size_t cuda_kernel_smem_bytes(int D);

}  // namespace tokfuse

// Implemented in nn_search_cuda.cu when built with CUDA (TOKFUSE_WITH_CUDA).
extern "C" {
const char* tokfuse_cuda_nn_search(const float* Q, int64_t N, const float* C, int64_t K, int D,
                                   int metric, int64_t* ids, float* scores, int device,
                                   void* stream);
int tokfuse_cuda_device_count(void);
const char* tokfuse_cuda_runtime_version(void);
}
