// AVX-512F kernels of the fused native render (see render.h, render_avx2.cpp): the 3x3 convolution,
// and the head's rule and the base layers' box rows 16 pixels at a time, each the AVX2 kernel's
// operations lane for lane (the same exp polynomial, FMA where it has FMA), so the results are
// those of render_avx2.cpp bit for bit.
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

// exp256, sigmoid256, clamp01, knee256 of render_avx2.cpp, 16 lanes
inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.3762626647949f)),
                      _mm512_set1_ps(88.3762626647949f));
    __m512 fx =
        _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _mm512_set1_ps(0.5f));
    fx = _mm512_roundscale_ps(fx, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    x = _mm512_sub_ps(x, _mm512_mul_ps(fx, _mm512_set1_ps(0.693359375f)));
    x = _mm512_sub_ps(x, _mm512_mul_ps(fx, _mm512_set1_ps(-2.12194440e-4f)));
    const __m512 z = _mm512_mul_ps(x, x);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, z, x);
    y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
    __m512i n = _mm512_cvttps_epi32(fx);
    n = _mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(n));
}

inline __m512 sigmoid512(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

inline __m512 clamp01_512(__m512 x) {
    return _mm512_min_ps(_mm512_max_ps(x, _mm512_setzero_ps()), _mm512_set1_ps(1.0f));
}

inline __m512 knee512(__m512 x) {
    const __m512 k = _mm512_set1_ps(0.9f), s = _mm512_set1_ps(0.1f), one = _mm512_set1_ps(1.0f);
    const __m512 t = _mm512_div_ps(_mm512_sub_ps(x, k), s);
    const __m512 e = exp512(_mm512_add_ps(t, t));
    const __m512 th =
        _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
    const __m512 hi = _mm512_add_ps(k, _mm512_mul_ps(s, th));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, k, _CMP_GT_OQ),
                                _mm512_max_ps(x, _mm512_setzero_ps()), hi);
}

}  // namespace

bool render_avx512_compiled() { return true; }

void rule_row_avx512(const RuleRow& r) {
    const int W = r.W, hs = r.hstride, nh = r.nh;
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32(hs));
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 tau = _mm512_set1_ps(r.tau), gv = _mm512_set1_ps(r.gain_vis),
                 gi = _mm512_set1_ps(r.gain_ir);
    int x = 0;
    for (; x + 16 <= W; x += 16) {
        __m512 y0 = _mm512_set1_ps(r.b2[0]), y1 = _mm512_set1_ps(r.b2[1]);
        const float* h = r.hplane > 0 ? r.h + x : r.h + (ptrdiff_t)x * hs;
        for (int c = 0; c < nh; ++c) {
            const __m512 hv = r.hplane > 0 ? _mm512_loadu_ps(h + (ptrdiff_t)c * r.hplane)
                                           : _mm512_i32gather_ps(idx, h + c, 4);
            y0 = _mm512_fmadd_ps(_mm512_set1_ps(r.w2[c]), hv, y0);
            y1 = _mm512_fmadd_ps(_mm512_set1_ps(r.w2[nh + c]), hv, y1);
        }
        const __m512 a_ = _mm512_loadu_ps(r.ir + x), b_ = _mm512_loadu_ps(r.vis + x);
        __m512 f;
        if (r.head == HEAD_BLEND) {
            const __m512 w = sigmoid512(y0);
            f = clamp01_512(_mm512_add_ps(
                _mm512_add_ps(_mm512_mul_ps(w, a_), _mm512_mul_ps(_mm512_sub_ps(one, w), b_)), y1));
        } else {
            const __m512 g = _mm512_loadu_ps(r.tone[0] + x), a = _mm512_loadu_ps(r.tone[1] + x);
            const __m512 mu = _mm512_loadu_ps(r.tone[2] + x), c = _mm512_loadu_ps(r.tone[3] + x);
            __m512 la = a_, lb = b_;
            if (r.head == HEAD_LAYERS)
                la = _mm512_loadu_ps(r.l_ir + x), lb = _mm512_loadu_ps(r.l_vis + x);
            const __m512 w =
                sigmoid512(_mm512_add_ps(_mm512_mul_ps(tau, _mm512_sub_ps(la, lb)), y0));
            const __m512 sel =
                _mm512_add_ps(_mm512_mul_ps(w, la), _mm512_mul_ps(_mm512_sub_ps(one, w), lb));
            const __m512 add = clamp01_512(_mm512_sub_ps(_mm512_add_ps(la, lb), c));
            __m512 m =
                _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(one, a), sel), _mm512_mul_ps(a, add));
            if (r.head == HEAD_LAYERS) {
                m = _mm512_add_ps(m, _mm512_mul_ps(gv, _mm512_sub_ps(b_, lb)));
                m = _mm512_add_ps(m, _mm512_mul_ps(gi, _mm512_sub_ps(a_, la)));
            }
            f = knee512(
                _mm512_add_ps(_mm512_add_ps(mu, _mm512_mul_ps(g, _mm512_sub_ps(m, mu))), y1));
        }
        _mm512_storeu_ps(r.out + x, f);
    }
    if (x < W) {  // the last W % 16 pixels: the AVX2 rule (8 pixels, then scalar)
        RuleRow t = r;
        t.W = W - x;
        t.h = r.hplane > 0 ? r.h + x : r.h + (ptrdiff_t)x * hs;
        t.ir = r.ir + x, t.vis = r.vis + x, t.out = r.out + x;
        if (r.l_ir) t.l_ir = r.l_ir + x, t.l_vis = r.l_vis + x;
        for (int k = 0; k < 4; ++k)
            if (r.tone[k]) t.tone[k] = r.tone[k] + x;
        rule_row_avx2(t);
    }
}

