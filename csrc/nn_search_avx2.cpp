// AVX2/FMA kernel of the codebook nearest-neighbour search.
//
// This translation unit is compiled with -mavx2 -mfma (see setup.py) and is only entered after
// the run-time check cpu_has_avx2_fma(). To keep that safe it includes no C++ standard library
// header (no inline/template code that could be merged with baseline-ISA copies by the linker)
// and uses only intrinsics, plain C and its own internal-linkage helpers.
//
// Layout / blocking (D = 12 is the project default; 8, 12 and 16 get compile-time trip counts):
//   * a micro-tile is 16 queries x 6 codes. The 16 queries are transposed into a small
//     on-stack panel qp[d][16] (two __m256 per d); the 6 code values C[k+j][d] are broadcast
//     from the row-major codebook as it is given (no codebook repacking needed).
//   * 12 accumulators (2 query vectors x 6 codes) + 2 query registers + 1 broadcast = 15 ymm.
//     Per d: 2 loads, 6 broadcasts, 12 FMAs (FMA-bound on Zen 3 / Haswell+).
//   * per micro-tile the 6 scores of each query are max-reduced (5 vmaxps per query vector)
//     and compared with the running best (1 vcmpps + 2 vblendvps: best value and tile start).
//     Only the tile that produced the best is remembered; its 6 codes are re-scored with the
//     identical scalar FMA chain at the end to find the exact code (first one equal to the
//     best, so ties go to the lowest index). The N x K score matrix is never formed.
#include "nn_search.h"

#if defined(__x86_64__) || defined(_M_X64)
#if !defined(__AVX2__) || !defined(__FMA__)
#error "nn_search_avx2.cpp must be compiled with -mavx2 -mfma (see setup.py)"
#endif
#include <immintrin.h>
#include <stdlib.h>
#include <time.h>

namespace tokfuse {
namespace {

constexpr int kQT = 16;  // queries per micro-tile (2 x 8 lanes)
constexpr int kNC = 6;   // codes per micro-tile

// Transpose up to 16 query rows into qp[d * 16 + lane]; lanes >= nq are zero.
static inline void pack_queries(const float* Q, int64_t nq, int D, float* qp) {
    for (int d = 0; d < D; ++d) {
        float* dst = qp + (int64_t)d * kQT;
        int64_t l = 0;
        for (; l < nq; ++l) dst[l] = Q[l * D + d];
        for (; l < kQT; ++l) dst[l] = 0.0f;
    }
}

template <int N>
struct MaxTree {
    static inline __attribute__((always_inline)) __m256 run(const __m256* a) {
        return _mm256_max_ps(MaxTree<N / 2>::run(a), MaxTree<N - N / 2>::run(a + N / 2));
    }
};
template <>
struct MaxTree<1> {
    static inline __attribute__((always_inline)) __m256 run(const __m256* a) { return a[0]; }
};

// Scores of the 16 queries in qp against codes c[0 .. NC) (row stride D), max-reduced over the
// NC codes into m0 (queries 0-7) and m1 (queries 8-15).
template <int DT, int NC, bool BIAS>
static inline __attribute__((always_inline)) void micro_tile(const float* qp, const float* c,
                                                             int Drt, const float* bias, __m256& m0,
                                                             __m256& m1) {
    const int D = DT > 0 ? DT : Drt;
    __m256 a0[NC], a1[NC];
#pragma GCC unroll 8
    for (int j = 0; j < NC; ++j) {
        if (BIAS) {
            a0[j] = _mm256_broadcast_ss(bias + j);
        } else {
            a0[j] = _mm256_setzero_ps();
        }
        a1[j] = a0[j];
    }
    // Unrolling d only 4x (not fully) matters: with D = 12 fully unrolled GCC hoists the 24 query
    // vectors to the stack and feeds them to the FMAs as memory operands, which makes the loop
    // load-port bound (~70% of peak); the rolled loop keeps q0/q1 in registers (~95%).
#pragma GCC unroll 4
    for (int d = 0; d < D; ++d) {
        const __m256 q0 = _mm256_load_ps(qp + d * kQT);
        const __m256 q1 = _mm256_load_ps(qp + d * kQT + 8);
#pragma GCC unroll 8
        for (int j = 0; j < NC; ++j) {
            const __m256 cb = _mm256_broadcast_ss(c + j * D + d);
            a0[j] = _mm256_fmadd_ps(q0, cb, a0[j]);
            a1[j] = _mm256_fmadd_ps(q1, cb, a1[j]);
        }
    }
    // Pairwise max tree (the value is order independent; NaN handling is unspecified).
    m0 = MaxTree<NC>::run(a0);
    m1 = MaxTree<NC>::run(a1);
}

// Running best: strict '>' keeps the earliest tile on ties (tiles are visited in code order).
static inline __attribute__((always_inline)) void update_best(__m256 m, __m256& best, __m256i& tile,
                                                              __m256i tstart) {
    const __m256 gt = _mm256_cmp_ps(m, best, _CMP_GT_OQ);
    best = _mm256_blendv_ps(best, m, gt);
    tile = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(tile), _mm256_castsi256_ps(tstart), gt));
}

