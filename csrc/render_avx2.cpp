// AVX2/FMA kernels of the fused native render (see render.h and render_cpu.cpp).
//
// Compiled with -mavx2 -mfma (setup.py) and entered only after the run-time check
// cpu_has_avx2_fma(). Like nn_search_avx2.cpp it includes no C++ standard library header:
// intrinsics, plain C and internal-linkage helpers only.
//
// conv_row_avx2: channel-last 3x3 convolution of one row. A micro-tile is P pixels x G groups of 8
// output channels (G = 2, P = 4 or G = 1, P = 8): 8 accumulators, G weight vectors and one
// broadcast input value per input channel and tap, so per input value G loads + P broadcasts feed
// P*G FMAs. Every output value is accumulated as bias, then ky, kx, input channel, in that order.
// rule_row_avx2: the 1x1 convolution (gathered over 8 pixels) and the head's rule, 8 pixels at a
// time, with the same operation order as the PyTorch modules (multiplies and adds not fused).
#include "render.h"

#if defined(__x86_64__) || defined(_M_X64)
#if !defined(__AVX2__) || !defined(__FMA__)
#error "render_avx2.cpp must be compiled with -mavx2 -mfma (see setup.py)"
#endif
#include <immintrin.h>

namespace tokfuse {
namespace {

template <int G, int P>
inline void conv_block(const float* const* in, int istride, const int* off, int nin, const float* w,
                       const float* bias, float* out, int ostride, int x, int cop, int g0,
                       int relu) {
    __m256 acc[P][G];
    for (int g = 0; g < G; ++g) {
        const __m256 b = _mm256_loadu_ps(bias + (g0 + g) * 8);
        for (int p = 0; p < P; ++p) acc[p][g] = b;
    }
    for (int ky = 0; ky < 3; ++ky) {
        for (int kx = 0; kx < 3; ++kx) {
            const float* px0 = in[ky] + (ptrdiff_t)(x + kx) * istride;
            const float* wt = w + (ptrdiff_t)(ky * 3 + kx) * nin * cop + g0 * 8;
            for (int j = 0; j < nin; ++j, wt += cop) {
                __m256 wv[G];
                for (int g = 0; g < G; ++g) wv[g] = _mm256_loadu_ps(wt + g * 8);
                const float* px = px0 + off[j];
                for (int p = 0; p < P; ++p) {
                    const __m256 v = _mm256_broadcast_ss(px + (ptrdiff_t)p * istride);
                    for (int g = 0; g < G; ++g) acc[p][g] = _mm256_fmadd_ps(wv[g], v, acc[p][g]);
                }
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int p = 0; p < P; ++p)
        for (int g = 0; g < G; ++g)
            _mm256_storeu_ps(out + (ptrdiff_t)(x + p) * ostride + (g0 + g) * 8,
                             relu ? _mm256_max_ps(acc[p][g], zero) : acc[p][g]);
}

// exp(x), Cephes single-precision polynomial (relative error ~2e-7); x clamped to +-88.38.
inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f)),
                      _mm256_set1_ps(88.3762626647949f));
    __m256 fx =
        _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(0.693359375f)));
    x = _mm256_sub_ps(x, _mm256_mul_ps(fx, _mm256_set1_ps(-2.12194440e-4f)));
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, z, x);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i n = _mm256_cvttps_epi32(fx);
    n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

inline __m256 sigmoid256(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

inline __m256 clamp01(__m256 x) {
    return _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(1.0f));
}

// knee (tone.py): x > 0.9 ? 0.9 + 0.1 * tanh((x - 0.9) / 0.1) : max(x, 0); tanh(t) for t > 0 as
// 1 - 2 / (exp(2t) + 1) (the lanes where t <= 0 are not selected).
inline __m256 knee256(__m256 x) {
    const __m256 k = _mm256_set1_ps(0.9f), s = _mm256_set1_ps(0.1f), one = _mm256_set1_ps(1.0f);
    const __m256 t = _mm256_div_ps(_mm256_sub_ps(x, k), s);
    const __m256 e = exp256(_mm256_add_ps(t, t));
    const __m256 th =
        _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
    const __m256 hi = _mm256_add_ps(k, _mm256_mul_ps(s, th));
    return _mm256_blendv_ps(_mm256_max_ps(x, _mm256_setzero_ps()), hi,
                            _mm256_cmp_ps(x, k, _CMP_GT_OQ));
}

}  // namespace

