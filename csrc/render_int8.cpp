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
//
// The split driver (int8_split_*, render.h) computes the same rows in two passes: every image's D
// rows without the base channel into one buffer (detail tiles of 16 rows, any threads, while the
// base map is not known yet), then the base channel and the head over row tiles, reading D from
// that buffer. Every value is computed by the same code as in the fused driver: the same bits.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "nn_search.h"
#include "render.h"
#include "render_tile.h"
#include "thread_pool.h"

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

void fill32(uint8_t* p, int32_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) std::memcpy(p + 4 * i, &v, 4);
}

// The row geometry of one image (see the comment at the top) and the D rows' padding pixels.
struct QGeom {
    int H = 0, W = 0, C = 0;
    int GS = 0;  // pixels per group plane
    int G1 = 0;  // H1 groups
    int GD = 0;  // D groups
    size_t XR = 0, H1R = 0, DR = 0;
    std::vector<int32_t> dpad;  // each D group's padding pixel: the zero points (base_zero at base)
    QGeom(const QuantModel& q, int H_, int W_) : H(H_), W(W_), C(q.m->C) {
        GS = W + 2 + 16;
        G1 = q.c1.cop / 4;
        GD = std::max(q.c2.cop / 4, (C + 3 + 3) / 4);
        XR = (size_t)GS * 4, H1R = XR * G1, DR = XR * GD;
        dpad.assign(GD, 0);
        uint8_t b[4] = {0, 0, 0, 0};
        b[C % 4] = (uint8_t)q.base_zero;
        std::memcpy(&dpad[C / 4], b, 4);
    }
    void fill_d(uint8_t* o) const {  // a D row of padding (outside the image)
        for (int g = 0; g < GD; ++g) fill32(o + g * XR, dpad[g], GS);
    }
};

// The detail part of the render for the rows of one tile (X and H1 in rings of 3 rows, as in
// render_cpu.cpp): make_d(r, o) writes D row r without the base channel into o, which must hold
// the padding pixels (QGeom::fill_d) wherever the convolution does not write (every row of the
// fused driver's ring starts so; the split driver fills each row first). make_d is called for
// consecutive rows starting at any row.
struct DetailRows {
    const QuantModel& q;
    const QGeom& g;
    QConvRowFn conv;
    QuantRowFn quant;
    const float *ir, *vis;
    std::vector<uint8_t>& x;
    std::vector<uint8_t>& h1;
    std::vector<int32_t>& qa;
    std::vector<int32_t>& qb;
    int x_next = 0, h_next = 0;

    void begin(int r0) {  // the first row make_d will be asked for
        x.assign(3 * g.XR, 0);
        h1.assign(3 * g.H1R, 0);
        qa.resize(g.W), qb.resize(g.W);
        x_next = r0 - 2, h_next = r0 - 1;
    }
    uint8_t* xrow(int r) { return x.data() + (size_t)ring(r) * g.XR; }
    uint8_t* h1row(int r) { return h1.data() + (size_t)ring(r) * g.H1R; }
    void make_x(int r) {
        uint8_t* o = xrow(r);
        if (r < 0 || r >= g.H) {
            std::memset(o, 0, g.XR);
            return;
        }
        quant(ir + (size_t)r * g.W, g.W, 255.0f, 0.0f, qa.data());
        quant(vis + (size_t)r * g.W, g.W, 255.0f, 0.0f, qb.data());
        for (int x = 0; x < g.W; ++x)
            o[(x + 1) * 4] = (uint8_t)qa[x], o[(x + 1) * 4 + 1] = (uint8_t)qb[x];
    }
    void make_h1(int r) {
        while (x_next <= r + 1) make_x(x_next++);
        uint8_t* o = h1row(r);
        if (r < 0 || r >= g.H) {
            std::memset(o, 0, g.H1R);
            return;
        }
        const uint8_t* in[3] = {xrow(r - 1), xrow(r), xrow(r + 1)};
        const QConv& c = q.c1;
        conv(in, g.GS, c.ngroups, c.w, c.acc0, c.scale, c.bias, c.inv, o + 4, g.GS, g.W, c.cop);
    }
    void make_d(int r, uint8_t* o) {
        while (h_next <= r + 1) make_h1(h_next++);
        if (r < 0 || r >= g.H) {
            g.fill_d(o);
            return;
        }
        const uint8_t* in[3] = {h1row(r - 1), h1row(r), h1row(r + 1)};
        const QConv& c = q.c2;
        conv(in, g.GS, c.ngroups, c.w, c.acc0, c.scale, c.bias, c.inv, o + 4, g.GS, g.W, c.cop);
        // then the sources as channels C + 1, C + 2 (X's row r holds q_ir, q_vis: make_x ran up
        // to r + 2)
        const uint8_t* xr = xrow(r) + 4;
        const int C = g.C;
        uint8_t* c1 = o + ((size_t)(C + 1) / 4 * g.GS + 1) * 4 + (C + 1) % 4;
        uint8_t* c2 = o + ((size_t)(C + 2) / 4 * g.GS + 1) * 4 + (C + 2) % 4;
        for (int x = 0; x < g.W; ++x) c1[4 * x] = xr[4 * x], c2[4 * x] = xr[4 * x + 1];
    }
};

