// tokfuse_rt._C: pybind11 bindings of the codebook nearest-neighbour search.
//
//   nn_search(queries, codebook, metric="ip", num_threads=0, impl="auto") -> (ids, scores)
//
// Inputs are read in place, never converted or copied: numpy.ndarray through the buffer
// protocol, anything else with __dlpack__ (torch.Tensor, CPU or CUDA) through DLPack.
// They must be float32, 2-D, C-contiguous: queries (N, D), codebook (K, D), K >= 1, D >= 1.
// Violations raise TypeError (wrong type/dtype) or ValueError (rank, shape, strides, device),
// the message naming the argument.
//
// Output (CPU): numpy ids int64 [N] (the index type of torch.argmax) and scores float32 [N]:
// the maximum inner product, or the minimum squared L2 distance (recomputed for the chosen code in
// float64 and rounded once, identical on every path). Ties -> lowest index.
// Output (CUDA tensors, when built with CUDA): torch tensors on the input's device, computed
// on the current torch stream.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "dlpack_min.h"
#include "nn_search.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using namespace tokfuse;

void bind_render(py::module_& m);  // render_py.cpp
void bind_colour(py::module_& m);  // colour_py.cpp

namespace {

std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof(buf), f, ap);
    va_end(ap);
    return buf;
}

std::string type_name(py::handle obj) {
    py::handle t = reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr()));
    std::string mod;
    if (py::hasattr(t, "__module__")) {
        mod = py::str(t.attr("__module__"));
        if (mod == "builtins") mod.clear();
    }
    std::string name = py::str(t.attr("__qualname__"));
    return mod.empty() ? name : mod + "." + name;
}

std::string shape_str(const int64_t* shape, int ndim) {
    std::string s = "(";
    for (int i = 0; i < ndim; ++i) {
        if (i) s += ", ";
        s += std::to_string(shape[i]);
    }
    if (ndim == 1) s += ",";
    return s + ")";
}

std::string dl_dtype_str(const dl::DLDataType& t) {
    const char* base = "unknown";
    switch (t.code) {
        case dl::kDLInt: base = "int"; break;
        case dl::kDLUInt: base = "uint"; break;
        case dl::kDLFloat: base = "float"; break;
        case dl::kDLBfloat: base = "bfloat"; break;
        case dl::kDLComplex: base = "complex"; break;
        case dl::kDLBool: return "bool";
        default: break;
    }
    std::string s = std::string(base) + std::to_string(t.bits);
    if (t.lanes != 1) s += "x" + std::to_string(t.lanes);
    return s;
}

std::string device_str(int type, int id) {
    switch (type) {
        case dl::kDLCPU: return "cpu";
        case dl::kDLCUDA: return "cuda:" + std::to_string(id);
        case dl::kDLCUDAHost: return "cuda_host";
        case dl::kDLCUDAManaged: return "cuda_managed:" + std::to_string(id);
        case dl::kDLROCM: return "rocm:" + std::to_string(id);
        default: return "dlpack_device_type_" + std::to_string(type) + ":" + std::to_string(id);
    }
}

const char* expected_shape(const char* name) {
    return std::string(name) == "codebook" ? "(K, D)" : "(N, D)";
}

// A validated, borrowed view of a 2-D float32 C-contiguous array.
struct View {
    const float* data = nullptr;
    int64_t rows = 0, cols = 0;
    int device_type = dl::kDLCPU;
    int device_id = 0;
    py::object keep;  // keeps the exporter (array or DLPack capsule) alive
};

[[noreturn]] void throw_type(const std::string& m) { throw py::type_error(m); }
[[noreturn]] void throw_value(const std::string& m) { throw py::value_error(m); }

void check_rows_cols(const char* name, int ndim, const int64_t* shape) {
    if (ndim != 2)
        throw_value(fmt("%s must be a 2-D array of shape %s, got %d-D with shape %s", name,
                        expected_shape(name), ndim, shape_str(shape, ndim).c_str()));
}

