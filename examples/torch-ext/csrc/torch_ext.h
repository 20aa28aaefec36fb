// torch_ext's kernel interface, shared by the two .cu files and the binding (.cpp).
//
// Deliberately free of torch headers: the .cu files include only this and <cuda_runtime.h>, so nvcc
// compiles them in seconds; the binding (torch/extension.h) is where the C++ compiler spends its time.
// An sdist without this header (no MANIFEST.in) cannot build: every source file includes it.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace torch_ext {

constexpr int kThreadsPerBlock = 256;

inline unsigned int blocks_for(std::int64_t n) {
  return static_cast<unsigned int>((n + kThreadsPerBlock - 1) / kThreadsPerBlock);
}

// out[i] = a[i] + b[i]  (csrc/vector_add.cu)
template <typename T>
cudaError_t launch_vector_add(const T* a, const T* b, T* out, std::int64_t n, cudaStream_t stream);

// out[i] = alpha * x[i] + y[i]  (csrc/saxpy.cu)
template <typename T>
cudaError_t launch_saxpy(T alpha, const T* x, const T* y, T* out, std::int64_t n, cudaStream_t stream);

}  // namespace torch_ext
