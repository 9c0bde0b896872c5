// AVX-512 VNNI kernel of the int8 render's 3x3 convolution (see render.h, render_int8.cpp).
//
// Compiled with -mavx512f -mavx512bw -mavx512vnni -mavx2 -mfma (setup.py) and entered only after
// the run-time check cpu_has_avx512vnni(). No C++ standard library header (see nn_search_avx2.cpp).
// A micro-tile is P pixels x 16 output channels: P int32 accumulators (zmm), and per tap and group
// of 4 input channels one 64-byte weight load (16 channels x 4 int8) and, per pixel, a broadcast of
// its 4 uint8 inputs into VPDPBUSD (u8 x s8, 4 products summed into each int32 lane, exact).
// The epilogue is elementwise with render.h's operation order: float(acc) * scale + bias (no FMA:
// -ffp-contract=off), max 0, then either min(v * inv, 255) rounded half to even into uint8, or
// float32.
#include "render.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__AVX512F__) && defined(__AVX512VNNI__) && \
    defined(__AVX512BW__)
#include <immintrin.h>

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's avx512fintrin.h initialises conversions from _mm512_undefined_*(): a known false
// positive of -Wmaybe-uninitialized (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tokfuse {
namespace {

inline int32_t load4(const uint8_t* p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

template <int P>
inline void qblock(const uint8_t* const* in, int istride, int ngroups, const int8_t* w,
                   const int32_t* acc0, const float* scale, const float* bias, const float* inv,
                   void* out, int ostride, int x, int cop, int c0) {
    __m512i acc[P];
    const __m512i a0 = _mm512_loadu_si512(acc0 + c0);
    for (int p = 0; p < P; ++p) acc[p] = a0;
    for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) {
            const uint8_t* px0 = in[ky] + (ptrdiff_t)(x + kx) * istride;
            const int8_t* wt = w + ((ptrdiff_t)(ky * 3 + kx) * ngroups * cop + c0) * 4;
            for (int g = 0; g < ngroups; ++g, wt += (ptrdiff_t)cop * 4) {
                const __m512i wv = _mm512_loadu_si512(wt);
                const uint8_t* px = px0 + 4 * g;
                for (int p = 0; p < P; ++p)
                    acc[p] = _mm512_dpbusd_epi32(
                        acc[p], _mm512_set1_epi32(load4(px + (ptrdiff_t)p * istride)), wv);
            }
        }
    const __m512 s = _mm512_loadu_ps(scale + c0), b = _mm512_loadu_ps(bias + c0);
    const __m512 zero = _mm512_setzero_ps();
    if (inv) {
        const __m512 iv = _mm512_loadu_ps(inv + c0), top = _mm512_set1_ps(255.0f);
        uint8_t* o = static_cast<uint8_t*>(out);
        for (int p = 0; p < P; ++p) {
            __m512 v = _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[p]), s), b),
                                     zero);
            v = _mm512_min_ps(_mm512_mul_ps(v, iv), top);
            const __m128i q = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v));  // RNE, in [0, 255]
            _mm_storeu_si128((__m128i*)(o + (ptrdiff_t)(x + p) * ostride + c0), q);
        }
    } else {
        float* o = static_cast<float*>(out);
        for (int p = 0; p < P; ++p)
            _mm512_storeu_ps(
                o + (ptrdiff_t)(x + p) * ostride + c0,
                _mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[p]), s), b),
                              zero));
    }
}

}  // namespace

bool render_vnni_compiled() { return true; }

void qconv_row_vnni(const uint8_t* const* in, int istride, int ngroups, const int8_t* w,
                    const int32_t* acc0, const float* scale, const float* bias, const float* inv,
                    void* out, int ostride, int W, int cop) {
    for (int c0 = 0; c0 < cop; c0 += 16) {
        int x = 0;
        for (; x + 16 <= W; x += 16)
            qblock<16>(in, istride, ngroups, w, acc0, scale, bias, inv, out, ostride, x, cop, c0);
        for (; x + 4 <= W; x += 4)
            qblock<4>(in, istride, ngroups, w, acc0, scale, bias, inv, out, ostride, x, cop, c0);
        for (; x < W; ++x)
            qblock<1>(in, istride, ngroups, w, acc0, scale, bias, inv, out, ostride, x, cop, c0);
    }
}

}  // namespace tokfuse

#else  // no VNNI kernel in this build

namespace tokfuse {
bool render_vnni_compiled() { return false; }
void qconv_row_vnni(const uint8_t* const*, int, int, const int8_t*, const int32_t*, const float*,
                    const float*, const float*, void*, int, int, int) {}
}  // namespace tokfuse

#endif
