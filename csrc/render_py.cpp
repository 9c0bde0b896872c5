// pybind11 binding of the fused native render: tokfuse_rt._C.NativeRender (see render.h).
//
//   r = NativeRender(head, radius, detail_w1, detail_b1, detail_w2, detail_b2,
//                    head_w1, head_b1, head_w2, head_b2, tau=0, gain_vis=0, gain_ir=0)
//   fused = r.run(ir, vis, base_up, num_threads=0, impl="auto", tile_rows=0, tone=None)
//   r.quantize(conv1, conv2, conv3, base_inv, base_zero)    # the int8 render's tables, then
//   fused = r.run_int8(ir, vis, base_up, num_threads=0, impl="auto", tile_rows=0)
//
// quantize() takes, per convolution, (w int8 (co, ci, 3, 3), acc0 int32 (co,), scale float32 (co,),
// bias float32 (co,), inv float32 (co,) or None) as computed by tokfuse_rt/backends/render_int8.py
// (conv1 and conv2 with inv: uint8 outputs; conv3 without: float32 for the rule).
//
// Weights are PyTorch's Conv2d tensors as float32 numpy arrays; they are validated and packed
// once. run() reads ir, vis [B, 1, H, W] and base_up [B, nbase, H, W] (float32, C-contiguous;
// nbase = 1 for "blend", 5 for "tone" and "layers") and returns fused float32 [B, 1, H, W].
// Wrong types, shapes or options raise TypeError / ValueError naming the argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "nn_search.h"
#include "render.h"

namespace py = pybind11;
using namespace tokfuse;

namespace {

using Arr = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

Arr as_f32(py::handle obj, const char* name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + " must be a numpy array, got " +
                             std::string(py::str(py::type::of(obj).attr("__name__"))));
    py::array a = py::reinterpret_borrow<py::array>(obj);
    if (a.dtype().kind() != 'f')
        throw py::type_error(std::string(name) + " must be a float array, got dtype " +
                             std::string(py::str(a.dtype())));
    return Arr::ensure(a);
}

Arr weight(py::handle obj, const char* name, std::vector<py::ssize_t> shape) {
    Arr a = as_f32(obj, name);
    bool ok = a.ndim() == (py::ssize_t)shape.size();
    for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
    if (!ok) {
        std::string want = "(";
        for (size_t i = 0; i < shape.size(); ++i)
            want += (i ? ", " : "") + std::to_string(shape[i]);
        throw py::value_error(std::string(name) + " must have shape " + want + "), got " +
                              shape_of(a));
    }
    return a;
}

int round8(int c) { return (c + 7) / 8 * 8; }

// torch Conv2d weight [co][ci][3][3] -> [ky][kx][ci][cop] (cop >= co, zero padded)
std::vector<float> pack3x3(const Arr& w, int co, int ci, int cop) {
    std::vector<float> p((size_t)9 * ci * cop, 0.f);
    const float* s = w.data();
    for (int o = 0; o < co; ++o)
        for (int i = 0; i < ci; ++i)
            for (int k = 0; k < 9; ++k)
                p[((size_t)k * ci + i) * cop + o] = s[((size_t)o * ci + i) * 9 + k];
    return p;
}

int round16(int c) { return (c + 15) / 16 * 16; }

// int8 weight [co][ci][3][3] -> [ky][kx][g][cop][4] (ci padded to 4 * ngroups, co to cop)
std::vector<int8_t> pack_q(const py::array_t<int8_t, py::array::c_style>& w, int co, int ci,
                           int ngroups, int cop) {
    std::vector<int8_t> p((size_t)9 * ngroups * cop * 4, 0);
    const int8_t* s = w.data();
    for (int o = 0; o < co; ++o)
        for (int i = 0; i < ci; ++i)
            for (int k = 0; k < 9; ++k)
                p[(((size_t)k * ngroups + i / 4) * cop + o) * 4 + i % 4] =
                    s[((size_t)o * ci + i) * 9 + k];
    return p;
}