View view_numpy(py::handle obj, const char* name, bool from_torch = false) {
    py::array arr = py::reinterpret_borrow<py::array>(obj);
    std::vector<int64_t> shape(arr.shape(), arr.shape() + arr.ndim());
    if (!arr.dtype().equal(py::dtype::of<float>()))
        throw_type(
            fmt("%s must have dtype float32, got %s (convert it explicitly, e.g. "
                "%s.astype(np.float32))",
                name, std::string(py::str(arr.dtype())).c_str(), name));
    check_rows_cols(name, (int)arr.ndim(), shape.data());
    const int64_t r = shape[0], c = shape[1];
    const int64_t s0 = arr.strides(0), s1 = arr.strides(1);
    const bool contiguous =
        r == 0 || c == 0 ||
        ((c <= 1 || s1 == (int64_t)sizeof(float)) && (r <= 1 || s0 == c * (int64_t)sizeof(float)));
    if (!contiguous)
        throw_value(fmt(
            "%s must be C-contiguous (row-major) float32, got shape %s with byte "
            "strides (%lld, %lld); pass %s%s%s",
            name, shape_str(shape.data(), 2).c_str(), (long long)s0, (long long)s1,
            from_torch ? "" : "np.ascontiguousarray(", name, from_torch ? ".contiguous()" : ")"));
    if (reinterpret_cast<uintptr_t>(arr.data()) % alignof(float) != 0)
        throw_value(fmt("%s data is not 4-byte aligned", name));
    View v;
    v.data = static_cast<const float*>(arr.data());
    v.rows = r;
    v.cols = c;
    v.keep = arr;
    return v;
}

// A CUDA input: usable only when the CUDA kernel is compiled in and the device is visible.
void check_cuda_device(const char* name, int dev_id) {
#ifndef TOKFUSE_WITH_CUDA
    throw_value(
        fmt("%s is a CUDA tensor (on %s) but tokfuse_rt._C was built without CUDA "
            "support (nvcc not found or TOKFUSE_CUDA=0 at build time); move it to the "
            "CPU or rebuild with TOKFUSE_CUDA=1",
            name, device_str(dl::kDLCUDA, dev_id).c_str()));
#else
    const int n = tokfuse_cuda_device_count();
    if (dev_id < 0 || dev_id >= n)
        throw_value(
            fmt("%s is on %s but the CUDA runtime of tokfuse_rt._C sees %d CUDA "
                "device(s)",
                name, device_str(dl::kDLCUDA, dev_id).c_str(), n));
#endif
}

