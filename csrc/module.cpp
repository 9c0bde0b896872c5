#include <pybind11/pybind11.h>
namespace py = pybind11;
PYBIND11_MODULE(_C, m) {
    m.doc() = "tokfuse_rt native extension";
    m.def("has_cuda", []() { return false; }, "True when the CUDA kernels were compiled in.");
}