template <typename T>
std::vector<T> vec_of(py::handle obj, const char* name, int n, int pad_to) {
    auto a = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);
    if (!a || a.ndim() != 1 || a.shape(0) != n)
        throw py::value_error(std::string(name) + " must be a 1-D array of " + std::to_string(n) +
                              " values");
    std::vector<T> v(pad_to, T(0));
    for (int i = 0; i < n; ++i) v[i] = a.data()[i];
    return v;
}

std::vector<float> padded(const Arr& b, int n) {
    std::vector<float> p(n, 0.f);
    for (py::ssize_t i = 0; i < b.shape(0); ++i) p[i] = b.data()[i];
    return p;
}

class NativeRender {
public:
    NativeRender(const std::string& head, int radius, py::handle dw1, py::handle db1,
                 py::handle dw2, py::handle db2, py::handle hw1, py::handle hb1, py::handle hw2,
                 py::handle hb2, float tau, float gain_vis, float gain_ir) {
        if (head == "blend")
            m_.head = HEAD_BLEND;
        else if (head == "tone")
            m_.head = HEAD_TONE;
        else if (head == "layers")
            m_.head = HEAD_LAYERS;
        else
            throw py::value_error("head must be \"blend\", \"tone\" or \"layers\", got \"" + head +
                                  "\"");
        if (radius < 0 || radius > 4096)
            throw py::value_error("radius must be in [0, 4096], got " + std::to_string(radius));
        head_ = head;
        Arr a = as_f32(dw1, "detail_w1");
        if (a.ndim() != 4 || a.shape(0) < 1 || a.shape(0) > 4096)
            throw py::value_error("detail_w1 must have shape (C, 2, 3, 3), got " + shape_of(a));
        const int C = (int)a.shape(0);
        a = weight(dw1, "detail_w1", {C, 2, 3, 3});
        Arr b = weight(db1, "detail_b1", {C});
        Arr c = weight(dw2, "detail_w2", {C, C, 3, 3});
        Arr d = weight(db2, "detail_b2", {C});
        Arr e = as_f32(hw1, "head_w1");
        if (e.ndim() != 4 || e.shape(0) < 1 || e.shape(0) > 4096)
            throw py::value_error("head_w1 must have shape (Ch, C + 3, 3, 3), got " + shape_of(e));
        const int Ch = (int)e.shape(0);
        e = weight(hw1, "head_w1", {Ch, C + 3, 3, 3});
        Arr f = weight(hb1, "head_b1", {Ch});
        Arr g = as_f32(hw2, "head_w2");
        g = g.ndim() == 4 ? weight(hw2, "head_w2", {2, Ch, 1, 1}) : weight(hw2, "head_w2", {2, Ch});
        Arr h = weight(hb2, "head_b2", {2});
        m_.C = C, m_.Cp = round8(C), m_.Ch = Ch, m_.Chp = round8(Ch), m_.radius = radius;
        m_.nbase = m_.head == HEAD_BLEND ? 1 : 5;
        w1_ = pack3x3(a, C, 2, m_.Cp), b1_ = padded(b, m_.Cp);
        w2_ = pack3x3(c, C, C, m_.Cp), b2_ = padded(d, m_.Cp);
        w3_ = pack3x3(e, Ch, C + 3, m_.Chp), b3_ = padded(f, m_.Chp);
        w4_.assign(g.data(), g.data() + 2 * Ch), b4_.assign(h.data(), h.data() + 2);
        m_.w1 = w1_.data(), m_.b1 = b1_.data(), m_.w2 = w2_.data(), m_.b2 = b2_.data();
        m_.w3 = w3_.data(), m_.b3 = b3_.data(), m_.w4 = w4_.data(), m_.b4 = b4_.data();
        m_.tau = tau, m_.gain_vis = gain_vis, m_.gain_ir = gain_ir;
    }