View view_dlpack(py::handle obj, const char* name) {
    py::object o = py::reinterpret_borrow<py::object>(obj);
    // torch refuses to export tensors that require grad; detach() is a view, never a copy.
    if (py::hasattr(o, "requires_grad") && py::hasattr(o, "detach")) {
        try {
            if (o.attr("requires_grad").cast<bool>()) o = o.attr("detach")();
        } catch (py::error_already_set&) {
        }
    }
    // Device first: lets us give a clear error before any export.
    int dev_type = dl::kDLCPU, dev_id = 0;
    if (py::hasattr(o, "__dlpack_device__")) {
        try {
            py::tuple dev = o.attr("__dlpack_device__")();
            dev_type = dev[0].cast<int>();
            dev_id = dev[1].cast<int>();
        } catch (py::error_already_set& e) {
            throw_type(fmt("%s: __dlpack_device__() failed: %s", name, e.what()));
        }
    }
    if (dev_type == dl::kDLCUDAHost) dev_type = dl::kDLCPU;  // pinned host memory
    if (dev_type != dl::kDLCPU && dev_type != dl::kDLCUDA)
        throw_value(fmt("%s is on device %s; only cpu and cuda tensors are supported", name,
                        device_str(dev_type, dev_id).c_str()));
    if (dev_type == dl::kDLCUDA) check_cuda_device(name, dev_id);
    // Dtype by name where the object tells it (nicer message than the DLPack code).
    std::string dtype_name;
    if (py::hasattr(o, "dtype")) {
        try {
            dtype_name = py::str(o.attr("dtype"));
        } catch (py::error_already_set&) {
        }
    }
    py::object cap;
    try {
        cap = o.attr("__dlpack__")();
    } catch (py::error_already_set& e) {
        throw_type(fmt("%s (%s) could not be exported through __dlpack__: %s", name,
                       type_name(obj).c_str(), e.what()));
    }
    auto* mt = static_cast<dl::DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
    if (!mt) {
        PyErr_Clear();
        throw_type(fmt("%s.__dlpack__() did not return a 'dltensor' capsule", name));
    }
    const dl::DLTensor& t = mt->dl_tensor;
    if (!(t.dtype.code == dl::kDLFloat && t.dtype.bits == 32 && t.dtype.lanes == 1))
        throw_type(fmt("%s must have dtype float32, got %s", name,
                       dtype_name.empty() ? dl_dtype_str(t.dtype).c_str() : dtype_name.c_str()));
    check_rows_cols(name, t.ndim, t.shape);
    const int64_t r = t.shape[0], c = t.shape[1];
    if (t.strides) {
        const int64_t s0 = t.strides[0], s1 = t.strides[1];
        const bool contiguous = r == 0 || c == 0 || ((c <= 1 || s1 == 1) && (r <= 1 || s0 == c));
        if (!contiguous)
            throw_value(
                fmt("%s must be C-contiguous (row-major) float32, got shape %s with strides "
                    "(%lld, %lld); pass %s.contiguous()",
                    name, shape_str(t.shape, 2).c_str(), (long long)s0, (long long)s1, name));
    }
    const char* ptr = static_cast<const char*>(t.data) + t.byte_offset;
    if (reinterpret_cast<uintptr_t>(ptr) % alignof(float) != 0)
        throw_value(fmt("%s data is not 4-byte aligned", name));
    View v;
    v.data = reinterpret_cast<const float*>(ptr);
    v.rows = r;
    v.cols = c;
    v.device_type = t.device.device_type == dl::kDLCUDAHost ? dl::kDLCPU : t.device.device_type;
    v.device_id = t.device.device_id;
    v.keep = cap;  // the unconsumed capsule's destructor releases the export
    return v;
}

// torch.Tensor, when torch has been imported (never imported from here).
bool is_torch_tensor(py::handle obj) {
    static PyObject* tensor_type = nullptr;
    if (!tensor_type) {
        PyObject* mods = PyImport_GetModuleDict();
        PyObject* torch = mods ? PyDict_GetItemString(mods, "torch") : nullptr;  // borrowed
        if (!torch) return false;
        PyObject* t = PyObject_GetAttrString(torch, "Tensor");
        if (!t) {
            PyErr_Clear();
            return false;
        }
        tensor_type = t;  // one reference kept for the life of the process
    }
    const int r = PyObject_IsInstance(obj.ptr(), tensor_type);
    if (r < 0) PyErr_Clear();
    return r == 1;
}

// A CPU torch.Tensor through tensor.numpy(): the same zero-copy view as DLPack, ~5x cheaper.
View view_torch_cpu(py::handle obj, const char* name) {
    const std::string dt = py::str(obj.attr("dtype"));
    if (dt != "torch.float32")
        throw_type(
            fmt("%s must have dtype float32, got %s (convert it explicitly, e.g. "
                "%s.float())",
                name, dt.c_str(), name));
    py::object o = py::reinterpret_borrow<py::object>(obj);
    if (o.attr("requires_grad").cast<bool>()) o = o.attr("detach")();  // a view, not a copy
    py::object arr;
    try {
        arr = o.attr("numpy")();
    } catch (py::error_already_set& e) {
        throw_type(fmt("%s: this tensor cannot be read in place: %s", name, e.what()));
    }
    View v = view_numpy(arr, name, /*from_torch=*/true);
    return v;
}

