// AVX-512F kernel of the fused native render's 3x3 convolution (see render.h, render_avx2.cpp).
//
// Compiled with -mavx512f -mavx2 -mfma (setup.py) and entered only after the run-time check
// cpu_has_avx512f(). No C++ standard library header (see nn_search_avx2.cpp).
// A micro-tile is P = 12 pixels x 16 output channels (one zmm per pixel: 12 accumulators, one
// weight vector, one broadcast); a remaining group of 8 channels uses 8 pixels x ymm. Every output
// value is accumulated as bias, then ky, kx, input channel, in that order, with FMA.
#include "render.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__AVX512F__)
#include <immintrin.h>

namespace tokfuse {
namespace {

template <int P>
inline void block16(const float* const* in, int istride, const int* off, int nin, const float* w,
                    const float* bias, float* out, int ostride, int x, int cop, int c0, int relu) {
    __m512 acc[P];
    const __m512 b = _mm512_loadu_ps(bias + c0);
    for (int p = 0; p < P; ++p) acc[p] = b;
    for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) {
            const float* px0 = in[ky] + (ptrdiff_t)(x + kx) * istride;
            const float* wt = w + (ptrdiff_t)(ky * 3 + kx) * nin * cop + c0;
            for (int j = 0; j < nin; ++j, wt += cop) {
                const __m512 wv = _mm512_loadu_ps(wt);
                const float* px = px0 + off[j];
                for (int p = 0; p < P; ++p)
                    acc[p] =
                        _mm512_fmadd_ps(wv, _mm512_set1_ps(px[(ptrdiff_t)p * istride]), acc[p]);
            }
        }
    const __m512 zero = _mm512_setzero_ps();
    for (int p = 0; p < P; ++p)
        _mm512_storeu_ps(out + (ptrdiff_t)(x + p) * ostride + c0,
                         relu ? _mm512_max_ps(acc[p], zero) : acc[p]);
}

template <int P>
inline void block8(const float* const* in, int istride, const int* off, int nin, const float* w,
                   const float* bias, float* out, int ostride, int x, int cop, int c0, int relu) {
    __m256 acc[P];
    const __m256 b = _mm256_loadu_ps(bias + c0);
    for (int p = 0; p < P; ++p) acc[p] = b;
    for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) {
            const float* px0 = in[ky] + (ptrdiff_t)(x + kx) * istride;
            const float* wt = w + (ptrdiff_t)(ky * 3 + kx) * nin * cop + c0;
            for (int j = 0; j < nin; ++j, wt += cop) {
                const __m256 wv = _mm256_loadu_ps(wt);
                const float* px = px0 + off[j];
                for (int p = 0; p < P; ++p)
                    acc[p] = _mm256_fmadd_ps(wv, _mm256_broadcast_ss(px + (ptrdiff_t)p * istride),
                                             acc[p]);
            }
        }
    const __m256 zero = _mm256_setzero_ps();
    for (int p = 0; p < P; ++p)
        _mm256_storeu_ps(out + (ptrdiff_t)(x + p) * ostride + c0,
                         relu ? _mm256_max_ps(acc[p], zero) : acc[p]);
}

}  // namespace

bool render_avx512_compiled() { return true; }

void conv_row_avx512(const float* const* in, int istride, const int* off, int nin, const float* w,
                     const float* bias, float* out, int ostride, int W, int cop, int relu) {
    int c0 = 0;
    for (; c0 + 16 <= cop; c0 += 16) {
        int x = 0;
        for (; x + 12 <= W; x += 12)
            block16<12>(in, istride, off, nin, w, bias, out, ostride, x, cop, c0, relu);
        for (; x < W; ++x)
            block16<1>(in, istride, off, nin, w, bias, out, ostride, x, cop, c0, relu);
    }
    if (c0 < cop) {
        int x = 0;
        for (; x + 8 <= W; x += 8)
            block8<8>(in, istride, off, nin, w, bias, out, ostride, x, cop, c0, relu);
        for (; x < W; ++x)
            block8<1>(in, istride, off, nin, w, bias, out, ostride, x, cop, c0, relu);
    }
}

}  // namespace tokfuse

#else  // no AVX-512 kernel in this build

namespace tokfuse {
bool render_avx512_compiled() { return false; }
void conv_row_avx512(const float* const*, int, const int*, int, const float*, const float*, float*,
                     int, int, int, int) {}
}  // namespace tokfuse

#endif
