// The fused native render: driver (row tiles on the thread pool, the base layers' box filter) and
// the scalar kernels (portable C++, separate multiply and add). See render.h; AVX2 kernels in
// render_avx2.cpp.
//
// Per tile of output rows [y0, y1) of one image, everything stays in per-thread buffers a few rows
// high, never a full-size intermediate:
//   X  ring of 3 rows: (ir, vis) channel-last, zero outside the image (the convolutions' padding)
//   H1 ring of 3 rows: relu(detail conv1(X))                  C channels
//   D  ring of 3 rows: relu(detail conv2(H1)), base_up[0], ir, vis     C + 3 channels
//   h  one row:        relu(head conv1(D))                    Ch channels
//   then head conv2 (1x1) and the head's rule, written to the output row.
// Rows are produced on demand as the output row advances (each D row needs H1 rows r-1..r+1, each
// H1 row X rows r-1..r+1), so a tile computes 2 extra D rows and 4 extra H1 rows at its top edge.
// "layers": the two separable box passes of ir and vis (replicate padding) for the tile's rows,
// from the 4r source rows around it, in tile-sized buffers.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <new>
#include <vector>

#include "nn_search.h"
#include "render.h"
#include "render_tile.h"
#include "thread_pool.h"

namespace tokfuse {

bool cpu_has_avx512f() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    static const bool ok = [] {
        if (!cpu_has_avx2_fma()) return false;  // also honours TOKFUSE_NO_AVX2=1
        __builtin_cpu_init();
        return (bool)__builtin_cpu_supports("avx512f");
    }();
    return ok;
#else
    return false;
#endif
}

void conv_row_scalar(const float* const* in, int istride, const int* off, int nin, const float* w,
                     const float* bias, float* out, int ostride, int W, int cop, int relu) {
    std::vector<float> acc(cop);
    for (int x = 0; x < W; ++x) {
        for (int co = 0; co < cop; ++co) acc[co] = bias[co];
        for (int ky = 0; ky < 3; ++ky)
            for (int kx = 0; kx < 3; ++kx) {
                const float* px = in[ky] + (ptrdiff_t)(x + kx) * istride;
                const float* wt = w + (ptrdiff_t)(ky * 3 + kx) * nin * cop;
                for (int j = 0; j < nin; ++j, wt += cop) {
                    const float v = px[off[j]];
                    for (int co = 0; co < cop; ++co) acc[co] += wt[co] * v;
                }
            }
        float* o = out + (ptrdiff_t)x * ostride;
        for (int co = 0; co < cop; ++co) o[co] = relu ? std::max(acc[co], 0.0f) : acc[co];
    }
}

