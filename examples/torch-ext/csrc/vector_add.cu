// out = a + b, elementwise, for float and double.
#include "torch_ext.h"

namespace torch_ext {

template <typename T>
__global__ void vector_add_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                                  std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(blockDim.x) * gridDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = a[i] + b[i];
  }
}

template <typename T>
cudaError_t launch_vector_add(const T* a, const T* b, T* out, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  vector_add_kernel<T><<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(a, b, out, n);
  return cudaGetLastError();
}

template cudaError_t launch_vector_add<float>(const float*, const float*, float*, std::int64_t, cudaStream_t);
template cudaError_t launch_vector_add<double>(const double*, const double*, double*, std::int64_t, cudaStream_t);

}  // namespace torch_ext
