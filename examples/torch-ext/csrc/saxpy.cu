// out = alpha * x + y, elementwise, for float and double.
#include "torch_ext.h"

namespace torch_ext {

template <typename T>
__global__ void saxpy_kernel(T alpha, const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ out,
                             std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(blockDim.x) * gridDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = alpha * x[i] + y[i];
  }
}

template <typename T>
cudaError_t launch_saxpy(T alpha, const T* x, const T* y, T* out, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  saxpy_kernel<T><<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(alpha, x, y, out, n);
  return cudaGetLastError();
}

template cudaError_t launch_saxpy<float>(float, const float*, const float*, float*, std::int64_t, cudaStream_t);
template cudaError_t launch_saxpy<double>(double, const double*, const double*, double*, std::int64_t, cudaStream_t);

}  // namespace torch_ext