// D row r's base channel (channel C) from the upsampled base map's row.
void put_base(const QuantModel& q, const QGeom& g, QuantRowFn quant, const float* base_row,
              uint8_t* o, std::vector<int32_t>& qc) {
    qc.resize(g.W);
    quant(base_row, g.W, q.base_inv, q.base_zero, qc.data());
    uint8_t* ch = o + ((size_t)g.C / 4 * g.GS + 1) * 4 + g.C % 4;
    for (int x = 0; x < g.W; ++x) ch[4 * x] = (uint8_t)qc[x];
}

struct QScratch {
    std::vector<uint8_t> x, h1, d;
    std::vector<float> h;
    std::vector<int32_t> qa, qb, qc;
    TileRule rule;
};

// The head over the rows [y0, y1) of one tile: head conv1 of the D rows y - 1, y, y + 1
// (drow(r): D row r, complete), then the 1x1 convolution and the rule.
template <typename DRow>
void head_tile_q(const QuantModel& q, const QGeom& g, QConvRowFn conv, RuleRowFn rule,
                 const float* ir, const float* vis, const float* base, const float* tone, int y0,
                 int y1, float* out, QScratch& s, DRow&& drow) {
    const int HP = g.W + 16;  // h: channel-planar, HP floats per channel
    s.h.assign((size_t)q.c3.cop * HP, 0.f);
    tile_rule_begin(s.rule, *q.m, ir, vis, base, tone, g.H, g.W, y0, y1, out, s.h.data(), 0, HP);
    for (int y = y0; y < y1; ++y) {
        const uint8_t* in[3] = {drow(y - 1), drow(y), drow(y + 1)};
        const QConv& c = q.c3;
        conv(in, g.GS, c.ngroups, c.w, c.acc0, c.scale, c.bias, nullptr, s.h.data(), HP, g.W,
             c.cop);
        rule(tile_rule_row(s.rule, y));
    }
}

// The fused driver: one tile of output rows, every layer in rings of 3 rows.
void render_tile_q(const QuantModel& q, QConvRowFn conv, RuleRowFn rule, QuantRowFn quant,
                   const float* ir, const float* vis, const float* base, const float* tone, int H,
                   int W, int y0, int y1, float* out, QScratch& s) {
    const QGeom g(q, H, W);
    DetailRows dr{q, g, conv, quant, ir, vis, s.x, s.h1, s.qa, s.qb};
    dr.begin(y0 - 1);
    s.d.resize(3 * g.DR);
    for (int r = 0; r < 3; ++r) g.fill_d(s.d.data() + r * g.DR);
    auto drow = [&](int r) { return s.d.data() + (size_t)ring(r) * g.DR; };
    int d_next = y0 - 1;
    head_tile_q(q, g, conv, rule, ir, vis, base, tone, y0, y1, out, s, [&](int r) {
        while (d_next <= r) {  // rows come in order: y - 1, y, y + 1
            uint8_t* o = drow(d_next);
            dr.make_d(d_next, o);
            if (d_next >= 0 && d_next < H)
                put_base(q, g, quant, base + (size_t)d_next * W, o, s.qc);
            ++d_next;
        }
        return drow(r);
    });
}

struct Fns {
    QConvRowFn conv;
    RuleRowFn rule;
    QuantRowFn quant;
};

Fns int8_fns(int impl) {
    // the rule: the widest path the CPU has, whatever the convolutions' impl (so both give one
    // result)
    const bool avx2 = cpu_has_avx2_fma() && render_avx2_compiled();
    const bool avx512 = avx2 && cpu_has_avx512f() && render_avx512_compiled();
    return {impl == RENDER_IMPL_VNNI ? qconv_row_vnni : qconv_row_scalar,
            avx512 ? rule_row_avx512
            : avx2 ? rule_row_avx2
                   : rule_row_scalar,
            avx2 ? quant_row_avx2 : quant_row_scalar};
}

}  // namespace

void render_int8_cpu(const QuantModel& q, const float* ir, const float* vis, const float* base,
                     const float* tone, int64_t B, int H, int W, float* out, int num_threads,
                     int impl, int tile_rows) {
    const Fns f = int8_fns(impl);
    const size_t HW = (size_t)H * W;
    std::vector<QScratch> scratch(resolve_threads(num_threads));
    parallel_tiles(B, H, tile_rows, num_threads, [&](int t, int64_t b, int y0, int y1) {
        const int nb = tone ? 1 : q.m->nbase;  // channels of base per image
        render_tile_q(q, f.conv, f.rule, f.quant, ir + b * HW, vis + b * HW, base + b * nb * HW,
                      tone ? tone + 4 * b : nullptr, H, W, y0, y1, out + b * HW, scratch[t]);
    });
}