    py::array_t<float> run(py::handle ir_, py::handle vis_, py::handle base_, int num_threads,
                           const std::string& impl_s, int tile_rows, py::handle tone_) const {
        const int impl = resolve(impl_s);
        return rendered(ir_, vis_, base_, tone_, [&](const Sources& a, float* out) {
            render_cpu(m_, a.ir, a.vis, a.base, a.tone, a.B, a.H, a.W, out, num_threads, impl,
                       tile_rows);
        });
    }

    void quantize(py::tuple c1, py::tuple c2, py::tuple c3, float base_inv, float base_zero) {
        if (jobs_.load() > 0)  // their threads read the tables
            throw py::value_error(
                "quantize() while an int8 job (start_int8) of this render is alive");
        if (!(std::isfinite(base_inv) && base_inv > 0.f && base_zero >= 0.f && base_zero <= 255.f &&
              base_zero == std::nearbyint(base_zero)))
            throw py::value_error("base_inv must be positive and base_zero an integer in [0, 255]");
        set_q(0, c1, "conv1", m_.C, 2, true);
        set_q(1, c2, "conv2", m_.C, m_.C, true);
        set_q(2, c3, "conv3", m_.Ch, m_.C + 3, false);
        q_.base_inv = base_inv, q_.base_zero = base_zero;
        quantized_ = true;
    }

    py::array_t<float> run_int8(py::handle ir_, py::handle vis_, py::handle base_, int num_threads,
                                const std::string& impl_s, int tile_rows, py::handle tone_) const {
        if (!quantized_) throw py::value_error("run_int8 before quantize(): no int8 tables");
        const int impl = resolve_int8(impl_s);
        const QuantModel q = qmodel();
        return rendered(ir_, vis_, base_, tone_, [&](const Sources& a, float* out) {
            render_int8_cpu(q, a.ir, a.vis, a.base, a.tone, a.B, a.H, a.W, out, num_threads, impl,
                            tile_rows);
        });
    }

    // The split int8 render's job for checked sources (see Int8Job).
    Int8Split* new_split(const Arr& ir, const Arr& vis, py::ssize_t B, py::ssize_t H, py::ssize_t W,
                         const std::string& impl_s) const {
        if (!quantized_) throw py::value_error("start_int8 before quantize(): no int8 tables");
        const int impl = resolve_int8(impl_s);
        return int8_split_new(qmodel(), ir.data(), vis.data(), B, (int)H, (int)W, impl);
    }

    static int resolve_int8(const std::string& s) {
        const bool vnni = cpu_has_avx512vnni() && render_vnni_compiled();
        if (s == "auto") return vnni ? (int)RENDER_IMPL_VNNI : (int)IMPL_SCALAR;
        if (s == "scalar") return IMPL_SCALAR;
        if (s == "vnni") {
            if (!vnni)
                throw py::value_error(
                    "impl=\"vnni\" requested but this CPU (or build) has no AVX-512 VNNI kernel");
            return RENDER_IMPL_VNNI;
        }
        throw py::value_error("int8 impl must be \"auto\", \"vnni\" or \"scalar\", got \"" + s +
                              "\"");
    }
    static std::string resolved_int8_name(const std::string& s) {
        return resolve_int8(s) == RENDER_IMPL_VNNI ? "vnni" : "scalar";
    }
    bool quantized() const { return quantized_; }

