// The int8 fused render: driver (row tiles, the same ring buffers as render_cpu.cpp, in uint8) and
// the scalar quantised convolution. See render.h; the AVX-512 VNNI kernel is in render_vnni.cpp.
//
// Per tile of output rows [y0, y1) of one image (cf. render_cpu.cpp):
//   X  ring of 3 rows: (q_ir, q_vis, 0, 0) per pixel, 0 outside the image
//   H1 ring of 3 rows: detail conv1(X), uint8, c1.cop bytes per pixel
//   D  ring of 3 rows: detail conv2(H1), then q_base, q_ir, q_vis; outside the image every
//                      channel's zero point (base_zero for the base channel, else 0)
//   h  one row:        head conv1(D), float32, then the float32 1x1 convolution and rule.
// Integer accumulation is exact, and the dequantisation is elementwise with the operation order of
// render_int8_ref (tokfuse_rt/backends/render_int8.py), so the scalar and VNNI kernels agree bit for
// bit and the PyTorch reference agrees up to the float32 rule.
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

void qconv_row_scalar(const uint8_t* const* in, int istride, int ngroups, const int8_t* w,
                      const int32_t* acc0, const float* scale, const float* bias, const float* inv,
                      void* out, int ostride, int W, int cop) {
    std::vector<int32_t> acc(cop);
    const int nin = 4 * ngroups;
    for (int x = 0; x < W; ++x) {
        for (int co = 0; co < cop; ++co) acc[co] = acc0[co];
        for (int k = 0; k < 9; ++k) {
            const uint8_t* px = in[k / 3] + (ptrdiff_t)(x + k % 3) * istride;
            const int8_t* wk = w + (ptrdiff_t)k * nin * cop;
            for (int g = 0; g < ngroups; ++g)
                for (int co = 0; co < cop; ++co) {
                    const int8_t* wv = wk + ((ptrdiff_t)g * cop + co) * 4;
                    const uint8_t* a = px + 4 * g;
                    acc[co] += (int32_t)a[0] * wv[0] + (int32_t)a[1] * wv[1] +
                               (int32_t)a[2] * wv[2] + (int32_t)a[3] * wv[3];
                }
        }
        for (int co = 0; co < cop; ++co) {
            const float v = std::max((float)acc[co] * scale[co] + bias[co], 0.0f);
            if (inv)
                static_cast<uint8_t*>(out)[(ptrdiff_t)x * ostride + co] =
                    (uint8_t)std::nearbyint(std::min(v * inv[co], 255.0f));
            else
                static_cast<float*>(out)[(ptrdiff_t)x * ostride + co] = v;
        }
    }
}