// ---- the split int8 render ----

struct Int8Split {
    QuantModel q;
    Fns f;
    const float *ir, *vis;
    int64_t B;
    QGeom g;                       // H, W and the row geometry
    std::unique_ptr<uint8_t[]> d;  // [B][H + 2][DR]: D rows -1 .. H of every image (not zeroed)
    int T = 0, tiles = 0;          // detail tiles of T rows per image
    int64_t items = 0;
    std::atomic<int64_t> next{0};
    std::atomic<bool> failed{false};
    std::mutex m;
    std::condition_variable cv;
    int64_t done = 0;  // under m
    Int8Split(const QuantModel& q_, const float* ir_, const float* vis_, int64_t B_, int H_, int W_,
              int impl)
        : q(q_), f(int8_fns(impl)), ir(ir_), vis(vis_), B(B_), g(q_, H_, W_) {}
    uint8_t* drow(int64_t b, int r) { return d.get() + ((size_t)b * (g.H + 2) + r + 1) * g.DR; }
};

Int8Split* int8_split_new(const QuantModel& q, const float* ir, const float* vis, int64_t B, int H,
                          int W, int impl) {
    auto* s = new Int8Split(q, ir, vis, B, H, W, impl);
    s->d.reset(new uint8_t[(size_t)B * (H + 2) * s->g.DR]);
    for (int64_t b = 0; b < B; ++b) s->g.fill_d(s->drow(b, -1)), s->g.fill_d(s->drow(b, H));
    s->T = 16;  // small tiles: the threads that drain them arrive at different times
    s->tiles = (H + s->T - 1) / s->T;
    s->items = B * s->tiles;
    return s;
}

void int8_split_detail(Int8Split* s) {
    std::vector<uint8_t> x, h1;
    std::vector<int32_t> qa, qb;
    int64_t finished = 0;
    for (;;) {
        const int64_t i = s->next.fetch_add(1);
        if (i >= s->items) break;
        if (!s->failed.load(std::memory_order_relaxed)) {
            try {
                const int64_t b = i / s->tiles;
                const int y0 = (int)(i % s->tiles) * s->T, y1 = std::min(s->g.H, y0 + s->T);
                const size_t HW = (size_t)s->g.H * s->g.W;
                DetailRows dr{s->q, s->g, s->f.conv, s->f.quant, s->ir + b * HW, s->vis + b * HW,
                              x,    h1,   qa,        qb};
                dr.begin(y0);
                for (int r = y0; r < y1; ++r) {
                    uint8_t* o = s->drow(b, r);
                    s->g.fill_d(o);
                    dr.make_d(r, o);
                }
            } catch (...) {
                s->failed.store(true);
            }
        }
        ++finished;
    }
    if (finished) {
        std::lock_guard<std::mutex> lk(s->m);
        s->done += finished;
        if (s->done == s->items) s->cv.notify_all();
    }
}

void int8_split_finish(Int8Split* s, const float* base, const float* tone, float* out,
                       int num_threads, int tile_rows) {
    int8_split_detail(s);  // the tiles nobody has claimed yet, on this thread
    {
        std::unique_lock<std::mutex> lk(s->m);
        s->cv.wait(lk, [&] { return s->done == s->items; });
    }
    if (s->failed.load()) throw std::bad_alloc();
    const int H = s->g.H, W = s->g.W;
    const size_t HW = (size_t)H * W;
    const int nb = tone ? 1 : s->q.m->nbase;  // channels of base per image
    // the base channel of every D row, then the head (rows of other tiles are read: two passes)
    std::vector<std::vector<int32_t>> qc(resolve_threads(num_threads));
    const int RB = 32;
    const int64_t blocks = (H + RB - 1) / RB;
    parallel_for(num_threads, s->B * blocks, [&](int t, int64_t i) {
        const int64_t b = i / blocks;
        const int r0 = (int)(i % blocks) * RB, r1 = std::min(H, r0 + RB);
        for (int r = r0; r < r1; ++r)
            put_base(s->q, s->g, s->f.quant, base + b * nb * HW + (size_t)r * W, s->drow(b, r),
                     qc[t]);
    });
    std::vector<QScratch> scratch(resolve_threads(num_threads));
    parallel_tiles(s->B, H, tile_rows, num_threads, [&](int t, int64_t b, int y0, int y1) {
        head_tile_q(s->q, s->g, s->f.conv, s->f.rule, s->ir + b * HW, s->vis + b * HW,
                    base + b * nb * HW, tone ? tone + 4 * b : nullptr, y0, y1, out + b * HW,
                    scratch[t], [&](int r) -> const uint8_t* { return s->drow(b, r); });
    });
    s->d.reset();  // a late int8_split_detail call claims nothing and does not read it
}

void int8_split_cancel(Int8Split* s) { s->next.store(s->items); }

void int8_split_delete(Int8Split* s) { delete s; }

}  // namespace tokfuse