    // "auto" -> the widest path this CPU and build have; a named path is checked.
    static int resolve(const std::string& s) {
        const bool avx2 = cpu_has_avx2_fma() && render_avx2_compiled();
        const bool avx512 = avx2 && cpu_has_avx512f() && render_avx512_compiled();
        if (s == "auto") return avx512 ? RENDER_IMPL_AVX512 : avx2 ? IMPL_AVX2 : IMPL_SCALAR;
        if (s == "scalar") return IMPL_SCALAR;
        if (s == "avx2") {
            if (!avx2)
                throw py::value_error(
                    "impl=\"avx2\" requested but this CPU (or build) has no AVX2+FMA kernel");
            return IMPL_AVX2;
        }
        if (s == "avx512") {
            if (!avx512)
                throw py::value_error(
                    "impl=\"avx512\" requested but this CPU (or build) has no AVX-512F kernel");
            return RENDER_IMPL_AVX512;
        }
        throw py::value_error("impl must be \"auto\", \"avx512\", \"avx2\" or \"scalar\", got \"" +
                              s + "\"");
    }
    static std::string resolved_name(const std::string& s) {
        const int i = resolve(s);
        return i == RENDER_IMPL_AVX512 ? "avx512" : i == IMPL_AVX2 ? "avx2" : "scalar";
    }

    const std::string& head() const { return head_; }
    int radius() const { return m_.radius; }
    py::tuple channels() const { return py::make_tuple(m_.C, m_.Ch); }
    int base_channels() const { return m_.nbase; }

private:
    struct Sources {  // checked inputs of one call, as the kernels take them
        const float *ir, *vis, *base, *tone;
        int64_t B;
        int H, W;
    };
    // Checks the inputs (check()), then runs kernel(sources, out) without the GIL into a new
    // fused array (B, 1, H, W).
    template <typename Kernel>
    py::array_t<float> rendered(py::handle ir_, py::handle vis_, py::handle base_, py::handle tone_,
                                Kernel&& kernel) const {
        Arr ir, vis, base, tone;
        py::ssize_t B, H, W;
        check(ir_, vis_, base_, tone_, ir, vis, base, tone, B, H, W);
        py::array_t<float> out({B, (py::ssize_t)1, H, W});
        const Sources a{
            ir.data(),  vis.data(), base.data(), tone_.is_none() ? nullptr : tone.data(),
            (int64_t)B, (int)H,     (int)W};
        float* po = out.mutable_data();
        {
            py::gil_scoped_release nogil;
            kernel(a, po);
        }
        return out;
    }
    QuantModel qmodel() const {  // the int8 tables with the float32 model they belong to
        QuantModel q = q_;
        q.m = &m_;
        return q;
    }

    // tone_ None: base_up holds nbase channels; else (B, 4) constants and base_up one channel
    void check(py::handle ir_, py::handle vis_, py::handle base_, py::handle tone_, Arr& ir,
               Arr& vis, Arr& base, Arr& tone, py::ssize_t& B, py::ssize_t& H,
               py::ssize_t& W) const {
        check_sources(ir_, vis_, ir, vis, B, H, W);
        check_base(base_, tone_, base, tone, B, H, W);
    }

public:
    void check_sources(py::handle ir_, py::handle vis_, Arr& ir, Arr& vis, py::ssize_t& B,
                       py::ssize_t& H, py::ssize_t& W) const {
        ir = as_f32(ir_, "ir"), vis = as_f32(vis_, "vis");
        if (ir.ndim() != 4 || ir.shape(1) != 1)
            throw py::value_error("ir must have shape (B, 1, H, W), got " + shape_of(ir));
        B = ir.shape(0), H = ir.shape(2), W = ir.shape(3);
        if (B < 1 || H < 1 || W < 1)
            throw py::value_error("ir must not be empty, got shape " + shape_of(ir));
        if (H > (1 << 20) || W > (1 << 20))
            throw py::value_error("ir is too large: shape " + shape_of(ir));
        if (vis.ndim() != 4 || vis.shape(0) != B || vis.shape(1) != 1 || vis.shape(2) != H ||
            vis.shape(3) != W)
            throw py::value_error("vis must have the shape of ir " + shape_of(ir) + ", got " +
                                  shape_of(vis));
    }

