// CPU driver of the codebook nearest-neighbour search: run-time ISA dispatch, OpenMP work split,
// the scalar fallback kernel, and the final scores. Compiled for the baseline ISA (no -mavx2).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "nn_search.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tokfuse {

bool cpu_has_avx2_fma() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    static const bool ok = [] {
        // TOKFUSE_NO_AVX2=1 makes this process behave as on a CPU without AVX2 (tests use it to
        // check the run-time fallback); read once, at the first search.
        const char* off = std::getenv("TOKFUSE_NO_AVX2");
        if (off && *off && std::strcmp(off, "0") != 0) return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return ok;
#else
    return false;
#endif
}

Impl resolve_impl(Impl requested) {
    if (requested == IMPL_AUTO)
        return (cpu_has_avx2_fma() && avx2_kernel_compiled()) ? IMPL_AVX2 : IMPL_SCALAR;
    return requested;
}

// Running best of one query: strict '>' keeps the earlier candidate on ties (candidates come in
// code order, so the lowest index wins).
static inline void keep_best(float s, int64_t k, float& best, int64_t& best_k) {
    if (s > best) {
        best = s;
        best_k = k;
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar fallback: 4 queries share each code row; separate multiply and add (this TU is built
// with -ffp-contract=off, so the compiler does not fuse them either).
void block_scalar(const float* Q, int64_t nq, const float* C, int64_t k0, int64_t k1, int D,
                  const float* bias, float* best_val, int64_t* best_id) {
    const float ninf = -std::numeric_limits<float>::infinity();
    int64_t i = 0;
    for (; i + 4 <= nq; i += 4) {
        const float* q0 = Q + (i + 0) * D;
        const float* q1 = Q + (i + 1) * D;
        const float* q2 = Q + (i + 2) * D;
        const float* q3 = Q + (i + 3) * D;
        float b0 = ninf, b1 = ninf, b2 = ninf, b3 = ninf;
        int64_t j0 = k0, j1 = k0, j2 = k0, j3 = k0;
        for (int64_t k = k0; k < k1; ++k) {
            const float* c = C + k * D;
            const float init = bias ? bias[k] : 0.0f;
            float s0 = init, s1 = init, s2 = init, s3 = init;
            for (int d = 0; d < D; ++d) {
                const float cd = c[d];
                s0 = s0 + q0[d] * cd;
                s1 = s1 + q1[d] * cd;
                s2 = s2 + q2[d] * cd;
                s3 = s3 + q3[d] * cd;
            }
            keep_best(s0, k, b0, j0);
            keep_best(s1, k, b1, j1);
            keep_best(s2, k, b2, j2);
            keep_best(s3, k, b3, j3);
        }
        best_val[i + 0] = b0;
        best_id[i + 0] = j0;
        best_val[i + 1] = b1;
        best_id[i + 1] = j1;
        best_val[i + 2] = b2;
        best_id[i + 2] = j2;
        best_val[i + 3] = b3;
        best_id[i + 3] = j3;
    }
    for (; i < nq; ++i) {
        const float* q = Q + i * D;
        float b = ninf;
        int64_t j = k0;
        for (int64_t k = k0; k < k1; ++k) {
            const float* c = C + k * D;
            float s = bias ? bias[k] : 0.0f;
            for (int d = 0; d < D; ++d) s = s + q[d] * c[d];
            keep_best(s, k, b, j);
        }
        best_val[i] = b;
        best_id[i] = j;
    }
}

void l2_bias_scalar(const float* C, int64_t k0, int64_t k1, int D, float* bias) {
    for (int64_t k = k0; k < k1; ++k) {
        const float* c = C + k * D;
        float s = 0.0f;
        for (int d = 0; d < D; ++d) s = s + c[d] * c[d];
        bias[k] = -0.5f * s;
    }
}

float final_score(const float* q, const float* c, int D, Metric metric) {
    double s = 0.0;
    if (metric == METRIC_L2) {
        for (int d = 0; d < D; ++d) {
            const double t = (double)q[d] - (double)c[d];
            s = s + t * t;
        }
    } else {
        for (int d = 0; d < D; ++d) s = s + (double)q[d] * (double)c[d];
    }
    return (float)s;
}

// ---------------------------------------------------------------------------------------------
namespace {

constexpr int64_t kQueryTile = 16;  // queries per work item (= one AVX2 micro-tile row block)

int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

}  // namespace

void nn_search_cpu(const SearchArgs& a) {
    const int64_t N = a.N, K = a.K;
    const int D = a.D;
    if (N <= 0) return;
    const Impl impl = resolve_impl(a.impl);
    const BlockKernelFn kernel = impl == IMPL_AVX2 ? &block_avx2 : &block_scalar;

    int nt = a.num_threads > 0 ? a.num_threads : max_threads();
    // Below ~1e6 multiply-adds a parallel region costs more than it saves.
    const double work = (double)N * (double)K * (double)D;
    if (work < 1.0e6) nt = 1;
#ifndef _OPENMP
    nt = 1;
#endif

    // L2: per-code bias (-|c|^2 / 2), computed here unless the caller prepared it.
    std::unique_ptr<float[]> bias_buf;
    const float* bias = nullptr;
    if (a.metric == METRIC_L2) {
        if (a.l2_bias) {
            bias = a.l2_bias;
        } else {
            bias_buf.reset(new float[(size_t)K]);
            float* b = bias_buf.get();
            const bool fma = impl == IMPL_AVX2;
            const int bt = (K * (int64_t)D >= (1 << 16)) ? nt : 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(bt) schedule(static)
#endif
            for (int t = 0; t < bt; ++t) {
                const int64_t lo = K * t / bt, hi = K * (t + 1) / bt;
                if (hi > lo) {
                    if (fma)
                        l2_bias_fma_avx2(a.C, lo, hi, D, b);
                    else
                        l2_bias_scalar(a.C, lo, hi, D, b);
                }
            }
            bias = b;
        }
    }

    // Work items: (query tile, code range). With few query tiles the code axis is split too, so
    // every thread gets work (e.g. N = 7 on 2 threads -> 2 code halves); partial results are then
    // merged in code order, strict '>' keeping the lower range on ties (= lowest index).
    const int64_t qtiles = (N + kQueryTile - 1) / kQueryTile;
    int64_t kparts = 1;
    if (nt > 1 && qtiles < 4 * nt && qtiles % nt != 0)
        kparts = std::min<int64_t>(nt, std::max<int64_t>(1, K / 64));
    const int64_t items = qtiles * kparts;

    std::vector<float> pval;
    std::vector<int64_t> pid;
    float* val = a.scores;  // best (bias-shifted) score, replaced by final_score() below
    int64_t* ids = a.ids;
    if (kparts > 1) {
        pval.resize((size_t)(N * kparts));
        pid.resize((size_t)(N * kparts));
    }

    auto run_item = [&](int64_t it) {
        const int64_t qt = it / kparts, kp = it % kparts;
        const int64_t i0 = qt * kQueryTile;
        const int64_t nq = std::min<int64_t>(kQueryTile, N - i0);
        const int64_t lo = K * kp / kparts, hi = K * (kp + 1) / kparts;
        float* bv = kparts > 1 ? pval.data() + kp * N + i0 : val + i0;
        int64_t* bi = kparts > 1 ? pid.data() + kp * N + i0 : ids + i0;
        kernel(a.Q + i0 * D, nq, a.C, lo, hi, D, bias, bv, bi);
    };

    const int nthreads = (int)std::min<int64_t>(nt, items);
    if (nthreads <= 1) {
        for (int64_t it = 0; it < items; ++it) run_item(it);
    } else {
#ifdef _OPENMP
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
        for (int64_t it = 0; it < items; ++it) run_item(it);
#endif
    }

    if (kparts > 1) {
        for (int64_t i = 0; i < N; ++i) {
            float b = pval[(size_t)i];
            int64_t j = pid[(size_t)i];
            for (int64_t kp = 1; kp < kparts; ++kp) {
                const float v = pval[(size_t)(kp * N + i)];
                keep_best(v, pid[(size_t)(kp * N + i)], b, j);
            }
            val[i] = b;
            ids[i] = j;
        }
    }

    // Report the score of the chosen code in float64 (for L2 also avoids the cancellation of
    // |q|^2 - 2 * best when q is close to the code); O(N D), negligible next to the search.
    const int fs_threads = (N * (int64_t)D >= (1 << 16)) ? nthreads : 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(fs_threads) schedule(static) if (fs_threads > 1)
#endif
    for (int64_t i = 0; i < N; ++i)
        val[i] = final_score(a.Q + i * D, a.C + ids[i] * D, D, a.metric);
}

}  // namespace tokfuse