template <int DT, bool BIAS>
static inline __attribute__((always_inline)) void tail_tile(int rem, const float* qp,
                                                            const float* c, int D,
                                                            const float* bias, __m256& m0,
                                                            __m256& m1) {
    switch (rem) {
        case 1: micro_tile<DT, 1, BIAS>(qp, c, D, bias, m0, m1); break;
        case 2: micro_tile<DT, 2, BIAS>(qp, c, D, bias, m0, m1); break;
        case 3: micro_tile<DT, 3, BIAS>(qp, c, D, bias, m0, m1); break;
        case 4: micro_tile<DT, 4, BIAS>(qp, c, D, bias, m0, m1); break;
        default: micro_tile<DT, 5, BIAS>(qp, c, D, bias, m0, m1); break;
    }
}

// The exact scalar twin of one vector lane: acc = bias; acc = fma(q[d], c[d], acc) for d = 0..D-1.
static inline float rescore_fma(const float* q, const float* c, int D, float init) {
    __m128 acc = _mm_set_ss(init);
    for (int d = 0; d < D; ++d) acc = _mm_fmadd_ss(_mm_set_ss(q[d]), _mm_set_ss(c[d]), acc);
    return _mm_cvtss_f32(acc);
}

template <int DT, bool BIAS>
static void block_impl(const float* Q, int64_t nq, const float* C, int64_t k0, int64_t k1, int Drt,
                       const float* bias, float* best_val, int64_t* best_id) {
    const int D = DT > 0 ? DT : Drt;
    // Query panel: 16 x D floats. On the stack up to D = 256 (16 KiB), else on the heap.
    alignas(32) float qp_stack[kQT * 256];
    float* qp = qp_stack;
    void* heap = nullptr;
    if (D > 256) {
        if (posix_memalign(&heap, 64, sizeof(float) * kQT * (size_t)D) != 0) abort();
        qp = static_cast<float*>(heap);
    }
    // Tile starts are tracked as int32 offsets from k0 (K < 2^31 is enforced by the caller).
    const int64_t nk = k1 - k0;
    const int64_t nfull = nk - nk % kNC;
    const int rem = (int)(nk - nfull);
    const float* Ck = C + k0 * D;
    const float* bk = BIAS ? bias + k0 : nullptr;
    alignas(32) float bv[kQT];
    alignas(32) int32_t bt[kQT];

    for (int64_t i0 = 0; i0 < nq; i0 += kQT) {
        const int64_t nqt = nq - i0 < kQT ? nq - i0 : kQT;
        pack_queries(Q + i0 * D, nqt, D, qp);
        const __m256 ninf = _mm256_set1_ps(-__builtin_huge_valf());
        __m256 b0 = ninf, b1 = ninf;
        __m256i t0 = _mm256_setzero_si256(), t1 = _mm256_setzero_si256();
        int64_t k = 0;
        for (; k < nfull; k += kNC) {
            __m256 m0, m1;
            micro_tile<DT, kNC, BIAS>(qp, Ck + k * D, D, BIAS ? bk + k : nullptr, m0, m1);
            const __m256i ts = _mm256_set1_epi32((int32_t)k);
            update_best(m0, b0, t0, ts);
            update_best(m1, b1, t1, ts);
        }
        if (rem) {
            __m256 m0, m1;
            tail_tile<DT, BIAS>(rem, qp, Ck + k * D, D, BIAS ? bk + k : nullptr, m0, m1);
            const __m256i ts = _mm256_set1_epi32((int32_t)k);
            update_best(m0, b0, t0, ts);
            update_best(m1, b1, t1, ts);
        }
        _mm256_store_ps(bv, b0);
        _mm256_store_ps(bv + 8, b1);
        _mm256_store_si256(reinterpret_cast<__m256i*>(bt), t0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(bt + 8), t1);
        // Resolve the winning tile to the first code whose score equals the best.
        for (int64_t l = 0; l < nqt; ++l) {
            const int64_t ts = bt[l];
            const int64_t nc = nk - ts < kNC ? nk - ts : kNC;
            const float* q = Q + (i0 + l) * D;
            int64_t id = ts;
            for (int64_t j = 0; j < nc; ++j) {
                const float s = rescore_fma(q, Ck + (ts + j) * D, D, BIAS ? bk[ts + j] : 0.0f);
                if (s == bv[l]) {
                    id = ts + j;
                    break;
                }
            }
            best_val[i0 + l] = bv[l];
            best_id[i0 + l] = k0 + id;
        }
    }
    if (heap) free(heap);
}

