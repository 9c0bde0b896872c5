// AVX-512 VNNI kernel of the int8 render's 3x3 convolution (see render.h, render_int8.cpp).
//
// Compiled with -mavx512f -mavx512bw -mavx512vnni -mavx2 -mfma (setup.py) and entered only after
// the run-time check cpu_has_avx512vnni(). No C++ standard library header (see nn_search_avx2.cpp).
// A micro-tile is 16 pixels (the lanes) x 16 output channels (16 int32 accumulators): per tap and
// group of 4 input channels, one 64-byte load (the group-planar row holds the 16 pixels' 4 uint8
// channels contiguously) feeds 16 VPDPBUSD (u8 x s8, 4 products summed into each int32 lane,
// exact), each with one output channel's 4 weights broadcast from memory.
// The epilogue is elementwise with render.h's operation order: float(acc) * scale + bias (no FMA:
// -ffp-contract=off), max 0, then either min(v * inv, 255) rounded half to even into uint8 (4
// channels packed per pixel into one int32 lane: one store per group), or float32 per channel.
// Pixels past W are computed from padding and never stored (masked stores).
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

inline int32_t load4(const int8_t* p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return v;
}

// 16 pixels x, ..., x + 15 (mask: those < W) and output channels c0, ..., c0 + 15
inline void qtile(const uint8_t* const* in, int gstride, int ngroups, const int8_t* w,
                  const int32_t* acc0, const float* scale, const float* bias, const float* inv,
                  void* out, int ostride, int x, int cop, int c0, __mmask16 mask) {
    __m512i acc[16];
    for (int c = 0; c < 16; ++c) acc[c] = _mm512_set1_epi32(acc0[c0 + c]);
    for (int k = 0; k < 9; ++k) {
        const uint8_t* row = in[k / 3] + (ptrdiff_t)(x + k % 3) * 4;
        for (int g = 0; g < ngroups; ++g) {
            const __m512i px = _mm512_loadu_si512(row + (ptrdiff_t)g * gstride * 4);
            const int8_t* wt = w + (((ptrdiff_t)k * ngroups + g) * cop + c0) * 4;
            for (int c = 0; c < 16; ++c)
                acc[c] = _mm512_dpbusd_epi32(acc[c], px, _mm512_set1_epi32(load4(wt + 4 * c)));
        }
    }
    const __m512 zero = _mm512_setzero_ps();
    if (inv) {
        const __m512 top = _mm512_set1_ps(255.0f);
        uint8_t* o = static_cast<uint8_t*>(out);
        for (int g = 0; g < 4; ++g) {
            __m512i packed = _mm512_setzero_si512();
            for (int i = 0; i < 4; ++i) {
                const int c = 4 * g + i;
                __m512 v = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(acc[c]), _mm512_set1_ps(scale[c0 + c])),
                    _mm512_set1_ps(bias[c0 + c]));
                v = _mm512_min_ps(
                    _mm512_mul_ps(_mm512_max_ps(v, zero), _mm512_set1_ps(inv[c0 + c])), top);
                packed = _mm512_or_si512(packed,
                                         _mm512_slli_epi32(_mm512_cvtps_epi32(v), 8 * i));  // RNE
            }
            _mm512_mask_storeu_epi32(o + ((ptrdiff_t)(c0 / 4 + g) * ostride + x) * 4, mask, packed);
        }
    } else {
        float* o = static_cast<float*>(out);
        for (int c = 0; c < 16; ++c) {
            const __m512 v = _mm512_add_ps(
                _mm512_mul_ps(_mm512_cvtepi32_ps(acc[c]), _mm512_set1_ps(scale[c0 + c])),
                _mm512_set1_ps(bias[c0 + c]));
            _mm512_mask_storeu_ps(o + (ptrdiff_t)(c0 + c) * ostride + x, mask,
                                  _mm512_max_ps(v, zero));
        }
    }
}

}  // namespace

bool render_vnni_compiled() { return true; }

void qconv_row_vnni(const uint8_t* const* in, int gstride, int ngroups, const int8_t* w,
                    const int32_t* acc0, const float* scale, const float* bias, const float* inv,
                    void* out, int ostride, int W, int cop) {
    for (int c0 = 0; c0 < cop; c0 += 16)
        for (int x = 0; x < W; x += 16) {
            const int n = W - x < 16 ? W - x : 16;
            qtile(in, gstride, ngroups, w, acc0, scale, bias, inv, out, ostride, x, cop, c0,
                  (__mmask16)((1u << n) - 1u));
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
