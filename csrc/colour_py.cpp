// The colour steps around the model in C++: tokfuse_rt._C.luminance_u8 and
// tokfuse_rt._C.colour_out.
//
//   luminance_u8(rgb, out)        rgb uint8 (H, W, 3) -> out float32 (H, W): Y in [0, 1]
//   colour_out(y, vis, out)       fused Y float32 (H, W) + the visible uint8 (H, W, 3) -> out uint8
//                                 (H, W, 3): the visible chroma with the fused luminance
//
// Both repeat tokfuse_rt/imageio.py's float32 arithmetic operation for operation (luminance,
// rgb_to_ycbcr, ycbcr_to_rgb, to_uint8; NumPy computes float32 arrays with float32 constants),
// built with -ffp-contract=off, so their results are bit-identical to the NumPy path
// (tests/engine/test_colour_ext.py); 16 pixels at a time with AVX-512 VBMI where the CPU has it
// (colour_vbmi.cpp, the same arithmetic); both run on the thread pool (thread_pool.h) over blocks
// of rows. Arrays may be views with any row stride; pixels must be contiguous (3 bytes, or one
// float). Wrong dtypes or shapes raise TypeError / ValueError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "nn_search.h"
#include "thread_pool.h"

#include <algorithm>
#include <string>
#include <vector>

namespace py = pybind11;

namespace tokfuse {  // colour_vbmi.cpp: 16 pixels at a time (n16 a multiple of 16); same results
bool colour_vbmi_compiled();
void luminance_row_vbmi(const uint8_t* src, float* dst, ptrdiff_t n16);
void colour_row_vbmi(const float* fy, const uint8_t* vis, uint8_t* out, ptrdiff_t n16);
}  // namespace tokfuse

namespace {

bool vbmi() {  // AVX-512 VBMI + BW kernels usable (never under TOKFUSE_NO_AVX2=1)
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    static const bool ok = [] {
        if (!tokfuse::cpu_has_avx2_fma() || !tokfuse::colour_vbmi_compiled()) return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bw");
    }();
    return ok;
#else
    return false;
#endif
}

constexpr py::ssize_t ROWS = 32;  // rows per item of the thread pool
constexpr float KR = 0.299f, KG = 0.587f, KB = 0.114f, U8 = (float)(1.0 / 255.0);

py::array checked(py::handle obj, const char* name, char kind, int itemsize, int ndim,
                  bool writable) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array");
    py::array a = py::reinterpret_borrow<py::array>(obj);
    if (a.dtype().kind() != kind || a.itemsize() != itemsize)
        throw py::type_error(std::string(name) + " has dtype " + std::string(py::str(a.dtype())) +
                             (kind == 'u' ? ", expected uint8" : ", expected float32"));
    if (a.ndim() != ndim || (ndim == 3 && a.shape(2) != 3))
        throw py::value_error(std::string(name) + (ndim == 3 ? " must have shape (H, W, 3)"
                                                             : " must have shape (H, W)"));
    if (a.strides(1) != (ndim == 3 ? 3 : itemsize) || (ndim == 3 && a.strides(2) != 1))
        throw py::value_error(std::string(name) + ": pixels must be contiguous within a row");
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + " is read-only");
    return a;
}

void same_size(const py::array& a, const py::array& b, const char* na, const char* nb) {
    if (a.shape(0) != b.shape(0) || a.shape(1) != b.shape(1))
        throw py::value_error(std::string(nb) + " must have the height and width of " + na);
}

inline float lum(const uint8_t* p) {
    const float r = (float)p[0] * U8, g = (float)p[1] * U8, b = (float)p[2] * U8;
    return (KR * r + KG * g) + KB * b;
}

void luminance_u8(py::handle rgb_, py::handle out_) {
    py::array rgb = checked(rgb_, "rgb", 'u', 1, 3, false);
    py::array out = checked(out_, "out", 'f', 4, 2, true);
    same_size(rgb, out, "rgb", "out");
    const py::ssize_t H = rgb.shape(0), W = rgb.shape(1), rs = rgb.strides(0), os = out.strides(0);
    const auto* src = static_cast<const uint8_t*>(rgb.data());
    auto* dst = static_cast<char*>(out.mutable_data());
    py::gil_scoped_release nogil;
    const int nt = H * W >= (1 << 16) ? 0 : 1;
    const bool fast = vbmi();
    tokfuse::parallel_for(nt, (H + ROWS - 1) / ROWS, [&](int, int64_t blk) {
        for (py::ssize_t y = blk * ROWS; y < std::min<py::ssize_t>(H, (blk + 1) * ROWS); ++y) {
            const uint8_t* s = src + y * rs;
            float* d = reinterpret_cast<float*>(dst + y * os);
            py::ssize_t x = 0;
            if (fast) tokfuse::luminance_row_vbmi(s, d, x = W / 16 * 16);
            for (; x < W; ++x) d[x] = lum(s + 3 * x);
        }
    });
}

