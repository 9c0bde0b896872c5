// The int8 fused render: driver (row tiles, the same ring buffers as render_cpu.cpp, in uint8) and
// the scalar quantised convolution. See render.h; the AVX-512 VNNI kernel is in render_vnni.cpp.
//
// Per tile of output rows [y0, y1) of one image (cf. render_cpu.cpp), rows group-planar (render.h):
//   X  ring of 3 rows: one group (q_ir, q_vis, 0, 0), 0 outside the image
//   H1 ring of 3 rows: detail conv1(X), uint8, c1.cop / 4 groups
//   D  ring of 3 rows: detail conv2(H1), then q_base, q_ir, q_vis as channels C, C + 1, C + 2;
//                      outside the image every channel's zero point (base_zero at the base channel)
//   h  one row:        head conv1(D), float32, channel-planar, then the float32 1x1 convolution and
//                      the head's rule.
// Integer accumulation is exact, and the dequantisation is elementwise with the operation order of
// render_int8_ref (tokfuse_rt/backends/render_int8.py), so the scalar and VNNI kernels agree bit
// for bit and the PyTorch reference agrees up to the float32 rule.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "nn_search.h"
#include "render.h"
#include "render_tile.h"

namespace tokfuse {

bool cpu_has_avx512vnni() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    static const bool ok = [] {
        if (!cpu_has_avx512f()) return false;  // also honours TOKFUSE_NO_AVX2=1
        __builtin_cpu_init();
        return (bool)__builtin_cpu_supports("avx512vnni") &&
               (bool)__builtin_cpu_supports("avx512bw");
    }();
    return ok;
#else
    return false;
#endif
}

void qconv_row_scalar(const uint8_t* const* in, int gstride, int ngroups, const int8_t* w,
                      const int32_t* acc0, const float* scale, const float* bias, const float* inv,
                      void* out, int ostride, int W, int cop) {
    std::vector<int32_t> acc(cop);
    for (int x = 0; x < W; ++x) {
        for (int co = 0; co < cop; ++co) acc[co] = acc0[co];
        for (int k = 0; k < 9; ++k)
            for (int g = 0; g < ngroups; ++g) {
                const uint8_t* a = in[k / 3] + ((ptrdiff_t)g * gstride + x + k % 3) * 4;
                const int8_t* wv = w + ((ptrdiff_t)k * ngroups + g) * cop * 4;
                for (int co = 0; co < cop; ++co, wv += 4)
                    acc[co] += (int32_t)a[0] * wv[0] + (int32_t)a[1] * wv[1] +
                               (int32_t)a[2] * wv[2] + (int32_t)a[3] * wv[3];
            }
        for (int co = 0; co < cop; ++co) {
            const float v = std::max((float)acc[co] * scale[co] + bias[co], 0.0f);
            if (inv)
                static_cast<uint8_t*>(out)[((ptrdiff_t)(co / 4) * ostride + x) * 4 + co % 4] =
                    (uint8_t)std::nearbyint(std::min(v * inv[co], 255.0f));
            else
                static_cast<float*>(out)[(ptrdiff_t)co * ostride + x] = v;
        }
    }
}

namespace {

struct QScratch {
    std::vector<uint8_t> x, h1, d;
    std::vector<int32_t> dpad;
    std::vector<float> h;
    std::vector<int32_t> qa, qb, qc;
    TileRule rule;
};

void fill32(uint8_t* p, int32_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) std::memcpy(p + 4 * i, &v, 4);
}