void box_hmean_avx512(const float* src, int W, int r, float* tmp, float* dst) {
    for (int i = 0; i < r; ++i) tmp[i] = src[0], tmp[W + r + i] = src[W - 1];  // replicate padding
    __builtin_memcpy(tmp + r, src, sizeof(float) * (size_t)W);
    const __m512 n = _mm512_set1_ps(float(2 * r + 1));
    int x = 0;
    for (; x + 16 <= W; x += 16) {
        __m512 s = _mm512_loadu_ps(tmp + x);
        for (int j = 1; j <= 2 * r; ++j) s = _mm512_add_ps(s, _mm512_loadu_ps(tmp + x + j));
        _mm512_storeu_ps(dst + x, _mm512_div_ps(s, n));
    }
    for (; x < W; ++x) {
        float s = tmp[x];
        for (int j = 1; j <= 2 * r; ++j) s += tmp[x + j];
        dst[x] = s / float(2 * r + 1);
    }
}

void box_vmean_avx512(const float* const* rows, int n, int W, float* dst) {
    const __m512 nv = _mm512_set1_ps(float(n));
    int x = 0;
    for (; x + 16 <= W; x += 16) {
        __m512 s = _mm512_loadu_ps(rows[0] + x);
        for (int j = 1; j < n; ++j) s = _mm512_add_ps(s, _mm512_loadu_ps(rows[j] + x));
        _mm512_storeu_ps(dst + x, _mm512_div_ps(s, nv));
    }
    for (; x < W; ++x) {
        float s = rows[0][x];
        for (int j = 1; j < n; ++j) s += rows[j][x];
        dst[x] = s / float(n);
    }
}

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
void rule_row_avx512(const RuleRow&) {}
void box_hmean_avx512(const float*, int, int, float*, float*) {}
void box_vmean_avx512(const float* const*, int, int, float*) {}
void conv_row_avx512(const float* const*, int, const int*, int, const float*, const float*, float*,
                     int, int, int, int) {}
}  // namespace tokfuse

#endif