// A CUDA torch.Tensor through data_ptr() (DLPack export would refuse tensors that are not on
// the current device and synchronise streams); the kernel runs on the tensor's device and the
// current torch stream of that device.
View view_torch_cuda(py::handle obj, const char* name) {
    const std::string dt = py::str(obj.attr("dtype"));
    const int dev_id = obj.attr("get_device")().cast<int>();
    check_cuda_device(name, dev_id);
    if (dt != "torch.float32")
        throw_type(fmt("%s must have dtype float32, got %s", name, dt.c_str()));
    const int ndim = obj.attr("dim")().cast<int>();
    std::vector<int64_t> shape, strides;
    for (auto v : py::tuple(obj.attr("shape"))) shape.push_back(v.cast<int64_t>());
    for (auto v : py::tuple(obj.attr("stride")())) strides.push_back(v.cast<int64_t>());
    check_rows_cols(name, ndim, shape.data());
    const int64_t r = shape[0], c = shape[1];
    const bool contiguous =
        r == 0 || c == 0 || ((c <= 1 || strides[1] == 1) && (r <= 1 || strides[0] == c));
    if (!contiguous)
        throw_value(
            fmt("%s must be C-contiguous (row-major) float32, got shape %s with strides "
                "(%lld, %lld); pass %s.contiguous()",
                name, shape_str(shape.data(), 2).c_str(), (long long)strides[0],
                (long long)strides[1], name));
    View v;
    v.data = reinterpret_cast<const float*>(obj.attr("data_ptr")().cast<uintptr_t>());
    v.rows = r;
    v.cols = c;
    v.device_type = dl::kDLCUDA;
    v.device_id = dev_id;
    v.keep = py::reinterpret_borrow<py::object>(obj);
    return v;
}

View view_2d_f32(py::handle obj, const char* name) {
    if (py::isinstance<py::array>(obj)) return view_numpy(obj, name);
    if (is_torch_tensor(obj)) {
        if (obj.attr("is_cpu").cast<bool>()) return view_torch_cpu(obj, name);
        if (obj.attr("is_cuda").cast<bool>()) return view_torch_cuda(obj, name);
        throw_value(fmt("%s is on device %s; only cpu and cuda tensors are supported", name,
                        std::string(py::str(obj.attr("device"))).c_str()));
    }
    if (py::hasattr(obj, "__dlpack__")) return view_dlpack(obj, name);
    throw_type(
        fmt("%s must be a numpy.ndarray or torch.Tensor of dtype float32 and shape %s, "
            "got %s",
            name, expected_shape(name), type_name(obj).c_str()));
}

Metric parse_metric(const std::string& m) {
    if (m == "ip") return METRIC_IP;
    if (m == "l2") return METRIC_L2;
    throw_value(fmt("metric must be \"ip\" or \"l2\", got \"%s\"", m.c_str()));
}

Impl parse_impl(const std::string& s) {
    Impl impl;
    if (s == "auto")
        impl = IMPL_AUTO;
    else if (s == "scalar")
        impl = IMPL_SCALAR;
    else if (s == "avx2")
        impl = IMPL_AVX2;
    else
        throw_value(fmt("impl must be \"auto\", \"avx2\" or \"scalar\", got \"%s\"", s.c_str()));
    if (impl == IMPL_AVX2 && !(cpu_has_avx2_fma() && avx2_kernel_compiled()))
        throw_value("impl=\"avx2\" requested but this CPU (or build) has no AVX2+FMA kernel");
    return impl;
}

