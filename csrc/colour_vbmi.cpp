// AVX-512 VBMI kernels of the colour steps (colour_py.cpp): 16 pixels at a time, the RGB bytes
// de-interleaved and re-interleaved with VPERMB. The float arithmetic is colour_py.cpp's, element
// by element (multiplies and adds not fused: -ffp-contract=off), so the results are bit-identical.
//
// Compiled with -mavx512f -mavx512bw -mavx512vbmi (setup.py) and entered only after the run-time
// check colour_vbmi_ok() (colour_py.cpp). No C++ standard library header (see nn_search_avx2.cpp).
#include <stddef.h>
#include <stdint.h>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__AVX512VBMI__) && defined(__AVX512BW__)
#include <immintrin.h>

namespace tokfuse {
namespace {

const float KR = 0.299f, KG = 0.587f, KB = 0.114f, U8 = (float)(1.0 / 255.0);

// byte i of the result = byte idx[i] of the source
inline __m512i perm(const int8_t* idx, __m512i v) {
    return _mm512_permutexvar_epi8(_mm512_loadu_si512(idx), v);
}

struct Tables {  // VPERMB indices: de-interleave (R of pixels 0..15, then G, then B) and back
    int8_t de[64], in[64];
    constexpr Tables() : de(), in() {
        for (int c = 0; c < 3; ++c)
            for (int i = 0; i < 16; ++i)
                de[c * 16 + i] = (int8_t)(3 * i + c), in[3 * i + c] = (int8_t)(c * 16 + i);
    }
};
alignas(64) constexpr Tables T{};

template <int C>  // the 16 bytes of channel C -> float * (1/255)
inline __m512 channel(__m512i planar) {
    const __m128i bytes = _mm512_extracti32x4_epi32(planar, C);
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes)), _mm512_set1_ps(U8));
}

inline __m512 lum16(__m512 r, __m512 g, __m512 b) {
    return _mm512_add_ps(
        _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(KR), r), _mm512_mul_ps(_mm512_set1_ps(KG), g)),
        _mm512_mul_ps(_mm512_set1_ps(KB), b));
}

inline __m512 clip01(__m512 v) {
    return _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(1.0f));
}

inline __m128i to_u8(__m512 v) {  // (uint8)(clip01(v) * 255 + 0.5), truncating
    const __m512 f =
        _mm512_add_ps(_mm512_mul_ps(clip01(v), _mm512_set1_ps(255.0f)), _mm512_set1_ps(0.5f));
    return _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(f));
}

const __mmask64 RGB48 = 0xFFFFFFFFFFFFull;

}  // namespace

bool colour_vbmi_compiled() { return true; }

// pixels [0, n16) of one row, n16 a multiple of 16
void luminance_row_vbmi(const uint8_t* src, float* dst, ptrdiff_t n16) {
    for (ptrdiff_t x = 0; x < n16; x += 16) {
        const __m512i v = perm(T.de, _mm512_maskz_loadu_epi8(RGB48, src + 3 * x));
        _mm512_storeu_ps(dst + x, lum16(channel<0>(v), channel<1>(v), channel<2>(v)));
    }
}

void colour_row_vbmi(const float* fy, const uint8_t* vis, uint8_t* out, ptrdiff_t n16) {
    const __m512 half = _mm512_set1_ps(0.5f);
    for (ptrdiff_t x = 0; x < n16; x += 16) {
        const __m512i v = perm(T.de, _mm512_maskz_loadu_epi8(RGB48, vis + 3 * x));
        const __m512 R = channel<0>(v), G = channel<1>(v), B = channel<2>(v);
        const __m512 Y = lum16(R, G, B);
        const __m512 cr = _mm512_sub_ps(
            _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(R, Y), _mm512_set1_ps(0.713f)), half), half);
        const __m512 cb = _mm512_sub_ps(
            _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(B, Y), _mm512_set1_ps(0.564f)), half), half);
        const __m512 y = _mm512_loadu_ps(fy + x);
        const __m512 r_ = _mm512_add_ps(y, _mm512_mul_ps(_mm512_set1_ps(1.403f), cr));
        const __m512 g_ = _mm512_sub_ps(_mm512_sub_ps(y, _mm512_mul_ps(_mm512_set1_ps(0.714f), cr)),
                                        _mm512_mul_ps(_mm512_set1_ps(0.344f), cb));
        const __m512 b_ = _mm512_add_ps(y, _mm512_mul_ps(_mm512_set1_ps(1.773f), cb));
        __m512i planar = _mm512_castsi128_si512(to_u8(r_));
        planar = _mm512_inserti32x4(planar, to_u8(g_), 1);
        planar = _mm512_inserti32x4(planar, to_u8(b_), 2);
        _mm512_mask_storeu_epi8(out + 3 * x, RGB48, perm(T.in, planar));
    }
}

}  // namespace tokfuse

#else  // no VBMI kernel in this build

namespace tokfuse {
bool colour_vbmi_compiled() { return false; }
void luminance_row_vbmi(const uint8_t*, float*, ptrdiff_t) {}
void colour_row_vbmi(const float*, const uint8_t*, uint8_t*, ptrdiff_t) {}
}  // namespace tokfuse

#endif
