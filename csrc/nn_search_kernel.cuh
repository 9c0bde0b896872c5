// Body of the CUDA codebook nearest-neighbour kernel, written once and compiled twice:
//
//  * by nvcc for the GPU (csrc/nn_search_cuda.cu): each CUDA thread runs the body for itself
//    (TF_FOR_THREADS is a one-trip loop over threadIdx.x), TF_SYNC is __syncthreads(), and the
//    warp reduction uses __shfl_xor_sync;
//  * by the host C++ compiler (csrc/nn_search_emulated.cpp, exposed as
//    tokfuse_rt._C._nn_search_cuda_emulated): one host thread runs a whole CUDA block,
//    TF_FOR_THREADS loops over the block's threads between the barriers (so every barrier
//    interval is executed by all threads before any thread passes the barrier, exactly the
//    CUDA semantics), per-thread registers become [thread] slots, and __shfl_xor_sync is
//    emulated by reading the partner lane's value from a snapshot taken before the exchange.
//
// Algorithm (one block = kQB queries, kWarps warps x kQPW queries per warp):
//   1. stage the block's queries in shared memory;
//   2. for each codebook tile of tile_k codes: stage the tile in shared memory (row stride
//      ldc = D | 1, odd, so lanes reading consecutive rows hit distinct banks) plus the per-code
//      bias (0 for inner product, -|c|^2/2 for squared L2); lane l of every warp scores codes
//      l, l+32, ... of the tile against the warp's kQPW queries (fused multiply-adds in d order,
//      from the bias - the same arithmetic as the CPU AVX2 kernel) and keeps a running
//      (best, index), strict '>' so the earliest code wins within a lane;
//   3. a 5-step xor-butterfly over the warp merges the 32 lane candidates, preferring the larger
//      score and, on equal scores, the lower index (so ties go to the lowest index overall);
//   4. lane 0 writes ids and the score of the chosen code, recomputed in float64 and rounded
//      once (the same function as the CPU paths' final_score()).
#pragma once
#include <stdint.h>

#if defined(__CUDACC__)
#define TF_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define TF_HD inline
#endif