void check_pair(const View& q, const View& c) {
    if (c.rows < 1)
        throw_value(fmt("codebook must have at least one row (K >= 1), got shape (%lld, %lld)",
                        (long long)c.rows, (long long)c.cols));
    if (c.cols < 1)
        throw_value(fmt("codebook must have at least one column (D >= 1), got shape (%lld, %lld)",
                        (long long)c.rows, (long long)c.cols));
    if (c.cols != q.cols)
        throw_value(
            fmt("dimension mismatch: queries has D=%lld columns but codebook has D=%lld "
                "(queries (N, D), codebook (K, D))",
                (long long)q.cols, (long long)c.cols));
    if (c.rows >= ((int64_t)1 << 31)) throw_value("codebook has too many rows (K must be < 2**31)");
    if (c.cols > (1 << 20)) throw_value("codebook has too many columns (D must be <= 2**20)");
    if (q.device_type != c.device_type || q.device_id != c.device_id)
        throw_value(fmt("queries is on %s but codebook is on %s; both must be on the same device",
                        device_str(q.device_type, q.device_id).c_str(),
                        device_str(c.device_type, c.device_id).c_str()));
}

py::tuple empty_cpu_result(int64_t N, py::array_t<int64_t>& ids, py::array_t<float>& scores) {
    ids = py::array_t<int64_t>({(py::ssize_t)N});
    scores = py::array_t<float>({(py::ssize_t)N});
    return py::make_tuple(ids, scores);
}

#ifdef TOKFUSE_WITH_CUDA
py::tuple search_cuda(const View& q, const View& c, Metric metric) {
    if (q.cols > 128) throw_value("queries: the CUDA kernel supports D <= 128");
    py::module_ torch = py::module_::import("torch");
    py::object dev = torch.attr("device")("cuda", q.device_id);
    py::object ids = torch.attr("empty")(
        py::make_tuple(q.rows), py::arg("dtype") = torch.attr("int64"), py::arg("device") = dev);
    py::object scores = torch.attr("empty")(
        py::make_tuple(q.rows), py::arg("dtype") = torch.attr("float32"), py::arg("device") = dev);
    if (q.rows == 0) return py::make_tuple(ids, scores);
    const uintptr_t stream =
        torch.attr("cuda").attr("current_stream")(dev).attr("cuda_stream").cast<uintptr_t>();
    auto* ids_ptr = reinterpret_cast<int64_t*>(ids.attr("data_ptr")().cast<uintptr_t>());
    auto* sc_ptr = reinterpret_cast<float*>(scores.attr("data_ptr")().cast<uintptr_t>());
    const char* err;
    {
        py::gil_scoped_release nogil;
        err = tokfuse_cuda_nn_search(q.data, q.rows, c.data, c.rows, (int)q.cols, (int)metric,
                                     ids_ptr, sc_ptr, q.device_id, reinterpret_cast<void*>(stream));
    }
    if (err) throw std::runtime_error(std::string("tokfuse_rt._C.nn_search (CUDA): ") + err);
    return py::make_tuple(ids, scores);
}
#endif

py::tuple search(const View& q, const View& c, Metric metric, int num_threads, Impl impl,
                 const float* l2_bias) {
    if (q.device_type == dl::kDLCUDA) {
#ifdef TOKFUSE_WITH_CUDA
        return search_cuda(q, c, metric);
#else
        throw_value("CUDA tensors need a build with CUDA");  // unreachable: rejected in the view
#endif
    }
    py::array_t<int64_t> ids;
    py::array_t<float> scores;
    py::tuple out = empty_cpu_result(q.rows, ids, scores);
    if (q.rows == 0) return out;
    SearchArgs a;
    a.Q = q.data;
    a.N = q.rows;
    a.C = c.data;
    a.K = c.rows;
    a.D = (int)q.cols;
    a.metric = metric;
    a.l2_bias = l2_bias;
    a.num_threads = num_threads;
    a.impl = impl;
    a.ids = ids.mutable_data();
    a.scores = scores.mutable_data();
    {
        py::gil_scoped_release nogil;
        nn_search_cpu(a);
    }
    return out;
}

int check_threads(int num_threads) {
    if (num_threads < 0) throw_value(fmt("num_threads must be >= 0, got %d", num_threads));
    return num_threads;
}

