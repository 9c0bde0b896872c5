// Internal C++ API of the fused native render (tokfuse_rt._C.NativeRender): the full-resolution
// half of a TokFuse model (DetailNet, HeadConvs and the head's per-pixel rule) in one pass over
// row tiles.
//
// NOTE: included by render_avx2.cpp, which is compiled with -mavx2 -mfma. Plain declarations
// only (no standard library, no inline functions the linker could merge across ISAs).
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace tokfuse {

enum RenderHead : int { HEAD_BLEND = 0, HEAD_TONE = 1, HEAD_LAYERS = 2 };

// One 3x3 convolution (zero padding) for one output row of W pixels, channel-last layout.
//   in[ky] (ky = 0, 1, 2): the input rows y-1, y, y+1, each pointing at padded column -1 (the
//     rows hold W + 2 pixels of `istride` floats; padded columns and rows outside the image are 0).
//   off[j] (j < nin): the float offset of input channel j inside a pixel.
//   w: packed weights [ky][kx][j][cop], bias[cop]; cop a multiple of 8 (padding weights are 0).
//   out: pixel 0 of the output row, `ostride` floats per pixel (cop of them written).
// Accumulation per output value: bias, then ky, kx, j in that order.
typedef void (*ConvRowFn)(const float* const* in, int istride, const int* off, int nin,
                          const float* w, const float* bias, float* out, int ostride, int W,
                          int cop, int relu);

// The head's final 1x1 convolution and its per-pixel rule for one row of W pixels.
struct RuleRow {
    int head;  // RenderHead
    int W;
    const float* h;  // head features after ReLU: [W][hstride], or [nh][hplane] when hplane > 0
    int hstride;
    int hplane;       // > 0: channel-planar h (the int8 render), h[c * hplane + x]
    int nh;           // head channels used
    const float* w2;  // [2][nh] 1x1 convolution weights
    const float* b2;  // [2]
    const float* ir;  // [W] sources
    const float* vis;
    const float* l_ir;  // [W] base layers ("layers" head only)
    const float* l_vis;
    const float* tone[4];  // [W] each: g, a, mu, c ("tone" / "layers")
    float tau, gain_vis, gain_ir;
    float* out;  // [W]
};
typedef void (*RuleRowFn)(const RuleRow& r);

void conv_row_scalar(const float* const* in, int istride, const int* off, int nin, const float* w,
                     const float* bias, float* out, int ostride, int W, int cop, int relu);
void rule_row_scalar(const RuleRow& r);

// Defined in render_avx2.cpp. Only call when cpu_has_avx2_fma() && avx2_kernel_compiled().
void conv_row_avx2(const float* const* in, int istride, const int* off, int nin, const float* w,
                   const float* bias, float* out, int ostride, int W, int cop, int relu);
void rule_row_avx2(const RuleRow& r);
bool render_avx2_compiled();

// Row helpers of the base layers and the int8 render (scalar in render_cpu.cpp, AVX2 in
// render_avx2.cpp; same operation order per element, so both give the same bits):
//   box_hmean: dst[x] = (tmp[x] + tmp[x + 1] + ... + tmp[x + 2r]) / (2r + 1), tmp = src with r
//              replicated pixels on each side (W + 2r floats of scratch)
//   box_vmean: dst[x] = (rows[0][x] + ... + rows[n - 1][x]) / n
//   quant_row: dst[x] = nearbyint(min(max(src[x] * mul + add, 0), 255)) (no FMA)
typedef void (*BoxHFn)(const float* src, int W, int r, float* tmp, float* dst);
typedef void (*BoxVFn)(const float* const* rows, int n, int W, float* dst);
typedef void (*QuantRowFn)(const float* src, int W, float mul, float add, int32_t* dst);
void box_hmean_scalar(const float* src, int W, int r, float* tmp, float* dst);
void box_vmean_scalar(const float* const* rows, int n, int W, float* dst);
void quant_row_scalar(const float* src, int W, float mul, float add, int32_t* dst);
void box_hmean_avx2(const float* src, int W, int r, float* tmp, float* dst);
void box_vmean_avx2(const float* const* rows, int n, int W, float* dst);
void quant_row_avx2(const float* src, int W, float mul, float add, int32_t* dst);

// Defined in render_avx512.cpp (the convolution only; the rule runs the AVX2 kernel). Only call
// when cpu_has_avx512f() && render_avx512_compiled().
void conv_row_avx512(const float* const* in, int istride, const int* off, int nin, const float* w,
                     const float* bias, float* out, int ostride, int W, int cop, int relu);
bool render_avx512_compiled();
// The AVX2 rule and box rows with 16 lanes (bit-identical results; render_avx512.cpp).
void rule_row_avx512(const RuleRow& r);
void box_hmean_avx512(const float* src, int W, int r, float* tmp, float* dst);
void box_vmean_avx512(const float* const* rows, int n, int W, float* dst);
bool cpu_has_avx512f();  // render_cpu.cpp; false under TOKFUSE_NO_AVX2=1 too

// Instruction paths of the render (IMPL_SCALAR and IMPL_AVX2 as in nn_search.h, plus this one).
enum : int { RENDER_IMPL_AVX512 = 3 };

// A model's render half, packed for the kernels (render_cpu.cpp). Built by the Python binding.
struct RenderModel {
    int head = HEAD_BLEND;
    int C = 0, Cp = 0;          // detail channels (Cp: rounded up to a multiple of 8)
    int Ch = 0, Chp = 0;        // head channels
    int radius = 0;             // "layers": box radius of the base layers
    int nbase = 1;              // channels of base_up: 1 ("blend") or 5 (base map, g, a, mu, c)
    const float* w1 = nullptr;  // detail conv1 packed [3][3][2][Cp], bias b1[Cp]
    const float* b1 = nullptr;
    const float* w2 = nullptr;  // detail conv2 packed [3][3][C][Cp], b2[Cp]
    const float* b2 = nullptr;
    const float* w3 = nullptr;  // head conv1 packed [3][3][C + 3][Chp], b3[Chp]
    const float* b3 = nullptr;
    const float* w4 = nullptr;  // head conv2 [2][Ch], b4[2]
    const float* b4 = nullptr;
    float tau = 0.f, gain_vis = 0.f, gain_ir = 0.f;
};

// ---- int8 render (render_int8.cpp; VNNI kernel in render_vnni.cpp) ----
// Activations are uint8 in a group-planar row layout: the channels in groups of 4 bytes, one plane
// of `gstride` pixels per group, pixel x (-1 .. W, the padding columns included) of group g at
// byte (g * gstride + x + 1) * 4 + channel % 4; padding pixels hold each channel's zero point.
// gstride >= W + 2 + 15 (a 16-pixel block may read past the row's end; those lanes are discarded).
//
// One 3x3 convolution (zero padding) of uint8 activations with int8 weights for one output row:
//   in[ky]: rows y-1, y, y+1 (group-planar, at their padding column -1), ngroups groups read.
//   w: packed [ky][kx][g][cop][4] int8; acc0[cop]: the accumulator's start (minus the zero points'
//     contribution); scale, bias [cop]; cop a multiple of 16 (padding weights 0).
//   acc = acc0 + sum of in * w (exact, int32); v = max(float(acc) * scale + bias, 0) (no FMA);
//   inv != nullptr: out is a group-planar uint8 row at pixel 0 of group 0, `ostride` pixels per
//     group plane, q = nearbyint(min(v * inv[co], 255)) (round half to even);
//   inv == nullptr: out is channel-planar float32, v of channel co at out[co * ostride + x].
typedef void (*QConvRowFn)(const uint8_t* const* in, int gstride, int ngroups, const int8_t* w,
                           const int32_t* acc0, const float* scale, const float* bias,
                           const float* inv, void* out, int ostride, int W, int cop);
void qconv_row_scalar(const uint8_t* const* in, int gstride, int ngroups, const int8_t* w,
                      const int32_t* acc0, const float* scale, const float* bias, const float* inv,
                      void* out, int ostride, int W, int cop);
// Defined in render_vnni.cpp. Only call when cpu_has_avx512vnni() && render_vnni_compiled().
void qconv_row_vnni(const uint8_t* const* in, int gstride, int ngroups, const int8_t* w,
                    const int32_t* acc0, const float* scale, const float* bias, const float* inv,
                    void* out, int ostride, int W, int cop);
bool render_vnni_compiled();
bool cpu_has_avx512vnni();  // render_int8.cpp; false under TOKFUSE_NO_AVX2=1 too

struct QConv {  // one quantised convolution (see QConvRowFn)
    int ngroups = 0, cop = 0;
    const int8_t* w = nullptr;
    const int32_t* acc0 = nullptr;
    const float* scale = nullptr;
    const float* bias = nullptr;
    const float* inv = nullptr;  // [cop] 1 / the next layer's input scale; nullptr: float output
};

// The int8 render half: the float32 model's head, rule and base layers, with detail conv1,
// detail conv2 and head conv1 quantised. Activations: X = (ir, vis) as q = nearbyint(min(max(x *
// 255, 0), 255)); H1 and the detail part of D as written by the convolutions (zero point 0); D's
// base channel as q = nearbyint(min(max(b * base_inv + base_zero, 0), 255)), zero point base_zero.
struct QuantModel {
    const RenderModel* m = nullptr;
    QConv c1, c2, c3;  // detail conv1 (uint8 out), detail conv2 (uint8 out), head conv1 (float out)
    float base_inv = 0.f, base_zero = 0.f;
};
enum : int { RENDER_IMPL_VNNI = 4 };

// As render_cpu, with the quantised convolutions; impl: IMPL_SCALAR or RENDER_IMPL_VNNI (the
// rule runs in AVX2 whenever the CPU has it).
void render_int8_cpu(const QuantModel& q, const float* ir, const float* vis, const float* base,
                     const float* tone, int64_t B, int H, int W, float* out, int num_threads,
                     int impl, int tile_rows);

// The same render in two parts, so that the part that does not need the base map (detail conv1,
// conv2: most of the work) can run while the token pathway computes it:
//   int8_split_new: the job for ir, vis [B][H][W] (read until it finishes; impl as below);
//   int8_split_detail: computes detail tiles until none is left unclaimed (any threads, any
//     number of times, for example one background thread);
//   int8_split_finish: the unclaimed tiles on the calling thread, waits for the others, then the
//     base channel and the head on the thread pool; out equals render_int8_cpu's, bit for bit.
//     Throws std::bad_alloc when a tile failed;
//   int8_split_cancel: no more tiles are claimed (before int8_split_delete of an unfinished job;
//     join its threads first).
struct Int8Split;
Int8Split* int8_split_new(const QuantModel& q, const float* ir, const float* vis, int64_t B, int H,
                          int W, int impl);
void int8_split_detail(Int8Split* s);
void int8_split_finish(Int8Split* s, const float* base, const float* tone, float* out,
                       int num_threads, int tile_rows);
void int8_split_cancel(Int8Split* s);
void int8_split_delete(Int8Split* s);

// ir, vis [B][H][W], base [B][nbase][H][W] -> out [B][H][W]; with tone ([B][4], "tone" and "layers"
// heads), base is [B][1][H][W] and the tone channels are those constants. The thread pool over
// tiles of about tile_rows rows (<= 0: chosen from H and the thread count); impl: IMPL_SCALAR,
// IMPL_AVX2 or RENDER_IMPL_AVX512 (resolved and checked by the caller). No Python, re-entrant.
void render_cpu(const RenderModel& m, const float* ir, const float* vis, const float* base,
                const float* tone, int64_t B, int H, int W, float* out, int num_threads, int impl,
                int tile_rows);

}  // namespace tokfuse