namespace {

inline float sigmoid1(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float clamp01(float x) { return std::min(std::max(x, 0.0f), 1.0f); }
inline float knee1(float x) {  // tone.py's knee: KNEE = 0.9, 1 - KNEE = 0.1 (float32)
    return x > 0.9f ? 0.9f + 0.1f * std::tanh((x - 0.9f) / 0.1f) : std::max(x, 0.0f);
}

}  // namespace

void rule_row_scalar(const RuleRow& r) {
    for (int x = 0; x < r.W; ++x) {
        const float* h = r.hplane > 0 ? r.h + x : r.h + (ptrdiff_t)x * r.hstride;
        const ptrdiff_t hs = r.hplane > 0 ? r.hplane : 1;
        float y0 = r.b2[0], y1 = r.b2[1];
        for (int c = 0; c < r.nh; ++c) {
            y0 += r.w2[c] * h[c * hs];
            y1 += r.w2[r.nh + c] * h[c * hs];
        }
        const float A = r.ir[x], Bv = r.vis[x];
        float f;
        if (r.head == HEAD_BLEND) {
            const float w = sigmoid1(y0);
            f = clamp01(w * A + (1.0f - w) * Bv + y1);
        } else {
            const float g = r.tone[0][x], a = r.tone[1][x], mu = r.tone[2][x], c = r.tone[3][x];
            float la = A, lb = Bv;
            if (r.head == HEAD_LAYERS) la = r.l_ir[x], lb = r.l_vis[x];
            const float w = sigmoid1(r.tau * (la - lb) + y0);
            const float sel = w * la + (1.0f - w) * lb;
            const float add = clamp01(la + lb - c);
            float m = (1.0f - a) * sel + a * add;
            if (r.head == HEAD_LAYERS) {
                m = m + r.gain_vis * (Bv - lb);
                m = m + r.gain_ir * (A - la);
            }
            f = knee1(mu + g * (m - mu) + y1);
        }
        r.out[x] = f;
    }
}

void box_hmean_scalar(const float* src, int W, int r, float* tmp, float* dst) {
    for (int i = 0; i < W + 2 * r; ++i) tmp[i] = src[std::min(std::max(i - r, 0), W - 1)];
    for (int x = 0; x < W; ++x) {
        float s = tmp[x];
        for (int j = 1; j <= 2 * r; ++j) s += tmp[x + j];
        dst[x] = s / float(2 * r + 1);
    }
}

void box_vmean_scalar(const float* const* rows, int n, int W, float* dst) {
    for (int x = 0; x < W; ++x) {
        float s = rows[0][x];
        for (int j = 1; j < n; ++j) s += rows[j][x];
        dst[x] = s / float(n);
    }
}

void quant_row_scalar(const float* src, int W, float mul, float add, int32_t* dst) {
    for (int x = 0; x < W; ++x)
        dst[x] = (int32_t)std::nearbyint(std::min(std::max(src[x] * mul + add, 0.0f), 255.0f));
}

const float* base_layers_tile(const float* ir, const float* vis, int H, int W, int R, int y0,
                              int y1, LayerBufs& s) {
    const bool avx2 = cpu_has_avx2_fma() && render_avx2_compiled();
    const bool avx512 = avx2 && cpu_has_avx512f() && render_avx512_compiled();
    const BoxHFn hmean = avx512 ? box_hmean_avx512 : avx2 ? box_hmean_avx2 : box_hmean_scalar;
    const BoxVFn vmean = avx512 ? box_vmean_avx512 : avx2 ? box_vmean_avx2 : box_vmean_scalar;
    const int T = y1 - y0;
    // rows [a1, a2) of the first horizontal pass, [c1, c2) of the vertical and second horizontal
    const int a1 = std::max(0, y0 - 2 * R), a2 = std::min(H, y1 + 2 * R);
    const int c1 = std::max(0, y0 - R), c2 = std::min(H, y1 + R);
    const int na = a2 - a1, nc = c2 - c1;
    s.b1.resize((size_t)na * W);
    s.b2.resize((size_t)nc * W);
    s.b3.resize((size_t)nc * W);
    s.lo.resize((size_t)2 * T * W);
    s.tmp.resize((size_t)W + 2 * R);
    s.rows.resize((size_t)2 * R + 1);
    // rows clamp(y - R .. y + R) of an image stored from row `first` of `buf`
    auto window = [&](const float* buf, int first, int y) {
        for (int j = 0; j <= 2 * R; ++j)
            s.rows[j] = buf + (ptrdiff_t)(std::min(std::max(y - R + j, 0), H - 1) - first) * W;
        return s.rows.data();
    };
    for (int ch = 0; ch < 2; ++ch) {
        const float* src = ch == 0 ? ir : vis;
        for (int i = 0; i < na; ++i)
            hmean(src + (size_t)(a1 + i) * W, W, R, s.tmp.data(), s.b1.data() + (size_t)i * W);
        for (int i = 0; i < nc; ++i)
            vmean(window(s.b1.data(), a1, c1 + i), 2 * R + 1, W, s.b2.data() + (size_t)i * W);
        for (int i = 0; i < nc; ++i)
            hmean(s.b2.data() + (size_t)i * W, W, R, s.tmp.data(), s.b3.data() + (size_t)i * W);
        for (int t = 0; t < T; ++t)
            vmean(window(s.b3.data(), c1, y0 + t), 2 * R + 1, W,
                  s.lo.data() + ((size_t)ch * T + t) * W);
    }
    return s.lo.data();
}

int resolve_threads(int num_threads) { return pool_threads(num_threads); }

void tile_rule_begin(TileRule& r, const RenderModel& m, const float* ir, const float* vis,
                     const float* base, const float* tone, int H, int W, int y0, int y1, float* out,
                     const float* h, int hstride, int hplane) {
    r.m = &m, r.ir = ir, r.vis = vis, r.base = base, r.tone = m.nbase == 5 ? tone : nullptr;
    r.out = out, r.HW = (size_t)H * W, r.y0 = y0, r.T = y1 - y0;
    r.lo = m.head == HEAD_LAYERS ? base_layers_tile(ir, vis, H, W, m.radius, y0, y1, r.layers)
                                 : nullptr;
    if (r.tone) {
        r.tone_rows.resize((size_t)4 * W);
        for (int k = 0; k < 4; ++k)
            std::fill(r.tone_rows.begin() + (size_t)k * W,
                      r.tone_rows.begin() + (size_t)(k + 1) * W, r.tone[k]);
    }
    RuleRow& rr = r.rr;
    rr = RuleRow{};
    rr.head = m.head, rr.W = W, rr.h = h, rr.hstride = hstride, rr.hplane = hplane, rr.nh = m.Ch;
    rr.w2 = m.w4, rr.b2 = m.b4, rr.tau = m.tau, rr.gain_vis = m.gain_vis, rr.gain_ir = m.gain_ir;
}

const RuleRow& tile_rule_row(TileRule& r, int y) {
    RuleRow& rr = r.rr;
    const int W = rr.W;
    rr.ir = r.ir + (size_t)y * W, rr.vis = r.vis + (size_t)y * W, rr.out = r.out + (size_t)y * W;
    if (r.lo) {
        rr.l_ir = r.lo + (size_t)(y - r.y0) * W;
        rr.l_vis = rr.l_ir + (size_t)r.T * W;
    }
    for (int k = 0; k < 4; ++k)
        rr.tone[k] = r.m->nbase != 5 ? nullptr
                     : r.tone        ? r.tone_rows.data() + (size_t)k * W
                                     : r.base + (k + 1) * r.HW + (size_t)y * W;
    return rr;
}

void parallel_tiles(int64_t B, int H, int tile_rows, int num_threads,
                    const std::function<void(int thread, int64_t b, int y0, int y1)>& tile) {
    const int nt = resolve_threads(num_threads);
    int T = tile_rows;
    if (T <= 0) {  // about 32 rows per tile, a multiple of the thread count per image
        const int per_image = nt * std::max(1, (int)std::lround((double)H / (32.0 * nt)));
        T = std::max(1, (H + per_image - 1) / per_image);
    }
    const int tiles = (H + T - 1) / T;
    parallel_for(nt, B * tiles, [&](int thread, int64_t it) {
        const int y0 = (int)(it % tiles) * T;
        tile(thread, it / tiles, y0, std::min(H, y0 + T));
    });
}

namespace {

struct Scratch {
    std::vector<float> x, h1, d, h;
    TileRule rule;
};

void render_tile(const RenderModel& m, ConvRowFn conv, RuleRowFn rule, const float* ir,
                 const float* vis, const float* base, const float* tone, int H, int W, int y0,
                 int y1, float* out, Scratch& s) {
    const int Wp = W + 2, C = m.C, Cp = m.Cp, Chp = m.Chp, Dst = Cp + 8;
    // channel offsets inside a pixel of X, H1 and D
    int off1[2] = {0, 1};
    std::vector<int> off2(C), off3(C + 3);
    for (int c = 0; c < C; ++c) off2[c] = off3[c] = c;
    off3[C] = Cp, off3[C + 1] = Cp + 1, off3[C + 2] = Cp + 2;
    s.x.assign((size_t)3 * Wp * 2, 0.f);
    s.h1.assign((size_t)3 * Wp * Cp, 0.f);
    s.d.assign((size_t)3 * Wp * Dst, 0.f);
    s.h.assign((size_t)W * Chp + 8, 0.f);
    auto xrow = [&](int r) { return s.x.data() + (size_t)ring(r) * Wp * 2; };
    auto h1row = [&](int r) { return s.h1.data() + (size_t)ring(r) * Wp * Cp; };
    auto drow = [&](int r) { return s.d.data() + (size_t)ring(r) * Wp * Dst; };

    int x_next = y0 - 3, h_next = y0 - 2, d_next = y0 - 1;
    auto make_x = [&](int r) {
        float* o = xrow(r);
        if (r < 0 || r >= H) {
            std::fill(o, o + (size_t)Wp * 2, 0.f);
            return;
        }
        const float* a = ir + (size_t)r * W;
        const float* b = vis + (size_t)r * W;
        for (int x = 0; x < W; ++x) o[(x + 1) * 2] = a[x], o[(x + 1) * 2 + 1] = b[x];
    };
    auto make_h1 = [&](int r) {
        while (x_next <= r + 1) make_x(x_next++);
        float* o = h1row(r);
        if (r < 0 || r >= H) {
            std::fill(o, o + (size_t)Wp * Cp, 0.f);
            return;
        }
        const float* in[3] = {xrow(r - 1), xrow(r), xrow(r + 1)};
        conv(in, 2, off1, 2, m.w1, m.b1, o + Cp, Cp, W, Cp, 1);
    };
    auto make_d = [&](int r) {
        while (h_next <= r + 1) make_h1(h_next++);
        float* o = drow(r);
        if (r < 0 || r >= H) {
            std::fill(o, o + (size_t)Wp * Dst, 0.f);
            return;
        }
        const float* in[3] = {h1row(r - 1), h1row(r), h1row(r + 1)};
        conv(in, Cp, off2.data(), C, m.w2, m.b2, o + Dst, Dst, W, Cp, 1);
        const float* b0 = base + (size_t)r * W;
        const float* a = ir + (size_t)r * W;
        const float* b = vis + (size_t)r * W;
        for (int x = 0; x < W; ++x) {
            float* p = o + (size_t)(x + 1) * Dst + Cp;
            p[0] = b0[x], p[1] = a[x], p[2] = b[x];
        }
    };
    tile_rule_begin(s.rule, m, ir, vis, base, tone, H, W, y0, y1, out, s.h.data(), Chp, 0);
    for (int y = y0; y < y1; ++y) {
        while (d_next <= y + 1) make_d(d_next++);
        const float* in[3] = {drow(y - 1), drow(y), drow(y + 1)};
        conv(in, Dst, off3.data(), C + 3, m.w3, m.b3, s.h.data(), Chp, W, Chp, 1);
        rule(tile_rule_row(s.rule, y));
    }
}

}  // namespace

void render_cpu(const RenderModel& m, const float* ir, const float* vis, const float* base,
                const float* tone, int64_t B, int H, int W, float* out, int num_threads, int impl,
                int tile_rows) {
    const bool avx2 = impl == IMPL_AVX2 || impl == RENDER_IMPL_AVX512;
    const ConvRowFn conv = impl == RENDER_IMPL_AVX512 ? conv_row_avx512
                           : avx2                     ? conv_row_avx2
                                                      : conv_row_scalar;
    const RuleRowFn rule = impl == RENDER_IMPL_AVX512 ? rule_row_avx512
                           : avx2                     ? rule_row_avx2
                                                      : rule_row_scalar;
    const size_t HW = (size_t)H * W;
    std::vector<Scratch> scratch(resolve_threads(num_threads));
    parallel_tiles(B, H, tile_rows, num_threads, [&](int t, int64_t b, int y0, int y1) {
        const int nb = tone ? 1 : m.nbase;  // channels of base per image
        render_tile(m, conv, rule, ir + b * HW, vis + b * HW, base + b * nb * HW,
                    tone ? tone + 4 * b : nullptr, H, W, y0, y1, out + b * HW, scratch[t]);
    });
}

}  // namespace tokfuse
