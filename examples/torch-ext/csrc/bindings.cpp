// Python bindings (pybind11 through torch/extension.h): vector_add and saxpy on CPU or CUDA tensors.
//
// CUDA tensors go to the kernels in vector_add.cu / saxpy.cu on torch's current stream; CPU tensors
// take a plain C++ loop, so the extension is usable (and testable) on a machine without a GPU.
// Only c10/cuda headers are used on the CUDA side (not ATen/cuda/CUDAContext.h, which pulls in
// cuBLAS/cuSPARSE/cuSOLVER headers that a cudart-only toolkit does not have).
#include <torch/extension.h>
#include <torch/version.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <string>

#include "torch_ext.h"

namespace torch_ext {
namespace {

void check_pair(const torch::Tensor& a, const torch::Tensor& b, const char* op) {
  TORCH_CHECK(a.device() == b.device(), op, ": tensors on different devices (", a.device(), " and ", b.device(), ")");
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": dtypes differ (", a.scalar_type(), " and ", b.scalar_type(), ")");
  TORCH_CHECK(a.sizes() == b.sizes(), op, ": shapes differ (", a.sizes(), " and ", b.sizes(), ")");
  TORCH_CHECK(a.scalar_type() == torch::kFloat32 || a.scalar_type() == torch::kFloat64,
              op, ": only float32 and float64 are supported, got ", a.scalar_type());
  TORCH_CHECK(a.is_cuda() || a.is_cpu(), op, ": only CPU and CUDA tensors are supported, got ", a.device());
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(err));
}

template <typename T>
void cpu_vector_add(const T* a, const T* b, T* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void cpu_saxpy(T alpha, const T* x, const T* y, T* out, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = alpha * x[i] + y[i];
}

}  // namespace

torch::Tensor vector_add(torch::Tensor a, torch::Tensor b) {
  check_pair(a, b, "vector_add");
  a = a.contiguous();
  b = b.contiguous();
  auto out = torch::empty_like(a);
  const std::int64_t n = a.numel();
  if (a.is_cuda()) {
    const c10::cuda::CUDAGuard guard(a.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    if (a.scalar_type() == torch::kFloat32) {
      check_launch(launch_vector_add<float>(a.data_ptr<float>(), b.data_ptr<float>(), out.data_ptr<float>(), n, stream), "vector_add");
    } else {
      check_launch(launch_vector_add<double>(a.data_ptr<double>(), b.data_ptr<double>(), out.data_ptr<double>(), n, stream), "vector_add");
    }
  } else if (a.scalar_type() == torch::kFloat32) {
    cpu_vector_add<float>(a.data_ptr<float>(), b.data_ptr<float>(), out.data_ptr<float>(), n);
  } else {
    cpu_vector_add<double>(a.data_ptr<double>(), b.data_ptr<double>(), out.data_ptr<double>(), n);
  }
  return out;
}

torch::Tensor saxpy(double alpha, torch::Tensor x, torch::Tensor y) {
  check_pair(x, y, "saxpy");
  x = x.contiguous();
  y = y.contiguous();
  auto out = torch::empty_like(x);
  const std::int64_t n = x.numel();
  if (x.is_cuda()) {
    const c10::cuda::CUDAGuard guard(x.device());
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    if (x.scalar_type() == torch::kFloat32) {
      check_launch(launch_saxpy<float>(static_cast<float>(alpha), x.data_ptr<float>(), y.data_ptr<float>(), out.data_ptr<float>(), n, stream), "saxpy");
    } else {
      check_launch(launch_saxpy<double>(alpha, x.data_ptr<double>(), y.data_ptr<double>(), out.data_ptr<double>(), n, stream), "saxpy");
    }
  } else if (x.scalar_type() == torch::kFloat32) {
    cpu_saxpy<float>(static_cast<float>(alpha), x.data_ptr<float>(), y.data_ptr<float>(), out.data_ptr<float>(), n);
  } else {
    cpu_saxpy<double>(alpha, x.data_ptr<double>(), y.data_ptr<double>(), out.data_ptr<double>(), n);
  }
  return out;
}

// What this binary was compiled against, to compare with the torch it is loaded into.
pybind11::dict build_info() {
  pybind11::dict info;
  info["torch"] = std::string(TORCH_VERSION);
  info["cudart"] = CUDART_VERSION;  // e.g. 13000 for CUDA 13.0
  return info;
}

}  // namespace torch_ext

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "torch_ext: two CUDA kernels (vector_add, saxpy) with CPU loops for CPU tensors";
  m.def("vector_add", &torch_ext::vector_add, "out = a + b (float32/float64, CPU or CUDA)", pybind11::arg("a"), pybind11::arg("b"));
  m.def("saxpy", &torch_ext::saxpy, "out = alpha * x + y (float32/float64, CPU or CUDA)", pybind11::arg("alpha"),
        pybind11::arg("x"), pybind11::arg("y"));
  m.def("build_info", &torch_ext::build_info, "the torch version and CUDA runtime version this binary was compiled against");
}
