#ifndef HELLO_CUDA_SAXPY_H
#define HELLO_CUDA_SAXPY_H
#ifdef __cplusplus
extern "C" {
#endif
/* Returns the number of CUDA devices that answer, 0 when none (or no driver). */
int hc_cuda_device_count(void);
/* y = a*x + y on the GPU; returns 0 on success, a CUDA error code otherwise. */
int hc_saxpy_cuda(int n, float a, const float *x, float *y);
#ifdef __cplusplus
}
#endif
#endif