py::tuple nn_search_py(py::handle queries, py::handle codebook, const std::string& metric,
                       int num_threads, const std::string& impl_s) {
    const Metric metric_v = parse_metric(metric);
    const Impl impl = parse_impl(impl_s);
    check_threads(num_threads);
    View q = view_2d_f32(queries, "queries");
    View c = view_2d_f32(codebook, "codebook");
    check_pair(q, c);
    return search(q, c, metric_v, num_threads, impl, nullptr);
}

py::tuple nn_search_emulated_py(py::handle queries, py::handle codebook,
                                const std::string& metric) {
    const Metric metric_v = parse_metric(metric);
    View q = view_2d_f32(queries, "queries");
    View c = view_2d_f32(codebook, "codebook");
    check_pair(q, c);
    if (q.device_type != dl::kDLCPU)
        throw_value("queries: the emulated CUDA kernel runs on the host; pass CPU arrays");
    if (q.cols > 128) throw_value("queries: the CUDA kernel (and its emulation) supports D <= 128");
    py::array_t<int64_t> ids;
    py::array_t<float> scores;
    py::tuple out = empty_cpu_result(q.rows, ids, scores);
    if (q.rows == 0) return out;
    const char* err;
    {
        py::gil_scoped_release nogil;
        err = nn_search_cuda_emulated(q.data, q.rows, c.data, c.rows, (int)q.cols, metric_v,
                                      ids.mutable_data(), scores.mutable_data());
    }
    if (err) throw std::runtime_error(err);
    return out;
}

// A codebook prepared once for repeated CPU searches: an owned copy of the rows plus the L2
// biases in both flavours (FMA for the AVX2 kernel, mul+add for the scalar one).
class Codebook {
public:
    explicit Codebook(py::handle codebook) {
        View c = view_2d_f32(codebook, "codebook");
        if (c.device_type != dl::kDLCPU)
            throw_value("codebook: Codebook prepares CPU searches; pass a CPU array/tensor");
        View dummy;
        dummy.cols = c.cols;
        check_pair(dummy, c);
        K_ = c.rows;
        D_ = (int)c.cols;
        data_.assign(c.data, c.data + K_ * D_);
        bias_scalar_.resize((size_t)K_);
        l2_bias_scalar(data_.data(), 0, K_, D_, bias_scalar_.data());
        if (cpu_has_avx2_fma() && avx2_kernel_compiled()) {
            bias_fma_.resize((size_t)K_);
            l2_bias_fma_avx2(data_.data(), 0, K_, D_, bias_fma_.data());
        }
    }

    py::tuple search_py(py::handle queries, const std::string& metric, int num_threads,
                        const std::string& impl_s) const {
        const Metric metric_v = parse_metric(metric);
        const Impl impl = resolve_impl(parse_impl(impl_s));
        check_threads(num_threads);
        View q = view_2d_f32(queries, "queries");
        if (q.device_type != dl::kDLCPU)
            throw_value(
                "queries: a prepared Codebook searches on the CPU; pass a CPU array/tensor "
                "(or call nn_search with a CUDA codebook)");
        View c;
        c.data = data_.data();
        c.rows = K_;
        c.cols = D_;
        check_pair(q, c);
        const float* bias = impl == IMPL_AVX2 ? bias_fma_.data() : bias_scalar_.data();
        return search(q, c, metric_v, num_threads, impl, metric_v == METRIC_L2 ? bias : nullptr);
    }

    int64_t K() const { return K_; }
    int D() const { return D_; }

private:
    int64_t K_ = 0;
    int D_ = 0;
    std::vector<float> data_, bias_scalar_, bias_fma_;
};