bool render_avx2_compiled() { return true; }

void conv_row_avx2(const float* const* in, int istride, const int* off, int nin, const float* w,
                   const float* bias, float* out, int ostride, int W, int cop, int relu) {
    const int ng = cop / 8;
    int g = 0;
    for (; g + 2 <= ng; g += 2) {
        int x = 0;
        for (; x + 4 <= W; x += 4)
            conv_block<2, 4>(in, istride, off, nin, w, bias, out, ostride, x, cop, g, relu);
        for (; x < W; ++x)
            conv_block<2, 1>(in, istride, off, nin, w, bias, out, ostride, x, cop, g, relu);
    }
    if (g < ng) {
        int x = 0;
        for (; x + 8 <= W; x += 8)
            conv_block<1, 8>(in, istride, off, nin, w, bias, out, ostride, x, cop, g, relu);
        for (; x < W; ++x)
            conv_block<1, 1>(in, istride, off, nin, w, bias, out, ostride, x, cop, g, relu);
    }
}

void rule_row_avx2(const RuleRow& r) {
    const int W = r.W, hs = r.hstride, nh = r.nh;
    const __m256i idx =
        _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(hs));
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 tau = _mm256_set1_ps(r.tau), gv = _mm256_set1_ps(r.gain_vis),
                 gi = _mm256_set1_ps(r.gain_ir);
    int x = 0;
    for (; x + 8 <= W; x += 8) {
        __m256 y0 = _mm256_set1_ps(r.b2[0]), y1 = _mm256_set1_ps(r.b2[1]);
        const float* h = r.hplane > 0 ? r.h + x : r.h + (ptrdiff_t)x * hs;
        for (int c = 0; c < nh; ++c) {
            const __m256 hv = r.hplane > 0 ? _mm256_loadu_ps(h + (ptrdiff_t)c * r.hplane)
                                           : _mm256_i32gather_ps(h + c, idx, 4);
            y0 = _mm256_fmadd_ps(_mm256_set1_ps(r.w2[c]), hv, y0);
            y1 = _mm256_fmadd_ps(_mm256_set1_ps(r.w2[nh + c]), hv, y1);
        }
        const __m256 a_ = _mm256_loadu_ps(r.ir + x), b_ = _mm256_loadu_ps(r.vis + x);
        __m256 f;
        if (r.head == HEAD_BLEND) {
            const __m256 w = sigmoid256(y0);
            f = clamp01(_mm256_add_ps(
                _mm256_add_ps(_mm256_mul_ps(w, a_), _mm256_mul_ps(_mm256_sub_ps(one, w), b_)), y1));
        } else {
            const __m256 g = _mm256_loadu_ps(r.tone[0] + x), a = _mm256_loadu_ps(r.tone[1] + x);
            const __m256 mu = _mm256_loadu_ps(r.tone[2] + x), c = _mm256_loadu_ps(r.tone[3] + x);
            __m256 la = a_, lb = b_;
            if (r.head == HEAD_LAYERS)
                la = _mm256_loadu_ps(r.l_ir + x), lb = _mm256_loadu_ps(r.l_vis + x);
            const __m256 w =
                sigmoid256(_mm256_add_ps(_mm256_mul_ps(tau, _mm256_sub_ps(la, lb)), y0));
            const __m256 sel =
                _mm256_add_ps(_mm256_mul_ps(w, la), _mm256_mul_ps(_mm256_sub_ps(one, w), lb));
            const __m256 add = clamp01(_mm256_sub_ps(_mm256_add_ps(la, lb), c));
            __m256 m =
                _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(one, a), sel), _mm256_mul_ps(a, add));
            if (r.head == HEAD_LAYERS) {
                m = _mm256_add_ps(m, _mm256_mul_ps(gv, _mm256_sub_ps(b_, lb)));
                m = _mm256_add_ps(m, _mm256_mul_ps(gi, _mm256_sub_ps(a_, la)));
            }
            f = knee256(
                _mm256_add_ps(_mm256_add_ps(mu, _mm256_mul_ps(g, _mm256_sub_ps(m, mu))), y1));
        }
        _mm256_storeu_ps(r.out + x, f);
    }
    if (x < W) {  // the last W % 8 pixels: the scalar rule
        RuleRow t = r;
        t.W = W - x;
        t.h = r.hplane > 0 ? r.h + x : r.h + (ptrdiff_t)x * hs;
        t.ir = r.ir + x, t.vis = r.vis + x, t.out = r.out + x;
        if (r.l_ir) t.l_ir = r.l_ir + x, t.l_vis = r.l_vis + x;
        for (int k = 0; k < 4; ++k)
            if (r.tone[k]) t.tone[k] = r.tone[k] + x;
        rule_row_scalar(t);
    }
}