    // base_up (and tone) for sources of B x H x W: see check()
    void check_base(py::handle base_, py::handle tone_, Arr& base, Arr& tone, py::ssize_t B,
                    py::ssize_t H, py::ssize_t W) const {
        base = as_f32(base_, "base_up");
        int nb = m_.nbase;
        if (!tone_.is_none()) {
            if (m_.nbase != 5)
                throw py::value_error("tone applies to the \"tone\" and \"layers\" heads, not \"" +
                                      head_ + "\"");
            tone = as_f32(tone_, "tone");
            if (tone.ndim() != 2 || tone.shape(0) != B || tone.shape(1) != 4)
                throw py::value_error("tone must have shape (" + std::to_string(B) + ", 4), got " +
                                      shape_of(tone));
            nb = 1;
        }
        if (base.ndim() != 4 || base.shape(0) != B || base.shape(1) != nb || base.shape(2) != H ||
            base.shape(3) != W)
            throw py::value_error(
                "base_up must have shape (" + std::to_string(B) + ", " + std::to_string(nb) + ", " +
                std::to_string(H) + ", " + std::to_string(W) + ") for the \"" + head_ + "\" head" +
                (tone_.is_none() ? "" : " with tone") + ", got " + shape_of(base));
    }

private:
    void set_q(int i, py::tuple t, const char* name, int co, int ci, bool u8_out) {
        const std::string n(name);
        if (t.size() != 5) throw py::value_error(n + " must be (w, acc0, scale, bias, inv)");
        auto w = py::array_t<int8_t, py::array::c_style>::ensure(t[0]);
        if (!w || w.ndim() != 4 || w.shape(0) != co || w.shape(1) != ci || w.shape(2) != 3 ||
            w.shape(3) != 3)
            throw py::value_error(n + " weights must be int8 of shape (" + std::to_string(co) +
                                  ", " + std::to_string(ci) + ", 3, 3)");
        if (u8_out == t[4].is_none())
            throw py::value_error(n + (u8_out ? " needs inv (uint8 output)" : " takes inv=None"));
        const int ng = (ci + 3) / 4, cop = round16(co);
        qw_[i] = pack_q(w, co, ci, ng, cop);
        qa_[i] = vec_of<int32_t>(t[1], (n + " acc0").c_str(), co, cop);
        qs_[i] = vec_of<float>(t[2], (n + " scale").c_str(), co, cop);
        qb_[i] = vec_of<float>(t[3], (n + " bias").c_str(), co, cop);
        qi_[i] = u8_out ? vec_of<float>(t[4], (n + " inv").c_str(), co, cop) : std::vector<float>();
        for (float v : qs_[i])
            if (!std::isfinite(v)) throw py::value_error(n + " scale must be finite");
        QConv& c = i == 0 ? q_.c1 : i == 1 ? q_.c2 : q_.c3;
        c.ngroups = ng, c.cop = cop, c.w = qw_[i].data(), c.acc0 = qa_[i].data();
        c.scale = qs_[i].data(), c.bias = qb_[i].data(), c.inv = u8_out ? qi_[i].data() : nullptr;
    }

    RenderModel m_;
    QuantModel q_;
    bool quantized_ = false;

public:
    mutable std::atomic<int> jobs_{0};  // Int8Jobs alive (quantize() must not replace their tables)

private:
    std::vector<int8_t> qw_[3];
    std::vector<int32_t> qa_[3];
    std::vector<float> qs_[3], qb_[3], qi_[3];
    std::string head_;
    std::vector<float> w1_, b1_, w2_, b2_, w3_, b3_, w4_, b4_;
};