void render_tile_q(const QuantModel& q, QConvRowFn conv, RuleRowFn rule, QuantRowFn quant,
                   const float* ir, const float* vis, const float* base, const float* tone, int H,
                   int W, int y0, int y1, float* out, QScratch& s) {
    const RenderModel& m = *q.m;
    const int C = m.C;
    const int GS = W + 2 + 16;                               // pixels per group plane
    const int G1 = q.c1.cop / 4;                             // H1 groups
    const int GD = std::max(q.c2.cop / 4, (C + 3 + 3) / 4);  // D groups
    const size_t XR = (size_t)GS * 4, H1R = XR * G1, DR = XR * GD;
    const int HP = W + 16;  // h: channel-planar, HP floats per channel
    s.x.assign(3 * XR, 0);
    s.h1.assign(3 * H1R, 0);
    s.dpad.assign(GD, 0);  // each D group's padding pixel: the zero points (base_zero at base)
    {
        uint8_t b[4] = {0, 0, 0, 0};
        b[C % 4] = (uint8_t)q.base_zero;
        std::memcpy(&s.dpad[C / 4], b, 4);
    }
    s.d.resize(3 * DR);
    for (int r = 0; r < 3; ++r)
        for (int g = 0; g < GD; ++g) fill32(s.d.data() + r * DR + g * XR, s.dpad[g], GS);
    s.h.assign((size_t)q.c3.cop * HP, 0.f);
    s.qa.resize(W), s.qb.resize(W), s.qc.resize(W);
    auto xrow = [&](int r) { return s.x.data() + (size_t)ring(r) * XR; };
    auto h1row = [&](int r) { return s.h1.data() + (size_t)ring(r) * H1R; };
    auto drow = [&](int r) { return s.d.data() + (size_t)ring(r) * DR; };

    int x_next = y0 - 3, h_next = y0 - 2, d_next = y0 - 1;
    auto make_x = [&](int r) {
        uint8_t* o = xrow(r);
        if (r < 0 || r >= H) {
            std::memset(o, 0, XR);
            return;
        }
        quant(ir + (size_t)r * W, W, 255.0f, 0.0f, s.qa.data());
        quant(vis + (size_t)r * W, W, 255.0f, 0.0f, s.qb.data());
        for (int x = 0; x < W; ++x)
            o[(x + 1) * 4] = (uint8_t)s.qa[x], o[(x + 1) * 4 + 1] = (uint8_t)s.qb[x];
    };
    auto make_h1 = [&](int r) {
        while (x_next <= r + 1) make_x(x_next++);
        uint8_t* o = h1row(r);
        if (r < 0 || r >= H) {
            std::memset(o, 0, H1R);
            return;
        }
        const uint8_t* in[3] = {xrow(r - 1), xrow(r), xrow(r + 1)};
        const QConv& c = q.c1;
        conv(in, GS, c.ngroups, c.w, c.acc0, c.scale, c.bias, c.inv, o + 4, GS, W, c.cop);
    };
    auto make_d = [&](int r) {
        while (h_next <= r + 1) make_h1(h_next++);
        uint8_t* o = drow(r);
        if (r < 0 || r >= H) {
            for (int g = 0; g < GD; ++g) fill32(o + g * XR, s.dpad[g], GS);
            return;
        }
        const uint8_t* in[3] = {h1row(r - 1), h1row(r), h1row(r + 1)};
        const QConv& c = q.c2;
        conv(in, GS, c.ngroups, c.w, c.acc0, c.scale, c.bias, c.inv, o + 4, GS, W, c.cop);
        // then the base channel and the sources (X's row r holds q_ir, q_vis: make_x ran up to r +
        // 2)
        quant(base + (size_t)r * W, W, q.base_inv, q.base_zero, s.qc.data());
        const uint8_t* xr = xrow(r) + 4;
        uint8_t* ch[3];
        for (int i = 0; i < 3; ++i) ch[i] = o + ((size_t)(C + i) / 4 * GS + 1) * 4 + (C + i) % 4;
        for (int x = 0; x < W; ++x)
            ch[0][4 * x] = (uint8_t)s.qc[x], ch[1][4 * x] = xr[4 * x], ch[2][4 * x] = xr[4 * x + 1];
    };
    tile_rule_begin(s.rule, m, ir, vis, base, tone, H, W, y0, y1, out, s.h.data(), 0, HP);
    for (int y = y0; y < y1; ++y) {
        while (d_next <= y + 1) make_d(d_next++);
        const uint8_t* in[3] = {drow(y - 1), drow(y), drow(y + 1)};
        const QConv& c = q.c3;
        conv(in, GS, c.ngroups, c.w, c.acc0, c.scale, c.bias, nullptr, s.h.data(), HP, W, c.cop);
        rule(tile_rule_row(s.rule, y));
    }
}

}  // namespace

void render_int8_cpu(const QuantModel& q, const float* ir, const float* vis, const float* base,
                     const float* tone, int64_t B, int H, int W, float* out, int num_threads,
                     int impl, int tile_rows) {
    const QConvRowFn conv = impl == RENDER_IMPL_VNNI ? qconv_row_vnni : qconv_row_scalar;
    // the rule: the widest path the CPU has, whatever the convolutions' impl (so both give one
    // result)
    const bool avx2 = cpu_has_avx2_fma() && render_avx2_compiled();
    const bool avx512 = avx2 && cpu_has_avx512f() && render_avx512_compiled();
    const RuleRowFn rule = avx512 ? rule_row_avx512 : avx2 ? rule_row_avx2 : rule_row_scalar;
    const QuantRowFn quant = avx2 ? quant_row_avx2 : quant_row_scalar;
    const size_t HW = (size_t)H * W;
    std::vector<QScratch> scratch(resolve_threads(num_threads));
    parallel_tiles(B, H, tile_rows, num_threads, [&](int t, int64_t b, int y0, int y1) {
        const int nb = tone ? 1 : q.m->nbase;  // channels of base per image
        render_tile_q(q, conv, rule, quant, ir + b * HW, vis + b * HW, base + b * nb * HW,
                      tone ? tone + 4 * b : nullptr, H, W, y0, y1, out + b * HW, scratch[t]);
    });
}

}  // namespace tokfuse