void box_hmean_avx2(const float* src, int W, int r, float* tmp, float* dst) {
    for (int i = 0; i < r; ++i) tmp[i] = src[0], tmp[W + r + i] = src[W - 1];  // replicate padding
    __builtin_memcpy(tmp + r, src, sizeof(float) * (size_t)W);
    const __m256 n = _mm256_set1_ps(float(2 * r + 1));
    int x = 0;
    for (; x + 8 <= W; x += 8) {
        __m256 s = _mm256_loadu_ps(tmp + x);
        for (int j = 1; j <= 2 * r; ++j) s = _mm256_add_ps(s, _mm256_loadu_ps(tmp + x + j));
        _mm256_storeu_ps(dst + x, _mm256_div_ps(s, n));
    }
    for (; x < W; ++x) {
        float s = tmp[x];
        for (int j = 1; j <= 2 * r; ++j) s += tmp[x + j];
        dst[x] = s / float(2 * r + 1);
    }
}

void box_vmean_avx2(const float* const* rows, int n, int W, float* dst) {
    const __m256 nv = _mm256_set1_ps(float(n));
    int x = 0;
    for (; x + 8 <= W; x += 8) {
        __m256 s = _mm256_loadu_ps(rows[0] + x);
        for (int j = 1; j < n; ++j) s = _mm256_add_ps(s, _mm256_loadu_ps(rows[j] + x));
        _mm256_storeu_ps(dst + x, _mm256_div_ps(s, nv));
    }
    for (; x < W; ++x) {
        float s = rows[0][x];
        for (int j = 1; j < n; ++j) s += rows[j][x];
        dst[x] = s / float(n);
    }
}

void quant_row_avx2(const float* src, int W, float mul, float add, int32_t* dst) {
    const __m256 m = _mm256_set1_ps(mul), a = _mm256_set1_ps(add), lo = _mm256_setzero_ps(),
                 hi = _mm256_set1_ps(255.0f);
    int x = 0;
    for (; x + 8 <= W; x += 8) {
        const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(src + x), m), a);
        const __m256 c = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
        _mm256_storeu_si256((__m256i*)(dst + x), _mm256_cvtps_epi32(c));  // round half to even
    }
    for (; x < W; ++x) {
        float v = src[x] * mul + add;
        v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
        dst[x] = _mm_cvtss_si32(_mm_set_ss(v));  // round half to even, as above
    }
}

}  // namespace tokfuse

#else  // not x86-64: no AVX2 kernel

namespace tokfuse {
bool render_avx2_compiled() { return false; }
void conv_row_avx2(const float* const*, int, const int*, int, const float*, const float*, float*,
                   int, int, int, int) {}
void rule_row_avx2(const RuleRow&) {}
void box_hmean_avx2(const float*, int, int, float*, float*) {}
void box_vmean_avx2(const float* const*, int, int, float*) {}
void quant_row_avx2(const float*, int, float, float, int32_t*) {}
}  // namespace tokfuse

#endif