// The split int8 render of one (batch of) pair(s) (int8_split_* in render.h): start_int8() checks
// the sources and starts the detail convolutions on `background` threads of their own;
// detail() lets a caller's thread (a Python worker with nothing else to do) take part too;
// finish() adds the calling thread to them, then runs the head with base_up (and tone) and returns
// what run_int8 returns, bit for bit. The job keeps the sources and the NativeRender alive;
// dropping it unfinished stops the background threads after their current tiles.
class Int8Job {
public:
    Int8Job(py::object render, Arr ir, Arr vis, py::ssize_t B, py::ssize_t H, py::ssize_t W,
            const std::string& impl, int background)
        : render_(std::move(render)),
          ir_(std::move(ir)),
          vis_(std::move(vis)),
          B_(B),
          H_(H),
          W_(W) {
        const NativeRender& r = render_.cast<const NativeRender&>();
        s_ = r.new_split(ir_, vis_, B, H, W, impl);
        ++r.jobs_;
        pid_ = getpid();
        for (int i = 0; i < background; ++i) {
            try {
                Int8Split* s = s_;
                th_.emplace_back([s] { int8_split_detail(s); });
            } catch (...) {  // fewer threads: the others (finish() at the latest) compute the tiles
                break;
            }
        }
    }
    Int8Job(const Int8Job&) = delete;
    Int8Job& operator=(const Int8Job&) = delete;
    ~Int8Job() {
        --render_.cast<const NativeRender&>().jobs_;
        if (getpid() != pid_) {  // a forked child: the threads are not in this process
            for (auto& t : th_) t.detach();
            return;  // (the split is left to the process's end)
        }
        int8_split_cancel(s_);
        for (auto& t : th_) t.join();
        int8_split_delete(s_);  // no detail() call runs: each holds a reference to this job
    }

    void detail() {
        if (finished_ || getpid() != pid_) return;
        py::gil_scoped_release nogil;
        int8_split_detail(s_);
    }

    py::array_t<float> finish(py::handle base_, int num_threads, int tile_rows, py::handle tone_) {
        if (finished_) throw py::value_error("this int8 job has already finished");
        if (getpid() != pid_)
            throw std::runtime_error("this int8 job was started in another process (before fork)");
        Arr base, tone;
        render_.cast<const NativeRender&>().check_base(base_, tone_, base, tone, B_, H_, W_);
        py::array_t<float> out({B_, (py::ssize_t)1, H_, W_});
        const float* pb = base.data();
        const float* pt = tone_.is_none() ? nullptr : tone.data();
        float* po = out.mutable_data();
        finished_ = true;
        {
            py::gil_scoped_release nogil;
            int8_split_finish(s_, pb, pt, po, num_threads, tile_rows);
        }
        return out;
    }
    bool finished() const { return finished_; }

private:
    py::object render_;
    Arr ir_, vis_;
    py::ssize_t B_, H_, W_;
    Int8Split* s_ = nullptr;
    std::vector<std::thread> th_;
    pid_t pid_ = 0;
    bool finished_ = false;  // read and written with the GIL held
};

std::unique_ptr<Int8Job> start_int8_job(py::object self, py::handle ir_, py::handle vis_,
                                        const std::string& impl, int background) {
    if (background < 0 || background > 256)
        throw py::value_error("background must be a thread count in [0, 256], got " +
                              std::to_string(background));
    Arr ir, vis;
    py::ssize_t B, H, W;
    self.cast<const NativeRender&>().check_sources(ir_, vis_, ir, vis, B, H, W);
    return std::make_unique<Int8Job>(self, ir, vis, B, H, W, impl, background);
}

}  // namespace