namespace {

inline int ring(int r) { return ((r % 3) + 3) % 3; }

struct QScratch {
    std::vector<uint8_t> x, h1, d, dpad;
    std::vector<float> h;
    std::vector<int32_t> qa, qb, qc;
    LayerBufs layers;
};

void render_tile_q(const QuantModel& q, QConvRowFn conv, RuleRowFn rule, QuantRowFn quant,
                   const float* ir,
                   const float* vis, const float* base, int H, int W, int y0, int y1, float* out,
                   QScratch& s) {
    const RenderModel& m = *q.m;
    const int Wp = W + 2, C = m.C, S1 = q.c1.cop, S3 = q.c3.cop, R = m.radius, T = y1 - y0;
    const int Dst = std::max(q.c2.cop, (C + 3 + 3) / 4 * 4);
    const size_t HW = (size_t)H * W;
    const uint8_t bz = (uint8_t)q.base_zero;
    s.x.assign((size_t)3 * Wp * 4, 0);
    s.h1.assign((size_t)3 * Wp * S1, 0);
    s.dpad.assign((size_t)Dst, 0);
    s.dpad[C] = bz;
    s.d.resize((size_t)3 * Wp * Dst);
    for (size_t i = 0; i < (size_t)3 * Wp; ++i) std::memcpy(&s.d[i * Dst], s.dpad.data(), Dst);
    s.h.assign((size_t)W * S3 + 16, 0.f);
    s.qa.resize(W), s.qb.resize(W), s.qc.resize(W);
    auto xrow = [&](int r) { return s.x.data() + (size_t)ring(r) * Wp * 4; };
    auto h1row = [&](int r) { return s.h1.data() + (size_t)ring(r) * Wp * S1; };
    auto drow = [&](int r) { return s.d.data() + (size_t)ring(r) * Wp * Dst; };

    const float* l_ir = nullptr;
    const float* l_vis = nullptr;
    if (m.head == HEAD_LAYERS) {
        l_ir = base_layers_tile(ir, vis, H, W, R, y0, y1, s.layers);
        l_vis = l_ir + (size_t)T * W;
    }

    int x_next = y0 - 3, h_next = y0 - 2, d_next = y0 - 1;
    auto make_x = [&](int r) {
        uint8_t* o = xrow(r);
        if (r < 0 || r >= H) {
            std::fill(o, o + (size_t)Wp * 4, 0);
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
            std::fill(o, o + (size_t)Wp * S1, 0);
            return;
        }
        const uint8_t* in[3] = {xrow(r - 1), xrow(r), xrow(r + 1)};
        const QConv& c = q.c1;
        conv(in, 4, c.ngroups, c.w, c.acc0, c.scale, c.bias, c.inv, o + S1, S1, W, c.cop);
    };
    auto make_d = [&](int r) {
        while (h_next <= r + 1) make_h1(h_next++);
        uint8_t* o = drow(r);
        if (r < 0 || r >= H) {
            for (int x = 0; x < Wp; ++x) std::memcpy(o + (size_t)x * Dst, s.dpad.data(), Dst);
            return;
        }
        const uint8_t* in[3] = {h1row(r - 1), h1row(r), h1row(r + 1)};
        const QConv& c = q.c2;
        conv(in, S1, c.ngroups, c.w, c.acc0, c.scale, c.bias, c.inv, o + Dst, Dst, W, c.cop);
        // X's row r already holds q_ir and q_vis (make_x ran for rows up to r + 2)
        quant(base + (size_t)r * W, W, q.base_inv, q.base_zero, s.qc.data());
        const uint8_t* xr = xrow(r) + 4;
        for (int x = 0; x < W; ++x) {
            uint8_t* p = o + (size_t)(x + 1) * Dst + C;
            p[0] = (uint8_t)s.qc[x], p[1] = xr[4 * x], p[2] = xr[4 * x + 1];
        }
    };
    RuleRow rr{};
    rr.head = m.head, rr.W = W, rr.h = s.h.data(), rr.hstride = S3, rr.nh = m.Ch, rr.w2 = m.w4,
    rr.b2 = m.b4;
    rr.tau = m.tau, rr.gain_vis = m.gain_vis, rr.gain_ir = m.gain_ir;
    for (int y = y0; y < y1; ++y) {
        while (d_next <= y + 1) make_d(d_next++);
        const uint8_t* in[3] = {drow(y - 1), drow(y), drow(y + 1)};
        const QConv& c = q.c3;
        conv(in, Dst, c.ngroups, c.w, c.acc0, c.scale, c.bias, nullptr, s.h.data(), S3, W, c.cop);
        rr.ir = ir + (size_t)y * W, rr.vis = vis + (size_t)y * W, rr.out = out + (size_t)y * W;
        if (l_ir) rr.l_ir = l_ir + (size_t)(y - y0) * W, rr.l_vis = l_vis + (size_t)(y - y0) * W;
        for (int k = 0; k < 4; ++k)
            rr.tone[k] = m.nbase == 5 ? base + (k + 1) * HW + (size_t)y * W : nullptr;
        rule(rr);
    }
}

}  // namespace

void render_int8_cpu(const QuantModel& q, const float* ir, const float* vis, const float* base,
                     int64_t B, int H, int W, float* out, int num_threads, int impl,
                     int tile_rows) {
    const QConvRowFn conv = impl == RENDER_IMPL_VNNI ? qconv_row_vnni : qconv_row_scalar;
    const bool avx2 = cpu_has_avx2_fma() && render_avx2_compiled();
    const RuleRowFn rule = avx2 ? rule_row_avx2 : rule_row_scalar;
    const QuantRowFn quant = avx2 ? quant_row_avx2 : quant_row_scalar;
    const size_t HW = (size_t)H * W;
    std::vector<QScratch> scratch(resolve_threads(num_threads));
    parallel_tiles(B, H, tile_rows, num_threads, [&](int t, int64_t b, int y0, int y1) {
        render_tile_q(q, conv, rule, quant, ir + b * HW, vis + b * HW, base + b * q.m->nbase * HW, H, W,
                      y0, y1, out + b * HW, scratch[t]);
    });
}

}  // namespace tokfuse