namespace tokfuse {
namespace kern {

constexpr int kWarp = 32;
constexpr int kWarps = 4;
constexpr int kThreads = kWarp * kWarps;  // 128 threads per block
constexpr int kQPW = 8;                   // queries per warp
constexpr int kQB = kWarps * kQPW;        // 32 queries per block
constexpr int kMaxD = 128;                // larger D: not supported by this kernel
constexpr int kSmemBudget = 12288;        // floats (48 KiB: no opt-in needed on any GPU)

struct Params {
    const float* Q;  // [N, D] row-major
    const float* C;  // [K, D] row-major
    int64_t N;
    int64_t K;
    int D;
    int metric;     // 0 = inner product, 1 = squared L2
    int ldc;        // shared-memory row stride of a code (odd)
    int tile_k;     // codes per shared-memory tile
    int64_t* ids;   // [N]
    float* scores;  // [N]
};

TF_HD int code_stride(int D) { return D | 1; }

// Codes per tile: what fits in the 48 KiB budget next to the queries, a multiple of 32 in
// [32, 256] (D = 12: 256 codes, 15.5 KiB in all; D = 64: 128 codes; D = 128: 32 codes).
TF_HD int tile_codes(int D) {
    int t = (kSmemBudget - kQB * D) / (code_stride(D) + 1);
    t = (t / kWarp) * kWarp;
    if (t < kWarp) t = kWarp;
    if (t > 256) t = 256;
    return t;
}

TF_HD int64_t smem_floats(int D) {
    const int tk = tile_codes(D);
    return (int64_t)kQB * D + (int64_t)tk * code_stride(D) + tk;
}

// ---- explicitly rounded arithmetic (no contraction differences between the two builds) ------
#if defined(__CUDA_ARCH__)
TF_HD float f_fma(float a, float b, float c) { return __fmaf_rn(a, b, c); }
TF_HD float f_neg_inf() { return -__int_as_float(0x7f800000); }
TF_HD double d_add(double a, double b) { return __dadd_rn(a, b); }
TF_HD double d_sub(double a, double b) { return __dsub_rn(a, b); }
TF_HD double d_mul(double a, double b) { return __dmul_rn(a, b); }
#else
// The host TU is compiled with -ffp-contract=off: + and * round separately.
inline float f_fma(float a, float b, float c) { return std::fma(a, b, c); }
inline float f_neg_inf() { return -HUGE_VALF; }
inline double d_add(double a, double b) { return a + b; }
inline double d_sub(double a, double b) { return a - b; }
inline double d_mul(double a, double b) { return a * b; }
#endif

// Is candidate (v, i) better than the current (bv, bi)? Index -1 marks "no candidate yet".
TF_HD bool better(float v, int64_t i, float bv, int64_t bi) {
    if (i < 0) return false;
    if (bi < 0) return true;
    return v > bv || (v == bv && i < bi);
}

// ---- SIMT execution model macros ------------------------------------------------------------
#if defined(__CUDA_ARCH__)
#define TF_SLOTS 1
#define TF_SLOT(t) 0
#define TF_FOR_THREADS(t) for (int t = (int)threadIdx.x, tf_once_ = 1; tf_once_; tf_once_ = 0)
#define TF_SYNC() __syncthreads()
#define TF_SHFL_XOR(arr, j, t, off) ((void)(t), __shfl_xor_sync(0xffffffffu, arr[0][j], off))
#define TF_SHFL_XOR_SNAP(snap, arr, j, t, off) TF_SHFL_XOR(arr, j, t, off)
#else
#define TF_SLOTS ::tokfuse::kern::kThreads
#define TF_SLOT(t) (t)
#define TF_FOR_THREADS(t) for (int t = 0; t < ::tokfuse::kern::kThreads; ++t)
#define TF_SYNC() ((void)0)
// A warp exchange reads the partner's register as it was before the exchange instruction.
#define TF_SHFL_XOR_SNAP(snap, arr, j, t, off) (snap[(t) ^ (off)][j])
#endif

// The kernel body for block `block`. smem: smem_floats(D) floats of (dynamic) shared memory.
#if defined(__CUDACC__)
__device__ __forceinline__
#else
inline
#endif
    void nn_block(const Params& p, int64_t block, float* smem) {
    const int D = p.D;
    const int ldc = p.ldc;
    const int tile_k = p.tile_k;
    const bool l2 = p.metric == 1;
    float* sq = smem;               // [kQB][D]     queries of this block
    float* sc = sq + kQB * D;       // [tile_k][ldc] codebook tile
    float* sb = sc + tile_k * ldc;  // [tile_k]     per-code bias
    const int64_t qbase = block * (int64_t)kQB;

    // Thread-private running best per query of the warp ("registers").
    float best[TF_SLOTS][kQPW];
    int64_t bidx[TF_SLOTS][kQPW];

    // 1. Stage queries (rows past N are zero; their results are never written).
    TF_FOR_THREADS(t) {
        for (int e = t; e < kQB * D; e += kThreads) {
            const int64_t r = qbase + e / D;
            sq[e] = r < p.N ? p.Q[r * D + e % D] : 0.0f;
        }
        for (int j = 0; j < kQPW; ++j) {
            best[TF_SLOT(t)][j] = f_neg_inf();
            bidx[TF_SLOT(t)][j] = -1;
        }
    }
    TF_SYNC();

    for (int64_t k0 = 0; k0 < p.K; k0 += tile_k) {
        const int nk = (int)((p.K - k0) < tile_k ? (p.K - k0) : tile_k);
        // 2a. Stage the codebook tile (coalesced global reads).
        TF_FOR_THREADS(t) {
            for (int e = t; e < nk * D; e += kThreads) {
                const int r = e / D, d = e % D;
                sc[r * ldc + d] = p.C[(k0 + r) * D + d];
            }
        }
        TF_SYNC();
        // 2b. Per-code bias, from the staged tile.
        TF_FOR_THREADS(t) {
            for (int r = t; r < nk; r += kThreads) {
                float s = 0.0f;
                if (l2) {
                    const float* c = sc + r * ldc;
                    for (int d = 0; d < D; ++d) s = f_fma(c[d], c[d], s);
                    s = -0.5f * s;
                }
                sb[r] = s;
            }
        }
        TF_SYNC();
        // 2c. Score: lane l takes codes l, l+32, ... against the warp's kQPW queries.
        TF_FOR_THREADS(t) {
            const int w = t / kWarp, lane = t % kWarp;
            const float* qw = sq + w * kQPW * D;
            for (int r = lane; r < nk; r += kWarp) {
                const float* c = sc + r * ldc;
                float acc[kQPW];
                for (int j = 0; j < kQPW; ++j) acc[j] = sb[r];
                for (int d = 0; d < D; ++d) {
                    const float cd = c[d];
                    for (int j = 0; j < kQPW; ++j) acc[j] = f_fma(qw[j * D + d], cd, acc[j]);
                }
                for (int j = 0; j < kQPW; ++j) {
                    if (bidx[TF_SLOT(t)][j] < 0 || acc[j] > best[TF_SLOT(t)][j]) {
                        best[TF_SLOT(t)][j] = acc[j];
                        bidx[TF_SLOT(t)][j] = k0 + r;
                    }
                }
            }
        }
        TF_SYNC();  // the tile is overwritten next iteration
    }

    // 3. Warp-level arg-max: xor butterfly; every lane ends with the warp's best candidate.
#if !defined(__CUDA_ARCH__)
    float snap_best[TF_SLOTS][kQPW];
    int64_t snap_idx[TF_SLOTS][kQPW];
#endif
    for (int off = kWarp / 2; off > 0; off >>= 1) {
#if !defined(__CUDA_ARCH__)
        for (int t = 0; t < TF_SLOTS; ++t)
            for (int j = 0; j < kQPW; ++j) {
                snap_best[t][j] = best[t][j];
                snap_idx[t][j] = bidx[t][j];
            }
#endif
        TF_FOR_THREADS(t) {
            for (int j = 0; j < kQPW; ++j) {
                const float ov = TF_SHFL_XOR_SNAP(snap_best, best, j, t, off);
                const int64_t oi = TF_SHFL_XOR_SNAP(snap_idx, bidx, j, t, off);
                if (better(ov, oi, best[TF_SLOT(t)][j], bidx[TF_SLOT(t)][j])) {
                    best[TF_SLOT(t)][j] = ov;
                    bidx[TF_SLOT(t)][j] = oi;
                }
            }
        }
    }

    // 4. Lane 0 of each warp writes its queries' results.
    TF_FOR_THREADS(t) {
        if (t % kWarp == 0) {
            const int w = t / kWarp;
            for (int j = 0; j < kQPW; ++j) {
                const int64_t q = qbase + w * kQPW + j;
                if (q < p.N) {
                    const int64_t id = bidx[TF_SLOT(t)][j];
                    p.ids[q] = id;
                    // Reported score: float64 accumulation, rounded once (= CPU final_score()).
                    const float* qr = p.Q + q * D;
                    const float* cr = p.C + id * D;
                    double s = 0.0;
                    for (int d = 0; d < D; ++d) {
                        if (l2) {
                            const double u = d_sub((double)qr[d], (double)cr[d]);
                            s = d_add(s, d_mul(u, u));
                        } else {
                            s = d_add(s, d_mul((double)qr[d], (double)cr[d]));
                        }
                    }
                    p.scores[q] = (float)s;
                }
            }
        }
    }
}

}  // namespace kern
}  // namespace tokfuse