void bind_render(py::module_& m) {
    py::class_<Int8Job>(m, "Int8Job",
                        "A started int8 render (NativeRender.start_int8); finish() once.")
        .def("finish", &Int8Job::finish, py::arg("base_up"), py::arg("num_threads") = 0,
             py::arg("tile_rows") = 0, py::arg("tone") = py::none(),
             "Joins the detail convolutions (this thread takes part), then runs the head: fused "
             "float32 (B, 1, H, W), as run_int8(ir, vis, base_up, num_threads, impl, tile_rows, "
             "tone).")
        .def("detail", &Int8Job::detail,
             "Computes detail tiles on this thread (without the GIL) until none is left "
             "unclaimed; a no-op once finished.")
        .def_property_readonly("finished", &Int8Job::finished);
    py::class_<NativeRender>(
        m, "NativeRender",
        "The render half of a TokFuse model (DetailNet, HeadConvs, the head's rule) "
        "as one fused CPU kernel over row tiles (AVX-512, AVX2/FMA or scalar; int8 with AVX-512 "
        "VNNI; a thread pool over tiles).")
        .def(py::init<const std::string&, int, py::handle, py::handle, py::handle, py::handle,
                      py::handle, py::handle, py::handle, py::handle, float, float, float>(),
             py::arg("head"), py::arg("radius"), py::arg("detail_w1"), py::arg("detail_b1"),
             py::arg("detail_w2"), py::arg("detail_b2"), py::arg("head_w1"), py::arg("head_b1"),
             py::arg("head_w2"), py::arg("head_b2"), py::arg("tau") = 0.0f,
             py::arg("gain_vis") = 0.0f, py::arg("gain_ir") = 0.0f)
        .def("run", &NativeRender::run, py::arg("ir"), py::arg("vis"), py::arg("base_up"),
             py::arg("num_threads") = 0, py::arg("impl") = "auto", py::arg("tile_rows") = 0,
             py::arg("tone") = py::none(),
             "ir, vis float32 (B, 1, H, W), base_up float32 (B, nbase, H, W) -> fused float32 (B, "
             "1, H, W). "
             "num_threads: threads (0 = one per usable core); impl: \"auto\" (widest available), "
             "\"avx512\" "
             "(AVX-512F convolutions, AVX2 rule), \"avx2\" or \"scalar\"; "
             "tile_rows: rows per tile (0 = chosen from H and the threads); tone: None, or for the "
             "\"tone\"/\"layers\" heads float32 (B, 4) constants with base_up (B, 1, H, W): the "
             "same "
             "as base_up's channels 1..4 filled with them.")
        .def("quantize", &NativeRender::quantize, py::arg("conv1"), py::arg("conv2"),
             py::arg("conv3"), py::arg("base_inv"), py::arg("base_zero"),
             "The int8 render's tables: per convolution (w int8 (co, ci, 3, 3), acc0 int32, scale, "
             "bias, inv float32 (co,) or None for conv3); base_inv, base_zero: the base channel's "
             "quantisation.")
        .def("run_int8", &NativeRender::run_int8, py::arg("ir"), py::arg("vis"), py::arg("base_up"),
             py::arg("num_threads") = 0, py::arg("impl") = "auto", py::arg("tile_rows") = 0,
             py::arg("tone") = py::none(),
             "As run(), with the quantised convolutions; impl: \"auto\", \"vnni\" (AVX-512 "
             "VNNI) or \"scalar\".")
        .def("start_int8", &start_int8_job, py::arg("ir"), py::arg("vis"), py::arg("impl") = "auto",
             py::arg("background") = 1,
             "The int8 render in two parts: checks ir, vis as run_int8 does and starts the part "
             "that does not need base_up (detail conv1, conv2) on `background` threads of its own "
             "(0: none; the job's detail() and finish() take part too); returns an Int8Job whose "
             "finish(base_up, num_threads, "
             "tile_rows, tone) returns run_int8's result, bit for bit.")
        .def_static("resolve_int8_impl", &NativeRender::resolved_int8_name,
                    py::arg("impl") = "auto",
                    "The int8 path impl runs on this CPU (\"vnni\" or \"scalar\").")
        .def_property_readonly("quantized", &NativeRender::quantized)
        .def_static(
            "resolve_impl", &NativeRender::resolved_name, py::arg("impl") = "auto",
            "The instruction path impl runs on this CPU (\"avx512\", \"avx2\" or \"scalar\"); "
            "ValueError when a named path is not available.")
        .def_property_readonly("head", &NativeRender::head)
        .def_property_readonly("radius", &NativeRender::radius)
        .def_property_readonly("channels", &NativeRender::channels,
                               "(detail channels, head channels)")
        .def_property_readonly("base_channels", &NativeRender::base_channels);
}