template <bool BIAS>
static void dispatch_d(const float* Q, int64_t nq, const float* C, int64_t k0, int64_t k1, int D,
                       const float* bias, float* best_val, int64_t* best_id) {
    switch (D) {
        case 8: block_impl<8, BIAS>(Q, nq, C, k0, k1, D, bias, best_val, best_id); break;
        case 12: block_impl<12, BIAS>(Q, nq, C, k0, k1, D, bias, best_val, best_id); break;
        case 16: block_impl<16, BIAS>(Q, nq, C, k0, k1, D, bias, best_val, best_id); break;
        default: block_impl<0, BIAS>(Q, nq, C, k0, k1, D, bias, best_val, best_id); break;
    }
}

}  // namespace

void block_avx2(const float* Q, int64_t nq, const float* C, int64_t k0, int64_t k1, int D,
                const float* bias, float* best_val, int64_t* best_id) {
    if (bias)
        dispatch_d<true>(Q, nq, C, k0, k1, D, bias, best_val, best_id);
    else
        dispatch_d<false>(Q, nq, C, k0, k1, D, bias, best_val, best_id);
}

bool avx2_kernel_compiled() { return true; }

void l2_bias_fma_avx2(const float* C, int64_t k0, int64_t k1, int D, float* bias) {
    for (int64_t k = k0; k < k1; ++k) {
        const float* c = C + k * D;
        __m128 acc = _mm_setzero_ps();
        for (int d = 0; d < D; ++d) {
            const __m128 v = _mm_set_ss(c[d]);
            acc = _mm_fmadd_ss(v, v, acc);
        }
        bias[k] = -0.5f * _mm_cvtss_f32(acc);
    }
}

double fma_peak_probe_avx2(double seconds) {
    // 10 independent FMA chains (> latency x throughput = 4 x 2 on current x86 cores).
    __m256 a[10];
    for (int i = 0; i < 10; ++i) a[i] = _mm256_set1_ps(0.5f + 0.01f * i);
    const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
    timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double elapsed = 0.0;
    int64_t iters = 0;
    while (elapsed < seconds) {
        for (int r = 0; r < 100000; ++r) {
#pragma GCC unroll 10
            for (int i = 0; i < 10; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
        }
        iters += 100000;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        elapsed = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    }
    float sink = 0.0f;
    for (int i = 0; i < 10; ++i) sink += _mm256_cvtss_f32(a[i]);
    volatile float keep = sink;
    (void)keep;
    return (double)iters * 10.0 * 16.0 / elapsed * 1e-9;
}

}  // namespace tokfuse

#else  // not x86-64: no AVX2 kernel; the dispatcher never selects it.

namespace tokfuse {
void block_avx2(const float*, int64_t, const float*, int64_t, int64_t, int, const float*, float*,
                int64_t*) {}
bool avx2_kernel_compiled() { return false; }
void l2_bias_fma_avx2(const float*, int64_t, int64_t, int, float*) {}
double fma_peak_probe_avx2(double) { return 0.0; }
}  // namespace tokfuse

#endif