inline float clip01(float v) { return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }
inline uint8_t to_u8(float v) { return (uint8_t)(clip01(v) * 255.0f + 0.5f); }

// One row: the visible pixels' R and B and the luminance, then the output channels, in planar
// float buffers so that the compiler vectorises the arithmetic (the same operations per element).
void colour_row(const float* fy, const uint8_t* v, uint8_t* o, py::ssize_t W, float* buf,
                bool fast) {
    if (fast) {
        const py::ssize_t n = W / 16 * 16;
        tokfuse::colour_row_vbmi(fy, v, o, n);
        fy += n, v += 3 * n, o += 3 * n, W -= n;
    }
    float *R = buf, *B = buf + W, *Y = buf + 2 * W;
    for (py::ssize_t x = 0; x < W; ++x) {
        const uint8_t* p = v + 3 * x;
        R[x] = (float)p[0] * U8, B[x] = (float)p[2] * U8, Y[x] = lum(p);
    }
    for (py::ssize_t x = 0; x < W; ++x) {
        const float cr = ((R[x] - Y[x]) * 0.713f + 0.5f) - 0.5f;  // rgb_to_ycbcr, then ycbcr_to_rgb
        const float cb = ((B[x] - Y[x]) * 0.564f + 0.5f) - 0.5f;
        const float y = fy[x];
        R[x] = clip01(y + 1.403f * cr);
        Y[x] = clip01((y - 0.714f * cr) - 0.344f * cb);  // G
        B[x] = clip01(y + 1.773f * cb);
    }
    for (py::ssize_t x = 0; x < W; ++x)
        o[3 * x] = to_u8(R[x]), o[3 * x + 1] = to_u8(Y[x]), o[3 * x + 2] = to_u8(B[x]);
}

void colour_out(py::handle y_, py::handle vis_, py::handle out_) {
    py::array fy = checked(y_, "y", 'f', 4, 2, false);
    py::array vis = checked(vis_, "vis", 'u', 1, 3, false);
    py::array out = checked(out_, "out", 'u', 1, 3, true);
    same_size(fy, vis, "y", "vis");
    same_size(fy, out, "y", "out");
    const py::ssize_t H = fy.shape(0), W = fy.shape(1);
    const py::ssize_t ys = fy.strides(0), vs = vis.strides(0), os = out.strides(0);
    const auto* py_ = static_cast<const char*>(fy.data());
    const auto* pv = static_cast<const uint8_t*>(vis.data());
    auto* po = static_cast<uint8_t*>(out.mutable_data());
    py::gil_scoped_release nogil;
    const int nt = H * W >= (1 << 16) ? 0 : 1;
    const bool fast = vbmi();
    tokfuse::parallel_for(nt, (H + ROWS - 1) / ROWS, [&](int, int64_t blk) {
        std::vector<float> buf(3 * (size_t)W);
        for (py::ssize_t r = blk * ROWS; r < std::min<py::ssize_t>(H, (blk + 1) * ROWS); ++r)
            colour_row(reinterpret_cast<const float*>(py_ + r * ys), pv + r * vs, po + r * os, W,
                       buf.data(), fast);
    });
}

}  // namespace

void bind_colour(py::module_& m) {
    m.def(
        "luminance_u8", &luminance_u8, py::arg("rgb"), py::arg("out"),
        "rgb uint8 (H, W, 3) -> out float32 (H, W): Y = 0.299 R + 0.587 G + 0.114 B of rgb / 255, "
        "bit-identical to tokfuse_rt.imageio.luminance.");
    m.def("colour_out", &colour_out, py::arg("y"), py::arg("vis"), py::arg("out"),
          "fused Y float32 (H, W), visible uint8 (H, W, 3) -> out uint8 (H, W, 3): the visible "
          "chroma (YCbCr) with Y, bit-identical to the NumPy path of "
          "tokfuse_rt.inputs.OutputBuilder.");
}