bool has_cuda() {
#ifdef TOKFUSE_WITH_CUDA
    return true;
#else
    return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "tokfuse_rt native extension: codebook nearest-neighbour search and the fused render";
    bind_render(m);
    bind_colour(m);

    m.def("nn_search", &nn_search_py, py::arg("queries"), py::arg("codebook"),
          py::arg("metric") = "ip", py::arg("num_threads") = 0, py::arg("impl") = "auto",
          R"doc(Nearest codebook entry of every query.

queries: float32 (N, D), codebook: float32 (K, D); numpy arrays or torch tensors, C-contiguous,
read in place (never copied). metric: "ip" (maximum inner product) or "l2" (minimum squared
Euclidean distance). Returns (ids, scores): ids int64 (N,), scores float32 (N,) = the best inner
product or the smallest squared distance (evaluated for the chosen code in float64, rounded once);
ties go to the lowest index. CPU inputs give numpy
arrays; CUDA tensors (builds with CUDA) give torch tensors on the same device.
num_threads: OpenMP threads (0 = OpenMP default; tokfuse_rt.nn passes torch.get_num_threads()).
impl: "auto" (AVX2/FMA when the CPU supports it, else scalar), "avx2" or "scalar".)doc");

    m.def("_nn_search_cuda_emulated", &nn_search_emulated_py, py::arg("queries"),
          py::arg("codebook"), py::arg("metric") = "ip",
          "The CUDA kernel body (nn_search_kernel.cuh) compiled for the host and run with "
          "block/thread loops and an emulated warp shuffle. For tests; CPU inputs only.");

    py::class_<Codebook>(m, "Codebook",
                         "A codebook prepared once for repeated CPU searches (owns a copy of the "
                         "rows and their L2 norms). Re-create it after changing the codebook.")
        .def(py::init([](py::handle c) { return new Codebook(c); }), py::arg("codebook"))
        .def("search", &Codebook::search_py, py::arg("queries"), py::arg("metric") = "ip",
             py::arg("num_threads") = 0, py::arg("impl") = "auto",
             "Same contract as nn_search(queries, codebook, ...).")
        .def_property_readonly("K", &Codebook::K)
        .def_property_readonly("D", &Codebook::D)
        .def_property_readonly("shape",
                               [](const Codebook& c) { return py::make_tuple(c.K(), c.D()); });

    m.def("has_cuda", &has_cuda,
          "True when the CUDA kernels were compiled in (says nothing "
          "about whether a GPU is present; see cuda_device_count()).");
    m.def(
        "cuda_device_count",
        []() {
#ifdef TOKFUSE_WITH_CUDA
            return tokfuse_cuda_device_count();
#else
            return 0;
#endif
        },
        "Number of CUDA devices the extension's CUDA runtime sees (0 without CUDA). Probes the "
        "driver when called, never at import.");
    m.def(
        "build_info",
        []() {
            py::dict d;
            d["cuda"] = has_cuda();
#ifdef TOKFUSE_WITH_CUDA
            d["cuda_runtime"] = std::string(tokfuse_cuda_runtime_version());
#endif
#ifdef _OPENMP
            d["openmp"] = true;
            d["openmp_max_threads"] = omp_get_max_threads();
#else
            d["openmp"] = false;
            d["openmp_max_threads"] = 1;
#endif
            d["avx2_kernel_compiled"] = avx2_kernel_compiled();
            d["cpu_avx2_fma"] = cpu_has_avx2_fma();
            d["default_impl"] = resolve_impl(IMPL_AUTO) == IMPL_AVX2 ? "avx2" : "scalar";
            d["ids_dtype"] = "int64";
            return d;
        },
        "Build and CPU capabilities of the extension.");
    m.def(
        "_debug_data_ptr",
        [](py::handle obj, const std::string& name) {
            View v = view_2d_f32(obj, name.c_str());
            return reinterpret_cast<uintptr_t>(v.data);
        },
        py::arg("array"), py::arg("name") = "queries",
        "Validate `array` exactly as nn_search does and return the data address it would read "
        "(tests use it to check that inputs are not copied).");
    m.def(
        "fma_peak_gflops",
        [](double seconds) {
            if (!(cpu_has_avx2_fma() && avx2_kernel_compiled())) return 0.0;
            py::gil_scoped_release nogil;
            return fma_peak_probe_avx2(seconds);
        },
        py::arg("seconds") = 0.05,
        "Single-core AVX2 FMA throughput measured with independent FMA chains (GFLOP/s).");
}
